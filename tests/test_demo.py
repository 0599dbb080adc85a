"""Demo dataset: genuine raw format, deterministic, long-tailed, and read back exactly by the data layer."""

import json

import numpy as np

from lgseg.data.preprocess import preprocess
from lgseg.data.store import read_scene
from lgseg.scannet.demo import DemoSettings, demo_scene_ids, generate_scene, write_demo_dataset
from lgseg.scannet.labels import LABEL_TSV_NAME, read_label_table, resource_path, scannet200
from lgseg.scannet.ply import read_ply
from lgseg.scannet.splits import official_split

SMALL = DemoSettings(seed=3, num_train=3, num_val=2, num_test=1, vertex_spacing=0.1)


def test_scene_is_deterministic_and_seed_dependent():
    a, b = generate_scene("scene0191_00", SMALL), generate_scene("scene0191_00", SMALL)
    np.testing.assert_array_equal(a.raw_coord, b.raw_coord)
    np.testing.assert_array_equal(a.segment, b.segment)
    other = generate_scene("scene0191_00", DemoSettings(seed=4, vertex_spacing=0.1))
    assert len(other.raw_coord) != len(a.raw_coord) or not np.array_equal(other.raw_coord, a.raw_coord)


def test_demo_ids_follow_the_official_lists():
    ids = demo_scene_ids(SMALL)
    assert [len(ids[s]) for s in ("train", "val", "test")] == [3, 2, 1]
    assert all(official_split(scene) == split for split, scenes in ids.items() for scene in scenes)


def test_written_demo_is_read_back_exactly_through_the_normal_path(tmp_path):
    raw = tmp_path / "raw"
    write_demo_dataset(raw, SMALL)
    ids = demo_scene_ids(SMALL)
    test_scene = ids["test"][0]
    assert sorted(p.name for p in (raw / "scans_test" / test_scene).iterdir()) == \
        [f"{test_scene}.txt", f"{test_scene}_vh_clean_2.ply"]
    scene_id = ids["train"][0]
    folder = raw / "scans" / scene_id
    header = (folder / f"{scene_id}_vh_clean_2.ply").read_bytes()[:400]
    assert b"format binary_little_endian 1.0" in header and b"property list uchar int vertex_indices" in header
    assert len(read_ply(folder / f"{scene_id}_vh_clean_2.ply").faces) > 0
    align = (folder / f"{scene_id}.txt").read_text().splitlines()[0]
    assert align.startswith("axisAlignment = ") and not np.allclose(
        np.array(align.split("=")[1].split(), float).reshape(4, 4), np.eye(4))
    labels = {g["label"] for g in json.loads((folder / f"{scene_id}.aggregation.json").read_text())["segGroups"]}
    assert labels <= set(read_label_table(raw / "scannetv2-labels.combined.tsv").raw_category_to_id)

    preprocess(raw, tmp_path / "out")
    for split in ("train", "val"):
        for scene in ids[split]:
            truth = generate_scene(scene, SMALL)
            arrays = read_scene(tmp_path / "out" / split / scene)
            np.testing.assert_array_equal(arrays["segment"], truth.segment)
            np.testing.assert_array_equal(arrays["instance"], truth.instance)
            aligned = truth.raw_coord @ truth.alignment[:3, :3].T + truth.alignment[:3, 3]
            np.testing.assert_allclose(arrays["coord"], aligned, atol=1e-4)
            assert arrays["coord"][:, 2].min() > -0.05  # axis-aligned: floor at z = 0


def test_class_frequencies_have_a_long_tail_with_synonyms():
    settings = DemoSettings(seed=0, vertex_spacing=0.25)
    classes = scannet200()
    seen_train, seen_val, labels = set(), set(), set()
    ids = demo_scene_ids(settings)
    for split in ("train", "val"):
        for scene in ids[split]:
            s = generate_scene(scene, settings)
            present = set(np.unique(s.segment[s.segment >= 0]).tolist())
            (seen_train if split == "train" else seen_val).update(present)
            labels.update(g["label"] for g in s.groups)
    for seen in (seen_train, seen_val):
        groups = {classes.frequency_group[i] for i in seen}
        assert groups == {"head", "common", "tail"}
    assert len(seen_train) > 60
    assert {"wall", "floor", "ceiling"} <= labels
    assert labels & {"books", "pillows", "doors", "stack of chairs", "cabinets", "boxes"}  # tsv synonyms occur
    benchmark_labels = read_label_table(resource_path(LABEL_TSV_NAME)).class_index_of_label()
    assert labels - set(benchmark_labels)  # some objects carry categories outside the 200 classes
