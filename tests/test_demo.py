"""Demo dataset: genuine raw format, deterministic, long-tailed, and read back exactly by the data layer."""

import csv
import json

import numpy as np

from lgseg.data.preprocess import preprocess
from lgseg.data.store import read_scene
from lgseg.scannet.demo import DemoSettings, class_catalogue, demo_scene_ids, generate_scene, write_demo_dataset
from lgseg.scannet.labels import LABEL_TSV_NAME, read_label_table, resource_path, scannet200
from lgseg.scannet.ply import read_ply
from lgseg.scannet.raw import apply_transform
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


def _kind_of_class() -> dict[str, str]:
    """Class name -> kind, read straight from the tsv (nyu40class of the first row of the class id; catch-alls: the
    class itself)."""
    nyu40_of_id: dict[int, str] = {}
    for row in csv.DictReader(resource_path(LABEL_TSV_NAME).read_text().splitlines(), delimiter="\t"):
        nyu40_of_id.setdefault(int(row["id"]), row["nyu40class"])
    classes = scannet200()
    return {name: name if nyu40_of_id[i].startswith("other") else nyu40_of_id[i]
            for name, i in zip(classes.class_names, classes.class_ids)}


def test_classes_of_one_nyu40_kind_share_a_family_and_differ_by_subtler_cues():
    looks = dict(zip(scannet200().class_names, class_catalogue()))
    kind_of = _kind_of_class()
    members: dict[str, list[str]] = {}
    for name, kind in kind_of.items():
        members.setdefault(kind, []).append(name)
    assert {"chair", "office chair", "armchair", "sofa chair", "folded chair"} == set(members["chair"])
    assert len(members) > 150  # the 137 catch-all classes are kinds of their own
    within, between = [], []
    for kind, names in members.items():
        assert len({looks[n].family for n in names}) == 1, kind
        assert all(looks[n].kind == kind for n in names)
        within += [np.linalg.norm(looks[a].color - looks[b].color) for a in names for b in names if a < b]
    kinds = sorted(members)
    for a in kinds:
        for b in kinds:
            if a < b:
                between.append(np.linalg.norm(looks[members[a][0]].color - looks[members[b][0]].color))
    assert np.median(within) < 0.5 * np.median(between)


def test_scenes_draw_classes_from_the_catalogue_whatever_the_seed():
    classes = scannet200()
    catalogue = class_catalogue()
    chair = classes.class_names.index("chair")
    colours = []
    for seed in (0, 7):
        settings = DemoSettings(seed=seed, vertex_spacing=0.1, objects_per_room=(30, 30))
        for scene_id in demo_scene_ids(settings)["train"][:20]:
            scene = generate_scene(scene_id, settings)
            colours.append(scene.color[scene.segment == chair].astype(float))
    per_seed = [np.concatenate(colours[:20]).mean(0), np.concatenate(colours[20:]).mean(0)]
    for mean in per_seed:  # object tones vary by sd 14 around the class colour: the mean of many chairs is close
        assert np.abs(mean - catalogue[chair].color).max() < 10


def test_wall_mounted_objects_stand_out_of_the_wall_and_ceilings_are_partial():
    settings = DemoSettings(seed=0, vertex_spacing=0.05, objects_per_room=(30, 30))
    classes = scannet200()
    mounted = {i for i, look in enumerate(class_catalogue()) if look.wall_mounted}
    ceiling, floor = classes.class_names.index("ceiling"), classes.class_names.index("floor")
    depths, ceiling_share = [], []
    for scene_id in demo_scene_ids(settings)["train"][:20]:
        scene = generate_scene(scene_id, settings)
        coord = apply_transform(scene.alignment, scene.raw_coord)
        lo, hi = coord[:, :2].min(0), coord[:, :2].max(0)
        wall_distance = np.minimum(coord[:, :2] - lo, hi - coord[:, :2]).min(1)
        for instance in np.unique(scene.instance[np.isin(scene.segment, list(mounted))]):
            depths.append(wall_distance[scene.instance == instance].max())
        ceiling_share.append((scene.segment == ceiling).sum() / max((scene.segment == floor).sum(), 1))
    assert len(depths) > 20 and min(depths) >= 0.07  # >= 8 cm deep, less the 3 mm vertex noise
    assert np.mean(ceiling_share) < 0.4 and max(ceiling_share) < 0.7  # ScanNet's scans hold little ceiling
