"""Benchmark the training data loader against the training step it feeds, side by side in one run.

Loader: scenes per second through SceneDataset with all augmentations (elastic distortion, rotation, scaling,
flips, chromatic steps) + voxelisation + collate, for 0 and N worker processes. Step: seconds per training
step (forward + backward + SGD) of the configured model on the same batches. The loader keeps up when it
delivers a batch faster than a step consumes one. Needs a processed store (run the demo workflow first).

    python bench/loader.py --config config.yaml [--batches 10] [--workers 0 2]
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import datetime
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from lgseg.config import load_config
from lgseg.data.dataset import PointBudgetBatchSampler, collate
from lgseg.scannet.labels import scannet200
from lgseg.runs import resolve_run
from lgseg.train.engine import build_model, make_datasets
from step_timing import step_times

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def loader_rate(dataset, sampler, workers: int, batches: int) -> tuple[float, float]:
    """(scenes per second, seconds per batch) over `batches` batches after the first."""
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers)
    iterator = iter(loader)
    next(iterator)  # start-up of the workers is not counted
    scenes, start = 0, time.perf_counter()
    for _ in range(batches):
        scenes += len(next(iterator)["scene_ids"])
    elapsed = time.perf_counter() - start
    return scenes / elapsed, elapsed / batches


def step_time(config, dataset, sampler, batches: int) -> float:
    model = build_model(config["model"]["backend"], config["model"]["variant"], 0,
                        num_classes=scannet200().num_classes)
    loaded = [collate([dataset[i] for i in b]) for b, _ in zip(sampler, range(batches))]
    times = step_times(model, loaded)
    return sum(times) / len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", nargs="+", default=[str(PROJECT_ROOT / "config.yaml")])
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--report", type=Path, default=PROJECT_ROOT / "results" / "bench" / "loader.md")
    args = parser.parse_args()
    config = load_config(args.config)
    train_cfg = config["train"]
    dataset, _ = make_datasets(resolve_run(config, "experiment", next(iter(config["experiments"]))))
    sampler = PointBudgetBatchSampler(dataset.num_vertices, train_cfg["batch_size"], train_cfg["max_points"],
                                      shuffle=True, seed=0)
    step = step_time(config, dataset, sampler, args.batches)
    rows = []
    for workers in args.workers:
        rate, per_batch = loader_rate(dataset, sampler, workers, args.batches)
        rows.append(f"| {workers} | {rate:.2f} | {per_batch:.2f} | {step:.2f} | {step / per_batch:.2f} |")
    text = "\n".join([
        "# Data loader vs training step",
        "",
        f"Date: {datetime.now().isoformat(timespec='seconds')}  ",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}  ",
        f"Data: `{config['dataset']['name']}` train split, voxel {train_cfg['voxel_size']} m, batches of at most "
        f"{train_cfg['batch_size']} scenes / {train_cfg['max_points']} vertices, all augmentations; model "
        f"{config['model']['variant']} ({config['model']['backend']} backend). {args.batches} batches per "
        "measurement after one warm-up batch; loader and step measured one after the other in this run.",
        "",
        "| loader workers | scenes / s | s / batch (loader) | s / step (train) | step / loader |",
        "|---|---|---|---|---|",
        *rows,
        "",
        "step / loader > 1: the loader delivers batches faster than training consumes them. With workers the loader "
        "runs beside training, so the two share the CPU cores when training on CPU.",
    ]) + "\n"
    args.report.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
