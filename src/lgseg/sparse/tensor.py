"""Sparse voxel tensors of the pure-PyTorch backend: coordinates, features and cached kernel maps.

Coordinates are integer rows (batch, x, y, z) at a tensor stride s (every coordinate a multiple of s), as in
MinkowskiEngine. Kernel offsets follow MinkowskiEngine exactly, so weights are interchangeable: kernel index
j enumerates offsets with x varying fastest; an odd kernel of size k covers (i - k//2)·s·dilation, an even one
i·s·dilation, i = 0..k-1, along each axis.
"""

from __future__ import annotations

import itertools

import torch

_AXIS_BITS = 18  # |coordinate| < 2^17 voxels (2.6 km at 2 cm) per axis
_AXIS_OFFSET = 1 << (_AXIS_BITS - 1)
_MAX_BATCH = 1 << (63 - 3 * _AXIS_BITS)


def coordinate_keys(coords: torch.Tensor) -> torch.Tensor:
    """One int64 key per row of an (N, 4) integer coordinate tensor (batch, x, y, z)."""
    shifted = coords[:, 1:].long() + _AXIS_OFFSET
    if coords.numel() and (shifted.min() < 0 or shifted.max() >= (1 << _AXIS_BITS) or coords[:, 0].max() >= _MAX_BATCH):
        raise ValueError(f"sparse coordinates out of range: |x|,|y|,|z| < {_AXIS_OFFSET}, batch < {_MAX_BATCH}")
    key = coords[:, 0].long()
    for axis in range(3):
        key = (key << _AXIS_BITS) | shifted[:, axis]
    return key


def unique_rows(coords: torch.Tensor) -> torch.Tensor:
    """The distinct rows of an (N, 4) coordinate tensor in lexicographic order, as torch.unique(dim=0) gives
    them, through one sort of their int64 keys (torch.unique over rows is slow on CPU)."""
    keys, order = torch.sort(coordinate_keys(coords))
    first = torch.ones_like(keys, dtype=torch.bool)
    first[1:] = keys[1:] != keys[:-1]
    return coords[order[first]]


def kernel_offsets(kernel_size: int, tensor_stride: int, dilation: int = 1) -> torch.Tensor:
    """(K, 3) offsets in MinkowskiEngine's kernel order (x fastest)."""
    steps = range(kernel_size) if kernel_size % 2 == 0 else range(-(kernel_size // 2), kernel_size // 2 + 1)
    rows = [(x, y, z) for z, y, x in itertools.product(steps, steps, steps)]
    return torch.tensor(rows, dtype=torch.long) * tensor_stride * dilation


class CoordinateSet:
    """The coordinates present at one tensor stride, with a sorted key index for neighbour look-ups."""

    def __init__(self, coords: torch.Tensor):
        self.coords = coords
        self.keys, self.order = torch.sort(coordinate_keys(coords))

    def find(self, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(positions in the query that exist, their row in this set)."""
        keys = coordinate_keys(query)
        slot = torch.searchsorted(self.keys, keys).clamp_(max=max(len(self.keys) - 1, 0))
        hit = self.keys[slot] == keys if len(self.keys) else torch.zeros_like(keys, dtype=torch.bool)
        return torch.nonzero(hit).squeeze(1), self.order[slot[hit]]


class CoordinateManager:
    """Coordinate sets per tensor stride and kernel maps, shared by all tensors of one network input."""

    def __init__(self, coords: torch.Tensor):
        self.sets = {1: CoordinateSet(coords)}
        self._maps: dict[tuple, list] = {}

    def coords(self, stride: int) -> torch.Tensor:
        return self.sets[stride].coords

    def downsampled(self, stride: int, factor: int) -> int:
        """Create (once) the coordinates at stride·factor: each coordinate floored to a multiple of it."""
        new = stride * factor
        if new not in self.sets:
            coords = self.coords(stride).clone()
            coords[:, 1:] = torch.div(coords[:, 1:], new, rounding_mode="floor") * new
            self.sets[new] = CoordinateSet(unique_rows(coords))
        return new

    def kernel_map(self, in_stride: int, out_stride: int, kernel_size: int, dilation: int = 1) -> list:
        """Per kernel offset: (input rows, output rows) pairs; None where the pairs are the identity."""
        key = (in_stride, out_stride, kernel_size, dilation)
        if key not in self._maps:
            source, target = self.sets[in_stride], self.coords(out_stride)
            pairs = []
            for offset in kernel_offsets(kernel_size, in_stride, dilation):
                if in_stride == out_stride and not offset.any():
                    pairs.append(None)
                    continue
                query = target.clone()
                query[:, 1:] += offset.to(query.device)
                out_rows, in_rows = source.find(query)
                pairs.append((in_rows, out_rows))
            self._maps[key] = pairs
        return self._maps[key]


class SparseTensor:
    """Features (N, C) at integer coordinates (N, 4) of one tensor stride, sharing a CoordinateManager."""

    def __init__(self, features: torch.Tensor, stride: int, manager: CoordinateManager):
        self.features = features
        self.stride = stride
        self.manager = manager

    @classmethod
    def from_coords(cls, coords: torch.Tensor, features: torch.Tensor) -> "SparseTensor":
        """A network input: unique integer coordinates (batch, x, y, z) and one feature row per coordinate."""
        if len(coords) != len(features):
            raise ValueError(f"{len(coords)} coordinates but {len(features)} feature rows")
        return cls(features, 1, CoordinateManager(coords.long()))

    @property
    def coords(self) -> torch.Tensor:
        return self.manager.coords(self.stride)

    def replace(self, features: torch.Tensor) -> "SparseTensor":
        """Same coordinates, new features."""
        return SparseTensor(features, self.stride, self.manager)

    def __add__(self, other: "SparseTensor") -> "SparseTensor":
        if other.manager is not self.manager or other.stride != self.stride:
            raise ValueError("adding sparse tensors with different coordinates")
        return self.replace(self.features + other.features)
