"""Limited-annotation masks: per instance keep max(5, round(ratio * n)) labelled vertices chosen by FPS."""

from __future__ import annotations

from pathlib import Path

import numba
import numpy as np
from lgseg.data.store import read_scene
from lgseg.fileio import write_npz
from lgseg.parallel import map_with_progress


@numba.njit(cache=True)
def _fps_loop(points: np.ndarray, num_samples: int, start: int) -> np.ndarray:
    n = points.shape[0]
    chosen = np.empty(num_samples, dtype=np.int64)
    distance = np.full(n, np.inf)
    current = start
    for i in range(num_samples):
        chosen[i] = current
        distance[current] = -1.0  # stays -1 under the minimum below: never chosen twice
        best, best_distance = 0, -np.inf
        for j in range(n):
            if distance[j] >= 0.0:
                dx = points[j, 0] - points[current, 0]
                dy = points[j, 1] - points[current, 1]
                dz = points[j, 2] - points[current, 2]
                d = dx * dx + dy * dy + dz * dz
                if d < distance[j]:
                    distance[j] = d
            if distance[j] > best_distance:  # strict: ties go to the lowest index
                best, best_distance = j, distance[j]
        current = best
    return chosen


def farthest_point_sampling(points: np.ndarray, num_samples: int, start: int = 0) -> np.ndarray:
    """Indices of `num_samples` points, each the farthest (Euclidean) from those chosen before; starts at `start`.

    Deterministic: ties go to the lowest index. Chosen points are never chosen again, even among duplicates.
    """
    points = np.ascontiguousarray(points, dtype=np.float64)
    return _fps_loop(points, min(int(num_samples), len(points)), int(start))


def num_annotated(num_vertices: int, ratio: float, min_points: int = 5) -> int:
    """max(min_points, round(ratio * n)), capped at n (Python rounding, half to even, as the original)."""
    return min(num_vertices, max(min_points, round(ratio * num_vertices)))


def scene_annotation_mask(coord: np.ndarray, segment: np.ndarray, instance: np.ndarray, ratio: float,
                          min_points: int = 5) -> np.ndarray:
    """Sorted vertex indices kept for one scene: FPS inside every instance over its labelled vertices."""
    labelled = np.flatnonzero((segment >= 0) & (instance >= 0))
    order = labelled[np.argsort(instance[labelled], kind="stable")]  # stable: ascending vertex index per instance
    boundaries = np.flatnonzero(np.diff(instance[order])) + 1
    kept = []
    for members in np.split(order, boundaries):
        if members.size:
            picked = farthest_point_sampling(coord[members], num_annotated(members.size, ratio, min_points))
            kept.append(members[picked])
    return np.sort(np.concatenate(kept)).astype(np.int32) if kept else np.zeros(0, dtype=np.int32)


def _mask_one(job: tuple[str, float, int]) -> tuple[str, np.ndarray]:
    folder, ratio, min_points = job
    arrays = read_scene(folder)
    return Path(folder).name, scene_annotation_mask(arrays["coord"], arrays["segment"], arrays["instance"],
                                                    ratio, min_points)


def write_annotation_masks(scene_folders: list[Path], ratio: float, out: str | Path, min_points: int = 5,
                           workers: int = 1) -> dict[str, np.ndarray]:
    """Compute masks for the given processed scenes and store them as one `.npz` (scene id -> indices)."""
    jobs = [(str(folder), ratio, min_points) for folder in scene_folders]
    masks = dict(map_with_progress(_mask_one, jobs, workers, f"annotation masks {ratio:g}"))
    write_npz(out, {scene: masks[scene] for scene in sorted(masks)}, compress=True)
    return masks
