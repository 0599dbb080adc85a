"""Validate a local raw ScanNet copy: every listed scene has its files, non-empty; report all problems at once."""

from __future__ import annotations

from pathlib import Path

from lgseg.errors import DataError
from lgseg.fileio import write_json
from lgseg.scannet.labels import LABEL_TSV_NAME
from lgseg.scannet.raw import LABELLED_SUFFIXES, UNLABELLED_SUFFIXES
from lgseg.scannet.splits import official_split

MAX_LISTED = 20


def check_raw_dir(raw_dir: str | Path, scenes: list[str], label_map: str | Path | None, out: str | Path) -> dict:
    """Check the files of `scenes` (test scenes in scans_test/, others in scans/) and write a manifest."""
    raw_dir = Path(raw_dir)
    label_map = Path(label_map) if label_map else raw_dir / LABEL_TSV_NAME
    problems = []
    if not raw_dir.is_dir():
        raise DataError(raw_dir, "raw ScanNet folder does not exist",
                        "set scannet.raw_dir to your ScanNet download (with scans/ and scans_test/), "
                        "or enable scannet.download")
    if not label_map.is_file():
        problems.append(f"{label_map}: label table missing")
    manifest = {"raw_dir": str(raw_dir), "label_map": str(label_map), "scenes": {}}
    for scene in scenes:
        labelled = official_split(scene) != "test"
        folder = raw_dir / ("scans" if labelled else "scans_test") / scene
        sizes = {}
        for suffix in LABELLED_SUFFIXES if labelled else UNLABELLED_SUFFIXES:
            path = folder / f"{scene}{suffix}"
            size = path.stat().st_size if path.is_file() else -1
            if size <= 0:
                problems.append(f"{path}: {'missing' if size < 0 else 'empty'}")
            sizes[path.name] = size
        manifest["scenes"][scene] = {"labelled": labelled, "files": sizes}
    if problems:
        shown = "\n  ".join(problems[:MAX_LISTED])
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        raise DataError(raw_dir, f"{len(problems)} raw files missing or empty:\n  {shown}{more}",
                        "download them (download rule or ScanNet's script), or restrict scannet.scenes")
    write_json(out, manifest)
    return manifest
