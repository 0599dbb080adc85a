"""Layers of the pure-PyTorch sparse backend; parameter names and shapes match MinkowskiEngine's modules."""

from __future__ import annotations

import math

import torch
from torch import nn

from lgseg.sparse.functional import sparse_convolution
from lgseg.sparse.tensor import SparseTensor


class SparseConvolution(nn.Module):
    """Convolution over active voxels: kernel (K, C_in, C_out), or (C_in, C_out) for a 1x1x1 kernel.

    stride 1 keeps the input coordinates (submanifold); stride s > 1 outputs the coordinates floored to the
    coarser stride. transpose=True goes back to the finer coordinates the encoder made, reusing its kernel map.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1,
                 bias: bool = False, transpose: bool = False):
        super().__init__()
        volume = kernel_size ** 3
        if volume == 1 and (stride != 1 or transpose):
            raise ValueError("a 1x1x1 sparse convolution must have stride 1")
        self.kernel_size, self.stride, self.dilation, self.transpose = kernel_size, stride, dilation, transpose
        shape = (volume, in_channels, out_channels) if volume > 1 else (in_channels, out_channels)
        self.kernel = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.empty(1, out_channels)) if bias else None
        bound = 1.0 / math.sqrt((out_channels if transpose else in_channels) * volume)
        nn.init.uniform_(self.kernel, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: SparseTensor) -> SparseTensor:
        manager = x.manager
        if self.kernel.dim() == 2:
            features = x.features @ self.kernel
            out_stride = x.stride
        elif self.transpose:
            out_stride = x.stride // self.stride
            if out_stride not in manager.sets:
                raise ValueError(f"no coordinates at stride {out_stride} to transpose into")
            kmap = manager.kernel_map(out_stride, x.stride, self.kernel_size, self.dilation).transposed()
            features = sparse_convolution(x.features, self.kernel, kmap)
        else:
            out_stride = manager.downsampled(x.stride, self.stride) if self.stride > 1 else x.stride
            kmap = manager.kernel_map(x.stride, out_stride, self.kernel_size, self.dilation)
            features = sparse_convolution(x.features, self.kernel, kmap)
        if self.bias is not None:
            features = features + self.bias
        return SparseTensor(features, out_stride, manager)


class SparseBatchNorm(nn.Module):
    """BatchNorm1d over the feature rows; the inner module is called `bn` as in MinkowskiEngine."""

    def __init__(self, num_features: int, momentum: float = 0.1):
        super().__init__()
        self.bn = nn.BatchNorm1d(num_features, momentum=momentum)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(self.bn(x.features))


class SparseReLU(nn.Module):
    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(torch.relu(x.features))


def sparse_cat(*tensors: SparseTensor) -> SparseTensor:
    """Concatenate the features of tensors on the same coordinates."""
    first = tensors[0]
    if any(t.manager is not first.manager or t.stride != first.stride for t in tensors):
        raise ValueError("concatenating sparse tensors with different coordinates")
    return first.replace(torch.cat([t.features for t in tensors], dim=1))
