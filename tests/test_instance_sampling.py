"""Instance sampling: the tail-instance bank and placement of bank instances into train scenes."""

import numpy as np
import pytest

from lgseg.data.class_stats import class_statistics, write_class_statistics
from lgseg.data.dataset import SceneDataset
from lgseg.data.instance_bank import build_instance_bank, read_instance_bank, write_instance_bank
from lgseg.data.instance_sampling import InstanceSampling, place_instances
from lgseg.data.store import scene_dir, write_scene
from lgseg.errors import DataError
from lgseg.scannet.labels import scannet200
from lgseg.scannet.raw import RawScene

NAMES = scannet200().class_names
WALL, FLOOR, CEILING, TABLE, CABINET, CHAIR = (NAMES.index(n) for n in
                                               ("wall", "floor", "ceiling", "table", "cabinet", "chair"))
TAIL_A, TAIL_B = scannet200().indices_of_group("tail")[:2]
OBSTACLES = (3, 4, 5)  # instance ids of the room's furniture (table, cabinet, an object outside the 200 classes)
PLATFORM_HEIGHT = 0.2


def _grid(lo, hi, step):
    """Points on a regular grid filling the axis-aligned box lo..hi (a flat box gives a surface)."""
    axes = [np.arange(a, b + step / 2, step) for a, b in zip(lo, hi)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def _scene(parts, seed=0):
    """Arrays of a scene from [(points, class index, instance id)]."""
    rng = np.random.default_rng(seed)
    coord = np.concatenate([p for p, _, _ in parts])
    segment = np.concatenate([np.full(len(p), c) for p, c, _ in parts])
    instance = np.concatenate([np.full(len(p), i) for p, _, i in parts])
    return {"coord": coord.astype(np.float64), "color": rng.integers(0, 256, (len(coord), 3)).astype(np.uint8),
            "segment": segment.astype(np.int16), "instance": instance.astype(np.int32)}


def _room():
    """4 x 4 m floor, a partition wall, a ceiling, three obstacles and an unlabelled raised platform."""
    return _scene([
        (_grid([0, 0, 0], [4, 4, 0], 0.05), FLOOR, 0),
        (_grid([2, 0, 0], [2, 2, 2.4], 0.05), WALL, 1),
        (_grid([0, 0, 2.5], [4, 4, 2.5], 0.1), CEILING, 2),
        (_grid([0.5, 2.5, 0], [1.5, 3.3, 0.75], 0.05), TABLE, 3),
        (_grid([3.0, 3.0, 0], [3.6, 3.8, 1.0], 0.05), CABINET, 4),
        (_grid([0.3, 0.3, 0], [0.8, 0.8, 0.5], 0.05), -1, 5),
        (_grid([2.6, 0.4, PLATFORM_HEIGHT], [3.8, 1.6, PLATFORM_HEIGHT], 0.05), -1, -1),
    ])


def _sources():
    """Train scenes holding two instances of tail class A, one of tail class B and a (head) chair."""
    return {
        "src_a": _scene([(_grid([0, 0, 0], [2, 2, 0], 0.05), FLOOR, 0),
                         (_grid([0.2, 0.2, 0], [0.5, 0.4, 0.4], 0.05), TAIL_A, 1),
                         (_grid([1.0, 1.2, 0.3], [1.2, 1.5, 0.5], 0.05), TAIL_A, 2),
                         (_grid([1.4, 0.2, 0], [1.8, 0.6, 0.9], 0.05), CHAIR, 3)], seed=1),
        "src_b": _scene([(_grid([0, 0, 0], [2, 2, 0], 0.05), FLOOR, 0),
                         (_grid([0.6, 0.7, 0], [1.1, 0.9, 0.3], 0.05), TAIL_B, 1)], seed=2),
    }


def _write(root, scene_id, arrays):
    write_scene(root, "train", RawScene(scene_id, arrays["coord"].astype(np.float32), arrays["color"],
                                        arrays["segment"], arrays["instance"]))
    return scene_dir(root, "train", scene_id)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("store")
    folders = [_write(root, scene_id, arrays) for scene_id, arrays in {**_sources(), "room": _room()}.items()]
    write_class_statistics(class_statistics(folders), root / "stats.csv")
    write_instance_bank(build_instance_bank(folders, root / "stats.csv"), root / "bank.npz")
    return root, folders


@pytest.fixture(scope="module")
def bank(store):
    return read_instance_bank(store[0] / "bank.npz")


def test_bank_round_trips_the_tail_instances(bank):
    sources = _sources()
    assert sorted(zip(bank.scene_id.tolist(), bank.source_instance.tolist())) == [("src_a", 1), ("src_a", 2),
                                                                                 ("src_b", 1)]
    for k in range(len(bank)):
        scene = sources[bank.scene_id[k]]
        members = scene["instance"] == bank.source_instance[k]
        coord, color, segment = bank.points(k)
        np.testing.assert_allclose(coord + bank.origin[k], scene["coord"][members], atol=1e-5)
        np.testing.assert_array_equal(color, scene["color"][members])
        assert set(segment.tolist()) == {bank.class_index[k]} == set(scene["segment"][members].tolist())
        # relative to the box bottom-centre: the box is centred in x, y and starts at z = 0
        np.testing.assert_allclose(coord[:, :2].min(0) + coord[:, :2].max(0), [0, 0], atol=1e-6)
        assert coord[:, 2].min() == 0
    # inverse instance count over the tail classes: A has 2 instances, B has 1
    expected = np.zeros(len(NAMES))
    expected[[TAIL_A, TAIL_B]] = [0.5 / 1.5, 1 / 1.5]
    np.testing.assert_allclose(bank.class_weights, expected)


def test_uniform_class_weights_and_limited_annotation(store, tmp_path):
    root, folders = store
    masks = {folder.name: np.array([0, 1, 2]) for folder in folders}
    np.savez(tmp_path / "masks.npz", **masks)
    bank = build_instance_bank(folders, root / "stats.csv", power=0.0, annotation_masks=tmp_path / "masks.npz")
    np.testing.assert_allclose(bank.class_weights[[TAIL_A, TAIL_B]], [0.5, 0.5])
    assert (bank.segment == -1).all()  # vertices 0..2 are floor vertices: every instance point is unlabelled


def test_bank_errors_name_the_file(store, tmp_path):
    root, folders = store
    (tmp_path / "stats.csv").write_text("class_index,num_instances\n0,1\n")
    with pytest.raises(DataError, match="stats.csv"):
        build_instance_bank(folders, tmp_path / "stats.csv")
    (tmp_path / "bank.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bank.npz"):
        read_instance_bank(tmp_path / "bank.npz")
    unlabelled = _room()
    write_scene(tmp_path, "train", RawScene("bare", unlabelled["coord"].astype(np.float32), unlabelled["color"],
                                            None, None))
    with pytest.raises(DataError, match="bare"):
        build_instance_bank([scene_dir(tmp_path, "train", "bare")], root / "stats.csv")


def _placed(after, scene):
    """{new instance id: row indices} of the points appended to the scene."""
    added = np.arange(len(scene["coord"]), len(after["coord"]))
    return {int(i): added[after["instance"][added] == i] for i in np.unique(after["instance"][added])}


def _xy_box(points):
    return points[:, :2].min(0), points[:, :2].max(0)


def _overlap(a, b):
    return bool(np.all(a[0] <= b[1]) and np.all(b[0] <= a[1]))


@pytest.mark.parametrize("seed", range(6))
def test_placed_instances_keep_labels_avoid_boxes_and_rest_on_the_height_map(bank, seed):
    scene = _room()
    after, placements = place_instances(scene, bank, np.random.default_rng(seed), count=6)
    assert placements
    for name in scene:
        np.testing.assert_array_equal(after[name][:len(scene["coord"])], scene[name])
    placed = _placed(after, scene)
    assert sorted(placed) == [p.instance_id for p in placements]
    assert min(placed) > scene["instance"].max() and len(set(placed)) == len(placements)
    supports = []
    for p in placements:
        rows = placed[p.instance_id]
        assert len(rows) == bank.offsets[p.bank_index + 1] - bank.offsets[p.bank_index]
        assert set(after["segment"][rows].tolist()) == {bank.class_index[p.bank_index]}
        box = _xy_box(after["coord"][rows])
        for obstacle in OBSTACLES:
            assert not _overlap(box, _xy_box(scene["coord"][scene["instance"] == obstacle]))
        for other in placed:
            if other != p.instance_id:
                assert not _overlap(box, _xy_box(after["coord"][placed[other]]))
        xy, z = scene["coord"][:, :2], scene["coord"][:, 2]
        under = np.all((xy >= box[0]) & (xy <= box[1]), axis=1)
        assert not (under & (scene["segment"] == WALL)).any()
        support = z[under & (scene["segment"] != WALL) & (scene["segment"] != CEILING)].max()
        assert after["coord"][rows, 2].min() == pytest.approx(support, abs=1e-9)
        supports.append(support)
    assert set(np.round(supports, 6)) <= {0.0, PLATFORM_HEIGHT}


def test_placements_reach_the_floor_and_the_raised_platform(bank):
    heights = set()
    for seed in range(20):
        _, placements = place_instances(_room(), bank, np.random.default_rng(seed), count=6)
        heights |= {round(float(p.box_min[2]), 6) for p in placements}
    assert heights == {0.0, PLATFORM_HEIGHT}


def test_no_free_space_means_no_instance(bank):
    scene = _scene([(_grid([0, 0, 0], [3, 3, 0], 0.05), FLOOR, 0),
                    (_grid([0, 0, 0.4], [3, 3, 0.5], 0.05), NAMES.index("bed"), 1)])
    after, placements = place_instances(scene, bank, np.random.default_rng(0), count=5)
    assert placements == []
    for name in scene:
        np.testing.assert_array_equal(after[name], scene[name])


def test_instances_stand_on_scanned_ground(bank):
    """An L-shaped floor: no box centre in the missing quadrant (with 90 % of the footprint to be covered)."""
    floor = _grid([0, 0, 0], [4, 4, 0], 0.05)
    scene = _scene([(floor[(floor[:, 0] < 2) | (floor[:, 1] < 2)], FLOOR, 0)])
    for seed in range(5):
        _, placements = place_instances(scene, bank, np.random.default_rng(seed), count=6, min_coverage=0.9)
        assert placements
        for p in placements:
            centre = (p.box_min[:2] + p.box_max[:2]) / 2
            assert not (centre[0] > 2 and centre[1] > 2)


def test_placement_is_deterministic_under_a_seed(bank):
    first, _ = place_instances(_room(), bank, np.random.default_rng(7), count=5)
    again, _ = place_instances(_room(), bank, np.random.default_rng(7), count=5)
    other, _ = place_instances(_room(), bank, np.random.default_rng(8), count=5)
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    assert len(first["coord"]) != len(other["coord"]) or not np.array_equal(first["coord"], other["coord"])


def test_scene_dataset_samples_more_voxels_of_the_bank_classes(store, bank):
    root, _ = store
    plain = SceneDataset(root, "train", ["room"], 0.05, seed=3)
    sampled = SceneDataset(root, "train", ["room"], 0.05, seed=3,
                           instance_sampling=InstanceSampling(bank, count=5))

    def bank_voxels(item):
        return int(np.isin(item["labels"].numpy(), [TAIL_A, TAIL_B]).sum())

    assert bank_voxels(plain[0]) == 0
    item = sampled[0]
    assert bank_voxels(item) > 0
    assert len(item["vertex_labels"]) > len(plain[0]["vertex_labels"])
    np.testing.assert_array_equal(sampled[0]["coords"].numpy(), item["coords"].numpy())  # same (seed, epoch)
    sampled.epoch = 1
    assert not np.array_equal(sampled[0]["coords"].numpy(), item["coords"].numpy())


def test_cli_writes_the_bank_and_the_picture(store, tmp_path):
    from lgseg.cli import main

    root, folders = store
    (tmp_path / "train.txt").write_text("".join(f"{folder.name}\n" for folder in folders))
    assert main(["instance-bank", "--processed", str(root), "--train-list", str(tmp_path / "train.txt"),
                 "--stats", str(root / "stats.csv"), "--out", str(tmp_path / "bank.npz")]) == 0
    assert len(read_instance_bank(tmp_path / "bank.npz")) == 3
    args = ["plot-instance-sampling", "--processed", str(root), "--bank", str(tmp_path / "bank.npz"),
            "--out", str(tmp_path / "top.png")]
    assert main(args + ["--scene", "room"]) == 0
    assert (tmp_path / "top.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(args + ["--scene", "missing"]) == 1
