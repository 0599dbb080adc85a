"""Benchmark Res16UNet34D forward+backward: our PyTorch sparse backend vs MinkowskiEngine, side by side.

Inputs are synthetic demo rooms (lgseg.scannet.demo) voxelised so that about 20k and 150k voxels are occupied,
with RGB features. Every (backend, size, device) case runs in its own fresh process, so the peak memory of one
case is not inflated by another: peak RSS (ru_maxrss of that process) on CPU, torch.cuda.max_memory_allocated on
GPU. Time = median of --repeats forward+backward passes after one warm-up (kernel maps are built inside each
pass, as in training). Writes results/bench/sparse_backbone.md.

    python bench/sparse_backbone.py [--sizes 20000 150000] [--devices cpu cuda] [--backends torch minkowski]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = (  # run the case in a grandchild so ru_maxrss is its own, not inherited from this process
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
    "print('children_maxrss_kib=%d' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
)


def room_voxels(target: int, seed: int = 0, vertex_spacing: float = 0.01, objects: int = 30):
    """(coords N x 4, rgb features N x 3, voxel size) of a 6 x 6 m demo room voxelised to about `target` occupied
    voxels."""
    import numpy as np
    import torch

    from lgseg.scannet.demo import DemoSettings, generate_scene

    scene = generate_scene("scene0191_00", DemoSettings(seed=seed, vertex_spacing=vertex_spacing,
                                                        objects_per_room=(objects, objects), room_size=(6.0, 6.0)))
    points = scene.raw_coord @ scene.alignment[:3, :3].T
    low, high = 0.005, 0.5
    for _ in range(40):  # bisect the voxel size
        size = (low + high) / 2
        count = len(np.unique(np.floor(points / size).astype(np.int64), axis=0))
        if abs(count - target) < 0.01 * target:
            break
        low, high = (size, high) if count > target else (low, size)
    cells, first = np.unique(np.floor(points / size).astype(np.int64), axis=0, return_index=True)
    coords = np.concatenate([np.zeros((len(cells), 1), np.int64), cells - cells.min(0)], 1)
    features = scene.color[first].astype(np.float32) / 255 - 0.5
    return torch.from_numpy(coords), torch.from_numpy(features), size


def run_case(backend_name: str, size: int, device: str, repeats: int) -> dict:
    """One case, in this process: time forward+backward passes and report peak memory."""
    import resource

    import torch

    from lgseg.models import Res16UNet
    from lgseg.sparse import get_backend

    torch.manual_seed(0)
    coords, features, voxel = room_voxels(size)
    backend = get_backend(backend_name)
    model = Res16UNet(backend, "Res16UNet34D").to(device).train()
    features = features.to(device)
    times = []
    for _ in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = model(backend.input_tensor(coords.to(device), features))
        backend.features(out).square().mean().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    result = {"backend": backend_name, "device": device, "voxels": len(coords), "voxel_size_m": round(voxel, 4),
              "seconds": times[1:], "threads": torch.get_num_threads()}
    if device == "cuda":
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
        result["gpu"] = torch.cuda.get_device_name()
    result["rss_after_run_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def launch(backend: str, size: int, device: str, repeats: int) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--case", backend, str(size), device, str(repeats)]
    result = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], capture_output=True, text=True)
    if result.returncode:
        return {"backend": backend, "device": device, "voxels": size, "error": result.stderr.strip().splitlines()[-1]}
    lines = result.stdout.strip().splitlines()
    case = json.loads(lines[-2])
    case["peak_rss_mib"] = int(lines[-1].split("=")[1]) / 1024
    return case


def report(cases: list[dict], args) -> str:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    rows = ["| backend | device | voxels | voxel size | s / forward+backward (median) | peak memory |",
            "|---|---|---|---|---|---|"]
    for c in cases:
        if "error" in c:
            rows.append(f"| {c['backend']} | {c['device']} | ~{c['voxels']} | | failed: {c['error']} | |")
            continue
        memory = (f"{c['peak_gpu_mib']:.0f} MiB GPU" if c["device"] == "cuda" else f"{c['peak_rss_mib']:.0f} MiB RSS")
        rows.append(f"| {c['backend']} | {c['device']} | {c['voxels']:,} | {c['voxel_size_m'] * 100:.1f} cm | "
                    f"{statistics.median(c['seconds']):.2f} ({', '.join(f'{t:.2f}' for t in c['seconds'])}) | "
                    f"{memory} |")
    ratios = []
    for size in args.sizes:
        for device in args.devices:
            pair = {c["backend"]: c for c in cases if c.get("device") == device and "error" not in c
                    and abs(c["voxels"] - size) < 0.05 * size}
            if {"torch", "minkowski"} <= set(pair):
                ratio = statistics.median(pair["torch"]["seconds"]) / statistics.median(pair["minkowski"]["seconds"])
                ratios.append(f"- {device}, ~{size:,} voxels: ours / MinkowskiEngine time = {ratio:.2f}")
    missing = [b for b in args.backends if b == "minkowski" and importlib.util.find_spec("MinkowskiEngine") is None]
    lines = [
        "# Sparse backbone benchmark: Res16UNet34D forward + backward",
        "",
        f"Date: {datetime.now().isoformat(timespec='seconds')}  ",
        f"Machine: {platform.machine()}, {cpu}, torch {torch.__version__}"
        + (f", GPU {cases[0].get('gpu')}" if any('gpu' in c for c in cases) else ", no GPU") + "  ",
        f"Command: `python bench/sparse_backbone.py --sizes {' '.join(map(str, args.sizes))} "
        f"--devices {' '.join(args.devices)} --backends {' '.join(args.backends)} --repeats {args.repeats}`",
        "",
        "Input: a synthetic demo room voxelised to the given number of occupied voxels, RGB features, batch of one; "
        "loss = mean of squared output features. Each case runs in a fresh process; kernel maps are built inside "
        "every pass. Model in train mode, float32, default torch threads.",
        "",
        *rows,
        "",
        *(ratios or ["- no side-by-side pair measured"]),
    ]
    if missing:
        lines.append("- MinkowskiEngine is not installed here (`bash envs/install_minkowski.sh`), so it was not run.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20000, 150000])
    parser.add_argument("--devices", nargs="+", default=["cpu"], choices=["cpu", "cuda"])
    parser.add_argument("--backends", nargs="+", default=["torch", "minkowski"], choices=["torch", "minkowski"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--report", type=Path, default=PROJECT_ROOT / "results" / "bench" / "sparse_backbone.md")
    parser.add_argument("--case", nargs=4, metavar=("BACKEND", "SIZE", "DEVICE", "REPEATS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        backend, size, device, repeats = args.case
        print(json.dumps(run_case(backend, int(size), device, int(repeats))))
        return
    cases = []
    for size in args.sizes:
        for device in args.devices:
            for backend in args.backends:
                if backend == "minkowski" and importlib.util.find_spec("MinkowskiEngine") is None:
                    continue
                case = launch(backend, size, device, args.repeats)
                print(json.dumps(case), flush=True)
                cases.append(case)
    text = report(cases, args)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
