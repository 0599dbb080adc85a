"""Training/evaluation data: processed scenes -> augmented, voxelised sparse-network inputs, batched by points."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from lgseg.data.augment import augment
from lgseg.data.instance_sampling import InstanceSampling, place_instances
from lgseg.data.store import read_scene, scene_folders
from lgseg.errors import DataError
from lgseg.scannet.labels import IGNORE_INDEX

MAX_TRANSLATION_VOXELS = 100  # random integer shift of voxel coordinates in training (LGS model_step)


def voxelize(coord: np.ndarray, voxel_size: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(voxel coordinates M x 3, first point of each voxel M, voxel of every point N), voxels in key order."""
    cells = np.floor(coord / voxel_size).astype(np.int64)
    cells -= cells.min(0)
    span = cells.max(0) + 1
    keys = (cells[:, 0] * span[1] + cells[:, 1]) * span[2] + cells[:, 2]
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return cells[first], first, inverse.ravel()


def first_labelled(labels: np.ndarray, inverse: np.ndarray, num_voxels: int) -> np.ndarray:
    """Per voxel the label of its first labelled vertex, IGNORE_INDEX where it has none: the voxel labels under a
    limited-annotation mask, so an annotated vertex labels its voxel even when it is not the voxel's first point."""
    labelled = np.flatnonzero(labels != IGNORE_INDEX)
    voxels, first = np.unique(inverse[labelled], return_index=True)
    out = np.full(num_voxels, IGNORE_INDEX, dtype=labels.dtype)
    out[voxels] = labels[labelled[first]]
    return out


class SceneDataset(Dataset):
    """One item per scene: voxel coordinates, RGB features (rgb/255 - 0.5), voxel labels, vertex -> voxel map.

    With `augmentations` the scene is distorted, rotated, scaled, flipped and recoloured first, from a random
    generator seeded by (seed, epoch, scene index); set `epoch` before each pass. A voxel takes the label of its
    first point (as MinkowskiEngine's quantisation keeps it). With `annotated` (scene id -> kept vertex indices)
    every other vertex is unlabelled, as in the limited-annotation benchmark, and a voxel takes the label of its
    first annotated vertex (unlabelled only if it holds none; `first_labelled`). With
    `instance_sampling`, bank instances are pasted into the scene before augmentation, from the same generator;
    the vertex arrays (`inverse`, `vertex_labels`) then list the placed points after the scene's vertices.
    """

    def __init__(self, root: str | Path, split: str, scene_ids: list[str], voxel_size: float,
                 augmentations: list[dict] | None = None, annotated: dict[str, np.ndarray] | None = None,
                 seed: int = 0, instance_sampling: InstanceSampling | None = None):
        self.folders = scene_folders(root, split, scene_ids)
        self.num_vertices = [json.loads((f / "meta.json").read_text())["num_vertices"] for f in self.folders]
        self.voxel_size = voxel_size
        self.augmentations = augmentations
        self.annotated = annotated
        self.instance_sampling = instance_sampling
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.folders)

    def __getitem__(self, index: int) -> dict:
        scene_id, coord, color, labels, rng = self.scene(index)
        return self.voxel_item(scene_id, coord, color, labels, rng)[0]

    def scene(self, index: int) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, np.random.Generator]:
        """(scene id, vertex coordinates, colours, labels under the mask, the item's generator), with the bank
        instances placed when instance sampling is on; not yet augmented."""
        folder = self.folders[index]
        arrays = read_scene(folder)
        coord = np.asarray(arrays["coord"], dtype=np.float64)
        color = np.asarray(arrays["color"], dtype=np.float64)
        labels = (np.asarray(arrays["segment"], dtype=np.int64) if "segment" in arrays  # test scenes: no labels
                  else np.full(len(coord), IGNORE_INDEX, dtype=np.int64))
        if self.annotated is not None:
            kept = self.annotated[folder.name]
            limited = np.full_like(labels, IGNORE_INDEX)
            limited[kept] = labels[kept]
            labels = limited
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.instance_sampling is not None:
            if "instance" not in arrays:
                raise DataError(folder, "instance sampling needs a labelled scene (no instance.npy)",
                                "sample instances only into train scenes")
            sampling = self.instance_sampling
            scene = {"coord": coord, "color": color, "segment": labels,
                     "instance": np.asarray(arrays["instance"], dtype=np.int64)}
            scene, _ = place_instances(scene, sampling.bank, rng, sampling.count, sampling.max_tries, sampling.cell,
                                       sampling.min_coverage, sampling.scale)
            coord, color, labels = scene["coord"], scene["color"], scene["segment"]
        return folder.name, coord, color, labels, rng

    def voxel_item(self, scene_id: str, coord: np.ndarray, color: np.ndarray, labels: np.ndarray,
                   rng: np.random.Generator) -> tuple[dict, np.ndarray]:
        """(the network input of these points, augmented when the dataset augments; the point kept per voxel)."""
        shift = np.zeros(3, dtype=np.int64)
        if self.augmentations is not None:
            coord, color = augment(coord, color, self.augmentations, rng)
            shift = rng.integers(0, MAX_TRANSLATION_VOXELS, size=3)
        voxels, first, inverse = voxelize(coord, self.voxel_size)
        item = {
            "scene_id": scene_id,
            "coords": torch.from_numpy(voxels + shift),
            "features": torch.from_numpy((color[first] / 255.0 - 0.5).astype(np.float32)),
            "labels": torch.from_numpy(labels[first] if self.annotated is None
                                       else first_labelled(labels, inverse, len(voxels))),
            "inverse": torch.from_numpy(inverse),
            "vertex_labels": torch.from_numpy(labels),
        }
        return item, first


def collate(items: list[dict]) -> dict:
    """Stack scenes into one sparse batch (batch index in coordinate column 0); keep per-scene vertex maps."""
    coords = torch.cat([torch.cat([torch.full((len(it["coords"]), 1), b, dtype=torch.long), it["coords"]], 1)
                        for b, it in enumerate(items)])
    return {
        "scene_ids": [it["scene_id"] for it in items],
        "coords": coords,
        "features": torch.cat([it["features"] for it in items]),
        "labels": torch.cat([it["labels"] for it in items]),
        "voxel_counts": [len(it["coords"]) for it in items],
        "inverse": [it["inverse"] for it in items],
        "vertex_labels": [it["vertex_labels"] for it in items],
    }


class PointBudgetBatchSampler(Sampler):
    """Batches of at most `batch_size` scenes whose vertex counts add up to at most `max_points` (a scene larger
    than the budget goes alone). Shuffled per epoch from (seed, epoch) when `shuffle`."""

    def __init__(self, num_vertices: list[int], batch_size: int, max_points: int, shuffle: bool, seed: int = 0):
        self.num_vertices = num_vertices
        self.batch_size, self.max_points, self.shuffle, self.seed = batch_size, max_points, shuffle, seed
        self.epoch = 0

    def _batches(self) -> list[list[int]]:
        order = np.arange(len(self.num_vertices))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch, 1]).permutation(order)
        batches, current, points = [], [], 0
        for index in order.tolist():
            n = self.num_vertices[index]
            if current and (len(current) == self.batch_size or points + n > self.max_points):
                batches.append(current)
                current, points = [], 0
            current.append(index)
            points += n
        if current:
            batches.append(current)
        return batches

    def __iter__(self):
        return iter(self._batches())

    def __len__(self) -> int:
        return len(self._batches())
