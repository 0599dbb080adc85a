"""Instance segmentation: AP as the official evaluator computes it (hand values), benchmark files, clustering,
offset losses and the instance targets of the data path."""

import numpy as np
import pytest
import torch

from conftest import processed_demo_store
from lgseg.data.dataset import SceneDataset, instance_offsets
from lgseg.data.store import read_scene
from lgseg.errors import DataError
from lgseg.evaluate import benchmark_format
from lgseg.evaluate.clustering import ClusteringSettings, cluster_proposals
from lgseg.evaluate.instance import AP_OVERLAPS, InstanceEvaluator, encode_ground_truth
from lgseg.evaluate.tasks import vertex_proposals
from lgseg.scannet.demo import DemoSettings, demo_scene_ids
from lgseg.scannet.labels import scannet200
from lgseg.train.losses import offset_losses

CLASSES = scannet200()
WALL, CHAIR, TABLE = (CLASSES.class_names.index(n) for n in ("wall", "chair", "table"))
CHAIR_ID, TABLE_ID = CLASSES.class_ids[CHAIR], CLASSES.class_ids[TABLE]


def scene(*parts):
    """Ground truth of consecutive vertex blocks (class index, size): each block one instance; -1 = unannotated."""
    labels, instance = [], []
    for k, (cls, size) in enumerate(parts):
        labels += [cls] * size
        instance += [k if cls >= 0 else -1] * size
    return encode_ground_truth(np.array(labels), np.array(instance))


def block(k, parts, take=None):
    """Vertex indices of block k (its first `take` vertices)."""
    start = sum(size for _, size in parts[:k])
    return np.arange(start, start + (take or parts[k][1]))


FIVE_CHAIRS = [(CHAIR, 200)] * 5 + [(TABLE, 150), (WALL, 300), (-1, 100)]


def chair_ap(parts, predictions, min_region_size=100):
    evaluator = InstanceEvaluator(min_region_size)
    evaluator.add_scene(scene(*parts), predictions)
    return evaluator.results()


def test_ground_truth_encoding_by_hand():
    ids = encode_ground_truth(np.array([CHAIR, CHAIR, TABLE, WALL, -1, CHAIR]), np.array([0, 0, 3, 1, -1, -1]))
    assert ids.tolist() == [CHAIR_ID * 1000 + 1, CHAIR_ID * 1000 + 1, TABLE_ID * 1000 + 4, 1 * 1000 + 2, 0, 0]


def test_exact_predictions_with_confidence_one_give_ap_one():
    predictions = [(block(k, FIVE_CHAIRS), CHAIR_ID, 1.0) for k in range(5)] + [(block(5, FIVE_CHAIRS), TABLE_ID, 1.0)]
    result = chair_ap(FIVE_CHAIRS, predictions)
    assert (result["ap"], result["ap50"], result["ap25"]) == (1.0, 1.0, 1.0)
    assert result["num_classes_in_mean"] == 2  # chair and table; classes without ground truth are left out
    assert result["per_class"]["bed"]["ap"] is None


def test_every_other_instance_gives_k_over_n():
    result = chair_ap(FIVE_CHAIRS, [(block(k, FIVE_CHAIRS), CHAIR_ID, 0.7) for k in (0, 2, 4)])
    assert result["per_class"]["chair"] == {"ap": pytest.approx(3 / 5), "ap50": pytest.approx(3 / 5),
                                            "ap25": pytest.approx(3 / 5)}
    assert result["per_class"]["table"]["ap"] == 0.0  # ground truth but no prediction


def test_predictions_on_void_or_small_instances_are_not_false_positives():
    parts = [(CHAIR, 200), (CHAIR, 60), (TABLE, 150), (WALL, 300)]  # the second chair is below 100 vertices
    exact = (block(0, parts), CHAIR_ID, 0.9)
    on_void = (block(3, parts), CHAIR_ID, 0.95)  # a chair predicted on the wall
    on_small = (np.concatenate([block(1, parts), block(3, parts, 50)]), CHAIR_ID, 0.95)  # the small chair
    assert chair_ap(parts, [exact, on_void, on_small])["per_class"]["chair"]["ap"] == 1.0
    # the same prediction on the table (not void, another class) is a false positive scored above the match:
    # curve (precision 0.5, recall 1), (0, 0) and the artificial (1, 0): AP = 0.5 * 0.5 + 0 * 0.5 = 0.25
    on_table = (block(2, parts), CHAIR_ID, 0.95)
    assert chair_ap(parts, [exact, on_table])["per_class"]["chair"]["ap50"] == pytest.approx(0.25)
    # below the minimum region size a prediction is skipped
    assert chair_ap(parts, [exact, (block(2, parts, 99), CHAIR_ID, 0.95)])["per_class"]["chair"]["ap"] == 1.0


def test_two_scored_predictions_on_one_instance_by_hand():
    # chairs 0, 1, 2; predictions A (chair 0, 0.9), B (most of chair 0, 0.8), C (chair 1, 0.7); chair 2 missed.
    # Chair 0 keeps A, B is a false positive, C a true positive, one false negative: detections by score
    # 0.7 (tp), 0.8 (fp), 0.9 (tp). Curve points (precision, recall): (2/3, 2/3), (1/2, 1/3), (1, 1/3), and the
    # artificial (1, 0); step widths 1/6 each: AP = (2/3 + 1/2 + 1 + 1) / 6 = 19/36.
    predictions = [(block(0, FIVE_CHAIRS), CHAIR_ID, 0.9), (block(0, FIVE_CHAIRS, 190), CHAIR_ID, 0.8),
                   (block(1, FIVE_CHAIRS), CHAIR_ID, 0.7)]
    three = FIVE_CHAIRS[:3] + FIVE_CHAIRS[5:]
    assert chair_ap(three, predictions)["per_class"]["chair"]["ap"] == pytest.approx(19 / 36)


def test_overlap_thresholds_and_scenes_pool():
    parts = [(CHAIR, 200), (-1, 200)]
    # IoU 200 / (200 + 130) = 0.606: matched at 0.50, 0.55, 0.60 and 0.25 only; unmatched, it is a false positive
    partial = (np.concatenate([block(0, parts), block(1, parts, 130)]), CHAIR_ID, 0.9)
    result = chair_ap(parts, [partial])
    assert AP_OVERLAPS == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
    # the 130 unannotated vertices are void: ignored fraction 130/330 = 0.39 <= t, so still a false positive
    assert result["per_class"]["chair"] == {"ap": pytest.approx(3 / 9), "ap50": 1.0, "ap25": 1.0}
    evaluator = InstanceEvaluator(100)  # two scenes pool into one curve: 1 of 2 chairs found
    evaluator.add_scene(scene(*parts), [(block(0, parts), CHAIR_ID, 0.5)])
    evaluator.add_scene(scene(*parts), [])
    assert evaluator.results()["per_class"]["chair"]["ap"] == pytest.approx(0.5)


def test_group_means_and_lgs_region_size():
    parts = [(CHAIR, 20), (TABLE, 20)]
    lgs = chair_ap(parts, [(block(0, parts), CHAIR_ID, 1.0)], min_region_size=10)
    assert lgs["per_class"]["chair"]["ap"] == 1.0 and lgs["per_class"]["table"]["ap"] == 0.0
    assert lgs["ap"] == pytest.approx(0.5)
    groups = {name: CLASSES.frequency_group[CLASSES.class_names.index(name)] for name in ("chair", "table")}
    assert groups == {"chair": "head", "table": "head"}
    assert lgs["by_group"]["head"]["ap"] == pytest.approx(0.5) and lgs["by_group"]["tail"]["ap"] is None
    assert chair_ap(parts, [(block(0, parts), CHAIR_ID, 1.0)])["ap"] is None  # official: both below 100 vertices


def test_benchmark_files_round_trip(tmp_path):
    labels = np.array([CHAIR] * 200 + [TABLE] * 150 + [WALL] * 100 + [-1] * 50)
    instance = np.array([0] * 200 + [1] * 150 + [2] * 100 + [-1] * 50)
    benchmark_format.export_instance_ground_truth(tmp_path / "gt", "scene0000_00", labels, instance)
    predictions = [(np.arange(0, 200), CHAIR, 0.75), (np.arange(200, 330), TABLE, 0.5)]
    benchmark_format.export_instance_predictions(tmp_path / "pred", "scene0000_00", predictions, len(labels))
    lines = (tmp_path / "pred" / "scene0000_00.txt").read_text().splitlines()
    assert lines == [f"pred_mask/scene0000_00_0.txt {CHAIR_ID} 0.75",
                     f"pred_mask/scene0000_00_1.txt {TABLE_ID} 0.5"]
    mask = np.loadtxt(tmp_path / "pred" / "pred_mask" / "scene0000_00_1.txt", dtype=int)
    assert mask.shape == (500,) and mask[200:330].all() and mask.sum() == 130
    gt = np.loadtxt(tmp_path / "gt" / "scene0000_00.txt", dtype=int)
    assert gt[0] == CHAIR_ID * 1000 + 1 and gt[-1] == 0 and gt[400] == 1003  # wall: raw id 1
    result = benchmark_format.evaluate_instance_benchmark(tmp_path / "pred", tmp_path / "gt")
    direct = InstanceEvaluator(100)
    direct.add_scene(gt, [(v, CLASSES.class_ids[c], s) for v, c, s in predictions])
    assert result == direct.results()
    assert result["per_class"]["chair"]["ap"] == 1.0
    assert result["per_class"]["table"]["ap50"] == 1.0 and result["per_class"]["table"]["ap"] == pytest.approx(8 / 9)  # IoU 130/150


def test_benchmark_file_errors_name_the_file(tmp_path):
    labels, instance = np.array([CHAIR] * 120), np.zeros(120, dtype=int)
    benchmark_format.export_instance_ground_truth(tmp_path / "gt", "scene0000_00", labels, instance)
    pred = tmp_path / "pred"
    pred.mkdir()
    (pred / "scene0000_00.txt").write_text(f"/abs/mask.txt {CHAIR_ID} 1.0\n")
    with pytest.raises(DataError, match="not a relative path inside"):
        benchmark_format.evaluate_instance_benchmark(pred, tmp_path / "gt")
    (pred / "pred_mask").mkdir()
    (pred / "pred_mask" / "m.txt").write_text("1\n" * 100)
    (pred / "scene0000_00.txt").write_text(f"pred_mask/m.txt {CHAIR_ID} 1.0\n")
    with pytest.raises(DataError, match="100 ids but the mesh has 120 vertices") as err:
        benchmark_format.evaluate_instance_benchmark(pred, tmp_path / "gt")
    assert "m.txt" in str(err.value)
    (pred / "scene0000_00.txt").write_text(f"pred_mask/m.txt {CHAIR_ID}\n")
    with pytest.raises(DataError, match="line 1: expected 3 fields"):
        benchmark_format.evaluate_instance_benchmark(pred, tmp_path / "gt")
    with pytest.raises(DataError, match="point index 120 outside the scene's 120 points"):
        InstanceEvaluator(100).add_scene(np.zeros(120, dtype=int), [(np.arange(1, 121), CHAIR_ID, 1.0)])


SETTINGS = ClusteringSettings(radius=1.5, min_points=5, min_proposal_points=8, score="mean")


def blob(centre, size, cls, score=1.0):
    """A size x size x 1 slab of voxels of one predicted class at integer `centre`."""
    x, y = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    coords = np.stack([x.ravel(), y.ravel(), np.zeros(size * size, dtype=int)], 1) + np.array(centre)
    logits = np.zeros((len(coords), CLASSES.num_classes))
    logits[:, cls] = score
    return coords, logits


def cluster(*blobs, offsets=None, settings=SETTINGS):
    coords = np.concatenate([b[0] for b in blobs])
    logits = np.concatenate([b[1] for b in blobs])
    offsets = np.zeros((len(coords), 3)) if offsets is None else offsets
    return cluster_proposals(coords, offsets, logits, 0.1, settings)


def test_clustering_separates_blobs_and_classes():
    two = cluster(blob((0, 0, 0), 4, CHAIR), blob((10, 0, 0), 4, CHAIR, 2.0))
    assert [(len(p.voxels), p.class_index, p.score) for p in two] == [(16, CHAIR, 1.0), (16, CHAIR, 2.0)]
    assert two[1].voxels.tolist() == list(range(16, 32))
    touching = cluster(blob((0, 0, 0), 4, CHAIR), blob((4, 0, 0), 4, CHAIR))  # 1 voxel apart: connected
    assert [len(p.voxels) for p in touching] == [32]
    classes = cluster(blob((0, 0, 0), 4, CHAIR), blob((4, 0, 0), 4, TABLE))
    assert [(len(p.voxels), p.class_index) for p in classes] == [(16, CHAIR), (16, TABLE)]
    assert cluster(blob((0, 0, 0), 4, WALL)) == []  # wall and floor make no instances


def test_clustering_drops_small_components_and_follows_offsets():
    sizes = cluster(blob((0, 0, 0), 2, CHAIR), blob((10, 0, 0), 3, CHAIR), blob((20, 0, 0), 4, CHAIR))
    assert [len(p.voxels) for p in sizes] == [9, 16]  # 4 voxels: below min_points 5; 9 > min_proposal_points 8
    settings = ClusteringSettings(radius=1.5, min_points=5, min_proposal_points=9, score="mean")
    assert [len(p.voxels) for p in cluster(blob((10, 0, 0), 3, CHAIR), settings=settings)] == []  # 9 <= 9
    # two far halves whose offsets point at one centre become one proposal; without offsets, two
    left, right = blob((0, 0, 0), 3, CHAIR), blob((30, 0, 0), 3, CHAIR)
    offsets = np.zeros((18, 3))
    offsets[9:, 0] = -3.0  # metres: 30 voxels of 0.1 m back onto the left half
    assert [len(p.voxels) for p in cluster(left, right, settings=settings)] == []
    merged = cluster(left, right, offsets=offsets, settings=settings)
    assert [len(p.voxels) for p in merged] == [18]
    # torch tensors in, the same proposals out (deterministic; no generator involved)
    again = cluster_proposals(torch.from_numpy(np.concatenate([left[0], right[0]])), torch.from_numpy(offsets),
                              torch.from_numpy(np.concatenate([left[1], right[1]])), 0.1, settings)
    assert [p.voxels.tolist() for p in again] == [p.voxels.tolist() for p in merged]


def _same_partition(a, b) -> bool:
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


SHAPES = ["cloud", "flat", "lattice", "crowded", "piled", "large"]


@pytest.mark.parametrize("shape", SHAPES)
def test_radius_components_equal_those_of_every_pair_within_the_radius(shape):
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    from lgseg.evaluate.clustering import radius_components

    rng = np.random.default_rng(SHAPES.index(shape))
    points = rng.uniform(0, 25, (2000, 3))
    if shape == "flat":
        points = np.concatenate([points[:, :2] * 2.4, np.zeros((2000, 1))], 1)  # one plane: a degenerate triangulation
    elif shape == "lattice":
        points = np.round(points)  # duplicates and exact ties
    elif shape == "crowded":  # shifted voxels piled at instance centres, plus a sparse rest
        points = np.concatenate([rng.normal(c, 0.7, (600, 3)) for c in rng.uniform(0, 25, (3, 3))] + [points[:200]])
    elif shape == "piled":  # exact duplicates: several hundred voxels shifted onto one point each
        points = np.concatenate([np.repeat(points[:3], 300, axis=0), points[:100]])
    elif shape == "large":  # more points than int32 keys of point pairs can hold (n * n > 2**31)
        points = rng.uniform(0, 100, (50_000, 3))
    pairs = cKDTree(points).query_pairs(1.5, output_type="ndarray")  # the plain radius graph, every pair
    n = len(points)
    _, expected = connected_components(coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n)),
                                       directed=False)
    labels = radius_components(points, 1.5)
    assert _same_partition(labels, expected) and len(set(expected.tolist())) > 1


def test_proposal_score_is_the_mean_raw_logit_and_vertices_follow_voxels():
    coords, logits = blob((0, 0, 0), 3, CHAIR)
    logits[:] = -1.0
    logits[:, CHAIR] = np.arange(9)  # the voxel of logit 0 is still a chair
    (proposal,) = cluster((coords, logits), settings=ClusteringSettings(1.5, 1, 0, "mean"))
    assert proposal.score == pytest.approx(4.0)
    (median,) = cluster((coords, logits), settings=ClusteringSettings(1.5, 1, 0, "median"))
    assert median.score == pytest.approx(4.0)
    inverse = np.array([0, 0, 8, 3, 9])  # voxel 9: not in the proposal
    ((vertices, class_index, score),) = vertex_proposals([proposal], inverse, 10)
    assert vertices.tolist() == [0, 1, 2, 3] and class_index == CHAIR and score == proposal.score


def test_offset_losses_by_hand():
    predicted = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [5.0, 5.0, 5.0]], requires_grad=True)
    target = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    instance = torch.tensor([3, 7, -1])
    l1, direction = offset_losses(predicted, target, instance)
    assert l1.item() == pytest.approx((1.0 + 3.0) / 2)  # |1-2| and |2| + |-1|, over the 2 points with instances
    assert direction.item() == pytest.approx((-1.0 + 0.0) / 2)  # cos 1 and cos 0
    (l1 + direction).backward()
    assert predicted.grad[2].abs().sum() == 0  # no instance: no contribution
    none_l1, none_dir = offset_losses(predicted, target, torch.tensor([-1, -1, -1]))
    assert none_l1.item() == 0.0 and none_dir.item() == 0.0


def test_instance_offsets_point_to_the_centre_of_the_instance_voxels():
    voxels = np.array([[0, 0, 0], [2, 0, 0], [4, 4, 4], [9, 9, 9]])
    offsets = instance_offsets(voxels, np.array([5, 5, -1, 2]), 0.02)
    np.testing.assert_allclose(offsets, [[0.02, 0, 0], [-0.02, 0, 0], [0, 0, 0], [0, 0, 0]], atol=1e-7)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("instances")
    settings = DemoSettings(seed=3, num_train=2, num_val=1, num_test=0, vertex_spacing=0.15, objects_per_room=(6, 8))
    processed_demo_store(root, settings)
    return root / "data" / "processed" / "demo", demo_scene_ids(settings)


def test_instance_targets_of_the_data_path_match_a_brute_force_computation(store):
    processed, ids = store
    dataset = SceneDataset(processed, "train", ids["train"], 0.2, augmentations=[{"name": "rotate", "max_xy": 0.05, "max_z": 3.1}], seed=4,
                           instance_targets=True)
    item = dataset[0]
    arrays = read_scene(processed / "train" / ids["train"][0])
    labels, instance = np.asarray(arrays["segment"]), np.asarray(arrays["instance"])
    stuff = np.isin(labels, [WALL, CLASSES.class_names.index("floor")]) | (labels < 0)
    np.testing.assert_array_equal(item["vertex_instance"].numpy(), np.where(stuff, -1, instance))
    voxel_instance, coords = item["instance"].numpy(), item["coords"].numpy().astype(float)
    assert (voxel_instance >= 0).sum() > 0 and (voxel_instance < 0).sum() > 0
    for k in np.unique(voxel_instance[voxel_instance >= 0]):  # per instance, by hand from the item's voxels
        member = voxel_instance == k
        expected = (coords[member].mean(0) - coords[member]) * 0.2
        np.testing.assert_allclose(item["offsets"].numpy()[member], expected, atol=1e-5)
    assert not item["offsets"].numpy()[voxel_instance < 0].any()
    labels_of_instances = item["labels"].numpy()[voxel_instance >= 0]
    assert not np.isin(labels_of_instances, [WALL, -1]).any()


def test_benchmark_ground_truth_command_writes_the_store(store, tmp_path):
    from lgseg.cli import main

    processed, ids = store
    assert main(["benchmark-ground-truth", "--processed", str(processed), "--split", "val", "--task", "instance",
                 "--out", str(tmp_path / "gt")]) == 0
    arrays = read_scene(processed / "val" / ids["val"][0])
    written = np.loadtxt(tmp_path / "gt" / f"{ids['val'][0]}.txt", dtype=np.int64)
    np.testing.assert_array_equal(written, encode_ground_truth(arrays["segment"], arrays["instance"]))
    assert main(["benchmark-ground-truth", "--processed", str(processed), "--split", "val",
                 "--out", str(tmp_path / "sem")]) == 0
    raw = np.loadtxt(tmp_path / "sem" / f"{ids['val'][0]}.txt", dtype=np.int64)
    np.testing.assert_array_equal(raw, np.where(arrays["segment"] >= 0, np.asarray(
        (0,) + CLASSES.class_ids)[np.asarray(arrays["segment"]) + 1], 0))


def test_table2_reads_the_class_head_and_the_instance_metrics(tmp_path):
    import json

    from lgseg.evaluate.semantic import confusion_matrix, semantic_metrics
    from lgseg.report.tables import table2, write_table2

    gt, pred = np.array([CHAIR, CHAIR, TABLE, WALL]), np.array([CHAIR, TABLE, TABLE, WALL])
    semantic = semantic_metrics(confusion_matrix(gt, pred), confusion_matrix(gt, pred))
    instance = chair_ap(FIVE_CHAIRS, [(block(k, FIVE_CHAIRS), CHAIR_ID, 0.7) for k in (0, 2, 4)])  # chair 3/5
    (tmp_path / "metrics.json").write_text(json.dumps({**semantic, "instance": {"official": instance,
                                                                               "lgs": instance}}))
    row = table2({"Scratch": tmp_path / "metrics.json"}).iloc[0]
    assert row["protocol"] == "official" and row["precision"] == 75.0  # 3 of 4 points right
    assert row["miou"] == round(100 * (1 / 2 + 1 / 2 + 1) / 3, 2)  # chair 1/2, table 1/2, wall 1
    assert row["map50"] == 30.0 and row["ap"] == 30.0 and row["ap_head"] == 30.0  # (3/5 + 0) / 2 classes
    write_table2({"Scratch": tmp_path / "metrics.json"}, tmp_path / "t.csv", tmp_path / "t.md", "demo")
    assert "| Scratch | 75.00 |" in (tmp_path / "t.md").read_text() and "65.32" in (tmp_path / "t.md").read_text()
    (tmp_path / "semantic.json").write_text(json.dumps(semantic))
    with pytest.raises(DataError, match="has no instance metrics"):
        table2({"Scratch": tmp_path / "semantic.json"})


@pytest.mark.parametrize("reports, message", [
    ({"table2": ["scratch"]}, "'reports.table2' names experiment 'scratch', whose loss 'cross_entropy' is for "
                              "semantic segmentation; table2 shows instance segmentation runs"),
    ({"table1": ["instance_scratch"]}, "'reports.table1' names experiment 'instance_scratch', whose loss 'instance'"),
])
def test_report_groups_show_runs_of_their_task(reports, message):
    from lgseg.config import SCHEMA_PATH, validate_config
    from lgseg.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        validate_config({"reports": reports}, SCHEMA_PATH)
