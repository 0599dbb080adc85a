"""The Res16UNet family (MinkUNet layout of the paper's Res16UNet34D), written once for any sparse backend."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Variant:
    planes: tuple[int, ...]  # output width of the 4 encoder and 4 decoder stages
    layers: tuple[int, ...]  # residual blocks per stage


VARIANTS = {
    "Res16UNet34D": Variant((32, 64, 128, 256, 256, 256, 256, 512), (2, 3, 4, 6, 2, 2, 2, 2)),  # the paper's
    "Res16UNet34C": Variant((32, 64, 128, 256, 256, 128, 96, 96), (2, 3, 4, 6, 2, 2, 2, 2)),
    # Table 3's smaller backbone: Res16UNet18's blocks with 34C's planes (MinkowskiEngine's MinkUNet18 layout)
    "Res16UNet18C": Variant((32, 64, 128, 256, 256, 128, 96, 96), (2, 2, 2, 2, 2, 2, 2, 2)),
    "Res16UNet14Tiny": Variant((16, 16, 32, 32, 32, 32, 16, 16), (1, 1, 1, 1, 1, 1, 1, 1)),  # demo and tests
}
INIT_DIM = 32


class BasicBlock(nn.Module):
    """Two 3x3x3 convolutions with batch norm and a residual connection (1x1x1 projection if widths differ)."""

    def __init__(self, backend, in_planes: int, planes: int, bn_momentum: float, final_relu: bool = True):
        super().__init__()
        self.conv1 = backend.conv(in_planes, planes, kernel_size=3)
        self.norm1 = backend.batch_norm(planes, momentum=bn_momentum)
        self.conv2 = backend.conv(planes, planes, kernel_size=3)
        self.norm2 = backend.batch_norm(planes, momentum=bn_momentum)
        self.relu = backend.relu()
        self.final_relu = final_relu
        self.downsample = None
        if in_planes != planes:
            self.downsample = nn.Sequential(backend.conv(in_planes, planes, kernel_size=1),
                                            backend.batch_norm(planes, momentum=bn_momentum))

    def forward(self, x):
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        out = out + (self.downsample(x) if self.downsample is not None else x)
        return self.relu(out) if self.final_relu else out


class Res16UNet(nn.Module):
    """Sparse residual U-Net: 4 strided stages down, 4 transposed stages up with skip concatenations.

    Returns per-voxel features (the last plane, no ReLU on the last block), or class logits when `num_classes` is
    given (a linear 1x1x1 head on those features). A `feature_dim` other than the last plane adds a linear 1x1x1
    projection to that width (as the authors' `_Proj` variants); Res16UNet34D's 512 already equals CLIP's width.
    An `embedding_dim` adds a linear 1x1x1 head that the network returns instead (CSC's 32-d pre-training head;
    a fine-tuning started from such a network has no `embedding_dim`, so the head is left out). With
    `offset_head` (instance segmentation) an offset head (1x1x1 C->C, batch norm, ReLU, 1x1x1 C->3) on the last
    block's output (C = the last plane, before any projection, as the authors' instance network) predicts each
    voxel's vector to its instance centre, and the network returns {"features": class logits, "offsets": offsets}.
    """

    TASK_HEADS = ("final", "offset")  # heads a fine-tuning adds to a pre-trained network

    def __init__(self, backend, variant: str = "Res16UNet34D", in_channels: int = 3, feature_dim: int | None = None,
                 num_classes: int | None = None, conv1_kernel_size: int = 3, bn_momentum: float = 0.02,
                 embedding_dim: int | None = None, offset_head: bool = False):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown model variant '{variant}'; choose one of {', '.join(VARIANTS)}")
        planes = list(VARIANTS[variant].planes)
        layers = VARIANTS[variant].layers
        self.backend = backend
        self.feature_dim = feature_dim or planes[7]

        def norm(width):
            return backend.batch_norm(width, momentum=bn_momentum)

        def stage(in_planes, width, blocks, last_without_relu=False):
            return nn.Sequential(*[BasicBlock(backend, in_planes if b == 0 else width, width, bn_momentum,
                                              final_relu=not (last_without_relu and b == blocks - 1))
                                   for b in range(blocks)])

        self.conv0p1s1 = backend.conv(in_channels, INIT_DIM, kernel_size=conv1_kernel_size)
        self.bn0 = norm(INIT_DIM)
        widths = [INIT_DIM] + planes[:3]
        self.down_convs = nn.ModuleList(backend.conv(widths[i], widths[i], kernel_size=2, stride=2) for i in range(4))
        self.down_norms = nn.ModuleList(norm(widths[i]) for i in range(4))
        self.down_blocks = nn.ModuleList(stage(widths[i], planes[i], layers[i]) for i in range(4))
        skips = [planes[2], planes[1], planes[0], INIT_DIM]
        ups_in = [planes[3], planes[4], planes[5], planes[6]]
        self.up_convs = nn.ModuleList(backend.conv_transpose(ups_in[i], planes[4 + i], kernel_size=2, stride=2)
                                      for i in range(4))
        self.up_norms = nn.ModuleList(norm(planes[4 + i]) for i in range(4))
        self.up_blocks = nn.ModuleList(stage(planes[4 + i] + skips[i], planes[4 + i], layers[4 + i],
                                             last_without_relu=i == 3) for i in range(4))
        self.relu = backend.relu()
        self.projection = (backend.conv(planes[7], self.feature_dim, kernel_size=1, bias=True)
                           if self.feature_dim != planes[7] else None)
        self.final = backend.conv(self.feature_dim, num_classes, kernel_size=1, bias=True) if num_classes else None
        self.embedding = (backend.conv(self.feature_dim, embedding_dim, kernel_size=1, bias=True) if embedding_dim
                          else None)
        self.offset = (nn.Sequential(backend.conv(planes[7], planes[7], kernel_size=1, bias=True),
                                     norm(planes[7]), backend.relu(), backend.conv(planes[7], 3, kernel_size=1, bias=True))
                       if offset_head else None)
        self._initialise()

    def _initialise(self):
        for name, parameter in self.named_parameters():
            if name.endswith("kernel") and not name.startswith(("final", "projection", "embedding", "offset")):
                nn.init.kaiming_normal_(parameter, mode="fan_out", nonlinearity="relu")
        for module in self.modules():
            if isinstance(module, nn.BatchNorm1d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        out = self.relu(self.bn0(self.conv0p1s1(x)))
        skips = [out]
        for conv, bn, block in zip(self.down_convs, self.down_norms, self.down_blocks):
            out = block(self.relu(bn(conv(out))))
            skips.append(out)
        skips.pop()  # the deepest output feeds the decoder directly
        for conv, bn, block in zip(self.up_convs, self.up_norms, self.up_blocks):
            out = block(self.backend.cat(self.relu(bn(conv(out))), skips.pop()))
        offsets = self.offset(out) if self.offset is not None else None
        if self.projection is not None:
            out = self.projection(out)
        if self.embedding is not None:
            out = self.embedding(out)
        logits = self.final(out) if self.final is not None else out
        return {"features": logits, "offsets": offsets} if offsets is not None else logits


def parameter_count(variant: str) -> int:
    """Trainable parameters of `variant` with a linear head for the ScanNet200 classes (the size a table states)."""
    from lgseg.scannet.labels import scannet200
    from lgseg.sparse import get_backend

    network = Res16UNet(get_backend("torch"), variant, num_classes=scannet200().num_classes)
    return sum(p.numel() for p in network.parameters())
