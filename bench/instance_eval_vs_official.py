"""Check lgseg's instance AP evaluator against ScanNet's official `evaluate_semantic_instance.py` on random scenes.

The official code is `BenchmarkScripts/3d_evaluation/evaluate_semantic_instance.py` of the ScanNet/ScanNet
repository, with its helpers `BenchmarkScripts/util.py` and `util_3d.py` (Python 2; not part of lgseg and not copied
here). Pass the folder that holds them, BenchmarkScripts/, as --official-dir. At run time the three files are copied
to a temporary folder and converted there by text substitution: `print x` -> `print(x)`, `except X, e:` ->
`except X as e:`, `np.float` / `np.bool` -> `float` / `bool`, `np.in1d` -> `np.isin` (removed in numpy 2.4), and
its CLASS_LABELS / VALID_CLASS_IDS lines -> the 198 ScanNet200 instance classes (`instance_class_ids()` and their
names). Missing `imageio` / `plyfile` (imported by the helpers, unused here) are replaced by empty stand-ins. The
module's import-time argparse gets a dummy command line. Nothing else is changed.

    python bench/instance_eval_vs_official.py --official-dir ScanNet/BenchmarkScripts [--scenes 20] [--seeds 0 1 2]

Per seed, --scenes synthetic scenes are drawn (3000-20000 vertices; 5-40 instances of 20-3000 vertices, some of
99/100/101, of ~15 classes; the rest wall, floor, unannotated, or a class without an instance id) with predictions
of every kind the rules treat apart (the `kind` counts in the report). The official file layout is written (ground
truth `<scene>.txt`, predictions `<scene>.txt` + `pred_mask/<scene>_<k>.txt`) and the official `evaluate()` runs on
it, its `evaluate_matches` and `print_results` wrapped to keep the AP matrix and the averages; lgseg's
`InstanceEvaluator(min_region_size=100)` runs on the same arrays in memory. Compared: AP per class and threshold,
AP / AP50 / AP25 per class and overall (largest absolute difference; entries NaN in only one). Every class with
large ground truth gets one prediction on other classes' vertices (never ignored, never matched): without any
scored detection the official script fails (IndexError on an empty array) where lgseg returns 0. The report goes to
results/bench/instance_eval_vs_official.md; the exit status is 1 if any difference exceeds --tolerance.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import math
import re
import shlex
import shutil
import sys
import tempfile
import time
import types
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np

from lgseg.evaluate.instance import OVERLAPS, InstanceEvaluator, encode_ground_truth, instance_class_ids
from lgseg.fileio import write_text
from lgseg.scannet.labels import scannet200

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_FILES = ("util.py", "util_3d.py", "3d_evaluation/evaluate_semantic_instance.py")
MIN_REGION_SIZE = 100
TIED_CONFIDENCES = (0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
INVALID_LABELS = (0, 1, 3, 9999)  # unannotated, wall, floor, unknown: skipped by both
WALL_ID, FLOOR_ID = 1, 3
HEADER = ("| seed | scenes | vertices | gt instances (>= 100 vertices) | predictions (kept: evaluated label, "
          ">= 100 vertices) | classes in mean | lgseg AP / AP50 / AP25 | max abs difference | NaN in one only | "
          "official s | lgseg s |\n|---|---|---|---|---|---|---|---|---|---|---|")
AVERAGE_KEYS = (("ap", "all_ap", "ap"), ("ap50", "all_ap_50%", "ap50%"), ("ap25", "all_ap_25%", "ap25%"))


def official_module(official_dir: Path, work: Path) -> types.ModuleType:
    """The converted official module, imported from `work` (its helpers come from the folder above it)."""
    classes = scannet200()
    names = dict(zip(classes.class_ids, classes.class_names))
    ids = instance_class_ids()
    substitutions = [
        (r"^(\s*)print (.*)$", r"\1print(\2)"), (r"except (\w+), (\w+):", r"except \1 as \2:"),
        (r"\bnp\.float\b", "float"), (r"\bnp\.bool\b", "bool"), (r"\bnp\.in1d\b", "np.isin"),
        (r"^CLASS_LABELS = .*$", f"CLASS_LABELS = {[names[i] for i in ids]!r}"),
        (r"^VALID_CLASS_IDS = .*$", f"VALID_CLASS_IDS = np.array({list(ids)!r})")]
    for name in OFFICIAL_FILES:
        text = (official_dir / name).read_text()
        for pattern, replacement in substitutions:
            text = re.sub(pattern, replacement, text, flags=re.MULTILINE)
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    for missing, attributes in (("imageio", ()), ("plyfile", ("PlyData", "PlyElement"))):
        if importlib.util.find_spec(missing) is None:
            sys.modules[missing] = types.SimpleNamespace(**dict.fromkeys(attributes))
    spec = importlib.util.spec_from_file_location("evaluate_semantic_instance", work / OFFICIAL_FILES[2])
    module = importlib.util.module_from_spec(spec)
    argv, sys.argv = sys.argv, ["evaluate_semantic_instance.py", "--pred_path", str(work), "--gt_path", str(work)]
    try:
        spec.loader.exec_module(module)
    finally:
        sys.argv = argv
    assert len(module.CLASS_LABELS) == len(module.VALID_CLASS_IDS) == len(ids), "class lists not replaced"
    return module


class SceneMaker:
    """Random scenes: ground-truth ids and predictions (kind, vertex indices, raw label id, confidence)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.index_of = {raw: i for i, raw in enumerate(scannet200().class_ids)}
        drawn = [int(c) for c in rng.choice(instance_class_ids(), 17, replace=False)]
        # regular: ground truth and predictions; gt_only: never predicted (AP 0); small_only: instances all below
        # the minimum size (NaN, still predicted); pred_only: predicted, no ground truth (NaN)
        self.regular, self.gt_only, self.small_only, self.pred_only = drawn[:12], drawn[12:14], drawn[14:15], drawn[15:]
        self.guarded: set[int] = set()  # regular classes that already have their never-ignored false positive

    def confidence(self) -> float:
        return float(self.rng.choice(TIED_CONFIDENCES)) if self.rng.random() < 0.5 else float(self.rng.random())

    def level(self) -> float:
        return float(self.rng.choice(OVERLAPS)) if self.rng.random() < 0.7 else float(self.rng.uniform(0.1, 0.95))

    def pick(self, pool: np.ndarray, count: int) -> np.ndarray:
        return self.rng.choice(pool, min(max(int(count), 0), len(pool)), replace=False)

    def scene(self) -> tuple[np.ndarray, list]:
        rng = self.rng
        n = int(rng.integers(3000, 20001))
        classes = rng.choice(self.regular + self.gt_only + self.small_only, int(rng.integers(5, 41)))
        sizes = np.exp(rng.uniform(math.log(20), math.log(3000), len(classes))).astype(int)
        sizes = np.where(rng.random(len(classes)) < 0.1, rng.choice([99, 100, 101], len(classes)), sizes)
        sizes = np.where(np.isin(classes, self.small_only), rng.integers(20, 100, len(classes)), sizes)
        keep = max(1, int(np.searchsorted(np.cumsum(sizes), 0.85 * n, side="right")))
        classes, sizes = classes[:keep], np.minimum(sizes[:keep], int(0.85 * n))
        perm = rng.permutation(n)
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        instances = [(int(c), perm[a:b]) for c, a, b in zip(classes, bounds[:-1], bounds[1:])]
        labels, instance = np.full(n, -1), np.full(n, -1)
        for k, (c, verts) in enumerate(instances):
            labels[verts], instance[verts] = self.index_of[c], k
        rest = np.array_split(perm[bounds[-1]:], np.sort(rng.integers(0, n - bounds[-1] + 1, 3)))
        labels[rest[0]], instance[rest[0]] = self.index_of[WALL_ID], len(instances)
        labels[rest[1]], instance[rest[1]] = self.index_of[FLOOR_ID], len(instances) + 1
        labels[rest[3]] = self.index_of[self.regular[0]]  # a class but no instance id: void
        gt = encode_ground_truth(labels, instance)
        void = np.flatnonzero(~np.isin(gt // 1000, instance_class_ids()))
        annotated = np.flatnonzero(np.isin(gt // 1000, instance_class_ids()))
        predictions = self.instance_predictions(instances, void, annotated, n)
        predictions += self.scene_predictions(instances, void, annotated, n)
        return gt, [predictions[i] for i in rng.permutation(len(predictions))]

    def instance_predictions(self, instances, void, annotated, n) -> list:
        rng, out = self.rng, []
        for c, verts in instances:
            if c in self.gt_only:
                continue
            s, outside = len(verts), {"void": void, "other": np.setdiff1d(annotated, verts),
                                      "any": np.setdiff1d(np.arange(n), verts)}
            for _ in range(int(rng.choice([0, 1, 1, 2, 3]))):  # 0: a false negative; 2-3: duplicates
                kind = str(rng.choice(["copy", "subset", "superset", "mixed", "two instances", "wrong class"],
                                      p=[0.2, 0.2, 0.2, 0.2, 0.1, 0.1]))
                label, delta = c, int(rng.integers(-1, 2))
                if kind == "copy":
                    points = verts
                elif kind == "subset":  # IoU m/s, at and around the thresholds
                    points = verts[:int(np.clip(round(self.level() * s) + delta, 1, s))]
                elif kind == "superset":  # IoU s/(s+e) at and around the thresholds, extra on void or other
                    extra = round(s / self.level() - s) + delta
                    points = np.concatenate([verts, self.pick(outside[str(rng.choice(list(outside)))], extra)])
                elif kind == "mixed":
                    points = np.concatenate([verts[:int(rng.integers(1, s + 1))],
                                             self.pick(outside["any"], rng.integers(0, s + 1))])
                elif kind == "two instances":  # IoU > 0.25 with both when of similar size: one match only
                    same = [v for k, v in instances if k == c and v is not verts] or [v for _, v in instances]
                    points = np.concatenate([verts, same[int(rng.integers(len(same)))]])
                else:
                    points, label = verts, int(rng.choice([r for r in self.regular if r != c]))
                out.append((kind, points, label, self.confidence()))
        return out

    def scene_predictions(self, instances, void, annotated, n) -> list:
        rng, out = self.rng, []
        predicted = [(c, v) for c, v in instances if c not in self.gt_only]
        for _ in range(int(rng.integers(0, 4))):  # void share at and around the thresholds, rest on an instance
            c, verts = predicted[int(rng.integers(len(predicted)))] if predicted else (self.regular[0], void[:0])
            total = int(rng.integers(100, 1500))
            on_void = self.pick(void, round(self.level() * total) + int(rng.integers(-1, 2)))
            out.append(("on void", np.concatenate([on_void, verts[:total - len(on_void)]]), c, self.confidence()))
        for c, verts in predicted:
            if len(verts) < MIN_REGION_SIZE and rng.random() < 0.5:  # small instance plus void or other vertices
                pool = void if rng.random() < 0.5 else np.setdiff1d(annotated, verts)
                extra = self.pick(pool, int(rng.integers(0, 300)))
                out.append(("on small instance", np.concatenate([verts, extra]), c, self.confidence()))
        for _ in range(int(rng.integers(1, 4))):
            out.append(("class without ground truth", self.pick(np.arange(n), rng.integers(50, 2000)),
                        int(rng.choice(self.pred_only)), self.confidence()))
        for _ in range(int(rng.integers(1, 3))):
            out.append(("tiny", self.pick(np.arange(n), rng.integers(0, MIN_REGION_SIZE)),
                        int(rng.choice(self.regular)), self.confidence()))
        out.append(("label not evaluated", self.pick(np.arange(n), rng.integers(100, 1000)),
                    int(rng.choice(INVALID_LABELS)), self.confidence()))
        for c in {c for c, v in instances if c in self.regular and len(v) >= MIN_REGION_SIZE} - self.guarded:
            other = np.setdiff1d(annotated, np.concatenate([v for k, v in instances if k == c]))
            if len(other) >= MIN_REGION_SIZE:
                self.guarded.add(c)
                out.append(("on other classes (guard)", self.pick(other, rng.integers(100, min(len(other), 1000) + 1)),
                            c, self.confidence()))
        return out


def write_official_layout(scenes, root: Path) -> tuple[list[str], list[str]]:
    """Ground truth and prediction files as the official script reads them; (prediction files, gt files)."""
    (root / "gt").mkdir()
    (root / "pred" / "pred_mask").mkdir(parents=True)
    pred_files, gt_files = [], []
    for i, (gt, predictions) in enumerate(scenes):
        name = f"scene{i:04d}_00"
        (root / "gt" / f"{name}.txt").write_text("\n".join(map(str, gt.tolist())) + "\n")
        lines = []
        for k, (_, points, label, confidence) in enumerate(predictions):
            digits = np.full(2 * len(gt), ord("\n"), dtype=np.uint8)
            digits[0::2] = ord("0")
            digits[2 * points] = ord("1")
            (root / "pred" / "pred_mask" / f"{name}_{k}.txt").write_bytes(digits.tobytes())
            lines.append(f"pred_mask/{name}_{k}.txt {label} {confidence!r}")
        (root / "pred" / f"{name}.txt").write_text("\n".join(lines) + "\n")
        pred_files.append(str(root / "pred" / f"{name}.txt"))
        gt_files.append(str(root / "gt" / f"{name}.txt"))
    return pred_files, gt_files


def run_official(official: types.ModuleType, pred_files, gt_files, root: Path) -> tuple[float, np.ndarray, dict]:
    """Seconds, AP matrix (class x OVERLAPS) and averages of the official `evaluate()` on the written files."""
    kept: dict = {}
    evaluate_matches = official.evaluate_matches
    official.evaluate_matches = lambda matches: kept.setdefault("ap", evaluate_matches(matches))
    official.print_results = lambda avgs: kept.setdefault("avgs", avgs)
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        official.evaluate(pred_files, gt_files, str(root / "pred"), str(root / "result.csv"))
    seconds = time.perf_counter() - start
    official.evaluate_matches = evaluate_matches
    return seconds, kept["ap"][0], kept["avgs"]


def run_ours(scenes) -> tuple[float, np.ndarray, dict]:
    start = time.perf_counter()
    evaluator = InstanceEvaluator(min_region_size=MIN_REGION_SIZE)
    for gt, predictions in scenes:
        evaluator.add_scene(gt, [(points, label, confidence) for _, points, label, confidence in predictions])
    results = evaluator.results()
    return time.perf_counter() - start, evaluator.average_precision(), results


def compare(official_ap, official_avgs, our_ap, ours) -> tuple[float, list[str]]:
    """Largest absolute difference over all compared numbers, and the entries NaN in only one."""
    names = list(ours["per_class"])  # the class order of both: instance_class_ids()
    pairs = [(f"{names[c]} @ {OVERLAPS[o]}", official_ap[c, o], our_ap[c, o])
             for c in range(len(names)) for o in range(len(OVERLAPS))]
    for key, official_mean, official_key in AVERAGE_KEYS:
        pairs.append((f"mean {key}", official_avgs[official_mean], ours[key]))
        pairs += [(f"{name} {key}", official_avgs["classes"][name][official_key], ours["per_class"][name][key])
                  for name in names]
    largest, nan_mismatch = 0.0, []
    for what, a, b in pairs:
        a, b = float(a), math.nan if b is None else float(b)
        if math.isnan(a) != math.isnan(b):
            nan_mismatch.append(f"{what}: official {a}, lgseg {b}")
        elif not math.isnan(a):
            largest = max(largest, abs(a - b))
    return largest, nan_mismatch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-dir", type=Path, required=True,
                        help="BenchmarkScripts/ of a ScanNet/ScanNet checkout (util.py, util_3d.py, 3d_evaluation/)")
    parser.add_argument("--scenes", type=int, default=20, help="scenes per seed (default 20)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one data set per seed")
    parser.add_argument("--tolerance", type=float, default=1e-9, help="largest accepted difference (default 1e-9)")
    parser.add_argument("--report", type=Path,
                        default=PROJECT_ROOT / "results" / "bench" / "instance_eval_vs_official.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="instance_eval_vs_official_"))
    try:
        official = official_module(args.official_dir.resolve(), work / "BenchmarkScripts")
        rows, kinds, agree = [], Counter(), True
        print(HEADER)
        for seed in args.seeds:
            maker = SceneMaker(np.random.default_rng(seed))
            scenes = [maker.scene() for _ in range(args.scenes)]
            kinds.update(kind for _, predictions in scenes for kind, *_ in predictions)
            root = work / f"seed{seed}"
            root.mkdir()
            official_seconds, official_ap, official_avgs = run_official(official, *write_official_layout(scenes, root),
                                                                        root)
            our_seconds, our_ap, ours = run_ours(scenes)
            largest, nan_mismatch = compare(official_ap, official_avgs, our_ap, ours)
            agree &= largest <= args.tolerance and not nan_mismatch
            sizes = [np.unique(gt[np.isin(gt // 1000, instance_class_ids())], return_counts=True)[1]
                     for gt, _ in scenes]
            rows.append(f"| {seed} | {len(scenes)} | {sum(len(gt) for gt, _ in scenes):,} | {sum(map(len, sizes))} "
                        f"({sum(int((s >= MIN_REGION_SIZE).sum()) for s in sizes)}) | "
                        f"{sum(len(p) for _, p in scenes)} ({ours['num_predictions']}) | {ours['num_classes_in_mean']} "
                        f"| {ours['ap']:.4f} / {ours['ap50']:.4f} / {ours['ap25']:.4f} | {largest:.1e} | "
                        f"{len(nan_mismatch)} | {official_seconds:.2f} | {our_seconds:.3f} |")
            print(rows[-1], *nan_mismatch[:10], sep="\n", flush=True)
    finally:
        shutil.rmtree(work)
    lines = [
        "# Instance AP: lgseg against ScanNet's official evaluate_semantic_instance.py", "",
        f"Date: {datetime.now().isoformat(timespec='seconds')}  ",
        f"Command: `{shlex.join(['python', 'bench/instance_eval_vs_official.py', *(argv or sys.argv[1:])])}`  ",
        f"Result: {'agree' if agree else 'DISAGREE'} to {args.tolerance:g} (AP per class and threshold, AP / AP50 / "
        "AP25 per class and overall)", "",
        HEADER, *rows, "",
        "Predictions by kind, all seeds: " + ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items())),
        "", "- official s: its `evaluate()` (reads the text files, matches, AP); lgseg s: `add_scene` per scene on "
        "in-memory arrays and `results()`. Same process, one after the other.",
        "- The official files are converted at run time only (see the module docstring); data and both evaluators "
        "as in bench/instance_eval_vs_official.py.",
        "- Run as Python 3 the official script takes the predictions of a scene in file order (dict insertion order), "
        "as lgseg does; under Python 2 it takes them in hash order of the mask paths, which changes AP25 where a "
        "prediction overlaps two instances of its class by more than 0.25. Not covered here."]
    write_text(args.report, "\n".join(lines) + "\n")
    print(f"{'agree' if agree else 'DISAGREE'}; report: {args.report}")
    raise SystemExit(0 if agree else 1)


if __name__ == "__main__":
    main()
