"""Benchmark one-scene preprocessing: lgseg's `preprocess_scene` against the official ScanNet200 script.

A synthetic scene of real ScanNet size (about 150k vertices, 300k faces, 40 segGroups) is written in the raw
ScanNet layout to a temporary folder. On that same folder the script then

* times `lgseg.data.preprocess.preprocess_scene` in this process (one warm-up, median of --repeats calls),
* measures the peak RSS of preprocessing the scene once in a fresh Python process,
* times ScanNet's official `handle_process` (BenchmarkScripts/ScanNet200/preprocess_scannet200.py) through
  bench/official_scannet200_runner.py in a separate process (one warm-up call, median of --repeats calls,
  processing only) and checks that both give the same coordinates, colours, per-vertex labels and instances,

and writes the results to results/bench/preprocess.md (the table also goes to stdout).

The official script is not part of this repository. To reproduce the comparison, get ScanNet/ScanNet at commit
3830fce7f8b2e48ef047ef7fd76ea5f62903f51c (the one the committed report used) and pass its
BenchmarkScripts/ScanNet200 folder as --official-dir; --official-commit only records the commit in the report:

    git clone https://github.com/ScanNet/ScanNet && git -C ScanNet checkout 3830fce7f8b2e48ef047ef7fd76ea5f62903f51c
    python bench/preprocess.py --official-dir ScanNet/BenchmarkScripts/ScanNet200 \
        --official-commit 3830fce7f8b2e48ef047ef7fd76ea5f62903f51c [--repeats 5]

The official script needs numpy, pandas and plyfile. Without --official-dir the comparison is skipped and the
report says so.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import plyfile

from lgseg.data.preprocess import preprocess_scene
from lgseg.scannet.demo import DemoSettings, generate_scene, write_scene
from lgseg.scannet.labels import IGNORE_INDEX, LABEL_TSV_NAME, read_label_table, resource_path, scannet200

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_RUNNER = Path(__file__).resolve().parent / "official_scannet200_runner.py"
REFERENCE_COMMIT = "3830fce7f8b2e48ef047ef7fd76ea5f62903f51c"  # ScanNet/ScanNet commit the committed report used
SCENE_ID = "scene0191_00"  # in the official train list
# Tuned so that the scene has real ScanNet size: 156,948 vertices, 302,976 faces, 40 segGroups.
SETTINGS = DemoSettings(seed=0, vertex_spacing=0.035, objects_per_room=(36, 36), room_size=(5.0, 5.0))

# Linux keeps a process's RSS high-water mark across fork + exec, so a child started directly from this (large)
# process would report at least our own peak as its ru_maxrss. Children are therefore started through this small
# launcher: its children's ru_maxrss is their own. It prints the largest ru_maxrss of its children last.
LAUNCHER = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True)
print(f"children_maxrss_kib={resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}")
"""

# Memory measurement child: imports lgseg, reads the label table, then processes the scene once.
RSS_CHILD = """
import json, resource, sys
from lgseg.data.preprocess import preprocess_scene
from lgseg.scannet.labels import read_label_table
raw_dir, out_dir, scene_id, tsv = sys.argv[1:]
index = read_label_table(tsv).class_index_of_label()
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
preprocess_scene(raw_dir, out_dir, scene_id, index)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"baseline_kib": baseline, "peak_kib": peak}))
"""


@dataclass
class Comparison:
    coords_close: bool
    colors_equal: bool
    label_mismatches: int
    instance_mismatches: int
    num_vertices: int

    @property
    def identical(self) -> bool:
        return self.coords_close and self.colors_equal and not self.label_mismatches and not self.instance_mismatches


def make_raw_scene(raw_dir: Path):
    """Generate the synthetic scene into RAW/scans/<scene>/ plus the label tsv; return the DemoScene."""
    scene = generate_scene(SCENE_ID, SETTINGS)
    folder = raw_dir / "scans" / SCENE_ID
    folder.mkdir(parents=True)
    write_scene(scene, folder, labelled=True)
    shutil.copyfile(resource_path(LABEL_TSV_NAME), raw_dir / LABEL_TSV_NAME)
    return scene


def time_ours(raw_dir: Path, out_dir: Path, tsv: Path, repeats: int) -> list[float]:
    """Seconds per `preprocess_scene` call in this process, after one untimed warm-up call."""
    index = read_label_table(tsv).class_index_of_label()
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        preprocess_scene(raw_dir, out_dir, SCENE_ID, index)
        times.append(time.perf_counter() - start)
    return times[1:]


def run_launched(cmd: list[str]) -> tuple[str, int]:
    """Run `cmd` through LAUNCHER; return its stdout and its max RSS in KiB."""
    result = subprocess.run([sys.executable, "-c", LAUNCHER, *cmd], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{cmd[1]} failed:\n{result.stdout}\n{result.stderr}")
    maxrss = re.search(r"children_maxrss_kib=(\d+)", result.stdout)
    return result.stdout, int(maxrss.group(1))


def peak_rss_ours(raw_dir: Path, out_dir: Path, tsv: Path) -> dict:
    """The child's own ru_maxrss (KiB) after imports and after preprocessing the scene once."""
    stdout, _ = run_launched([sys.executable, "-c", RSS_CHILD, str(raw_dir), str(out_dir), SCENE_ID, str(tsv)])
    return json.loads(stdout.splitlines()[-2])


def run_official(official_dir: Path, raw_dir: Path, out_dir: Path, tsv: Path, repeats: int) -> tuple[list[float], int]:
    """Seconds per official `handle_process` call (warm-up dropped) and max RSS (KiB) of the runner process."""
    splits_dir = resource_path("scannetv2_train.txt").parent  # the bundled official train/val lists
    stdout, maxrss = run_launched([sys.executable, str(OFFICIAL_RUNNER), "--official-dir", str(official_dir),
                                   "--scene-dir", str(raw_dir / "scans" / SCENE_ID), "--label-map", str(tsv),
                                   "--out", str(out_dir), "--splits-dir", str(splits_dir),
                                   "--repeat", str(repeats + 1)])
    times = [float(t) for t in re.findall(r"official_seconds=([0-9.eE+-]+)", stdout)]
    return times[1:], maxrss


def compare(official_ply: Path, ours_dir: Path) -> Comparison:
    """Per-vertex comparison of the official output PLY with our processed arrays."""
    vertex = plyfile.PlyData.read(str(official_ply))["vertex"].data
    coord, color = np.load(ours_dir / "coord.npy"), np.load(ours_dir / "color.npy")
    segment, instance = np.load(ours_dir / "segment.npy"), np.load(ours_dir / "instance.npy")
    official_coord = np.column_stack([vertex["x"], vertex["y"], vertex["z"]])
    official_color = np.column_stack([vertex["red"], vertex["green"], vertex["blue"]])
    class_ids = np.asarray(scannet200().class_ids)  # ascending: class index i <-> raw id class_ids[i]
    position = np.searchsorted(class_ids, vertex["label"]).clip(max=len(class_ids) - 1)
    official_segment = np.where(class_ids[position] == vertex["label"], position, IGNORE_INDEX)
    official_instance = vertex["instance_id"].astype(np.int64)
    in_group = instance >= 0
    instance_mismatches = int((official_instance[in_group] != instance[in_group]).sum()
                              + (official_instance[~in_group] != 0).sum())
    return Comparison(coords_close=bool(np.allclose(official_coord, coord, atol=1e-5)),
                      colors_equal=bool(np.array_equal(official_color, color)),
                      label_mismatches=int((official_segment != segment).sum()),
                      instance_mismatches=instance_mismatches, num_vertices=len(vertex))


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    cpu = model.group(1) if model else "unknown CPU"
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, numpy {np.__version__}, "
            f"plyfile {metadata.version('plyfile')}")


def table(ours: list[float], official: list[float] | None, comparison: Comparison | None, rss: dict,
          official_rss_kib: int | None) -> str:
    ours_s = statistics.median(ours)
    if official is None:
        official_cell = ratio_cell = identical_cell = "not run"
        official_rss_cell = "not run"
    else:
        official_s = statistics.median(official)
        official_cell, ratio_cell = f"{official_s:.3f}", f"{official_s / ours_s:.1f}x"
        identical_cell = "yes" if comparison.identical else "**no**"
        official_rss_cell = f"{official_rss_kib / 1024:.0f} MiB"
    rows = [("ours, s/scene (median)", f"{ours_s:.3f}"),
            ("official, s/scene (median)", official_cell),
            ("speed-up (official / ours)", ratio_cell),
            ("labels, instances, coords, colours identical", identical_cell),
            ("ours, peak RSS of one scene in a fresh process", f"{rss['peak_kib'] / 1024:.0f} MiB "
             f"(after imports: {rss['baseline_kib'] / 1024:.0f} MiB; goal < 1024 MiB)"),
            ("official runner process, peak RSS", official_rss_cell)]
    return "\n".join(["| measure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])


def seconds(times: list[float]) -> str:
    return ", ".join(f"{t:.3f}" for t in times)


def report(args, scene, ours, official, comparison, rss, official_rss_kib, expected_ok) -> str:
    command = "python bench/preprocess.py"
    if args.official_dir is not None:
        command += f" --official-dir {args.official_dir} --official-commit {args.official_commit}"
    command += f" --repeats {args.repeats}"
    lines = [
        "# Preprocessing benchmark: one scene",
        "",
        f"Date: {datetime.now().isoformat(timespec='seconds')}  ",
        f"Machine: {machine()}  ",
        f"Command: `{command}`",
        "",
        f"Scene: synthetic `{SCENE_ID}` (train split) from `lgseg.scannet.demo` with `{SETTINGS}`: "
        f"{len(scene.raw_coord):,} vertices, {len(scene.faces):,} faces, {len(scene.groups)} segGroups, "
        "written as raw ScanNet files (binary PLY, segs.json, aggregation.json, txt) to a temporary folder on local "
        "disk.",
        "",
        table(ours, official, comparison, rss, official_rss_kib),
        "",
        "- ours: `preprocess_scene` in the benchmark process: read PLY + segs.json + aggregation.json + txt, "
        "axis-align, merge labels, write coord/color/segment/instance .npy + meta.json. Label table read once "
        f"beforehand, not timed. One warm-up call, then median of {args.repeats} calls ({seconds(ours)} s).",
        "- ours, peak RSS: `ru_maxrss` (RUSAGE_SELF) of a fresh child process that imports lgseg and reads the "
        "label table ('after imports'), then preprocesses the scene once. Children are started through a small "
        "launcher process, because Linux carries the parent's RSS high-water mark into `ru_maxrss` across fork + "
        "exec (a child started directly from the benchmark process reported the benchmark's own peak).",
        "- ours vs the generator's ground truth (segment.npy, instance.npy): "
        f"{'identical' if expected_ok else '**different**'}.",
    ]
    if official is None:
        lines.append("- official: **skipped**, `--official-dir` was not given; no comparison was made. To run it, get "
                     f"ScanNet/ScanNet at commit `{REFERENCE_COMMIT}` and pass its `BenchmarkScripts/ScanNet200` "
                     "folder as `--official-dir` (see the docstring of `bench/preprocess.py`).")
    else:
        lines += [
            "- official: `bench/official_scannet200_runner.py` imports the unmodified official module from "
            "`--official-dir` and prints `official_seconds`, i.e. `handle_process` only: read txt, PLY, segs.json, "
            "aggregation.json, axis-align, merge labels, write a PLY with vertices (x y z rgb label instance_id) "
            "and faces. Imports, label tsv and split lists (lgseg's bundled copies of the official train/val "
            "lists) are read once outside the timing. One warm-up call, then median of "
            f"{args.repeats} calls ({seconds(official)} s). The runner gives the official module a "
            "`np.fromstring` fallback so that the `sceneType = ...` line parses under numpy 2.",
            "- official runner, peak RSS: `ru_maxrss` of the runner process, started through the same launcher "
            f"(imports incl. pandas, {args.repeats + 1} calls).",
            "- ours and official ran side by side in the same run of this script, on the same scene folder.",
            f"- comparison over {comparison.num_vertices:,} vertices: official raw label id mapped to class index "
            f"(not one of the 200 ids -> -1) vs `segment.npy`: {comparison.label_mismatches} mismatches; instances "
            "(ours >= 0 must equal official `instance_id`, ours = -1 must be official 0): "
            f"{comparison.instance_mismatches} mismatches; coordinates allclose (atol 1e-5): "
            f"{'yes' if comparison.coords_close else 'no'}; colours equal: "
            f"{'yes' if comparison.colors_equal else 'no'}.",
            "- official script: ScanNet/ScanNet `BenchmarkScripts/ScanNet200/preprocess_scannet200.py` at commit "
            f"`{args.official_commit}` (as given by `--official-commit`). To reproduce: get ScanNet/ScanNet at "
            "that commit and pass its `BenchmarkScripts/ScanNet200` folder as `--official-dir`; the script itself "
            "is not in this repository.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-dir", type=Path, default=None,
                        help="folder BenchmarkScripts/ScanNet200/ of a ScanNet/ScanNet checkout (holds "
                             "preprocess_scannet200.py); omit to skip the comparison")
    parser.add_argument("--official-commit", default="not given",
                        help="ScanNet/ScanNet commit of --official-dir, only recorded in the report "
                             f"(the committed report used {REFERENCE_COMMIT})")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per side, after one warm-up (default 5)")
    parser.add_argument("--report", type=Path, default=PROJECT_ROOT / "results" / "bench" / "preprocess.md")
    args = parser.parse_args()
    if args.official_dir is not None and not (args.official_dir / "preprocess_scannet200.py").is_file():
        parser.error(f"--official-dir {args.official_dir} holds no preprocess_scannet200.py")

    with tempfile.TemporaryDirectory(prefix="lgseg-bench-") as tmp:
        tmp = Path(tmp)
        raw_dir, tsv = tmp / "raw", tmp / "raw" / LABEL_TSV_NAME
        scene = make_raw_scene(raw_dir)
        ours = time_ours(raw_dir, tmp / "ours", tsv, args.repeats)
        ours_dir = tmp / "ours" / "train" / SCENE_ID
        expected_ok = (np.array_equal(np.load(ours_dir / "segment.npy"), scene.segment)
                       and np.array_equal(np.load(ours_dir / "instance.npy"), scene.instance))
        rss = peak_rss_ours(raw_dir, tmp / "ours_rss", tsv)
        official = comparison = official_rss_kib = None
        if args.official_dir is not None:
            official, official_rss_kib = run_official(args.official_dir.resolve(), raw_dir, tmp / "official", tsv,
                                                      args.repeats)
            comparison = compare(tmp / "official" / "train" / f"{SCENE_ID}.ply", ours_dir)

    text = report(args, scene, ours, official, comparison, rss, official_rss_kib, expected_ok)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(text)
    print(table(ours, official, comparison, rss, official_rss_kib))
    if args.official_dir is None:
        print("official comparison skipped: --official-dir not given")
    print(f"report written to {args.report}")


if __name__ == "__main__":
    main()
