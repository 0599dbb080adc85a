"""Instance segmentation AP as ScanNet's official `evaluate_semantic_instance.py` computes it, for the 198
instance classes of ScanNet200 (docs/method.md §8), written from its description, vectorised per scene.

Ground truth is one integer per point, `raw class id * 1000 + instance id` (instance ids from 1; 0 = none); points
whose class is not one of the 198 (wall, floor, unannotated) are *void*. A prediction is a set of points with a
raw class id and a confidence; predictions of other ids or with fewer than `min_region_size` points are skipped.
Per overlap threshold t (0.50, 0.55, ..., 0.90 for AP, and 0.25) and class, over all scenes:

* ground-truth instances with fewer than `min_region_size` points are left out;
* each instance, in order, takes the first not yet matched prediction of its class (in prediction order: the
  lines of the prediction file, as the official script iterates them under Python 3; under Python 2 its dict of
  mask paths has hash order, which can change AP25 where a prediction overlaps two instances) whose IoU exceeds t; every further such prediction is a false positive scored with the lower of the two confidences (the
  instance keeps the higher); an instance without one is a false negative;
* a prediction matching no instance above t is a false positive unless more than t of its points lie on void or
  on left-out (small) instances of its class;
* AP integrates the precision-recall curve as the official script (one point per distinct confidence, an
  artificial (recall 0, precision 1) end, trapezoid-like step widths): 0 for a class with ground truth but no
  prediction, undefined (NaN, left out of means) for a class without ground truth, and 0 where the official script
  fails (a class with ground truth and predictions but no scored detection: all its predictions on void).

bench/instance_eval_vs_official.py checks every number against the official script on random scenes.

AP = mean over classes and the thresholds 0.50-0.90, AP50 / AP25 = mean over classes at 0.50 / 0.25; head /
common / tail = the same means over the classes of each frequency group (the online benchmark's split). Two
protocols: *official* (per mesh vertex, minimum region 100 vertices) and *LGS* (per voxel, minimum region 10, as
the authors' training code evaluates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from lgseg.errors import DataError
from lgseg.scannet.labels import FREQUENCY_GROUPS, IGNORE_INDEX, scannet200

AP_OVERLAPS = tuple(np.round(np.arange(0.5, 0.95, 0.05), 2))  # 0.50 ... 0.90, as the official script
OVERLAPS = AP_OVERLAPS + (0.25,)
MIN_REGION_SIZE = {"official": 100, "lgs": 10}  # points per instance and per prediction
INSTANCE_ID_LIMIT = 1000  # the file format packs class id * 1000 + instance id


def instance_class_ids() -> tuple[int, ...]:
    """Raw ScanNet ids of the 198 instance classes, ascending."""
    classes = scannet200()
    return tuple(classes.class_ids[i] for i in classes.instance_classes)


def encode_ground_truth(labels, instance) -> np.ndarray:
    """Per point `raw id * 1000 + instance + 1` (int64) from class indices (-1 = unannotated) and 0-based instance
    ids (-1 = none); 0 where a point has no class or no instance. Wall and floor keep their id: they are void."""
    labels, instance = np.asarray(labels, dtype=np.int64), np.asarray(instance, dtype=np.int64)
    if instance.size and instance.max() + 1 >= INSTANCE_ID_LIMIT:
        raise DataError("instance ids", f"instance id {int(instance.max())} does not fit the benchmark format "
                                        f"(class id * {INSTANCE_ID_LIMIT} + instance id)",
                        f"a scene may hold at most {INSTANCE_ID_LIMIT - 1} instances")
    raw = np.asarray((0,) + scannet200().class_ids, dtype=np.int64)[labels + 1]
    return np.where((labels != IGNORE_INDEX) & (instance >= 0), raw * INSTANCE_ID_LIMIT + instance + 1, 0)


@dataclass
class _Instance:
    class_position: int  # index into the evaluator's class list
    size: int
    matches: list = field(default_factory=list)  # (prediction, intersection), in prediction order


@dataclass
class _Prediction:
    uid: int
    class_position: int
    size: int
    confidence: float
    void: int  # points on void
    matches: list = field(default_factory=list)  # (ground-truth instance, intersection)


class InstanceEvaluator:
    """Collects scenes and computes AP over them: `add_scene` per scene, then `average_precision` / `results`."""

    def __init__(self, min_region_size: int, class_ids: tuple[int, ...] | None = None):
        self.min_region_size = min_region_size
        self.class_ids = np.asarray(class_ids or instance_class_ids(), dtype=np.int64)
        self._position = {int(c): i for i, c in enumerate(self.class_ids)}
        self.scenes: list[tuple[list[_Instance], list[_Prediction]]] = []
        self._next_uid = 0

    def add_scene(self, gt_ids, predictions) -> None:
        """`gt_ids`: one encoded id per point; `predictions`: (point indices, raw class id, confidence) each."""
        gt_ids = np.asarray(gt_ids, dtype=np.int64)
        ids, index, sizes = np.unique(gt_ids, return_inverse=True, return_counts=True)
        positions = np.array([self._position.get(int(i) // INSTANCE_ID_LIMIT, -1) if i != 0 else -1 for i in ids],
                             dtype=np.int64)
        instances = {k: _Instance(int(positions[k]), int(sizes[k])) for k in np.flatnonzero(positions >= 0)}
        void = positions[index.ravel()] < 0
        scene_predictions = []
        for points, class_id, confidence in predictions:
            position = self._position.get(int(class_id))
            points = np.unique(np.asarray(points, dtype=np.int64))
            if points.size and (points[0] < 0 or points[-1] >= gt_ids.size):
                raise DataError("instance prediction", f"point index {int(points[-1] if points[0] >= 0 else points[0])}"
                                                       f" outside the scene's {gt_ids.size} points",
                                "give each prediction the indices of its points in the ground truth's order")
            if position is None or points.size < self.min_region_size:
                continue
            prediction = _Prediction(self._next_uid, position, int(points.size), float(confidence),
                                     int(void[points].sum()))
            self._next_uid += 1
            hit = np.bincount(index.ravel()[points], minlength=len(ids))
            for k in np.flatnonzero(hit):
                instance = instances.get(int(k))
                if instance is not None and instance.class_position == position:
                    prediction.matches.append((instance, int(hit[k])))
                    instance.matches.append((prediction, int(hit[k])))
            scene_predictions.append(prediction)
        self.scenes.append((list(instances.values()), scene_predictions))

    def average_precision(self) -> np.ndarray:
        """AP per class (rows, the evaluator's class order) and overlap (columns, `OVERLAPS`); NaN = no ground
        truth of that class."""
        ap = np.full((len(self.class_ids), len(OVERLAPS)), np.nan)
        for o, threshold in enumerate(OVERLAPS):
            used: set[int] = set()  # predictions matched at this threshold, over all classes and scenes
            for c in range(len(self.class_ids)):
                ap[c, o] = self._class_ap(c, threshold, used)
        return ap

    def _class_ap(self, c: int, threshold: float, used: set[int]) -> float:
        true, score, false_negatives, has_gt, has_prediction = [], [], 0, False, False
        for instances, predictions in self.scenes:
            instances = [g for g in instances if g.class_position == c and g.size >= self.min_region_size]
            predictions = [p for p in predictions if p.class_position == c]
            has_gt |= bool(instances)
            has_prediction |= bool(predictions)
            for instance in instances:
                best = None
                for prediction, intersection in instance.matches:
                    if prediction.uid in used or _iou(instance, prediction, intersection) <= threshold:
                        continue
                    if best is None:
                        best = prediction.confidence
                        used.add(prediction.uid)
                    else:  # a second match: the lower confidence is a false positive
                        true.append(0)
                        score.append(min(best, prediction.confidence))
                        best = max(best, prediction.confidence)
                if best is None:
                    false_negatives += 1
                else:
                    true.append(1)
                    score.append(best)
            for prediction in predictions:
                if any(_iou(g, prediction, i) > threshold for g, i in prediction.matches):
                    continue
                ignored = prediction.void + sum(i for g, i in prediction.matches if g.size < self.min_region_size)
                if ignored / prediction.size <= threshold:
                    true.append(0)
                    score.append(prediction.confidence)
        if not has_gt:
            return math.nan
        if not has_prediction or not true:
            return 0.0
        return _integrate(np.asarray(true, dtype=np.float64), np.asarray(score, dtype=np.float64), false_negatives)

    def results(self) -> dict:
        """AP / AP50 / AP25 overall, per frequency group and per class (fractions; None = undefined)."""
        ap = self.average_precision()
        classes = scannet200()
        names = {raw: name for raw, name in zip(classes.class_ids, classes.class_names)}
        groups = {raw: group for raw, group in zip(classes.class_ids, classes.frequency_group)}
        columns = {"ap": [OVERLAPS.index(t) for t in AP_OVERLAPS], "ap50": [OVERLAPS.index(0.5)],
                   "ap25": [OVERLAPS.index(0.25)]}
        per_class = {name: ap[:, cols].mean(axis=1) for name, cols in columns.items()}  # NaN rows stay NaN
        member = {g: np.array([groups[int(c)] == g for c in self.class_ids]) for g in FREQUENCY_GROUPS}
        result = {name: _nanmean(ap[:, cols]) for name, cols in columns.items()}
        result["by_group"] = {g: {name: _nanmean(per_class[name][member[g]]) for name in columns}
                              for g in FREQUENCY_GROUPS}
        result["num_classes_in_mean"] = int(np.isfinite(per_class["ap"]).sum())
        result["num_scenes"] = len(self.scenes)
        result["num_instances"] = sum(g.size >= self.min_region_size for instances, _ in self.scenes
                                      for g in instances)  # those AP counts
        result["num_predictions"] = sum(len(p) for _, p in self.scenes)
        result["min_region_size"] = self.min_region_size
        result["per_class"] = {names[int(c)]: {name: _none(per_class[name][i]) for name in columns}
                               for i, c in enumerate(self.class_ids)}
        return result


def _iou(instance: _Instance, prediction: _Prediction, intersection: int) -> float:
    return intersection / (instance.size + prediction.size - intersection)


def _integrate(true: np.ndarray, score: np.ndarray, false_negatives: int) -> float:
    """The official script's area under the precision-recall curve of scored detections (1 = true positive)."""
    order = np.argsort(score)
    score, true = score[order], true[order]
    below = np.append(np.cumsum(true), 0.0)  # below[i - 1]: true positives scored under the i-th lowest; below[-1] = 0
    _, firsts = np.unique(score, return_index=True)
    total = below[-2]
    tp = total - below[firsts - 1]
    fp = len(score) - firsts - tp
    fn = below[firsts - 1] + false_negatives
    precision = np.append(tp / (tp + fp), 1.0)
    recall = np.append(tp / (tp + fn), 0.0)
    padded = np.concatenate([[recall[0]], recall, [0.0]])
    widths = 0.5 * (padded[:-2] - padded[2:])
    return float(np.dot(precision, widths))


def _nanmean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None


def _none(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)
