"""The processed scene store: `<root>/<split>/<scene>/{coord,color,segment,instance}.npy` + `meta.json`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lgseg.errors import DataError
from lgseg.fileio import atomic_dir
from lgseg.scannet.raw import RawScene

ARRAYS = ("coord", "color", "segment", "instance")


def scene_dir(root: str | Path, split: str, scene_id: str) -> Path:
    return Path(root) / split / scene_id


def write_scene(root: str | Path, split: str, scene: RawScene) -> dict:
    """Write one scene atomically (temporary folder + rename); return its meta record."""
    meta = {
        "scene_id": scene.scene_id,
        "split": split,
        "num_vertices": int(len(scene.coord)),
        "labelled": scene.segment is not None,
    }
    with atomic_dir(scene_dir(root, split, scene.scene_id)) as tmp:
        np.save(tmp / "coord.npy", np.ascontiguousarray(scene.coord, dtype=np.float32))
        np.save(tmp / "color.npy", np.ascontiguousarray(scene.color, dtype=np.uint8))
        if scene.segment is not None:
            np.save(tmp / "segment.npy", scene.segment.astype(np.int16))
            np.save(tmp / "instance.npy", scene.instance.astype(np.int32))
            meta["num_labelled_vertices"] = int((scene.segment >= 0).sum())
            meta["num_instances"] = int(scene.instance.max()) + 1 if len(scene.instance) else 0
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def read_scene(folder: str | Path, mmap: bool = True) -> dict[str, np.ndarray]:
    """Arrays of one processed scene (memory-mapped by default); unlabelled scenes lack segment/instance."""
    folder = Path(folder)
    if not (folder / "meta.json").exists():
        raise DataError(folder, "not a processed scene (no meta.json)", "re-run the preprocess rule")
    mode = "r" if mmap else None
    return {name: np.load(folder / f"{name}.npy", mmap_mode=mode) for name in ARRAYS
            if (folder / f"{name}.npy").exists()}


def scene_folders(root: str | Path, split: str, scene_ids: list[str]) -> list[Path]:
    """Folders of the listed scenes of one split, checked to exist."""
    folders = [scene_dir(root, split, scene) for scene in scene_ids]
    for folder in folders:
        if not (folder / "meta.json").exists():
            raise DataError(folder, "processed scene missing", "re-run the preprocess rule for this dataset")
    return folders
