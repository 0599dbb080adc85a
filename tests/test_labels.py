"""Label merging to ScanNet200 on hand-built scenes whose labels are known by construction."""

import numpy as np
import pytest

from lgseg.errors import DataError
from lgseg.scannet.labels import read_label_table, scannet200, write_label_map
from lgseg.scannet.raw import SceneGroup, merge_labels, read_axis_alignment, read_scene
from conftest import write_raw_scene

CHAIR, TABLE = 1, 3  # raw ids 2 and 4 are the 2nd and 4th smallest ScanNet200 ids


def test_scannet200_classes_are_ascending_raw_ids_with_66_68_66_split():
    classes = scannet200()
    assert len(classes.class_ids) == 200 and list(classes.class_ids) == sorted(classes.class_ids)
    assert classes.class_names[:4] == ("wall", "chair", "floor", "table")
    assert classes.class_ids[-1] == 1191 and classes.class_names[-1] == "mattress"
    assert [len(classes.indices_of_group(g)) for g in ("head", "common", "tail")] == [66, 68, 66]
    assert classes.frequency_group[classes.class_names.index("wall")] == "head"
    assert classes.frequency_group[classes.class_names.index("luggage")] == "tail"


def test_label_table_maps_raw_category_through_id(label_tsv):
    index = read_label_table(label_tsv).class_index_of_label()
    assert index["chair"] == CHAIR and index["stack of chairs"] == CHAIR  # synonym, same id 2
    assert index["wall"] == 0 and index["mattress"] == 199
    assert index["stick"] == scannet200().class_ids.index(1163)  # row with category 'stick', id 1163 'object'
    assert "wardrobe cabinet" not in index  # id 1177, not one of the 200
    assert len(index) == 246  # raw categories that reach the 200 classes


def _groups(*pairs):
    return [SceneGroup(label, np.array(segments)) for label, segments in pairs]


def test_merge_rules_overlap_unknown_and_non200(label_tsv):
    index = read_label_table(label_tsv).class_index_of_label()
    seg = np.array([10, 10, 20, 20, 30, 30, 40, 40, 50, 50, 60, 60])
    groups = _groups(("chair", [10]), ("stack of chairs", [20]), ("wardrobe cabinet", [30]), ("foobar", [40]),
                     ("table", [50, 20]))  # the last group takes segment 20 from group 1, which is left empty
    segment, instance = merge_labels(seg, groups, index)
    assert segment.dtype == np.int16 and instance.dtype == np.int32
    assert segment.tolist() == [CHAIR, CHAIR, TABLE, TABLE, -1, -1, -1, -1, TABLE, TABLE, -1, -1]
    # one id per segGroup that keeps vertices, consecutive from 0 in file order; -1 where no group
    assert instance.tolist() == [0, 0, 3, 3, 1, 1, 2, 2, 3, 3, -1, -1]


def test_merge_rejects_unknown_segment(label_tsv):
    index = read_label_table(label_tsv).class_index_of_label()
    with pytest.raises(DataError, match=r"agg.json: segGroups\[1\] \('table'\) references segment 99"):
        merge_labels(np.array([1, 1, 2]), _groups(("chair", [1]), ("table", [2, 99])), index, "agg.json")


def test_axis_alignment_applied_and_identity_when_absent(tmp_path, label_tsv):
    index = read_label_table(label_tsv).class_index_of_label()
    rot90_shift = [[0, -1, 0, 1], [1, 0, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1]]
    coords = [[1, 0, 0], [0, 1, 0], [0, 0, 1]]
    folder = write_raw_scene(tmp_path, "scene0000_00", coords, [[1, 2, 3]] * 3, [5, 5, 5], [("chair", [5])],
                             alignment=rot90_shift)
    scene = read_scene(folder, index)
    np.testing.assert_allclose(scene.coord, [[1, 3, 3], [0, 2, 3], [1, 2, 4]], atol=1e-6)
    assert scene.coord.dtype == np.float32
    (folder / "scene0000_00.txt").unlink()
    np.testing.assert_array_equal(read_scene(folder, index).coord, np.asarray(coords, dtype=np.float32))
    assert np.array_equal(read_axis_alignment(folder / "absent.txt"), np.eye(4))


def test_bad_axis_alignment_is_reported(tmp_path):
    (tmp_path / "s.txt").write_text("axisAlignment = 1 0 0\n")
    with pytest.raises(DataError, match=r"s.txt: axisAlignment must hold 16 numbers"):
        read_axis_alignment(tmp_path / "s.txt")


def test_ascii_and_binary_scenes_give_identical_arrays(tmp_path, label_tsv):
    index = read_label_table(label_tsv).class_index_of_label()
    rng = np.random.default_rng(3)
    coords, colors = rng.normal(size=(40, 3)), rng.integers(0, 256, (40, 3))
    seg = np.repeat(np.arange(8) * 7, 5)
    groups = [("chair", [0, 7]), ("door", [14]), ("books", [21, 28])]
    align = np.eye(4)
    align[:3, 3] = [0.5, -1, 2]
    scenes = [read_scene(write_raw_scene(tmp_path / kind, "scene0001_00", coords, colors, seg, groups, align,
                                         ascii=kind == "ascii"), index) for kind in ("ascii", "binary")]
    for name in ("coord", "color", "segment", "instance"):
        np.testing.assert_array_equal(getattr(scenes[0], name), getattr(scenes[1], name))


def test_written_label_map_is_a_valid_label_table(tmp_path, label_tsv):
    write_label_map(label_tsv, tmp_path / "map.tsv")
    rows = [line.split("\t") for line in (tmp_path / "map.tsv").read_text().splitlines()]
    assert rows[0] == ["raw_category", "id", "class_index", "class_name", "frequency_group"]
    by_raw = {r[0]: r for r in rows[1:]}
    assert by_raw["stack of chairs"][1:] == ["2", "1", "chair", "head"]
    assert by_raw["wardrobe cabinet"][1:] == ["1177", "-1", "", ""]
    assert read_label_table(tmp_path / "map.tsv").class_index_of_label() == \
        read_label_table(label_tsv).class_index_of_label()


def test_label_map_missing_classes_is_an_error(tmp_path):
    (tmp_path / "small.tsv").write_text("id\traw_category\n2\tchair\n")
    with pytest.raises(DataError, match="small.tsv: 199 ScanNet200 classes have no raw_category"):
        write_label_map(tmp_path / "small.tsv", tmp_path / "out.tsv")
