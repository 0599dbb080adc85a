"""Semantic segmentation metrics: confusion matrices by `np.bincount`, per-class IoU / precision / recall under the
official (per vertex) and LGS (per voxel) protocols, and their means over All / Head / Common / Tail.

Both protocols read the same kind of confusion matrix and differ in how they treat absent classes:

* **official** — classes absent from the ground truth (tp + fn = 0) are undefined (NaN) for every metric and left
  out of the means, as the ScanNet200 benchmark leaves out the classes that do not occur in val.
* **LGS** — what the authors' code reports (torchmetrics 0.9.2): IoU of a class absent from both ground truth and
  prediction (tp + fp + fn = 0) is 0 and *counts* in the means (`JaccardIndex(absent_score=0.0)`).

Scores are fractions in [0, 1]. The confusion matrix has one extra last column, "unknown", for predictions outside
0..num_classes-1 (e.g. -1): such a point is a false negative of its ground-truth class and a false positive of none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from lgseg.scannet.labels import FREQUENCY_GROUPS, IGNORE_INDEX, scannet200

NUM_CLASSES = 200
PROTOCOLS = ("official", "lgs")
METRICS = ("iou", "precision", "recall")
GROUPS = ("all",) + FREQUENCY_GROUPS
PROTOCOL_DESCRIPTIONS = {
    "official": "per mesh vertex; a class absent from the ground truth (tp+fn=0) is NaN and left out of every mean; "
                "precision of a class present in the ground truth but never predicted is 0",
    "lgs": "per voxel, as the authors' code (torchmetrics 0.9.2): IoU of a class with tp+fp+fn=0 is 0 and counts in "
           "the means; precision and recall of such a class are NaN and left out (torchmetrics macro average), a "
           "zero denominator otherwise gives 0; a mean over no class is 0",
}


def confusion_matrix(gt, pred, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Counts of (ground truth, prediction) pairs: int64 array of shape (num_classes, num_classes + 1).

    Row = ground-truth class, column = predicted class; the last column counts predictions outside
    0..num_classes-1 ("unknown", e.g. -1). Points whose ground truth is -1 (ignore) are skipped. Any other
    ground-truth value outside 0..num_classes-1 is an error. Arrays of any shape and integer dtype.
    """
    return _confusion_matrix(gt, pred, num_classes, scratch=None)


class ConfusionAccumulator:
    """Sum of confusion matrices over many scenes (or batches), so no evaluation concatenates all points.

        accumulator = ConfusionAccumulator()
        for gt, pred in scenes:
            accumulator.add(gt, pred)
        metrics = semantic_metrics(accumulator.matrix, ...)

    It reuses one work buffer across calls (not thread-safe): allocating and freeing megabytes per scene makes
    the allocator hand pages back to the OS and fault them in again, which costs more than the counting.
    """

    def __init__(self, num_classes: int = NUM_CLASSES):
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes + 1), dtype=np.int64)
        self.num_updates = 0
        self._scratch = np.empty(0, dtype=np.intp)

    def add(self, gt, pred) -> None:
        """Add the confusion of one scene (or batch)."""
        size = np.size(gt)
        if self._scratch.size < size:
            self._scratch = np.empty(size, dtype=np.intp)
        self.matrix += _confusion_matrix(gt, pred, self.num_classes, self._scratch)
        self.num_updates += 1

    def add_matrix(self, matrix: np.ndarray) -> None:
        """Add a confusion matrix computed elsewhere (e.g. by another worker process)."""
        matrix = _checked_confusion(matrix)
        if matrix.shape != self.matrix.shape:
            raise ValueError(f"confusion matrix has shape {matrix.shape}, expected {self.matrix.shape}")
        self.matrix += matrix
        self.num_updates += 1


def _confusion_matrix(gt, pred, num_classes: int, scratch: np.ndarray | None) -> np.ndarray:
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth has shape {gt.shape} but prediction {pred.shape}: one prediction per point")
    for name, array in (("ground truth", gt), ("prediction", pred)):
        if array.dtype.kind not in "iu":
            raise ValueError(f"{name} must hold integer class indices, got dtype {array.dtype}")
    n = num_classes
    if gt.size == 0:
        return np.zeros((n, n + 1), dtype=np.int64)
    lowest, highest = int(gt.min()), int(gt.max())
    if lowest < IGNORE_INDEX or highest >= n:
        bad = lowest if lowest < IGNORE_INDEX else highest
        raise ValueError(f"ground truth holds class index {bad}; expected 0..{n - 1} or {IGNORE_INDEX} (ignore)")
    # One flat index per point, (gt + 1) * (n + 1) + column: row 0 collects the ignored points (gt = -1) and is
    # dropped at the end, which is cheaper than compacting both arrays with a mask first.
    flat = np.empty(gt.size, dtype=np.intp) if scratch is None else scratch[: gt.size]
    np.copyto(flat, gt.reshape(-1), casting="unsafe")  # values checked above
    flat += 1
    flat *= n + 1
    pred = pred.reshape(-1)
    if int(pred.min()) < 0 or int(pred.max()) >= n:
        # Seen as unsigned, negative predictions become huge, so one minimum sends everything outside 0..n-1
        # to the unknown column n.
        pred = np.minimum(np.ascontiguousarray(pred, dtype=np.intp).view(np.uintp), n).view(np.intp)
    elif pred.dtype.kind == "u" and pred.dtype.itemsize >= np.dtype(np.intp).itemsize:
        pred = pred.astype(np.intp)  # int64 += uint64 has no integer loop in numpy
    flat += pred
    counts = np.bincount(flat, minlength=(n + 1) * (n + 1))
    return counts.reshape(n + 1, n + 1)[1:]


@dataclass(frozen=True)
class ClassCounts:
    """Per-class true positives, false positives (over non-ignored points only) and false negatives."""

    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray


@dataclass(frozen=True)
class ClassScores:
    """Per-class IoU, precision and recall (float64, one entry per class); NaN = left out of the means."""

    iou: np.ndarray
    precision: np.ndarray
    recall: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        return {"iou": self.iou, "precision": self.precision, "recall": self.recall}


def class_counts(confusion: np.ndarray) -> ClassCounts:
    """tp, fp, fn per class from a (C, C+1) confusion matrix (a square (C, C) one is accepted too)."""
    confusion = _checked_confusion(confusion)
    n = confusion.shape[0]
    tp = np.diagonal(confusion).copy()
    fp = confusion[:, :n].sum(axis=0) - tp
    fn = confusion.sum(axis=1) - tp  # includes the "unknown" column
    return ClassCounts(tp=tp, fp=fp, fn=fn)


def official_scores(confusion: np.ndarray) -> ClassScores:
    """Per-class scores of the official protocol; classes absent from the ground truth (tp+fn = 0) are NaN.

    IoU = tp/(tp+fp+fn), recall = tp/(tp+fn), precision = tp/(tp+fp), where a class present in the ground truth but
    never predicted (tp+fp = 0) gets precision 0: never predicting a class must not drop it from the mean.
    Unlike ScanNet's own evaluator (`benchmark_format.evaluate_benchmark`), a class absent from the ground truth but
    predicted somewhere is left out here too, instead of counting with IoU 0.
    """
    counts = class_counts(confusion)
    tp, fp, fn = counts.tp, counts.fp, counts.fn
    in_gt = (tp + fn) > 0
    return ClassScores(
        iou=np.where(in_gt, _ratio(tp, tp + fp + fn), np.nan),
        precision=np.where(in_gt, _ratio(tp, tp + fp), np.nan),
        recall=np.where(in_gt, _ratio(tp, tp + fn), np.nan),
    )


def lgs_scores(confusion: np.ndarray) -> ClassScores:
    """Per-class scores as the authors' code computes them with torchmetrics 0.9.2.

    IoU: `JaccardIndex(average='none')` with its default `absent_score=0.0` — a class with tp+fp+fn = 0 gets 0 (not
    NaN), so it pulls the mean down. Precision / recall: `Precision` / `Recall(average='macro')` drop the classes
    with tp+fp+fn = 0 from the average (NaN here) and give 0 where only the ratio's own denominator is 0 (a class
    never predicted has precision 0; a class only predicted, never in the ground truth, has recall 0).
    Head/common/tail means average these per-class values over the group's classes. (The authors' own head/common/
    tail precision and recall come from a subsample of points drawn by their balanced-sampling loss option, which
    cannot be reproduced from a confusion matrix; the IoU group means match theirs.)
    """
    counts = class_counts(confusion)
    tp, fp, fn = counts.tp, counts.fp, counts.fn
    seen = (tp + fp + fn) > 0
    return ClassScores(
        iou=_ratio(tp, tp + fp + fn),
        precision=np.where(seen, _ratio(tp, tp + fp), np.nan),
        recall=np.where(seen, _ratio(tp, tp + fn), np.nan),
    )


SCORERS = {"official": official_scores, "lgs": lgs_scores}


def group_means(values: np.ndarray, frequency_group: Sequence[str], empty_mean: float = math.nan
                ) -> dict[str, float]:
    """{'all'|'head'|'common'|'tail': mean of the non-NaN per-class `values` of the group's classes}.

    `frequency_group` holds 'head' | 'common' | 'tail' per class; a group without a non-NaN value gets `empty_mean`.
    """
    values, groups = np.asarray(values, dtype=np.float64), np.asarray(frequency_group)
    if groups.shape != values.shape:
        raise ValueError(f"{groups.size} frequency groups given for {values.size} classes")
    defined = ~np.isnan(values)
    members = {"all": defined, **{group: defined & (groups == group) for group in FREQUENCY_GROUPS}}
    return {group: float(values[member].mean()) if member.any() else empty_mean for group, member in members.items()}


def protocol_metrics(confusion: np.ndarray, protocol: str, frequency_group: Sequence[str]
                     ) -> tuple[ClassScores, dict[str, dict[str, float]]]:
    """Per-class scores and group means of one protocol ('official' or 'lgs')."""
    if protocol not in SCORERS:
        raise ValueError(f"unknown protocol '{protocol}'; expected one of {', '.join(PROTOCOLS)}")
    scores = SCORERS[protocol](confusion)
    # The authors average with a NaN-skipping mean that returns 0 when nothing is left (nanmean_t, torchmetrics).
    empty_mean = 0.0 if protocol == "lgs" else math.nan
    return scores, {metric: group_means(values, frequency_group, empty_mean)
                    for metric, values in scores.as_dict().items()}


def semantic_metrics(vertex_confusion: np.ndarray, voxel_confusion: np.ndarray,
                     class_names: Sequence[str] | None = None,
                     frequency_group: Sequence[str] | None = None) -> dict:
    """Every per-class number and every mean of both protocols, as a JSON-able dict (NaN written as null).

    The official protocol is computed from `vertex_confusion` (one count per mesh vertex), the LGS protocol from
    `voxel_confusion` (one per voxel); pass the same matrix twice to get both protocols on the same points. Class
    names and head/common/tail groups default to ScanNet200's (then the matrices must have 200 rows).
    """
    vertex_confusion, voxel_confusion = _checked_confusion(vertex_confusion), _checked_confusion(voxel_confusion)
    num_classes = vertex_confusion.shape[0]
    if voxel_confusion.shape[0] != num_classes:
        raise ValueError(f"vertex confusion has {num_classes} classes but voxel confusion {voxel_confusion.shape[0]}")
    if class_names is None or frequency_group is None:
        classes = scannet200()
        if num_classes != classes.num_classes:
            raise ValueError(f"{num_classes} classes: pass class_names and frequency_group (defaults are ScanNet200's)")
        class_names = classes.class_names if class_names is None else class_names
        frequency_group = classes.frequency_group if frequency_group is None else frequency_group
    if len(class_names) != num_classes or len(set(class_names)) != num_classes:
        raise ValueError(f"need {num_classes} distinct class names, got {len(class_names)} "
                         f"({len(set(class_names))} distinct)")
    result: dict = {
        "num_classes": num_classes,
        "note": "scores are fractions in [0, 1]; null = undefined for that class and left out of the means",
        "classes": [{"index": i, "name": name, "group": group}
                    for i, (name, group) in enumerate(zip(class_names, frequency_group))],
    }
    for protocol, confusion in (("official", vertex_confusion), ("lgs", voxel_confusion)):
        scores, means = protocol_metrics(confusion, protocol, frequency_group)
        counts = class_counts(confusion)
        per_class = {}
        for i, name in enumerate(class_names):
            entry = {metric: nan_to_none(values[i]) for metric, values in scores.as_dict().items()}
            entry.update(tp=int(counts.tp[i]), fp=int(counts.fp[i]), fn=int(counts.fn[i]))
            per_class[name] = entry
        result[protocol] = {
            "description": PROTOCOL_DESCRIPTIONS[protocol],
            "num_points": int(confusion.sum()),
            "num_points_predicted_unknown": int(confusion[:, num_classes:].sum()),
            "mean": {metric: {group: nan_to_none(value) for group, value in by_group.items()}
                     for metric, by_group in means.items()},
            "num_classes_in_mean": {metric: _classes_in_mean(values, frequency_group)
                                    for metric, values in scores.as_dict().items()},
            "per_class": per_class,
        }
    return result


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator as float64, 0 where the denominator is 0."""
    out = np.zeros(numerator.shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _checked_confusion(confusion) -> np.ndarray:
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[1] not in (confusion.shape[0], confusion.shape[0] + 1):
        raise ValueError(f"confusion matrix must be (C, C+1) or (C, C), got shape {confusion.shape}")
    if confusion.dtype.kind not in "iu":
        raise ValueError(f"confusion matrix must hold integer counts, got dtype {confusion.dtype}")
    return confusion


def _classes_in_mean(values: np.ndarray, frequency_group: Sequence[str]) -> dict[str, int]:
    groups = np.asarray(frequency_group)
    defined = ~np.isnan(values)
    return {"all": int(defined.sum()), **{g: int((defined & (groups == g)).sum()) for g in FREQUENCY_GROUPS}}


def nan_to_none(value) -> float | None:
    """A float for JSON: NaN (undefined) becomes None (null)."""
    value = float(value)
    return None if math.isnan(value) else value
