"""Class statistics against hand counts, and the Fig. 4 plot."""

import numpy as np
import pandas as pd

from lgseg.data.class_stats import class_statistics, scene_class_counts
from lgseg.data.store import write_scene
from lgseg.report.figures import plot_class_distribution
from lgseg.scannet.raw import RawScene


def test_scene_class_counts_by_hand():
    segment = np.array([0, 0, 0, 1, 1, -1, 1, 2, -1], dtype=np.int16)
    instance = np.array([0, 0, 1, 2, 2, 3, 4, -1, -1], dtype=np.int32)
    instances, vertices = scene_class_counts(segment, instance, 4)
    # class 0: instances 0 and 1; class 1: instances 2 and 4; class 2: one vertex without instance; 3 (ignored) not
    assert instances.tolist() == [2, 2, 0, 0]
    assert vertices.tolist() == [3, 3, 1, 0]


def test_class_statistics_over_scenes_and_figure(tmp_path):
    def scene(name, segment, instance):
        n = len(segment)
        return RawScene(name, np.zeros((n, 3), np.float32), np.zeros((n, 3), np.uint8),
                        np.array(segment, np.int16), np.array(instance, np.int32))

    folders = []
    for s in (scene("scene0000_00", [0, 0, 199, 5], [0, 0, 1, 2]), scene("scene0001_00", [199, 199, -1], [0, 1, 2])):
        write_scene(tmp_path, "train", s)
        folders.append(tmp_path / "train" / s.scene_id)
    table = class_statistics(folders)
    assert len(table) == 200 and list(table.columns)[:4] == ["class_index", "class_id", "class_name",
                                                              "frequency_group"]
    rows = table.set_index("class_name")
    assert rows.loc["wall", ["num_instances", "num_vertices"]].tolist() == [1, 2]
    assert rows.loc["mattress", ["num_instances", "num_vertices"]].tolist() == [3, 3]
    assert rows.loc["couch", ["num_instances", "num_vertices"]].tolist() == [1, 1]
    assert table["num_instances"].sum() == 5 and table["num_vertices"].sum() == 6
    out = tmp_path / "fig4.png"
    plot_class_distribution(table, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    pd.testing.assert_frame_equal(table, class_statistics(folders))
