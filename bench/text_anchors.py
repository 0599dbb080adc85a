"""Benchmark the text-anchor cache: encoding the 200 ScanNet200 class names, then a cache hit.

Each case is a fresh `python -m lgseg text-anchors` process (imports included, as a workflow rule pays them), timed
wall-clock: the first run into an empty folder encodes and writes the cache, the second finds the same inputs and
does nothing. Repeated --repeats times; the median is reported. Results go to results/bench/text_anchors.md.

    python bench/text_anchors.py [--encoder minilm-l6] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from lgseg.fileio import write_text

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def timed_run(encoder: str, out: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lgseg", "text-anchors", "--encoder", encoder, "--out", str(out)],
                   check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", default="minilm-l6")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    encode, hit = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / f"{args.encoder}.npz"
            encode.append(timed_run(args.encoder, out))
            hit.append(timed_run(args.encoder, out))
    import torch

    lines = [
        "# Text anchors: encoding the 200 class names, and a cache hit", "",
        f"Date: {datetime.now().isoformat(timespec='seconds')}  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}  ",
        f"Command: `python bench/text_anchors.py --encoder {args.encoder} --repeats {args.repeats}`", "",
        "Each number is one fresh `python -m lgseg text-anchors` process, imports included (s, median of the runs).",
        "", "| case | median s | runs |", "|---|---|---|",
        f"| encode 200 names + write cache | {statistics.median(encode):.2f} | "
        f"{', '.join(f'{t:.2f}' for t in encode)} |",
        f"| cache hit (same inputs) | {statistics.median(hit):.2f} | {', '.join(f'{t:.2f}' for t in hit)} |", "",
    ]
    text = "\n".join(lines)
    write_text(PROJECT_ROOT / "results" / "bench" / "text_anchors.md", text)
    print(text)


if __name__ == "__main__":
    main()
