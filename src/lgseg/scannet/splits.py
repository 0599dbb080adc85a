"""Official ScanNet v2 train/val/test scene lists (bundled) and split lookup."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from lgseg.errors import DataError
from lgseg.scannet.labels import resource_path

SPLITS = ("train", "val", "test")
OTHER_SPLIT = "other"


def read_scene_list(path: str | Path) -> list[str]:
    """Scene ids of a list file, one per line (blank lines ignored)."""
    path = Path(path)
    try:
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        raise DataError(path, "scene list not found", "run the `splits` rule or give an existing list") from None


@lru_cache(maxsize=1)
def official_scene_lists() -> dict[str, list[str]]:
    """{'train': 1201 ids, 'val': 312 ids, 'test': 100 ids} in file order."""
    return {split: read_scene_list(resource_path(f"scannetv2_{split}.txt")) for split in SPLITS}


@lru_cache(maxsize=1)
def _split_of_scene() -> dict[str, str]:
    return {scene: split for split, scenes in official_scene_lists().items() for scene in scenes}


def official_split(scene_id: str) -> str:
    """'train' | 'val' | 'test' from the official lists, 'other' for a scene in none of them."""
    return _split_of_scene().get(scene_id, OTHER_SPLIT)
