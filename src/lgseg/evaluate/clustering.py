"""Instance proposals from a network's class logits and offsets: PointGroup-style clustering of the voxels shifted
to their predicted instance centres (docs/method.md §8), with scipy (Delaunay edges, `radius_components`) instead of
the authors' CUDA-only ball query and breadth-first search.

Voxels predicted as an instance class (not wall or floor) are moved by their offset (metres / voxel size, so in
voxels); two of them are neighbours when the shifted points lie within `radius` voxels and they share the predicted
class; every connected component of at least `min_points` voxels whose size is also above `min_proposal_points`
is a proposal of that class, scored by the mean (or median) raw logit of its class over its voxels. No NMS. The
result depends on nothing random: the same inputs give the same proposals, in order of their first voxel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import Delaunay

from lgseg.scannet.labels import scannet200

SCORES = {"mean": np.mean, "median": np.median}


@dataclass(frozen=True)
class ClusteringSettings:
    """The config section `instance_clustering` (schema: workflow/schemas/config.schema.yaml)."""

    radius: float  # voxels
    min_points: int
    min_proposal_points: int
    score: str  # "mean" | "median"

    @classmethod
    def of(cls, section: dict) -> "ClusteringSettings":
        return cls(**section)


@dataclass(frozen=True)
class Proposal:
    """One predicted instance: its voxels (ascending row indices), class index and confidence."""

    voxels: np.ndarray
    class_index: int
    score: float


def cluster_proposals(coords, offsets, logits, voxel_size: float, settings: ClusteringSettings) -> list[Proposal]:
    """Proposals of one scene from voxel coordinates [N, 3] (integers, in voxels), offsets [N, 3] (metres) and
    class logits [N, C]: numpy arrays or torch tensors on any device (clustered on the CPU)."""
    coords, offsets, logits = (_numpy(a) for a in (coords, offsets, logits))
    predicted = logits.argmax(1)
    candidates = np.flatnonzero(np.isin(predicted, scannet200().instance_classes))
    if candidates.size == 0:
        return []
    shifted = coords[candidates].astype(np.float64) + offsets[candidates].astype(np.float64) / voxel_size
    component = np.empty(candidates.size, dtype=np.int64)
    classes, class_of = np.unique(predicted[candidates], return_inverse=True)
    start = 0
    for c in range(len(classes)):  # voxels of one predicted class at a time: edges never cross classes
        members = np.flatnonzero(class_of == c)
        labels = radius_components(shifted[members], settings.radius)
        component[members] = labels + start
        start += int(labels.max()) + 1
    sizes = np.bincount(component)
    kept = (sizes >= settings.min_points) & (sizes > settings.min_proposal_points)
    order = np.argsort(component, kind="stable")  # members of each component, in ascending row order
    starts = np.concatenate([[0], np.cumsum(sizes)])
    score = SCORES[settings.score]
    proposals = []
    for c in np.flatnonzero(kept):
        voxels = candidates[order[starts[c]:starts[c + 1]]]
        class_index = int(predicted[voxels[0]])
        proposals.append(Proposal(voxels, class_index, float(score(logits[voxels, class_index]))))
    return sorted(proposals, key=lambda p: int(p.voxels[0]))


SMALL = 64  # up to this many points, pairs are tested directly
SIMPLEX_EDGES = np.array([[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]])


def radius_components(points: np.ndarray, radius: float) -> np.ndarray:
    """Component label per point of the graph that links points at most `radius` apart, without listing every such
    pair (shifted voxels crowd at instance centres: thousands of neighbours each). Exact: the graph's components are
    those of its minimum spanning forest, whose edges are Delaunay edges, so the Delaunay edges no longer than
    `radius` have the same components. The triangulation joggles the input (qhull's QJ, ~1e-11 of the extent) so
    that flat or duplicated points triangulate; edge lengths are measured on the points themselves."""
    n = len(points)
    if n == 0 or np.linalg.norm(points.max(0) - points.min(0)) <= radius:
        return np.zeros(n, dtype=np.int64)  # every pair within the radius (also: duplicates qhull cannot joggle)
    if n <= SMALL:
        first, second = np.triu_indices(n, 1)
        edges = np.stack([first, second], 1)
    else:
        simplices = Delaunay(points, qhull_options="QJ Qbb").simplices.astype(np.int64)
        edges = np.sort(simplices[:, SIMPLEX_EDGES].reshape(-1, 2), axis=1)
        edges = np.unique(edges[:, 0] * n + edges[:, 1])
        edges = np.stack([edges // n, edges % n], 1)
    edges = edges[np.linalg.norm(points[edges[:, 0]] - points[edges[:, 1]], axis=1) <= radius]
    graph = coo_matrix((np.ones(len(edges), dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _numpy(array) -> np.ndarray:
    if hasattr(array, "detach"):
        return array.detach().float().cpu().numpy() if array.is_floating_point() else array.detach().cpu().numpy()
    return np.asarray(array)
