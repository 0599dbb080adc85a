"""Split lists of the scenes a workflow run processed, read from the preprocess shard manifests."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from lgseg.fileio import write_text
from lgseg.scannet.splits import SPLITS

log = logging.getLogger(__name__)


def write_split_lists(manifests: list[str | Path], out_dir: str | Path) -> dict[str, list[str]]:
    """Write `<out_dir>/{train,val,test}.txt` (sorted scene ids); scenes of no official split are logged."""
    by_split: dict[str, list[str]] = {}
    for manifest in manifests:
        for record in json.loads(Path(manifest).read_text())["scenes"]:
            by_split.setdefault(record["split"], []).append(record["scene_id"])
    for split in SPLITS:
        scenes = sorted(by_split.get(split, []))
        write_text(Path(out_dir) / f"{split}.txt", "".join(f"{s}\n" for s in scenes))
        log.info("%s: %d scenes", split, len(scenes))
    for split in sorted(set(by_split) - set(SPLITS)):
        log.warning("%d scenes in no official list (split '%s'): %s", len(by_split[split]), split,
                    " ".join(sorted(by_split[split])))
    return {split: sorted(by_split.get(split, [])) for split in SPLITS}
