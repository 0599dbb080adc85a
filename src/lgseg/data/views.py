"""Scene views for CSC pre-training: two partly overlapping crops of one reconstructed scene, each augmented on its
own, and the voxel pairs that hold the same mesh vertex in both (docs/method.md §7).

The paper's CSC pairs RGB-D frames of the `.sens` streams; without them the two views are crops of the scene: each
keeps the `crop` fraction of the vertices lowest along a random horizontal direction, so two views share between
2·crop - 1 of the scene and all of it. A voxel of view 0 (through the vertex it keeps) is matched to the voxel of
view 1 that holds the same vertex, so correspondences are exact.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from lgseg.data.dataset import SceneDataset, collate
from lgseg.scannet.labels import IGNORE_INDEX


def crop_size(num_points: int, fraction: float) -> int:
    """Points a crop of `fraction` keeps (at least one)."""
    return max(1, int(round(fraction * num_points)))


def crop(coord: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of the `fraction` of the points lowest along a random horizontal direction, in ascending order."""
    angle = rng.uniform(0.0, 2.0 * np.pi)
    along = coord[:, 0] * np.cos(angle) + coord[:, 1] * np.sin(angle)
    return np.sort(np.argsort(along, kind="stable")[:crop_size(len(coord), fraction)])


def view_pairs(kept: tuple[np.ndarray, np.ndarray], first: tuple[np.ndarray, np.ndarray],
               inverse: tuple[np.ndarray, np.ndarray], num_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """(pairs P x 2 of voxel rows (view 0, view 1), the scene vertex of each pair P): for every voxel of view 0
    whose kept vertex lies in view 1, the voxel of view 1 holding that vertex; a voxel of view 1 reached from
    several voxels of view 0 is kept in its first pair only, so no key is both a query's positive and negative."""
    vertex = kept[0][first[0]]
    position = np.full(num_vertices, -1, dtype=np.int64)
    position[kept[1]] = np.arange(len(kept[1]))
    in_both = np.flatnonzero(position[vertex] >= 0)
    pairs = np.stack([in_both, inverse[1][position[vertex[in_both]]]], axis=1)
    _, once = np.unique(pairs[:, 1], return_index=True)
    once.sort()
    return pairs[once], vertex[in_both][once]


class ViewPairs(Dataset):
    """One item per scene of `scenes`: its two views as network inputs (labels ignored: CSC learns without them),
    the matched voxel pairs and the scene coordinates (metres, before augmentation) of their vertices."""

    def __init__(self, scenes: SceneDataset, fraction: float):
        self.scenes, self.fraction = scenes, fraction

    def __len__(self) -> int:
        return len(self.scenes)

    @property
    def num_vertices(self) -> list[int]:
        """Points per item (both views), for the batch sampler's point budget."""
        return [2 * crop_size(n, self.fraction) for n in self.scenes.num_vertices]

    def __getitem__(self, index: int) -> dict:
        scene_id, coord, color, _, _, rng = self.scenes.scene(index)
        unlabelled = np.full(len(coord), IGNORE_INDEX, dtype=np.int64)
        kept, items, firsts = [], [], []
        for _ in range(2):
            rows = crop(coord, self.fraction, rng)
            item, first = self.scenes.voxel_item(scene_id, coord[rows], color[rows], unlabelled[rows], rng)
            kept.append(rows)
            items.append(item)
            firsts.append(first)
        pairs, vertex = view_pairs(tuple(kept), tuple(firsts), (items[0]["inverse"].numpy(),
                                                                 items[1]["inverse"].numpy()), len(coord))
        return {"views": items, "pairs": torch.from_numpy(pairs), "pair_coord": torch.from_numpy(coord[vertex])}


def collate_view_pairs(items: list[dict]) -> dict:
    """One sparse batch of all views (scene b: batch entries 2b and 2b+1); `pairs` per scene as rows of the batch."""
    views = [view for item in items for view in item["views"]]
    batch = collate(views)
    starts = np.cumsum([0] + batch["voxel_counts"])
    batch["pairs"] = [item["pairs"] + torch.tensor([starts[2 * b], starts[2 * b + 1]])
                      for b, item in enumerate(items)]
    batch["pair_coord"] = [item["pair_coord"] for item in items]
    return batch
