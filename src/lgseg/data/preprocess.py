"""Raw ScanNet scenes -> processed store, in parallel worker processes, with a progress bar."""

from __future__ import annotations

import logging
from pathlib import Path

from lgseg.data.store import write_scene
from lgseg.errors import DataError
from lgseg.fileio import write_json
from lgseg.parallel import map_with_progress
from lgseg.scannet.labels import LABEL_TSV_NAME, read_label_table
from lgseg.scannet.raw import find_scene_dir, read_scene
from lgseg.scannet.splits import official_split

log = logging.getLogger(__name__)
_worker_label_index: dict[str, int] = {}


def discover_scenes(raw_dir: str | Path) -> list[str]:
    """All scene folders under `scans/` and `scans_test/`, sorted."""
    raw_dir = Path(raw_dir)
    found = sorted(p.name for sub in ("scans", "scans_test") if (raw_dir / sub).is_dir()
                   for p in (raw_dir / sub).iterdir() if p.is_dir())
    if not found:
        raise DataError(raw_dir, "no scene folders under scans/ or scans_test/",
                        "point --raw-dir (config key scannet.raw_dir) at a ScanNet download in the official layout")
    return found


def preprocess_scene(raw_dir: str | Path, out_dir: str | Path, scene_id: str,
                     class_index_of_label: dict[str, int]) -> dict:
    """Read, merge and write one scene; return its meta record."""
    folder, labelled = find_scene_dir(raw_dir, scene_id)
    scene = read_scene(folder, class_index_of_label, labelled=labelled)
    return write_scene(out_dir, official_split(scene_id), scene)


def _init_worker(class_index_of_label: dict[str, int]) -> None:
    _worker_label_index.update(class_index_of_label)


def _run_one(job: tuple[str, str, str]) -> tuple[str, dict | None, str | None]:
    raw_dir, out_dir, scene_id = job
    try:
        return scene_id, preprocess_scene(raw_dir, out_dir, scene_id, _worker_label_index), None
    except DataError as err:
        return scene_id, None, str(err)


def preprocess(raw_dir: str | Path, out_dir: str | Path, scenes: list[str] | None = None,
               label_map: str | Path | None = None, workers: int = 1, manifest: str | Path | None = None) -> list[dict]:
    """Preprocess `scenes` (default: all found) and optionally write a manifest of what was written.

    Every scene is attempted; failures are collected and raised together, and then no manifest is written.
    """
    raw_dir = Path(raw_dir)
    class_index_of_label = read_label_table(label_map or raw_dir / LABEL_TSV_NAME).class_index_of_label()
    scenes = list(scenes) if scenes else discover_scenes(raw_dir)
    jobs = [(str(raw_dir), str(out_dir), scene) for scene in scenes]
    records, failures = [], []
    results = list(map_with_progress(_run_one, jobs, workers, "preprocess", initializer=_init_worker,
                                     initargs=(class_index_of_label,)))
    for scene_id, record, error in sorted(results, key=lambda r: r[0]):
        if error:
            failures.append(error)
        else:
            records.append(record)
            log.info("%s -> %s (%d vertices)", scene_id, record["split"], record["num_vertices"])
    if failures:
        raise DataError(raw_dir, f"{len(failures)} of {len(jobs)} scenes failed:\n  " + "\n  ".join(failures))
    if manifest:
        write_json(manifest, {"raw_dir": str(raw_dir), "scenes": records})
    return records
