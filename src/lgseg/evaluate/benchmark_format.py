"""ScanNet200 online-benchmark files: export predictions and ground truth, read such files, and evaluate a folder
of them the way ScanNet's official evaluators do.

* semantic task: `<scene>.txt`, one raw category id per mesh vertex, in vertex order;
* instance task: `<scene>.txt` with one line `pred_mask/<scene>_<k>.txt <raw id> <confidence>` per predicted
  instance, each mask file one 0/1 per mesh vertex; ground truth one integer per vertex, `raw id * 1000 +
  instance id` (instance ids from 1, 0 = none; lgseg.evaluate.instance).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lgseg.errors import DataError
from lgseg.evaluate.instance import MIN_REGION_SIZE, InstanceEvaluator, encode_ground_truth
from lgseg.evaluate.semantic import ConfusionAccumulator, class_counts, group_means, nan_to_none
from lgseg.fileio import atomic_file
from lgseg.scannet.labels import FREQUENCY_GROUPS, IGNORE_INDEX, scannet200

UNANNOTATED_ID = 0
# The official evaluators write their report into the prediction folder and skip a .txt of this name there.
OFFICIAL_REPORT_NAME = "semantic_label_evaluation.txt"
OFFICIAL_INSTANCE_REPORT_NAME = "semantic_instance_evaluation.txt"
MASK_FOLDER = "pred_mask"


def export_predictions(out_dir: str | Path, scene_id: str, class_index_per_vertex) -> Path:
    """Write `<out_dir>/<scene_id>.txt`: the raw ScanNet id of the predicted class of every vertex, one per line.

    A submission must predict one of the 200 classes for every vertex, so a class index outside 0..199 (e.g. -1)
    is an error.
    """
    path = Path(out_dir) / f"{scene_id}.txt"
    index = _class_index_array(path, class_index_per_vertex)
    classes = scannet200()
    outside = (index < 0) | (index >= classes.num_classes)
    if outside.any():
        first = int(np.flatnonzero(outside)[0])
        raise DataError(path, f"{int(outside.sum())} of {index.size} vertices have no class (index "
                              f"{int(index[first])} at vertex {first}; expected 0..{classes.num_classes - 1})",
                        "a benchmark submission needs a predicted class for every vertex: take the arg-max over "
                        "the 200 classes, not over the labelled ones only")
    raw_ids = np.asarray(classes.class_ids, dtype=np.int64)[index]
    _write_ids(path, raw_ids)
    return path


def export_ground_truth(out_dir: str | Path, scene_id: str, class_index_per_vertex) -> Path:
    """Write ground truth in the benchmark format (class index -1 -> raw id 0, unannotated), e.g. for val scenes
    from the processed store's `segment.npy`, so `evaluate_benchmark` can score exported val predictions."""
    path = Path(out_dir) / f"{scene_id}.txt"
    index = _class_index_array(path, class_index_per_vertex)
    classes = scannet200()
    if index.size and (int(index.min()) < IGNORE_INDEX or int(index.max()) >= classes.num_classes):
        raise DataError(path, f"class indices must be 0..{classes.num_classes - 1} or {IGNORE_INDEX}",
                        "pass the segment array of the processed scene")
    lookup = np.asarray((UNANNOTATED_ID,) + classes.class_ids, dtype=np.int64)
    _write_ids(path, lookup[index + 1])
    return path


def export_instance_predictions(out_dir: str | Path, scene_id: str, instances, num_vertices: int) -> Path:
    """Write `<out_dir>/<scene_id>.txt` and its mask files `<out_dir>/pred_mask/<scene_id>_<k>.txt` from
    (vertex indices, class index 0..199, confidence) per predicted instance; the masks first, so a listed mask
    file always exists."""
    out_dir = Path(out_dir)
    class_ids = scannet200().class_ids
    lines = []
    for k, (vertices, class_index, confidence) in enumerate(instances):
        mask = np.zeros(num_vertices, dtype=np.int64)
        mask[np.asarray(vertices, dtype=np.int64)] = 1
        relative = f"{MASK_FOLDER}/{scene_id}_{k}.txt"
        _write_ids(out_dir / relative, mask)
        lines.append(f"{relative} {class_ids[class_index]} {confidence:.17g}\n")  # exact round trip
    path = out_dir / f"{scene_id}.txt"
    with atomic_file(path) as tmp:
        tmp.write_text("".join(lines))
    return path


def export_instance_ground_truth(out_dir: str | Path, scene_id: str, class_index_per_vertex, instance_per_vertex
                                 ) -> Path:
    """Write instance ground truth `<out_dir>/<scene_id>.txt` (`raw id * 1000 + instance id` per vertex) from the
    processed store's `segment.npy` and `instance.npy` (0-based, -1 = none)."""
    path = Path(out_dir) / f"{scene_id}.txt"
    labels = _class_index_array(path, class_index_per_vertex)
    instance = _class_index_array(path, instance_per_vertex)
    if labels.shape != instance.shape:
        raise DataError(path, f"{labels.size} class indices but {instance.size} instance ids",
                        "pass the segment and instance arrays of the same processed scene")
    _write_ids(path, encode_ground_truth(labels, instance))
    return path


def read_instance_predictions(path: str | Path, pred_dir: str | Path, num_vertices: int) -> list[tuple]:
    """(vertex indices, raw id, confidence) of every line of one instance prediction `<scene>.txt`; each mask file
    must lie inside `pred_dir` and hold one integer per mesh vertex (non-zero = in the instance)."""
    path, root = Path(path), Path(pred_dir).resolve()
    instances = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        fix = "write lines '<relative mask path> <raw class id> <confidence>' (export-benchmark --task instance)"
        if len(parts) != 3:
            raise DataError(path, f"line {number}: expected 3 fields, got {len(parts)}", fix)
        mask_path = (path.parent / parts[0]).resolve()
        if Path(parts[0]).is_absolute() or root not in mask_path.parents:
            raise DataError(path, f"line {number}: mask {parts[0]} is not a relative path inside {pred_dir}", fix)
        try:
            label, confidence = int(float(parts[1])), float(parts[2])
        except ValueError:
            raise DataError(path, f"line {number}: '{parts[1]} {parts[2]}' is not a class id and a confidence",
                            fix) from None
        mask = read_benchmark_file(mask_path, num_vertices)
        instances.append((np.flatnonzero(mask != 0), label, confidence))
    return instances


def evaluate_instance_benchmark(pred_dir: str | Path, gt_dir: str | Path,
                                min_region_size: int = MIN_REGION_SIZE["official"]) -> dict:
    """Evaluate every ground-truth `<scene>.txt` in `gt_dir` against the instance predictions in `pred_dir`, as
    ScanNet's official `evaluate_semantic_instance.py` does, with the 198 ScanNet200 instance classes
    (lgseg.evaluate.instance): AP, AP50, AP25, per frequency group and per class."""
    pred_dir = Path(pred_dir)
    evaluator = InstanceEvaluator(min_region_size)
    gt_files = _paired_files(pred_dir, Path(gt_dir), OFFICIAL_INSTANCE_REPORT_NAME)
    for gt_file in gt_files:
        gt_ids = read_benchmark_file(gt_file)
        evaluator.add_scene(gt_ids, read_instance_predictions(pred_dir / gt_file.name, pred_dir, gt_ids.size))
    return evaluator.results()


def format_instance_result(result: dict) -> str:
    """Per-class AP / AP50 / AP25 (classes with ground truth) and the means, as text to print."""

    def number(value):
        return "   nan" if value is None else f"{value:6.3f}"

    lines = [f"{'class':<28s}{'AP':>7s}{'AP50':>7s}{'AP25':>7s}", "-" * 49]
    lines += [f"{name:<28s} {number(v['ap'])} {number(v['ap50'])} {number(v['ap25'])}"
              for name, v in result["per_class"].items() if v["ap"] is not None]
    lines.append("-" * 49)
    lines.append(f"AP {number(result['ap'])}, AP50 {number(result['ap50'])}, AP25 {number(result['ap25'])} over "
                 f"{result['num_classes_in_mean']} classes ({result['num_scenes']} scenes, "
                 f"{result['num_instances']} instances, {result['num_predictions']} predictions); AP by group: "
                 + ", ".join(f"{g} {number(v['ap']).strip()}" for g, v in result["by_group"].items()))
    return "\n".join(lines)


def read_benchmark_file(path: str | Path, num_vertices: int | None = None) -> np.ndarray:
    """Raw ids of one `<scene>.txt` (one integer per line) as int64; `num_vertices` checks the length."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(path, "file not found", "check the folder and the scene id") from None
    except UnicodeDecodeError:
        raise DataError(path, "not a text file", "write one integer id per line (export_predictions)") from None
    try:
        ids = np.array(lines, dtype=np.int64)
    except (ValueError, OverflowError):
        line_number, text = _first_non_integer(lines)
        raise DataError(path, f"line {line_number}: '{text}' is not an integer id",
                        "write exactly one integer raw ScanNet id per line, one line per mesh vertex") from None
    if num_vertices is not None and ids.size != num_vertices:
        raise DataError(path, f"{ids.size} ids but the mesh has {num_vertices} vertices",
                        "write one id per vertex of the scene's _vh_clean_2.ply, in vertex order")
    return ids


def raw_ids_to_class_index(raw_ids) -> np.ndarray:
    """Class index 0..199 of every raw id; -1 for ids that are not one of the 200 (0 = unannotated included)."""
    class_ids = np.asarray(scannet200().class_ids, dtype=np.int64)
    raw_ids = np.asarray(raw_ids, dtype=np.int64)
    position = np.minimum(np.searchsorted(class_ids, raw_ids), class_ids.size - 1)
    return np.where(class_ids[position] == raw_ids, position, IGNORE_INDEX)


def evaluate_benchmark(pred_dir: str | Path, gt_dir: str | Path) -> dict:
    """Evaluate every ground-truth `<scene>.txt` in `gt_dir` against `pred_dir/<scene>.txt`, as ScanNet's official
    `evaluate_semantic_label.py` does for the 200 ids.

    Ground-truth vertices whose id is not one of the 200 are skipped; a predicted id outside the 200 is a false
    negative of the true class (and a false positive of none); false positives are counted over those valid
    ground-truth vertices only; IoU = tp/(tp+fp+fn), undefined (null) when tp+fp+fn = 0 and then left out of the
    mean. Head/common/tail means follow the same rule. Every ground-truth scene needs a prediction file of the same
    length, and, as in the official script, every prediction file a ground-truth file (all DataError otherwise).
    """
    pred_dir = Path(pred_dir)
    gt_files = _paired_files(pred_dir, Path(gt_dir), OFFICIAL_REPORT_NAME)
    classes = scannet200()
    accumulator = ConfusionAccumulator(classes.num_classes)
    for gt_file in gt_files:
        pred_file = pred_dir / gt_file.name
        gt_ids = read_benchmark_file(gt_file)
        pred_ids = read_benchmark_file(pred_file)
        if pred_ids.size != gt_ids.size:
            raise DataError(pred_file, f"{pred_ids.size} predicted ids but the ground truth {gt_file} has "
                                       f"{gt_ids.size} vertices", "write one id per mesh vertex, in vertex order")
        accumulator.add(raw_ids_to_class_index(gt_ids), raw_ids_to_class_index(pred_ids))
    counts = class_counts(accumulator.matrix)
    union = counts.tp + counts.fp + counts.fn
    iou = np.full(classes.num_classes, np.nan)
    np.divide(counts.tp, union, out=iou, where=union > 0)
    means = {group: nan_to_none(mean) for group, mean in group_means(iou, classes.frequency_group).items()}
    return {
        "num_scenes": len(gt_files),
        "num_vertices": int(accumulator.matrix.sum()),
        "mean_iou": means["all"],
        "mean_iou_by_group": {g: means[g] for g in FREQUENCY_GROUPS},
        "num_classes_in_mean": int((union > 0).sum()),
        "per_class_iou": {name: nan_to_none(iou[i]) for i, name in enumerate(classes.class_names)},
        "per_class_counts": {name: {"class_id": classes.class_ids[i], "tp": int(counts.tp[i]),
                                    "fp": int(counts.fp[i]), "fn": int(counts.fn[i])}
                             for i, name in enumerate(classes.class_names)},
    }


def _paired_files(pred_dir: Path, gt_dir: Path, report_name: str) -> list[Path]:
    """The ground-truth `<scene>.txt` files of `gt_dir`, each with a prediction of the same name in `pred_dir` and
    no prediction without ground truth (DataError otherwise); `report_name` is skipped in both."""
    for folder, role in ((pred_dir, "prediction"), (gt_dir, "ground-truth")):
        if not folder.is_dir():
            raise DataError(folder, f"{role} folder not found", "pass the folder that holds the <scene>.txt files")
    gt_files = sorted(p for p in gt_dir.glob("*.txt") if p.name != report_name)
    if not gt_files:
        raise DataError(gt_dir, "no ground-truth <scene>.txt files", "pass the folder of ground-truth id files")
    gt_names = {p.name for p in gt_files}
    for pred_file in sorted(pred_dir.glob("*.txt")):
        if pred_file.name != report_name and pred_file.name not in gt_names:
            raise DataError(pred_file, f"no ground truth {gt_dir / pred_file.name} for this prediction",
                            "remove the file or add the scene's ground truth")
    missing = [gt_file.stem for gt_file in gt_files if not (pred_dir / gt_file.name).is_file()]
    if missing:
        listed = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(pred_dir / f"{missing[0]}.txt", f"no prediction file for {len(missing)} of {len(gt_files)} "
                                                        f"ground-truth scenes: {listed}",
                        "export a prediction file for every scene of the ground truth")
    return gt_files


def format_benchmark_result(result: dict) -> str:
    """The per-class IoU table and the means of `evaluate_benchmark`, as text to print."""
    lines = [f"{'class':<28s}{'id':>6s}  {'IoU':>6s}  {'tp':>10s} / {'tp+fp+fn':<10s}", "-" * 68]
    for name, iou in result["per_class_iou"].items():
        counts = result["per_class_counts"][name]
        union = counts["tp"] + counts["fp"] + counts["fn"]
        shown = "   nan" if iou is None else f"{iou:6.3f}"
        lines.append(f"{name:<28s}{counts['class_id']:>6d}  {shown}  {counts['tp']:>10d} / {union:<10d}")
    lines.append("-" * 68)

    def number(value):
        return "nan" if value is None else f"{value:.3f}"

    lines.append(f"mean IoU {number(result['mean_iou'])} over {result['num_classes_in_mean']} classes "
                 f"({result['num_scenes']} scenes, {result['num_vertices']} vertices); "
                 + ", ".join(f"{g} {number(v)}" for g, v in result["mean_iou_by_group"].items()))
    return "\n".join(lines)


def _class_index_array(path: Path, class_index_per_vertex) -> np.ndarray:
    index = np.asarray(class_index_per_vertex)
    if index.ndim != 1 or index.dtype.kind not in "iu":
        raise DataError(path, f"expected a 1-D integer array of class indices, got {index.dtype} of shape "
                              f"{index.shape}", "pass one class index per mesh vertex")
    return index.astype(np.int64, copy=False)


def _write_ids(path: Path, ids: np.ndarray) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text("".join(f"{i}\n" for i in ids.tolist()))


def _first_non_integer(lines: list[str]) -> tuple[int, str]:
    for line_number, text in enumerate(lines, start=1):
        try:
            value = int(text)
        except ValueError:
            return line_number, text
        if not -2**63 <= value < 2**63:
            return line_number, text
    return len(lines), lines[-1] if lines else ""

