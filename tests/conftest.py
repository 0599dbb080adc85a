"""Shared helpers: hand-built raw ScanNet scenes written with the independent `plyfile` package."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import plyfile
import pytest

REPO = Path(__file__).resolve().parents[1]


def write_raw_scene(raw_dir: Path, scene_id: str, coords, colors, seg_indices=None, groups=None,
                    alignment=None, labelled: bool = True, ascii: bool = False, faces=None) -> Path:
    """Write one scene folder in the official layout; groups = [(label, [segment ids]), ...]."""
    folder = Path(raw_dir) / ("scans" if labelled else "scans_test") / scene_id
    folder.mkdir(parents=True, exist_ok=True)
    coords = np.asarray(coords, dtype=np.float32)
    colors = np.asarray(colors, dtype=np.uint8)
    vertex = np.empty(len(coords), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"),
                                          ("blue", "u1"), ("alpha", "u1")])
    vertex["x"], vertex["y"], vertex["z"] = coords.T
    vertex["red"], vertex["green"], vertex["blue"] = colors.T
    vertex["alpha"] = 255
    if faces is None:
        faces = [[i, (i + 1) % len(coords), (i + 2) % len(coords)] for i in range(len(coords))]
    face = np.empty(len(faces), dtype=[("vertex_indices", "i4", (3,))])
    face["vertex_indices"] = faces
    plyfile.PlyData([plyfile.PlyElement.describe(vertex, "vertex"),
                     plyfile.PlyElement.describe(face, "face", len_types={"vertex_indices": "u1"})],
                    text=ascii).write(str(folder / f"{scene_id}_vh_clean_2.ply"))
    if alignment is not None:
        numbers = " ".join(repr(float(x)) for x in np.asarray(alignment).ravel())
        (folder / f"{scene_id}.txt").write_text(f"axisAlignment = {numbers}\nsceneType = Office\n")
    if labelled:
        (folder / f"{scene_id}_vh_clean_2.0.010000.segs.json").write_text(
            json.dumps({"sceneId": scene_id, "segIndices": [int(s) for s in seg_indices]}))
        seg_groups = [{"id": k, "objectId": k, "label": label, "segments": list(segments)}
                      for k, (label, segments) in enumerate(groups)]
        (folder / f"{scene_id}.aggregation.json").write_text(json.dumps({"sceneId": scene_id, "segGroups": seg_groups}))
    return folder


@pytest.fixture
def label_tsv() -> Path:
    return REPO / "src" / "lgseg" / "resources" / "scannet_meta" / "scannetv2-labels.combined.tsv"


def layout(root: Path):
    """The data-product paths of the demo dataset under `root` (data_dir root/data, runs_dir root/runs)."""
    from lgseg.paths import Layout

    return Layout(str(root / "data"), str(root / "runs"), str(root / "results"), "demo")


def processed_demo_store(root: Path, settings) -> Path:
    """Demo rooms of `settings` preprocessed into the demo store under `root` with split lists, as the engine
    expects."""
    from lgseg.data.preprocess import preprocess
    from lgseg.scannet.demo import demo_scene_ids, write_demo_dataset

    write_demo_dataset(root / "raw", settings)
    paths = layout(root)
    preprocess(root / "raw", paths.processed)
    for split, scenes in demo_scene_ids(settings).items():
        paths.split_list(split).parent.mkdir(exist_ok=True)
        paths.split_list(split).write_text("".join(f"{s}\n" for s in scenes))
    return paths.processed
