"""Preprocessing into the processed store: layout, dtypes, split placement, errors, nothing half-written."""

import json
import subprocess
import sys

import numpy as np
import pytest

from lgseg.data.preprocess import preprocess
from lgseg.data.store import read_scene
from lgseg.errors import DataError
from conftest import write_raw_scene

TRAIN, VAL, TEST, OTHER = "scene0191_00", "scene0011_00", "scene0707_00", "scene9999_00"


def _simple_scene(raw, scene_id, labelled=True, **kwargs):
    coords = np.arange(18, dtype=float).reshape(6, 3)
    return write_raw_scene(raw, scene_id, coords, np.full((6, 3), 9), [1, 1, 2, 2, 3, 3],
                           [("chair", [1]), ("table", [2])], labelled=labelled, **kwargs)


def test_cli_writes_store_with_splits_and_dtypes(tmp_path, label_tsv):
    raw, out = tmp_path / "raw", tmp_path / "out"
    for scene in (TRAIN, VAL, OTHER):
        _simple_scene(raw, scene)
    _simple_scene(raw, TEST, labelled=False)
    result = subprocess.run([sys.executable, "-m", "lgseg", "preprocess", "--raw-dir", str(raw), "--out", str(out),
                             "--label-map", str(label_tsv), "--workers", "2", "--manifest", str(tmp_path / "m.json")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for split, scene in (("train", TRAIN), ("val", VAL), ("other", OTHER)):
        arrays = read_scene(out / split / scene)
        assert arrays["coord"].dtype == np.float32 and arrays["coord"].shape == (6, 3)
        assert arrays["color"].dtype == np.uint8 and arrays["color"].tolist() == [[9, 9, 9]] * 6
        assert arrays["segment"].dtype == np.int16 and arrays["segment"].tolist() == [1, 1, 3, 3, -1, -1]
        assert arrays["instance"].dtype == np.int32 and arrays["instance"].tolist() == [0, 0, 1, 1, -1, -1]
        meta = json.loads((out / split / scene / "meta.json").read_text())
        assert meta["num_vertices"] == 6 and meta["num_instances"] == 2 and meta["num_labelled_vertices"] == 4
    assert sorted(p.name for p in (out / "test" / TEST).iterdir()) == ["color.npy", "coord.npy", "meta.json"]
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert sorted(r["scene_id"] for r in manifest["scenes"]) == sorted([TRAIN, VAL, TEST, OTHER])
    assert "preprocess" in result.stderr and "4/4" in result.stderr  # progress bar


def _corrupt_segs(folder):
    (folder / f"{folder.name}_vh_clean_2.0.010000.segs.json").write_text(json.dumps({"segIndices": [1, 1, 2]}))


def _corrupt_aggregation(folder):
    path = folder / f"{folder.name}.aggregation.json"
    path.write_text(json.dumps({"segGroups": [{"id": 0, "label": "chair", "segments": [1, 77]}]}))


def _truncate_ply(folder):
    path = folder / f"{folder.name}_vh_clean_2.ply"
    path.write_bytes(path.read_bytes()[:-7])


def _remove_aggregation(folder):
    (folder / f"{folder.name}.aggregation.json").unlink()


@pytest.mark.parametrize("damage, message", [
    (_corrupt_segs, r"_vh_clean_2\.0\.010000\.segs\.json: segIndices has 3 entries but the mesh has 6 vertices"),
    (_corrupt_aggregation, r"\.aggregation\.json: segGroups\[0\] \('chair'\) references segment 77"),
    (_truncate_ply, r"_vh_clean_2\.ply: file truncated"),
    (_remove_aggregation, r"\.aggregation\.json: file missing for a labelled scene"),
])
def test_bad_scene_is_reported_by_file_and_nothing_half_written(tmp_path, label_tsv, damage, message):
    raw, out = tmp_path / "raw", tmp_path / "out"
    _simple_scene(raw, VAL)
    damage(_simple_scene(raw, TRAIN))
    with pytest.raises(DataError, match=f"{TRAIN}{message}"):
        preprocess(raw, out, label_map=label_tsv, manifest=tmp_path / "m.json")
    assert not (out / "train" / TRAIN).exists()
    assert (out / "val" / VAL / "meta.json").exists()  # the good scene is still done
    assert not list(out.rglob("*.tmp")) and not (tmp_path / "m.json").exists()


def test_cli_error_exit_code_and_message(tmp_path, label_tsv):
    raw = tmp_path / "raw"
    _truncate_ply(_simple_scene(raw, TRAIN))
    result = subprocess.run([sys.executable, "-m", "lgseg", "preprocess", "--raw-dir", str(raw), "--out",
                             str(tmp_path / "out"), "--label-map", str(label_tsv)], capture_output=True, text=True)
    assert result.returncode == 1
    assert f"{TRAIN}_vh_clean_2.ply: file truncated" in result.stderr and "Traceback" not in result.stderr


def test_rerun_replaces_scene_atomically(tmp_path, label_tsv):
    raw, out = tmp_path / "raw", tmp_path / "out"
    _simple_scene(raw, TRAIN)
    preprocess(raw, out, label_map=label_tsv)
    (out / "train" / TRAIN / "stale.npy").write_bytes(b"x")
    preprocess(raw, out, label_map=label_tsv)
    assert not (out / "train" / TRAIN / "stale.npy").exists()
    assert sorted(p.name for p in (out / "train").iterdir()) == [TRAIN]
