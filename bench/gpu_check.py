"""One prepared check of the sparse backbone on a GPU: parity with the CPU, speed and memory, a training step with
the engine's loader, and MinkowskiEngine side by side when it is importable.

    bash bench/gpu_check.sh            # on a CUDA machine: results/bench/gpu.md and gpu.json, under 8 minutes
    bash bench/gpu_check.sh --smoke    # anywhere, CPU too: tiny sizes, seconds (tests/test_gpu_check.py)

1. Parity: Res16UNet14Tiny and Res16UNet34D with the same weights and input (a generated 2 cm room), outputs and
   every parameter's gradient, float32 on the device (TF32 off) against float64 on the CPU; the float32 CPU
   result against the same reference shows the error float32 itself makes. Pass: relative error <= TOLERANCE.
2. Speed and memory: Res16UNet34D forward (no grad) and forward + backward on one room (about 150k voxels) and on a
   batch of 7 copies of it (about 1M voxels, as a batch of 2 cm scenes), float32 and bf16 autocast: median ms,
   peak memory, voxels/s. Kernel maps are built inside every pass, as in training.
3. Training step: generated 2 cm rooms through the processed store, SceneDataset with all augmentations,
   PointBudgetBatchSampler and DataLoader workers (the engine's loader), Res16UNet34D, cross-entropy, SGD:
   loader s/batch (alone) against step s/batch (on loaded batches), scenes/s.
4. MinkowskiEngine: section 2 with its backend when `import MinkowskiEngine` works (bench/gpu_check.sh builds it
   from a local sdist given as ME_SDIST); otherwise the build log's last lines.

Nothing is downloaded. Each result is printed and written to the JSON as soon as it is measured, so a run cut
short still reports what it got; the Markdown is written from the JSON at the end (or with --report-only).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import traceback
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import torch

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT / "bench"))
from sparse_backbone import room_voxels  # noqa: E402
from step_timing import step_times  # noqa: E402

room = lru_cache(room_voxels)  # one generated room per size, reused by every case

TOLERANCE = 1e-3  # relative error (max abs difference / max abs reference) of float32 results against float64
NUM_CLASSES = 20
SIZES = {  # full run on a GPU; smoke run anywhere in seconds
    "full": {"parity_voxels": 20_000, "parity_variants": ["Res16UNet14Tiny", "Res16UNet34D"], "speed_voxels": 150_000,
             "vertex_spacing": 0.01, "objects": 30, "copies": 7, "repeats": 5, "variant": "Res16UNet34D",
             "rooms": 28, "room_spacing": 0.02, "voxel_size": 0.02, "batch_size": 4, "batches": 6, "workers": 4},
    "smoke": {"parity_voxels": 3_000, "parity_variants": ["Res16UNet14Tiny"], "speed_voxels": 1_500,
              "vertex_spacing": 0.05, "objects": 4, "copies": 2, "repeats": 1, "variant": "Res16UNet14Tiny",
              "rooms": 6, "room_spacing": 0.1, "voxel_size": 0.1, "batch_size": 2, "batches": 2, "workers": 0},
}


class Results:
    """The JSON of the run, rewritten after every measurement."""

    def __init__(self, path: Path, header: dict):
        self.path, self.data = path, {"header": header, "sections": {}}
        self.save()

    def add(self, section: str, entry: dict) -> None:
        self.data["sections"].setdefault(section, []).append(entry)
        print(f"[{section}] {json.dumps(entry)}", flush=True)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        tmp.replace(self.path)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value.double() - reference).abs().max() / reference.abs().max().clamp(min=1e-30))


def parity(variant: str, sizes: dict, device: torch.device) -> dict:
    """float32 on the device and on the CPU against float64 on the CPU: output and gradients."""
    from lgseg.models import Res16UNet
    from lgseg.sparse import get_backend

    coords, features, voxel = room(sizes["parity_voxels"], vertex_spacing=sizes["vertex_spacing"],
                                   objects=sizes["objects"])
    backend = get_backend("torch")
    torch.manual_seed(0)
    state = Res16UNet(backend, variant, num_classes=NUM_CLASSES).state_dict()
    upstream = torch.randn(len(coords), NUM_CLASSES, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def run(dtype: torch.dtype, on: torch.device):
        model = Res16UNet(backend, variant, num_classes=NUM_CLASSES)
        model.load_state_dict(state)
        model = model.to(on, dtype).train()
        out = model(backend.input_tensor(coords.to(on), features.to(on, dtype))).features
        (out * upstream.to(on, dtype)).sum().backward()
        return out.detach().double().cpu(), {n: p.grad.double().cpu() for n, p in model.named_parameters()}

    reference = run(torch.float64, torch.device("cpu"))
    entry = {"variant": variant, "voxels": len(coords), "voxel_size_m": round(voxel, 4), "tolerance": TOLERANCE}
    for name, on in [("cpu_float32", torch.device("cpu"))] + ([("device_float32", device)] if device.type != "cpu"
                                                              else []):
        out, grads = run(torch.float32, on)
        worst = max(grads, key=lambda n: relative_error(grads[n], reference[1][n]))
        entry[name] = {"output": relative_error(out, reference[0]),
                       "gradient": relative_error(grads[worst], reference[1][worst]), "worst_gradient": worst}
    checked = entry["device_float32" if device.type != "cpu" else "cpu_float32"]
    entry["pass"] = checked["output"] <= TOLERANCE and checked["gradient"] <= TOLERANCE
    return entry


def speed(backend_name: str, sizes: dict, copies: int, precision: str, device: torch.device) -> dict:
    """Median time, peak memory and voxels/s of forward (no grad) and forward + backward."""
    from lgseg.models import Res16UNet
    from lgseg.sparse import get_backend

    coords, features, voxel = room(sizes["speed_voxels"], vertex_spacing=sizes["vertex_spacing"],
                                   objects=sizes["objects"])
    coords = torch.cat([torch.cat([torch.full((len(coords), 1), b), coords[:, 1:]], 1) for b in range(copies)])
    features = features.repeat(copies, 1).to(device)
    backend = get_backend(backend_name)
    torch.manual_seed(0)
    model = Res16UNet(backend, sizes["variant"], num_classes=NUM_CLASSES).to(device).train()
    entry = {"backend": backend_name, "variant": sizes["variant"], "voxels": len(coords), "copies": copies,
             "voxel_size_m": round(voxel, 4), "precision": precision}
    for mode in ("forward", "forward_backward"):
        times = []
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        for _ in range(sizes["repeats"] + 1):  # the first pass warms up
            synchronize(device)
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"), \
                    torch.set_grad_enabled(mode == "forward_backward"):
                out = backend.features(model(backend.input_tensor(coords.to(device), features)))
                if mode == "forward_backward":
                    out.float().square().mean().backward()
            synchronize(device)
            times.append(time.perf_counter() - start)
            model.zero_grad(set_to_none=True)
        median = statistics.median(times[1:])
        entry[mode] = {"median_ms": median * 1000, "voxels_per_s": len(coords) / median,
                       "peak_mib": (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
                                    else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                       "memory": "GPU allocated" if device.type == "cuda" else "process RSS"}
    return entry


def make_store(sizes: dict, folder: Path) -> Path:
    """A processed store of generated rooms, made as the workflow's data rules make it."""
    from lgseg.data.preprocess import preprocess
    from lgseg.data.splits import write_split_lists
    from lgseg.scannet.demo import DemoSettings, demo_scene_ids, write_demo_dataset
    from lgseg.scannet.labels import LABEL_TSV_NAME, write_label_map

    settings = DemoSettings(num_train=sizes["rooms"], num_val=1, num_test=0, vertex_spacing=sizes["room_spacing"])
    raw, processed = folder / "raw", folder / "processed"
    workers = max(1, min(8, os.cpu_count() or 1))
    write_demo_dataset(raw, settings, workers=workers)
    processed.mkdir(parents=True)
    write_label_map(raw / LABEL_TSV_NAME, processed / "label_map.tsv")
    scenes = sorted(s for ids in demo_scene_ids(settings).values() for s in ids)
    preprocess(raw, processed, scenes=scenes, label_map=processed / "label_map.tsv", workers=workers,
               manifest=folder / "manifest.json")
    write_split_lists([folder / "manifest.json"], processed / "splits")
    return processed


def training_step(sizes: dict, device: torch.device, folder: Path) -> dict:
    """Loader time per batch (the engine's dataset, sampler and workers) against the training step's."""
    from torch.utils.data import DataLoader

    from lgseg.data.augment import DEFAULT_STEPS
    from lgseg.data.dataset import PointBudgetBatchSampler, SceneDataset, collate
    from lgseg.paths import split_list
    from lgseg.scannet.labels import scannet200
    from lgseg.scannet.splits import read_scene_list
    from lgseg.train.engine import build_model

    start = time.perf_counter()
    processed = make_store(sizes, folder)
    store_s = time.perf_counter() - start
    dataset = SceneDataset(processed, "train", read_scene_list(split_list(processed, "train")), sizes["voxel_size"],
                           augmentations=DEFAULT_STEPS, seed=0)
    sampler = PointBudgetBatchSampler(dataset.num_vertices, sizes["batch_size"], 10**7, shuffle=True, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=sizes["workers"])
    batches, loader_times = [], []
    iterator = iter(loader)
    for _ in range(sizes["batches"]):
        start = time.perf_counter()
        batches.append(next(iterator))
        loader_times.append(time.perf_counter() - start)
    model = build_model("torch", sizes["variant"], 0, num_classes=scannet200().num_classes).to(device).train()
    step_times_s = step_times(model, batches, device)
    loader_s = statistics.median(loader_times[1:] or loader_times)  # the first batch includes worker start-up
    step_s = statistics.median(step_times_s)
    scenes = sum(len(b["scene_ids"]) for b in batches) / len(batches)
    return {"variant": sizes["variant"], "rooms": sizes["rooms"], "voxel_size_m": sizes["voxel_size"],
            "voxels_per_batch": statistics.median(len(b["coords"]) for b in batches), "scenes_per_batch": scenes,
            "loader_workers": sizes["workers"], "store_s": store_s, "loader_s_per_batch": loader_s,
            "step_s_per_batch": step_s, "scenes_per_s": scenes / step_s, "loader_keeps_up": loader_s < step_s}


def run_section(results: Results, section: str, measure, **labels) -> None:
    """Measure and record one entry; a failure is recorded with its error and the run goes on."""
    try:
        results.add(section, measure())
    except Exception as err:  # noqa: BLE001 - report any failure of one measurement and go on
        traceback.print_exc()
        results.add(section, {**labels, "error": f"{type(err).__name__}: {err}"[:2000]})


def header(device: torch.device, smoke: bool) -> dict:
    info = {"date": datetime.now().isoformat(timespec="seconds"), "smoke": smoke, "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def markdown(data: dict) -> str:
    """results/bench/gpu.md from the JSON."""
    h, sections = data["header"], data["sections"]
    device = h.get("gpu", "no GPU: " + h["device"]) + (" (smoke run: tiny sizes)" if h["smoke"] else "")
    lines = ["# GPU check of the sparse backbone", "",
             f"Date: {h['date']}  ", f"Machine: {h['machine']}, {h['cpu_count']} CPU cores, torch {h['torch']}, "
             f"CUDA {h['cuda']}, {device}  ",
             "Command: `bash bench/gpu_check.sh" + (" --smoke`" if h["smoke"] else "`"), ""]
    lines += ["## Parity (float32 against float64 on the CPU, same weights and input)", "",
              f"Relative error = max |difference| / max |reference|; pass when the device's is <= {TOLERANCE:g}.", "",
              "| network | voxels | CPU float32 output / gradient | device float32 output / gradient | pass |",
              "|---|---|---|---|---|"]
    for e in sections.get("parity", []):
        if "error" in e:
            lines.append(f"| {e['variant']} | | failed: {e['error'][:200]} | | no |")
            continue
        dev = e.get("device_float32")
        on_device = f"{dev['output']:.1e} / {dev['gradient']:.1e} ({dev['worst_gradient']})" if dev else "no device"
        lines.append(f"| {e['variant']} | {e['voxels']:,} | {e['cpu_float32']['output']:.1e} / "
                     f"{e['cpu_float32']['gradient']:.1e} | {on_device} | {'yes' if e['pass'] else 'NO'} |")
    lines += ["", "## Speed and memory (kernel maps built in every pass)", "",
              "| backend | voxels | precision | forward ms | forward+backward ms | voxels/s (f+b) | peak memory (f+b) "
              "|", "|---|---|---|---|---|---|---|"]
    speeds = sections.get("speed", [])
    for e in speeds:
        if "error" in e:
            lines.append(f"| {e['backend']} | x{e['copies']} | {e['precision']} | failed: {e['error'][:200]} | | | |")
            continue
        fb = e["forward_backward"]
        lines.append(f"| {e['backend']} | {e['voxels']:,} ({e['copies']} x room, {e['voxel_size_m'] * 100:.1f} cm) | "
                     f"{e['precision']} | {e['forward']['median_ms']:.1f} | {fb['median_ms']:.1f} | "
                     f"{fb['voxels_per_s']:,.0f} | {fb['peak_mib']:,.0f} MiB {fb['memory']} |")
    ours = {(e["copies"], e["precision"]): e for e in speeds if e["backend"] == "torch" and "error" not in e}
    for e in speeds:
        key = (e.get("copies"), e.get("precision"))
        if e["backend"] == "minkowski" and "error" not in e and key in ours:
            ratio = ours[key]["forward_backward"]["median_ms"] / e["forward_backward"]["median_ms"]
            lines.append(f"\nOurs / MinkowskiEngine forward+backward time, {e['voxels']:,} voxels, {e['precision']}: "
                         f"**{ratio:.2f}**")
    lines += ["", "## Training step (the engine's loader; Res16UNet34D on the full run)", ""]
    for e in sections.get("training_step", []):
        if "error" in e:
            lines.append(f"failed: {e['error'][:300]}")
            continue
        lines.append(f"{e['rooms']} generated rooms at {e['voxel_size_m'] * 100:.0f} cm ({e['voxels_per_batch']:,.0f} "
                     f"voxels and {e['scenes_per_batch']:.1f} scenes per batch), {e['loader_workers']} loader workers: "
                     f"loader **{e['loader_s_per_batch']:.3f} s/batch**, step **{e['step_s_per_batch']:.3f} s/batch**, "
                     f"{e['scenes_per_s']:.1f} scenes/s; the loader "
                     + ("keeps up." if e["loader_keeps_up"] else "is the bottleneck."))
    lines += ["", "## MinkowskiEngine", ""]
    for e in sections.get("minkowski", []):
        lines.append(e["status"] + ("" if "log_tail" not in e else "\n\n```\n" + e["log_tail"] + "\n```"))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, any device, seconds")
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "results" / "bench" / "gpu.json",
                        help="the JSON; the Markdown goes beside it (.md)")
    parser.add_argument("--minkowski-log", type=Path, help="log of the MinkowskiEngine build (gpu_check.sh)")
    parser.add_argument("--report-only", action="store_true", help="write the Markdown from an existing JSON")
    args = parser.parse_args()
    if args.report_only:
        args.out.with_suffix(".md").write_text(markdown(json.loads(args.out.read_text())))
        return
    sizes = SIZES["smoke" if args.smoke else "full"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 in the parity check
        torch.backends.cudnn.allow_tf32 = False
    results = Results(args.out, header(device, args.smoke))
    for variant in sizes["parity_variants"]:
        run_section(results, "parity", lambda: parity(variant, sizes, device), variant=variant)
    backends = ["torch"] + (["minkowski"] if importlib.util.find_spec("MinkowskiEngine") else [])
    for backend in backends:
        for copies in (1, sizes["copies"]):
            for precision in ("float32", "bf16"):
                run_section(results, "speed", lambda: speed(backend, sizes, copies, precision, device),
                            backend=backend, copies=copies, precision=precision)
    with tempfile.TemporaryDirectory() as folder:
        run_section(results, "training_step", lambda: training_step(sizes, device, Path(folder)))
    if "minkowski" in backends:
        status = {"status": "importable: measured beside ours above"}
    else:
        status = {"status": "not importable, so not measured"}
        if args.minkowski_log and args.minkowski_log.exists():
            tail = args.minkowski_log.read_text(errors="replace").strip().splitlines()[-15:]
            status = {"status": "did not build (last lines of the build log):", "log_tail": "\n".join(tail)}
    results.add("minkowski", status)
    text = markdown(results.data)
    args.out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
