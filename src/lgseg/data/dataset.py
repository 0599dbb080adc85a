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
from lgseg.scannet.labels import IGNORE_INDEX, scannet200

MAX_TRANSLATION_VOXELS = 100  # random integer shift of voxel coordinates in training (LGS model_step)


def voxelize(coord: np.ndarray, voxel_size: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(voxel coordinates M x 3, first point of each voxel M, voxel of every point N), voxels in key order."""
    cells = np.floor(coord / voxel_size).astype(np.int64)
    cells -= cells.min(0)
    span = cells.max(0) + 1
    keys = (cells[:, 0] * span[1] + cells[:, 1]) * span[2] + cells[:, 2]
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return cells[first], first, inverse.ravel()


def instance_vertices(labels: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """Per vertex its instance id where it belongs to an instance of an instance class (labelled, not wall or
    floor), IGNORE_INDEX elsewhere: the instances the instance task predicts and scores."""
    is_instance_class = np.zeros(scannet200().num_classes + 1, dtype=bool)  # last slot: label -1
    is_instance_class[list(scannet200().instance_classes)] = True
    return np.where(is_instance_class[labels] & (instance >= 0), instance, IGNORE_INDEX)


def instance_offsets(voxels: np.ndarray, instance: np.ndarray, voxel_size: float) -> np.ndarray:
    """Per voxel the vector to the centre of its instance (the mean coordinate of the instance's voxels), in
    metres; zero for voxels without an instance (float32 M x 3)."""
    offsets = np.zeros(voxels.shape, dtype=np.float32)
    member = np.flatnonzero(instance >= 0)
    if member.size:
        ids, index = np.unique(instance[member], return_inverse=True)
        counts = np.bincount(index, minlength=len(ids))[:, None]
        centres = np.stack([np.bincount(index, weights=voxels[member, d], minlength=len(ids))
                            for d in range(3)], axis=1) / counts
        offsets[member] = (centres[index] - voxels[member]) * voxel_size
    return offsets


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
    With `instance_targets` an item also holds, per voxel, its instance (`instance`, of the vertex that labels it;
    -1 for no instance, wall and floor) and the vector to that instance's centre in metres (`offsets`, after
    augmentation and voxelisation, pasted instances included), and per vertex `vertex_instance`.
    """

    def __init__(self, root: str | Path, split: str, scene_ids: list[str], voxel_size: float,
                 augmentations: list[dict] | None = None, annotated: dict[str, np.ndarray] | None = None,
                 seed: int = 0, instance_sampling: InstanceSampling | None = None, instance_targets: bool = False):
        self.folders = scene_folders(root, split, scene_ids)
        self.num_vertices = [json.loads((f / "meta.json").read_text())["num_vertices"] for f in self.folders]
        self.voxel_size = voxel_size
        self.augmentations = augmentations
        self.annotated = annotated
        self.instance_sampling = instance_sampling
        self.instance_targets = instance_targets
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.folders)

    def __getitem__(self, index: int) -> dict:
        scene_id, coord, color, labels, instance, rng = self.scene(index)
        return self.voxel_item(scene_id, coord, color, labels, rng, instance)[0]

    def scene(self, index: int) -> tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None,
                                         np.random.Generator]:
        """(scene id, vertex coordinates, colours, labels under the mask, instances (`instance_vertices`; None
        without `instance_targets`), the item's generator), with the bank instances placed when instance sampling
        is on; not yet augmented."""
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
        instance = None
        if self.instance_sampling is not None or self.instance_targets:
            if "instance" not in arrays:
                raise DataError(folder, "instance sampling and instance targets need a labelled scene "
                                        "(no instance.npy)", "use train or val scenes")
            instance = np.asarray(arrays["instance"], dtype=np.int64)
        if self.instance_sampling is not None:
            sampling = self.instance_sampling
            scene = {"coord": coord, "color": color, "segment": labels, "instance": instance}
            scene, _ = place_instances(scene, sampling.bank, rng, sampling.count, sampling.max_tries, sampling.cell,
                                       sampling.min_coverage, sampling.scale)
            coord, color, labels, instance = scene["coord"], scene["color"], scene["segment"], scene["instance"]
        if self.instance_targets:
            instance = instance_vertices(labels, instance)  # unlabelled under the mask: no instance either
        else:
            instance = None
        return folder.name, coord, color, labels, instance, rng

    def voxel_item(self, scene_id: str, coord: np.ndarray, color: np.ndarray, labels: np.ndarray,
                   rng: np.random.Generator, instance: np.ndarray | None = None) -> tuple[dict, np.ndarray]:
        """(the network input of these points, augmented when the dataset augments, with instance targets when
        `instance` is given; the point kept per voxel)."""
        shift = np.zeros(3, dtype=np.int64)
        if self.augmentations is not None:
            coord, color = augment(coord, color, self.augmentations, rng)
            shift = rng.integers(0, MAX_TRANSLATION_VOXELS, size=3)
        voxels, first, inverse = voxelize(coord, self.voxel_size)
        voxel_labels = labels[first] if self.annotated is None else first_labelled(labels, inverse, len(voxels))
        item = {
            "scene_id": scene_id,
            "coords": torch.from_numpy(voxels + shift),
            "features": torch.from_numpy((color[first] / 255.0 - 0.5).astype(np.float32)),
            "labels": torch.from_numpy(voxel_labels),
            "inverse": torch.from_numpy(inverse),
            "vertex_labels": torch.from_numpy(labels),
        }
        if instance is not None:
            voxel_instance = instance[first] if self.annotated is None else first_labelled(instance, inverse,
                                                                                           len(voxels))
            # a voxel labelled wall (its first labelled vertex) belongs to no instance, whatever else it holds
            voxel_instance = instance_vertices(voxel_labels, voxel_instance)
            item.update(instance=torch.from_numpy(voxel_instance),
                        offsets=torch.from_numpy(instance_offsets(voxels, voxel_instance, self.voxel_size)),
                        vertex_instance=torch.from_numpy(instance))
        return item, first


VOXEL_KEYS = ("features", "labels", "instance", "offsets")  # one row per voxel: concatenated over the batch
VERTEX_KEYS = ("inverse", "vertex_labels", "vertex_instance")  # one entry per vertex: kept per scene


def collate(items: list[dict]) -> dict:
    """Stack scenes into one sparse batch (batch index in coordinate column 0); keep per-scene vertex maps."""
    coords = torch.cat([torch.cat([torch.full((len(it["coords"]), 1), b, dtype=torch.long), it["coords"]], 1)
                        for b, it in enumerate(items)])
    batch = {"scene_ids": [it["scene_id"] for it in items], "coords": coords,
             "voxel_counts": [len(it["coords"]) for it in items]}
    batch.update({key: torch.cat([it[key] for it in items]) for key in VOXEL_KEYS if key in items[0]})
    batch.update({key: [it[key] for it in items] for key in VERTEX_KEYS if key in items[0]})
    return batch


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
