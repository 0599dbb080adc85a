"""Training-step speed of our sparse backend against an earlier commit's, side by side in one run.

Batches: the configured train scenes with all augmentations, voxelised and collated as the engine does (the
configured model, voxel size and batch size). Each code version runs in its own process on the same saved
batches (forward + backward + SGD with cross-entropy; 1 compute thread by default, as the workflow's training
jobs), and the versions take turns over several rounds, so that load on the machine hits both alike; the ratio
is taken batch by batch. The earlier version's `src/` comes from git (`git archive`). Needs a processed store (run
the demo workflow first).

    python bench/training_step.py --baseline 30d491a [--rounds 3] [--batches 8] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def save_batches(config_path: str, count: int, path: Path) -> int:
    """Collate `count` train batches of the configured experiment 'scratch' to `path`; returns their voxels."""
    import torch

    from lgseg.config import load_config
    from lgseg.data.dataset import PointBudgetBatchSampler, collate
    from lgseg.runs import resolve_run
    from lgseg.train.engine import make_datasets

    config = load_config([config_path])
    spec = resolve_run(config, "experiment", "scratch")
    train_set, _ = make_datasets(spec)
    train_cfg = spec.settings["train"]
    sampler = PointBudgetBatchSampler(train_set.num_vertices, train_cfg["batch_size"], train_cfg["max_points"],
                                      shuffle=True, seed=0)
    batches = [collate([train_set[i] for i in b]) for b, _ in zip(sampler, range(count))]
    keep = ("coords", "features", "labels")
    torch.save({"variant": config["model"]["variant"], "batches": [{k: b[k] for k in keep} for b in batches]},
               path)
    return sum(len(b["coords"]) for b in batches)


def worker(batches_file: str) -> None:
    """Time every batch's step with whatever `lgseg` is on the path; prints one JSON line."""
    import torch

    from lgseg.scannet.labels import scannet200
    from lgseg.train.engine import build_model
    from step_timing import step_times

    saved = torch.load(batches_file)
    model = build_model("torch", saved["variant"], 0, num_classes=scannet200().num_classes)
    times = step_times(model, saved["batches"])
    print(json.dumps({"step_s": times}))


def extract_baseline(revision: str, into: Path) -> tuple[str, Path]:
    """(short hash of `revision`, its `src/` extracted under `into` with git archive)."""
    short = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", revision],
                           check=True, capture_output=True, text=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(PROJECT_ROOT), "archive", short, "src"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return short, into / "src"


def run_worker(src: Path, batches_file: Path, threads: int):
    """Run this script's --worker on `batches_file` with the `lgseg` of `src`; its last JSON line."""
    env = dict(os.environ, PYTHONPATH=f"{src}{os.pathsep}{Path(__file__).parent}", OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, sys.argv[0], "--worker", str(batches_file)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def comparison_arguments(description: str, baseline: str, batches: int, report: str) -> argparse.Namespace:
    """The command line of a this-tree-against-a-baseline benchmark (this one and bench/pretraining_losses.py)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", help="git revision of the earlier code", default=baseline)
    parser.add_argument("--config", default=str(PROJECT_ROOT / "config.yaml"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=batches)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(PROJECT_ROOT / "results" / "bench" / report))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser.parse_args()


def take_turns(args: argparse.Namespace, describe) -> tuple[str, int, dict[str, list]]:
    """The baseline's short hash, the saved batches' voxels and, per version (baseline first, then this tree), its
    worker's result of every round, the versions taking turns; `describe(result)` is printed after each."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        baseline, baseline_src = extract_baseline(args.baseline, tmp)
        voxels = save_batches(args.config, args.batches, tmp / "batches.pt")
        versions = {f"{baseline} (baseline)": baseline_src, "this tree": PROJECT_ROOT / "src"}
        rounds = {name: [] for name in versions}
        for round_ in range(args.rounds):
            for name, src in versions.items():
                rounds[name].append(run_worker(src, tmp / "batches.pt", args.threads))
                print(f"round {round_ + 1}: {name}: {describe(rounds[name][-1])}", flush=True)
    return baseline, voxels, rounds


def main() -> None:
    args = comparison_arguments(__doc__, "30d491a", 8, "training_step.md")
    if args.worker:
        worker(args.worker)
        return
    baseline, voxels, results = take_turns(
        args, lambda result: f"median {statistics.median(result['step_s']):.3f} s/step")
    rounds = {name: [result["step_s"] for result in runs] for name, runs in results.items()}
    # per batch the median over rounds; the ratio of the two versions batch by batch, so that batches of different
    # sizes and a round on a busier machine weigh alike
    per_batch = {name: [statistics.median(times) for times in zip(*runs)] for name, runs in rounds.items()}
    base_name = f"{baseline} (baseline)"
    ratios = [ours / base for ours, base in zip(per_batch["this tree"], per_batch[base_name])]
    ratio = statistics.median(ratios)
    rows = "\n".join(f"| {name} | {statistics.median(times):.3f} | {1 / statistics.median(times):.2f} | "
                     f"{min(times):.3f} – {max(times):.3f} |" for name, times in per_batch.items())
    command = (f"python bench/training_step.py --baseline {args.baseline} --rounds {args.rounds} "
               f"--batches {args.batches} --threads {args.threads}")
    text = f"""# Training step: this tree against {baseline}

Date: {datetime.now().isoformat(timespec="seconds")}  
Machine: {platform.machine()}, {os.cpu_count()} cores, {args.threads} compute thread(s)  
Command: `{command}`

{args.batches} demo train batches ({voxels / args.batches:,.0f} voxels each on average, all augmentations), the
configured network, forward + backward + SGD; each version in its own process, taking turns over {args.rounds}
rounds. Per batch the median over the rounds:

| code | s / step (median over batches) | steps / s | fastest – slowest batch |
|---|---|---|---|
{rows}

This tree / baseline step time, batch by batch: median **{ratio:.2f}** (range {min(ratios):.2f} – {max(ratios):.2f});
{1 / ratio:.2f}x the steps per second.
"""
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
