"""Read one raw ScanNet scene folder and merge its annotations into ScanNet200 per-vertex labels."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lgseg.errors import DataError
from lgseg.scannet.labels import IGNORE_INDEX
from lgseg.scannet.ply import mesh_colors, mesh_coords, read_ply

MESH_SUFFIX = "_vh_clean_2.ply"
SEGS_SUFFIX = "_vh_clean_2.0.010000.segs.json"
AGGREGATION_SUFFIX = ".aggregation.json"
META_SUFFIX = ".txt"
LABELLED_SUFFIXES = (MESH_SUFFIX, SEGS_SUFFIX, AGGREGATION_SUFFIX, META_SUFFIX)
UNLABELLED_SUFFIXES = (MESH_SUFFIX, META_SUFFIX)
_FIX = "re-download the scene (or re-run the download rule)"


@dataclass
class SceneGroup:
    """One segGroup of an aggregation file: an annotated object made of over-segmentation segments."""

    label: str
    segments: np.ndarray


@dataclass
class RawScene:
    """Per-vertex arrays of one scene; segment/instance are None for unlabelled (test) scenes."""

    scene_id: str
    coord: np.ndarray  # float32 N x 3, axis-aligned
    color: np.ndarray  # uint8 N x 3
    segment: np.ndarray | None  # int16 N, class index 0..199 or -1
    instance: np.ndarray | None  # int32 N, 0.. consecutive or -1


def read_axis_alignment(path: str | Path) -> np.ndarray:
    """4 x 4 matrix from the `axisAlignment = ...` line of `<scene>.txt`; identity when absent."""
    path = Path(path)
    if not path.exists():
        return np.eye(4)
    for line in path.read_text(errors="replace").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "axisAlignment":
            try:
                numbers = [float(word) for word in value.split()]
            except ValueError:
                numbers = []
            if len(numbers) != 16:
                raise DataError(path, f"axisAlignment must hold 16 numbers, found '{value.strip()}'", _FIX)
            return np.asarray(numbers, dtype=np.float64).reshape(4, 4)
    return np.eye(4)


def apply_transform(matrix: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Apply a 4 x 4 homogeneous transform to N x 3 points."""
    return coords @ matrix[:3, :3].T + matrix[:3, 3]


def _load_json(path: Path, key: str):
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(path, "file not found", _FIX) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(path, f"not valid JSON ({err})", _FIX) from None
    if not isinstance(content, dict) or key not in content:
        raise DataError(path, f"no '{key}' entry", _FIX)
    return content[key]


def read_segment_indices(path: str | Path, num_vertices: int) -> np.ndarray:
    """Over-segmentation id of every vertex (`segIndices`), checked against the mesh vertex count."""
    path = Path(path)
    seg_indices = np.asarray(_load_json(path, "segIndices"), dtype=np.int64)
    if seg_indices.ndim != 1 or len(seg_indices) != num_vertices:
        raise DataError(path, f"segIndices has {seg_indices.size} entries but the mesh has {num_vertices} vertices",
                        "the segs file does not belong to this mesh; " + _FIX)
    return seg_indices


def read_aggregation(path: str | Path) -> list[SceneGroup]:
    """The segGroups of an aggregation file, in file order."""
    path = Path(path)
    groups = []
    for k, group in enumerate(_load_json(path, "segGroups")):
        if not isinstance(group, dict) or "label" not in group or "segments" not in group:
            raise DataError(path, f"segGroups[{k}] lacks 'label' or 'segments'", _FIX)
        groups.append(SceneGroup(label=str(group["label"]), segments=np.asarray(group["segments"], dtype=np.int64)))
    return groups


def merge_labels(seg_indices: np.ndarray, groups: list[SceneGroup], class_index_of_label: dict[str, int],
                 aggregation_path: str | Path = "") -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex class index (int16, -1 ignore) and instance id (int32, -1 none).

    Later segGroups overwrite earlier ones on shared segments. Instance ids number the segGroups that keep at
    least one vertex, consecutively from 0 in file order.
    """
    segment_ids, vertex_to_segment = np.unique(seg_indices, return_inverse=True)
    group_of_segment = np.full(len(segment_ids), -1, dtype=np.int64)
    class_of_group = np.full(len(groups) + 1, IGNORE_INDEX, dtype=np.int16)  # last slot: no group
    for g, group in enumerate(groups):
        if group.segments.size:
            position = np.searchsorted(segment_ids, group.segments).clip(max=len(segment_ids) - 1)
            unknown = segment_ids[position] != group.segments
            if unknown.any():
                raise DataError(aggregation_path, f"segGroups[{g}] ('{group.label}') references segment "
                                f"{int(group.segments[unknown][0])}, which the segs file does not contain",
                                "the aggregation does not belong to this mesh; " + _FIX)
            group_of_segment[position] = g
        class_of_group[g] = class_index_of_label.get(group.label, IGNORE_INDEX)
    vertex_group = group_of_segment[vertex_to_segment]
    segment = class_of_group[vertex_group]  # -1 indexes the "no group" slot
    present = np.zeros(len(groups) + 1, dtype=bool)
    present[vertex_group] = True
    present[-1] = False
    instance_of_group = np.full(len(groups) + 1, -1, dtype=np.int32)
    instance_of_group[present] = np.arange(int(present.sum()), dtype=np.int32)
    return segment, instance_of_group[vertex_group]


def find_scene_dir(raw_dir: str | Path, scene_id: str) -> tuple[Path, bool]:
    """Folder of a scene in the official layout and whether it is labelled (`scans/`) or not (`scans_test/`)."""
    raw_dir = Path(raw_dir)
    for sub, labelled in (("scans", True), ("scans_test", False)):
        if (raw_dir / sub / scene_id).is_dir():
            return raw_dir / sub / scene_id, labelled
    raise DataError(raw_dir / "scans" / scene_id, "scene folder not found (looked in scans/ and scans_test/)",
                    "download the scene or remove it from the scene list")


def read_scene(scene_dir: str | Path, class_index_of_label: dict[str, int], labelled: bool = True) -> RawScene:
    """Read, axis-align and label one scene folder `.../<scene>/`."""
    scene_dir = Path(scene_dir)
    scene_id = scene_dir.name
    mesh_path = scene_dir / f"{scene_id}{MESH_SUFFIX}"
    if labelled:
        for suffix in (SEGS_SUFFIX, AGGREGATION_SUFFIX):
            if not (scene_dir / f"{scene_id}{suffix}").exists():
                raise DataError(scene_dir / f"{scene_id}{suffix}", "file missing for a labelled scene",
                                "download it (file types _vh_clean_2.0.010000.segs.json and .aggregation.json)")
    mesh = read_ply(mesh_path)
    alignment = read_axis_alignment(scene_dir / f"{scene_id}{META_SUFFIX}")
    coord = apply_transform(alignment, mesh_coords(mesh)).astype(np.float32)
    color = mesh_colors(mesh, mesh_path)
    segment = instance = None
    if labelled:
        seg_indices = read_segment_indices(scene_dir / f"{scene_id}{SEGS_SUFFIX}", len(coord))
        aggregation_path = scene_dir / f"{scene_id}{AGGREGATION_SUFFIX}"
        segment, instance = merge_labels(seg_indices, read_aggregation(aggregation_path), class_index_of_label,
                                         aggregation_path)
    return RawScene(scene_id=scene_id, coord=coord, color=color, segment=segment, instance=instance)
