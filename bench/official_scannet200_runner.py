"""Run ScanNet's official ScanNet200 preprocessing on one scene folder and time it.

The official code is `BenchmarkScripts/ScanNet200/preprocess_scannet200.py` of the ScanNet/ScanNet repository
(it is not part of lgseg and is not copied here). Pass the folder that holds it as --official-dir; this runner puts
that folder on `sys.path`, imports the module unmodified (its `__main__` guard keeps the import free of side
effects) and calls its `handle_process` on one scene, --repeat times. It does, once and outside the timing, what the
official `main()` does before its loop: read the label tsv with pandas and the train/val scene lists, and create the
output subfolders.

    python bench/official_scannet200_runner.py --official-dir ScanNet/BenchmarkScripts/ScanNet200 \\
        --scene-dir RAW/scans/scene0191_00 --label-map RAW/scannetv2-labels.combined.tsv --out OUT [--repeat 6]

The result goes to OUT/{train,val,test}/<scene_id>.ply. One line `official_seconds=<t>` is printed per call: the
wall time of `handle_process` alone. `bench/preprocess.py` uses this runner for its side-by-side comparison.

numpy 2: the official `<scene>.txt` parser calls `np.fromstring(value, sep=' ')` on every `key = value` line, and
real ScanNet .txt files hold non-numeric values (`sceneType = Apartment`). numpy 1.x (the official requirements pin
1.22.4) only warned and returned the numbers it could read; numpy 2 raises ValueError. Unless --strict-numpy is
given, the runner replaces the name `np` inside the official module only (numpy itself is untouched) with a proxy
whose `fromstring` falls back to the 1.x behaviour on ValueError. Only the `axisAlignment` value is ever used.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import types
from pathlib import Path

import numpy as np
import pandas as pd

from lgseg.scannet.labels import resource_path

OFFICIAL_MODULE = "preprocess_scannet200"
SPLIT_FOLDERS = ("train", "val", "test")


class NumpyFromstringCompat(types.ModuleType):
    """Stand-in for `numpy` in the official module: all attributes are numpy's, `fromstring` tolerates text."""

    def __getattr__(self, name: str):
        return getattr(np, name)

    @staticmethod
    def fromstring(string, dtype=float, count=-1, *, sep, like=None):
        """numpy's `fromstring`; on ValueError, the leading numbers of `string` as numpy 1.x returned them."""
        try:
            return np.fromstring(string, dtype=dtype, count=count, sep=sep)
        except ValueError:
            values = []
            for token in string.split(sep.strip() or None):
                try:
                    values.append(dtype(token) if callable(dtype) else float(token))
                except ValueError:
                    break
            return np.array(values, dtype=dtype)


def import_official(official_dir: Path, strict_numpy: bool) -> types.ModuleType:
    """Import the official module from `official_dir` (its own imports are flat, hence the sys.path entry)."""
    if not (official_dir / f"{OFFICIAL_MODULE}.py").is_file():
        raise SystemExit(f"{official_dir} holds no {OFFICIAL_MODULE}.py; pass ScanNet's BenchmarkScripts/ScanNet200")
    sys.path.insert(0, str(official_dir))
    official = importlib.import_module(OFFICIAL_MODULE)
    if not strict_numpy:
        official.np = NumpyFromstringCompat("numpy_fromstring_compat")
    return official


def read_scene_list(path: Path) -> list[str]:
    return path.read_text().splitlines()


def prepare_output(out_dir: Path) -> None:
    """Create the split subfolders; the official main() creates only train/ and val/, so test scenes would fail."""
    for split in SPLIT_FOLDERS:
        (out_dir / split).mkdir(parents=True, exist_ok=True)


def time_calls(official: types.ModuleType, scene_dir: Path, out_dir: Path, labels: pd.DataFrame,
               train_scenes: list[str], val_scenes: list[str], repeat: int) -> None:
    """Call `handle_process` `repeat` times and print the seconds of each call."""
    # handle_process takes the scene id from the last '/'-separated part of the path: no trailing separator.
    scene_path = os.path.normpath(scene_dir)
    for _ in range(repeat):
        start = time.perf_counter()
        official.handle_process(scene_path, str(out_dir), labels, train_scenes, val_scenes)
        print(f"official_seconds={time.perf_counter() - start:.6f}", flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-dir", type=Path, required=True,
                        help="folder BenchmarkScripts/ScanNet200/ of a ScanNet/ScanNet checkout, holding "
                             f"{OFFICIAL_MODULE}.py")
    parser.add_argument("--scene-dir", type=Path, required=True,
                        help="raw scene folder <scene_id>/ with _vh_clean_2.ply, segs.json, aggregation.json, .txt")
    parser.add_argument("--label-map", type=Path, required=True, help="scannetv2-labels.combined.tsv")
    parser.add_argument("--out", type=Path, required=True, help="output root; writes OUT/<split>/<scene_id>.ply")
    parser.add_argument("--splits-dir", type=Path, default=resource_path("scannetv2_train.txt").parent,
                        help="folder with scannetv2_train.txt and scannetv2_val.txt; only picks the output "
                             "subfolder (default: the lists bundled with lgseg)")
    parser.add_argument("--repeat", type=int, default=1, help="number of handle_process calls (default 1)")
    parser.add_argument("--strict-numpy", action="store_true",
                        help="do not give the official module the np.fromstring fallback (fails under numpy 2)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    official = import_official(args.official_dir.resolve(), args.strict_numpy)
    labels = pd.read_csv(args.label_map, sep="\t", header=0)
    train_scenes = read_scene_list(args.splits_dir / "scannetv2_train.txt")
    val_scenes = read_scene_list(args.splits_dir / "scannetv2_val.txt")
    prepare_output(args.out)
    time_calls(official, args.scene_dir, args.out, labels, train_scenes, val_scenes, args.repeat)


if __name__ == "__main__":
    main()
