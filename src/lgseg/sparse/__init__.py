"""Sparse 3D convolution behind one interface: `torch` (pure PyTorch, default) or `minkowski` (MinkowskiEngine).

Models build their layers through a backend object, so the same model definition runs on either; both give
modules with the same parameter names and shapes, so a checkpoint from one loads into the other.
"""

from __future__ import annotations

import torch
from torch import nn

from lgseg.sparse.tensor import SparseTensor, coordinate_keys
from lgseg.sparse.torch_backend import SparseBatchNorm, SparseConvolution, SparseReLU, sparse_cat

BACKENDS = ("torch", "minkowski")


class TorchBackend:
    """Our own sparse convolution in PyTorch; runs on CPU and CUDA tensors."""

    name = "torch"

    def input_tensor(self, coords: torch.Tensor, features: torch.Tensor) -> SparseTensor:
        return SparseTensor.from_coords(coords, features)

    def features(self, x: SparseTensor) -> torch.Tensor:
        return x.features

    def coordinates(self, x: SparseTensor) -> torch.Tensor:
        return x.coords

    def output_features(self, out: SparseTensor, coords: torch.Tensor) -> torch.Tensor:
        """Rows of a stride-1 output in the order of the input `coords` (ours keeps the input order)."""
        return out.features

    def conv(self, in_channels, out_channels, kernel_size=3, stride=1, dilation=1, bias=False) -> nn.Module:
        return SparseConvolution(in_channels, out_channels, kernel_size, stride, dilation, bias)

    def conv_transpose(self, in_channels, out_channels, kernel_size=2, stride=2, bias=False) -> nn.Module:
        return SparseConvolution(in_channels, out_channels, kernel_size, stride, 1, bias, transpose=True)

    def batch_norm(self, num_features, momentum=0.1) -> nn.Module:
        return SparseBatchNorm(num_features, momentum)

    def relu(self) -> nn.Module:
        return SparseReLU()

    def cat(self, *tensors):
        return sparse_cat(*tensors)


class MinkowskiBackend:
    """MinkowskiEngine 0.5 (GPU clusters; install with envs/install_minkowski.sh)."""

    name = "minkowski"

    def __init__(self):
        try:
            import MinkowskiEngine
        except ImportError as err:
            raise ImportError("sparse backend 'minkowski' needs MinkowskiEngine: run `bash envs/install_minkowski.sh`"
                              " or choose model.backend: torch") from err
        self.me = MinkowskiEngine

    def input_tensor(self, coords, features):
        return self.me.SparseTensor(features, coordinates=coords.int().to(features.device))

    def features(self, x):
        return x.F

    def coordinates(self, x):
        return x.C

    def output_features(self, out, coords: torch.Tensor) -> torch.Tensor:
        """Rows of a stride-1 output in the order of the input `coords`: MinkowskiEngine orders a tensor's rows
        by its coordinate map, not by the input (tests/test_sparse.py)."""
        out_keys, order = torch.sort(coordinate_keys(out.C.long().to(coords.device)))
        return out.F[order[torch.searchsorted(out_keys, coordinate_keys(coords))].to(out.F.device)]

    def conv(self, in_channels, out_channels, kernel_size=3, stride=1, dilation=1, bias=False):
        return self.me.MinkowskiConvolution(in_channels, out_channels, kernel_size=kernel_size, stride=stride,
                                            dilation=dilation, bias=bias, dimension=3)

    def conv_transpose(self, in_channels, out_channels, kernel_size=2, stride=2, bias=False):
        return self.me.MinkowskiConvolutionTranspose(in_channels, out_channels, kernel_size=kernel_size,
                                                     stride=stride, bias=bias, dimension=3)

    def batch_norm(self, num_features, momentum=0.1):
        return self.me.MinkowskiBatchNorm(num_features, momentum=momentum)

    def relu(self):
        return self.me.MinkowskiReLU()

    def cat(self, *tensors):
        return self.me.cat(*tensors)


def get_backend(name: str):
    """The backend called `name` ('torch' or 'minkowski')."""
    if name == "torch":
        return TorchBackend()
    if name == "minkowski":
        return MinkowskiBackend()
    raise ValueError(f"unknown sparse backend '{name}'; choose one of {', '.join(BACKENDS)}")
