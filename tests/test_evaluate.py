"""Semantic evaluation against hand-computed values and an independent per-class-loop implementation; the
ScanNet200 benchmark file format and evaluator."""

import json
import math

import numpy as np
import pytest

from lgseg.errors import DataError
from lgseg.evaluate.benchmark_format import (evaluate_benchmark, export_ground_truth, export_predictions,
                                             format_benchmark_result, raw_ids_to_class_index, read_benchmark_file)
from lgseg.evaluate.semantic import (ConfusionAccumulator, class_counts, confusion_matrix, group_means,
                                     lgs_scores, official_scores, protocol_metrics, semantic_metrics)
from lgseg.fileio import write_json
from lgseg.scannet.labels import scannet200

nan = math.nan

# Five classes: 0, 1 head; 2 common; 3, 4 tail.
GROUPS = ["head", "head", "common", "tail", "tail"]
NAMES = ["a", "b", "c", "d", "e"]
#                  ignored ground truth (-1) ----v---v
GT = np.array([0, 0, 0, 1, 1, 2, 2, -1, -1, 0, 1])
PRED = np.array([0, 0, 1, 1, -1, 2, 3, 4, 0, 7, 1])
# Valid pairs: (0,0) (0,0) (0,1) (1,1) (1,-1 unknown) (2,2) (2,3) (0,7 unknown) (1,1).
# Class 3 is only predicted (a false positive on a valid point); class 4 is predicted only on an ignored point,
# so it is absent from both ground truth and prediction.
HAND_CONFUSION = np.array([
    # 0  1  2  3  4  unknown
    [2, 1, 0, 0, 0, 1],
    [0, 2, 0, 0, 0, 1],
    [0, 0, 1, 1, 0, 0],
    [0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0],
])
# tp = [2, 2, 1, 0, 0], fp = [0, 1, 0, 1, 0], fn = [2, 1, 1, 0, 0]


def assert_close(actual, expected, rtol=1e-12):
    np.testing.assert_allclose(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float), rtol=rtol,
                               atol=0, equal_nan=True)


def test_confusion_matrix_by_hand():
    confusion = confusion_matrix(GT, PRED, num_classes=5)
    assert confusion.shape == (5, 6) and confusion.dtype == np.int64
    assert confusion.tolist() == HAND_CONFUSION.tolist()
    counts = class_counts(confusion)
    assert counts.tp.tolist() == [2, 2, 1, 0, 0]
    assert counts.fp.tolist() == [0, 1, 0, 1, 0]  # the prediction 4 / 0 on ignored points counts nowhere
    assert counts.fn.tolist() == [2, 1, 1, 0, 0]  # predictions -1 and 7 are false negatives of the true class
    # any integer dtype and shape, e.g. int16 segment arrays and int64 predictions of a batch
    assert confusion_matrix(GT.astype(np.int16).reshape(1, -1), PRED.reshape(1, -1), 5).tolist() == \
        HAND_CONFUSION.tolist()
    assert confusion_matrix(np.array([], np.int64), np.array([], np.int64), 5).tolist() == np.zeros((5, 6)).tolist()


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64])
def test_confusion_matrix_any_prediction_dtype(dtype):
    # as unsigned, -1 wraps to the largest value: outside the classes either way
    assert confusion_matrix(GT, PRED.astype(dtype), 5).tolist() == HAND_CONFUSION.tolist()
    in_range = np.where((PRED >= 0) & (PRED < 5), PRED, 0)
    assert confusion_matrix(GT, in_range.astype(dtype), 5).tolist() == confusion_matrix(GT, in_range, 5).tolist()
    # int8 -1 with more than 128 classes: must still be "unknown", not class 255
    assert confusion_matrix([0], np.array([-1], np.int8), 300)[0, 300] == 1


def test_confusion_matrix_rejects_bad_input():
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix([0, 1], [0], 5)
    with pytest.raises(ValueError, match="class index 5"):
        confusion_matrix([0, 5], [0, 0], 5)
    with pytest.raises(ValueError, match="class index -2"):
        confusion_matrix([0, -2], [0, 0], 5)
    with pytest.raises(ValueError, match="integer"):
        confusion_matrix([0.0, 1.0], [0, 1], 5)


def test_official_protocol_by_hand():
    scores = official_scores(HAND_CONFUSION)
    # classes 3 and 4 do not occur in the ground truth: undefined, whatever is predicted
    assert_close(scores.iou, [2 / 4, 2 / 4, 1 / 2, nan, nan])
    assert_close(scores.precision, [2 / 2, 2 / 3, 1 / 1, nan, nan])
    assert_close(scores.recall, [2 / 4, 2 / 3, 1 / 2, nan, nan])
    _, means = protocol_metrics(HAND_CONFUSION, "official", GROUPS)
    assert_close([means["iou"][g] for g in ("all", "head", "common", "tail")], [0.5, 0.5, 0.5, nan])
    assert_close([means["precision"][g] for g in ("all", "head", "common", "tail")],
                 [(1 + 2 / 3 + 1) / 3, (1 + 2 / 3) / 2, 1.0, nan])
    assert_close([means["recall"][g] for g in ("all", "head", "common", "tail")],
                 [(0.5 + 2 / 3 + 0.5) / 3, (0.5 + 2 / 3) / 2, 0.5, nan])


def test_lgs_protocol_by_hand():
    scores = lgs_scores(HAND_CONFUSION)
    # class 3 (only predicted): IoU 0/1, precision 0/1, recall 0 (zero denominator); class 4 (absent
    # everywhere): IoU 0, precision and recall left out
    assert_close(scores.iou, [0.5, 0.5, 0.5, 0.0, 0.0])
    assert_close(scores.precision, [1.0, 2 / 3, 1.0, 0.0, nan])
    assert_close(scores.recall, [0.5, 2 / 3, 0.5, 0.0, nan])
    _, means = protocol_metrics(HAND_CONFUSION, "lgs", GROUPS)
    assert_close([means["iou"][g] for g in ("all", "head", "common", "tail")], [1.5 / 5, 0.5, 0.5, 0.0])
    assert_close([means["precision"][g] for g in ("all", "head", "common", "tail")],
                 [(1 + 2 / 3 + 1 + 0) / 4, (1 + 2 / 3) / 2, 1.0, 0.0])
    assert_close([means["recall"][g] for g in ("all", "head", "common", "tail")],
                 [(0.5 + 2 / 3 + 0.5 + 0) / 4, (0.5 + 2 / 3) / 2, 0.5, 0.0])


def test_precision_of_a_class_never_predicted_is_zero_in_both_protocols():
    confusion = confusion_matrix([0, 0, 1], [0, 0, 0], num_classes=2)  # class 1 in the ground truth, never predicted
    for scores in (official_scores(confusion), lgs_scores(confusion)):
        assert_close(scores.precision, [2 / 3, 0.0])
        assert_close(scores.recall, [1.0, 0.0])
        assert_close(scores.iou, [2 / 3, 0.0])


def test_means_of_groups_without_defined_classes():
    empty = np.zeros((5, 6), dtype=np.int64)
    _, official = protocol_metrics(empty, "official", GROUPS)
    _, lgs = protocol_metrics(empty, "lgs", GROUPS)
    for metric in ("iou", "precision", "recall"):
        assert all(math.isnan(v) for v in official[metric].values())
        assert all(v == 0.0 for v in lgs[metric].values())  # the authors' nanmean_t / torchmetrics give 0
    assert group_means([1.0, nan, 0.5, nan, 0.25], GROUPS) == {"all": 1.75 / 3, "head": 1.0, "common": 0.5,
                                                               "tail": 0.25}
    with pytest.raises(ValueError, match="unknown protocol"):
        protocol_metrics(empty, "voxel", GROUPS)


def test_square_confusion_matrix_is_accepted():
    square = HAND_CONFUSION[:, :5]  # without the unknown column, the unknown predictions are simply not there
    assert class_counts(square).fn.tolist() == [1, 0, 1, 0, 0]
    with pytest.raises(ValueError, match="shape"):
        class_counts(np.zeros((5, 7), dtype=np.int64))


def test_accumulator_sums_scenes():
    rng = np.random.default_rng(0)
    scenes = [(rng.integers(-1, 5, n), rng.integers(-1, 6, n)) for n in (0, 1, 17, 300)]
    accumulator = ConfusionAccumulator(num_classes=5)
    for gt, pred in scenes:
        accumulator.add(gt, pred)
    whole = confusion_matrix(np.concatenate([g for g, _ in scenes]), np.concatenate([p for _, p in scenes]), 5)
    assert accumulator.matrix.tolist() == whole.tolist() and accumulator.num_updates == 4
    accumulator.add_matrix(whole)
    assert accumulator.matrix.tolist() == (2 * whole).tolist()
    with pytest.raises(ValueError, match="shape"):
        accumulator.add_matrix(np.zeros((5, 5), dtype=np.int64))


# --- an independent, straightforward implementation: one boolean mask per class, Python arithmetic ------------

def reference_evaluation(gt, pred, num_classes, groups):
    """{protocol: ({metric: [per-class value]}, {metric: {group: mean}})} by per-class masks over all points."""
    valid = gt != -1
    counts = []
    for c in range(num_classes):
        is_gt = valid & (gt == c)
        is_pred = valid & (pred == c)
        counts.append((int(np.sum(is_gt & is_pred)), int(np.sum(is_pred & ~is_gt)), int(np.sum(is_gt & ~is_pred))))

    def divide(a, b):
        return a / b if b > 0 else 0.0

    per_class = {"official": {"iou": [], "precision": [], "recall": []},
                 "lgs": {"iou": [], "precision": [], "recall": []}}
    for tp, fp, fn in counts:
        official, lgs = per_class["official"], per_class["lgs"]
        if tp + fn == 0:
            official["iou"].append(nan), official["precision"].append(nan), official["recall"].append(nan)
        else:
            official["iou"].append(tp / (tp + fp + fn))
            official["precision"].append(divide(tp, tp + fp))
            official["recall"].append(tp / (tp + fn))
        if tp + fp + fn == 0:
            lgs["iou"].append(0.0), lgs["precision"].append(nan), lgs["recall"].append(nan)
        else:
            lgs["iou"].append(tp / (tp + fp + fn))
            lgs["precision"].append(divide(tp, tp + fp))
            lgs["recall"].append(divide(tp, tp + fn))
    result = {}
    for protocol, empty in (("official", nan), ("lgs", 0.0)):
        means = {}
        for metric, values in per_class[protocol].items():
            means[metric] = {}
            for group in ("all", "head", "common", "tail"):
                chosen = [v for v, g in zip(values, groups) if (group == "all" or g == group) and not math.isnan(v)]
                means[metric][group] = sum(chosen) / len(chosen) if chosen else empty
        result[protocol] = (per_class[protocol], means)
    return result


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_straightforward_implementation_on_random_data(seed):
    rng = np.random.default_rng(seed)
    classes = scannet200()
    num_classes = classes.num_classes
    absent_from_gt = rng.choice(num_classes, 30, replace=False)
    never_predicted = rng.choice(num_classes, 30, replace=False)
    vertex_accumulator, voxel_accumulator = ConfusionAccumulator(), ConfusionAccumulator()
    all_gt, all_pred = [], []
    for _ in range(5):
        n = int(rng.integers(2000, 6000))
        gt = rng.integers(-1, num_classes, n)
        gt[np.isin(gt, absent_from_gt)] = -1
        # predictions: right about half of the time, otherwise random, including -1 and ids beyond the classes
        pred = np.where(rng.random(n) < 0.5, gt, rng.integers(-1, num_classes + 3, n))
        pred[np.isin(pred, never_predicted)] = 0
        vertex_accumulator.add(gt.astype(np.int16), pred)
        voxel_accumulator.add(gt[::2], pred[::2])  # stands in for the voxel-level arrays
        all_gt.append(gt), all_pred.append(pred)
    gt, pred = np.concatenate(all_gt), np.concatenate(all_pred)
    vertex_reference = reference_evaluation(gt, pred, num_classes, classes.frequency_group)
    voxel_reference = reference_evaluation(np.concatenate([g[::2] for g in all_gt]),
                                           np.concatenate([p[::2] for p in all_pred]), num_classes,
                                           classes.frequency_group)
    for protocol, accumulator, reference in (("official", vertex_accumulator, vertex_reference),
                                             ("lgs", voxel_accumulator, voxel_reference)):
        scores, means = protocol_metrics(accumulator.matrix, protocol, classes.frequency_group)
        expected_per_class, expected_means = reference[protocol]
        for metric, values in scores.as_dict().items():
            assert_close(values, expected_per_class[metric])
            for group in ("all", "head", "common", "tail"):
                assert_close(means[metric][group], expected_means[metric][group])
    # sanity of the random data: some classes absent from the ground truth, so the protocols differ
    assert np.isnan(official_scores(vertex_accumulator.matrix).iou).sum() >= 30
    assert not np.isnan(lgs_scores(voxel_accumulator.matrix).iou).any()


def test_semantic_metrics_and_metrics_json(tmp_path):
    classes = scannet200()
    rng = np.random.default_rng(3)
    gt = rng.integers(-1, 200, 5000)
    gt[gt == 7] = 0  # class index 7 ('shelf') absent from ground truth and prediction
    pred = rng.integers(0, 200, 5000)
    pred[pred == 7] = 1
    vertex = confusion_matrix(gt, pred)
    voxel = confusion_matrix(gt[:1000], pred[:1000])
    metrics = {"info": {"split": "val"}, **semantic_metrics(vertex, voxel)}  # what `evaluate` writes
    write_json(tmp_path / "run" / "metrics.json", metrics)
    text = (tmp_path / "run" / "metrics.json").read_text()

    def no_nan(constant):
        raise AssertionError(f"{constant} in JSON")

    assert json.loads(text, parse_constant=no_nan) == metrics
    assert metrics["info"] == {"split": "val"} and metrics["num_classes"] == 200
    assert [c["name"] for c in metrics["classes"]] == list(classes.class_names)
    absent = classes.class_names[7]
    official, lgs = metrics["official"], metrics["lgs"]
    assert official["per_class"][absent]["iou"] is None and lgs["per_class"][absent]["iou"] == 0.0
    assert official["num_points"] == int((gt != -1).sum()) and lgs["num_points"] == int((gt[:1000] != -1).sum())
    assert official["num_classes_in_mean"]["iou"]["all"] == 199 and lgs["num_classes_in_mean"]["iou"]["all"] == 200
    assert lgs["num_classes_in_mean"]["recall"]["all"] == 199
    assert set(official["mean"]) == {"iou", "precision", "recall"}
    assert set(official["mean"]["iou"]) == {"all", "head", "common", "tail"}
    scores, means = protocol_metrics(vertex, "official", classes.frequency_group)
    assert official["mean"]["recall"]["tail"] == means["recall"]["tail"]
    assert official["per_class"]["wall"]["precision"] == scores.precision[0]
    assert official["per_class"]["wall"]["tp"] == int(vertex[0, 0])
    # other class lists need their names and groups
    with pytest.raises(ValueError, match="class_names"):
        semantic_metrics(HAND_CONFUSION, HAND_CONFUSION)
    small = semantic_metrics(HAND_CONFUSION, HAND_CONFUSION, NAMES, GROUPS)
    assert small["official"]["per_class"]["d"]["iou"] is None and small["lgs"]["per_class"]["d"]["iou"] == 0.0
    assert small["official"]["num_points_predicted_unknown"] == 2


# --- benchmark files ------------------------------------------------------------------------------------------

def test_export_and_read_round_trip(tmp_path):
    classes = scannet200()
    index = np.array([0, 1, 199, 5, 5, 0], dtype=np.int16)
    path = export_predictions(tmp_path / "submission", "scene0707_00", index)
    assert path == tmp_path / "submission" / "scene0707_00.txt"
    lines = path.read_text().splitlines()
    assert lines == [str(classes.class_ids[i]) for i in index] and lines[:3] == ["1", "2", "1191"]
    raw = read_benchmark_file(path, num_vertices=6)
    assert raw.dtype == np.int64 and raw_ids_to_class_index(raw).tolist() == index.tolist()
    assert not list((tmp_path / "submission").glob(".*"))  # no temporary file left behind


def test_export_ground_truth_writes_unannotated_as_zero(tmp_path):
    path = export_ground_truth(tmp_path, "scene0011_00", np.array([-1, 0, 2, -1, 199]))
    assert path.read_text() == "0\n1\n3\n0\n1191\n"
    assert raw_ids_to_class_index([0, 1, 12, 1191, 1192, -5, 99999]).tolist() == [-1, 0, -1, 199, -1, -1, -1]


def test_export_rejects_missing_predictions(tmp_path):
    with pytest.raises(DataError, match=r"scene0707_00\.txt: 2 of 4 vertices have no class") as error:
        export_predictions(tmp_path, "scene0707_00", np.array([0, -1, 3, 200]))
    assert str(tmp_path / "scene0707_00.txt") in str(error.value)
    assert not (tmp_path / "scene0707_00.txt").exists()
    with pytest.raises(DataError, match="integer"):
        export_predictions(tmp_path, "scene0707_00", np.array([0.0, 1.0]))


def test_read_benchmark_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "scene0000_00.txt"
    bad.write_text("1\n2\nwall\n4\n")
    with pytest.raises(DataError, match=r"scene0000_00\.txt: line 3: 'wall' is not an integer"):
        read_benchmark_file(bad)
    bad.write_text("1\n2.0\n")
    with pytest.raises(DataError, match="line 2: '2.0'"):
        read_benchmark_file(bad)
    bad.write_text("1\n2\n3\n")
    with pytest.raises(DataError, match=r"scene0000_00\.txt: 3 ids but the mesh has 4 vertices"):
        read_benchmark_file(bad, num_vertices=4)
    with pytest.raises(DataError, match=r"missing\.txt: file not found"):
        read_benchmark_file(tmp_path / "missing.txt")


def write_ids(path, ids):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


def test_evaluate_benchmark_by_hand(tmp_path):
    # raw ids: 1 wall, 2 chair, 3 floor, 4 table, 5 door (all head), 39 cushion (common); 0 and 12 are not among
    # the 200 (skipped as ground truth, false negatives as predictions); 9999 is no ScanNet id at all.
    write_ids(tmp_path / "gt" / "scene0000_00.txt", [1, 1, 2, 2, 3, 0, 12, 1])
    write_ids(tmp_path / "pred" / "scene0000_00.txt", [1, 2, 2, 0, 3, 4, 4, 1])
    write_ids(tmp_path / "gt" / "scene0001_00.txt", [3, 3, 4, 39, 3])
    write_ids(tmp_path / "pred" / "scene0001_00.txt", [3, 1, 4, 9999, 5])
    result = evaluate_benchmark(tmp_path / "pred", tmp_path / "gt")
    # wall: tp 2, fn 1 (-> chair), fp 1 (floor -> wall)          2/4
    # chair: tp 1, fn 1 (-> 0), fp 1 (wall -> chair)             1/3
    # floor: tp 2, fn 2 (-> wall, -> door)                       2/4
    # table: tp 1; its predictions on gt 0 / 12 are no fp        1/1
    # cushion: fn 1 (-> 9999)                                    0/1
    # door: fp 1, only predicted, still counted                  0/1
    expected = {"wall": 2 / 4, "chair": 1 / 3, "floor": 2 / 4, "table": 1.0, "cushion": 0.0, "door": 0.0}
    defined = {name: iou for name, iou in result["per_class_iou"].items() if iou is not None}
    assert defined.keys() == expected.keys()
    for name, iou in expected.items():
        assert defined[name] == pytest.approx(iou, abs=1e-15)
    assert result["mean_iou"] == pytest.approx((0.5 + 1 / 3 + 0.5 + 1 + 0 + 0) / 6)
    assert result["mean_iou_by_group"]["head"] == pytest.approx((0.5 + 1 / 3 + 0.5 + 1 + 0) / 5)
    assert result["mean_iou_by_group"]["common"] == 0.0 and result["mean_iou_by_group"]["tail"] is None
    assert result["num_classes_in_mean"] == 6 and result["num_scenes"] == 2 and result["num_vertices"] == 11
    assert result["per_class_counts"]["wall"] == {"class_id": 1, "tp": 2, "fp": 1, "fn": 1}
    assert "mean IoU 0.389 over 6 classes" in format_benchmark_result(result)
    write_json(tmp_path / "out" / "benchmark.json", result)
    assert json.loads((tmp_path / "out" / "benchmark.json").read_text()) == result


def test_evaluate_benchmark_errors_name_the_file(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    write_ids(gt / "scene0000_00.txt", [1, 2, 3])
    write_ids(gt / "scene0001_00.txt", [1])
    write_ids(pred / "scene0000_00.txt", [1, 2, 3])
    with pytest.raises(DataError, match=r"pred/scene0001_00\.txt: no prediction file for 1 of 2"):
        evaluate_benchmark(pred, gt)
    write_ids(pred / "scene0001_00.txt", [1, 1])
    with pytest.raises(DataError, match=r"pred/scene0001_00\.txt: 2 predicted ids but the ground truth"):
        evaluate_benchmark(pred, gt)
    write_ids(pred / "scene0001_00.txt", [1])
    write_ids(pred / "scene0002_00.txt", [1])
    with pytest.raises(DataError, match=r"pred/scene0002_00\.txt: no ground truth"):
        evaluate_benchmark(pred, gt)
    (pred / "scene0002_00.txt").unlink()
    (pred / "semantic_label_evaluation.txt").write_text("report of the official script\n")  # skipped, as there
    assert evaluate_benchmark(pred, gt)["mean_iou"] == 1.0
    (pred / "scene0001_00.txt").write_text("1.5\n")
    with pytest.raises(DataError, match=r"pred/scene0001_00\.txt: line 1"):
        evaluate_benchmark(pred, gt)
    with pytest.raises(DataError, match="folder not found"):
        evaluate_benchmark(tmp_path / "nowhere", gt)
    with pytest.raises(DataError, match="no ground-truth"):
        evaluate_benchmark(pred, tmp_path)


def test_lgs_protocol_matches_torchmetrics_0_9_if_installed():
    """Only where torchmetrics 0.9.x (the authors' version) is installed; it is not a dependency."""
    torchmetrics = pytest.importorskip("torchmetrics")
    if not torchmetrics.__version__.startswith("0.9."):
        pytest.skip(f"torchmetrics {torchmetrics.__version__} is not the authors' 0.9.x")
    import torch

    rng = np.random.default_rng(4)
    gt = rng.integers(0, 12, 400)
    gt[np.isin(gt, [3, 4])] = 0
    pred = rng.integers(0, 12, 400)
    pred[np.isin(pred, [4, 9])] = 1
    scores, means = protocol_metrics(confusion_matrix(gt, pred, 12), "lgs", ["head"] * 12)
    g, p = torch.from_numpy(gt), torch.from_numpy(pred)
    expected_iou = torchmetrics.functional.jaccard_index(p, g, num_classes=12, average="none")
    assert_close(scores.iou, expected_iou.numpy(), rtol=1e-6)  # torchmetrics works in float32
    for metric, function in (("precision", torchmetrics.functional.precision),
                             ("recall", torchmetrics.functional.recall)):
        assert_close(getattr(scores, metric), function(p, g, num_classes=12, average="none").numpy(), rtol=1e-6)
        assert means[metric]["all"] == pytest.approx(function(p, g, num_classes=12, average="macro").item(), rel=1e-6)
