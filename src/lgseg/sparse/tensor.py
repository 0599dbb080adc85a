"""Sparse voxel tensors of the pure-PyTorch backend: coordinates, features and cached kernel maps.

Coordinates are integer rows (batch, x, y, z) at a tensor stride s (every coordinate a multiple of s), as in
MinkowskiEngine. Kernel offsets follow MinkowskiEngine exactly, so weights are interchangeable: kernel index
j enumerates offsets with x varying fastest; an odd kernel of size k covers (i - k//2)·s·dilation, an even one
i·s·dilation, i = 0..k-1, along each axis.
"""

from __future__ import annotations

import itertools
import warnings

import torch

_AXIS_BITS = 18  # |coordinate| < 2^17 voxels (2.6 km at 2 cm) per axis
_AXIS_OFFSET = 1 << (_AXIS_BITS - 1)
_MAX_BATCH = 1 << (63 - 3 * _AXIS_BITS)
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


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

    def neighbours(self, target: "CoordinateSet", offsets: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per offset d: (rows of this set, rows of `target`) where target coordinate + d is in this set.

        One search for all offsets: a coordinate's key plus d's key difference is the key of coordinate + d, as
        long as every shifted axis stays in range (checked).
        """
        if not len(self.keys) or not len(target.keys):
            empty = target.keys.new_zeros(0)
            return [(empty, empty)] * len(offsets)
        reach = int(target.coords[:, 1:].abs().max()) + int(offsets.abs().max())
        if reach >= _AXIS_OFFSET:
            raise ValueError(f"sparse coordinates out of range: |x|,|y|,|z| + kernel reach < {_AXIS_OFFSET}")
        delta = (offsets[:, 0] << (2 * _AXIS_BITS)) + (offsets[:, 1] << _AXIS_BITS) + offsets[:, 2]
        query = delta[:, None] + target.keys[None, :]  # (offsets, target rows in key order)
        slot = torch.searchsorted(self.keys, query).clamp_(max=len(self.keys) - 1)
        hit = self.keys[slot] == query
        counts = hit.sum(1).tolist()
        source_rows = self.order[slot[hit]].split(counts)
        target_rows = target.order[torch.nonzero(hit)[:, 1]].split(counts)
        return list(zip(source_rows, target_rows))


class KernelMap:
    """The (input row, output row) pairs of one convolution, laid end to end in kernel order.

    `segments` holds (kernel index, start, stop) per offset with pairs; `identity` is the kernel index whose pairs
    are every row to itself (the centre of a stride-1 convolution), which are not listed. `to_outputs` and
    `to_inputs` are 0/1 CSR matrices that sum the per-pair rows of a group of segments into output or input rows:
    one sparse-dense product instead of an index_add_ per offset (3x faster on the demo's CPU); groups bound the
    memory of the per-pair rows on large scenes. `neighbour_table` lists every output's neighbours, for
    convolutions that gather whole neighbourhoods.
    """

    def __init__(self, in_rows: torch.Tensor, out_rows: torch.Tensor, segments: list[tuple[int, int, int]],
                 identity: int | None, num_in: int, num_out: int, volume: int):
        self.in_rows, self.out_rows, self.segments = in_rows, out_rows, segments
        self.identity, self.num_in, self.num_out, self.volume = identity, num_in, num_out, volume
        self._scatter: dict = {}
        self._table: torch.Tensor | None = None
        self._transposed: KernelMap | None = None

    @classmethod
    def from_pieces(cls, pieces: list[tuple[int, torch.Tensor, torch.Tensor]], identity: int | None, num_in: int,
                    num_out: int, volume: int, device: torch.device) -> "KernelMap":
        """The map of (kernel index, input rows, output rows) per offset, in kernel order."""
        empty = torch.zeros(0, dtype=torch.long, device=device)
        segments, start = [], 0
        for k, rows, _ in pieces:
            if len(rows):
                segments.append((k, start, start + len(rows)))
                start += len(rows)
        return cls(torch.cat([rows for _, rows, _ in pieces] + [empty]),
                   torch.cat([rows for _, _, rows in pieces] + [empty]), segments, identity, num_in, num_out, volume)

    @property
    def num_pairs(self) -> int:
        return len(self.in_rows)

    def transposed(self) -> "KernelMap":
        """The map of the transposed convolution: every pair swapped."""
        if self._transposed is None:
            flipped = KernelMap(self.out_rows, self.in_rows, self.segments, self.identity, self.num_out, self.num_in,
                                self.volume)
            flipped._transposed = self
            self._transposed = flipped
        return self._transposed

    def neighbour_table(self) -> torch.Tensor:
        """(num_out, volume) input row of each output's neighbour per kernel offset, num_in where there is none."""
        if self._table is None:
            self._table = self._per_offset(self.segments, self.out_rows, self.num_out, self.in_rows, fill=self.num_in)
            if self.identity is not None:
                self._table[:, self.identity] = torch.arange(self.num_out, device=self._table.device)
        return self._table

    def groups(self, max_pairs: int) -> list[tuple[int, int, list[tuple[int, int, int]]]]:
        """The segments in runs of at most `max_pairs` pairs (a longer segment alone): (start, stop, segments)."""
        groups, run = [], []
        for segment in self.segments:
            if run and segment[2] - run[0][1] > max_pairs:
                groups.append((run[0][1], run[-1][2], run))
                run = []
            run.append(segment)
        return groups + ([(run[0][1], run[-1][2], run)] if run else [])

    def to_outputs(self, group: tuple, dtype: torch.dtype) -> torch.Tensor:
        """(num_out, pairs of the group) 0/1 CSR matrix that sums a group's per-pair rows into output rows."""
        return self._scatter_matrix(group, self.out_rows, self.num_out, dtype)

    def to_inputs(self, group: tuple, dtype: torch.dtype) -> torch.Tensor:
        """(num_in, pairs of the group) 0/1 CSR matrix that sums a group's per-pair rows into input rows."""
        return self._scatter_matrix(group, self.in_rows, self.num_in, dtype)

    def _per_offset(self, segments: list, rows: torch.Tensor, num_rows: int, values: torch.Tensor,
                    fill: int) -> torch.Tensor:
        """(num_rows, volume) table holding values[p] at (rows[p], kernel index of pair p) for the pairs of
        `segments`, `fill` elsewhere."""
        table = torch.full((num_rows, self.volume), fill, dtype=torch.long, device=rows.device)
        for k, start, stop in segments:
            table[rows[start:stop], k] = values[start:stop]
        return table

    def _scatter_matrix(self, group: tuple, rows: torch.Tensor, num_rows: int, dtype: torch.dtype) -> torch.Tensor:
        """A 1 at (rows[p], p - group start) for the group's pairs p; within a row, pairs in kernel order (a row
        holds at most one pair per offset, so a per-offset table read row by row sorts them, no sort needed)."""
        start, stop, segments = group
        key = (rows is self.out_rows, start, stop, dtype)
        if key not in self._scatter:
            local = torch.arange(-start, len(rows) - start, device=rows.device)
            slots = self._per_offset(segments, rows, num_rows, local, fill=-1)
            listed = slots >= 0
            crow = torch.zeros(num_rows + 1, dtype=torch.long, device=rows.device)
            crow[1:] = torch.cumsum(listed.sum(1), 0)
            self._scatter[key] = torch.sparse_csr_tensor(crow, slots[listed], torch.ones(stop - start, dtype=dtype,
                                                                                         device=rows.device),
                                                         size=(num_rows, stop - start), check_invariants=False)
        return self._scatter[key]


class CoordinateManager:
    """Coordinate sets per tensor stride and kernel maps, shared by all tensors of one network input."""

    def __init__(self, coords: torch.Tensor):
        self.sets = {1: CoordinateSet(coords)}
        self._maps: dict[tuple, KernelMap] = {}

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

    def kernel_map(self, in_stride: int, out_stride: int, kernel_size: int, dilation: int = 1) -> KernelMap:
        """The pairs of a convolution from stride `in_stride` to `out_stride` (cached).

        At equal strides the zero offset is the identity, and an odd kernel's offsets j and K-1-j are opposite,
        so only the first half is searched and the second half is its pairs swapped.
        """
        key = (in_stride, out_stride, kernel_size, dilation)
        if key not in self._maps:
            source, target = self.sets[in_stride], self.sets[out_stride]
            offsets = kernel_offsets(kernel_size, in_stride, dilation).to(source.coords.device)
            volume = len(offsets)
            same = in_stride == out_stride
            zero = torch.nonzero((offsets == 0).all(1)).flatten().tolist()
            identity = zero[0] if same and zero else None
            mirrored = same and kernel_size % 2 == 1
            searched = [j for j in range(volume) if j != identity and not (mirrored and j > volume // 2)]
            found = dict(zip(searched, source.neighbours(target, offsets[searched])))
            if mirrored:
                found.update({volume - 1 - j: (out_rows, in_rows) for j, (in_rows, out_rows) in found.items()})
            pieces = [(j, *found[j]) for j in sorted(found)]
            self._maps[key] = KernelMap.from_pieces(pieces, identity, len(source.coords), len(target.coords),
                                                    volume, source.coords.device)
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
