"""Per-class instance and labelled-vertex counts over a split (feeds Fig. 4, focal weights, instance sampling)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from lgseg.data.store import read_scene
from lgseg.fileio import atomic_file
from lgseg.scannet.labels import scannet200

COLUMNS = ("class_index", "class_id", "class_name", "frequency_group", "num_instances", "num_vertices")


def scene_class_counts(segment: np.ndarray, instance: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(instances per class, labelled vertices per class) of one scene."""
    labelled = segment >= 0
    vertices = np.bincount(segment[labelled], minlength=num_classes)
    with_instance = labelled & (instance >= 0)
    class_of_instance = np.full(int(instance.max(initial=-1)) + 1, -1, dtype=np.int64)
    class_of_instance[instance[with_instance]] = segment[with_instance]
    instances = np.bincount(class_of_instance[class_of_instance >= 0], minlength=num_classes)
    return instances, vertices


def class_statistics(scene_folders: list[Path]) -> pd.DataFrame:
    """Sum the per-scene counts into one row per ScanNet200 class."""
    classes = scannet200()
    instances = np.zeros(classes.num_classes, dtype=np.int64)
    vertices = np.zeros(classes.num_classes, dtype=np.int64)
    for folder in tqdm(scene_folders, desc="class statistics", unit="scene"):
        arrays = read_scene(folder)
        scene_instances, scene_vertices = scene_class_counts(np.asarray(arrays["segment"]),
                                                             np.asarray(arrays["instance"]), classes.num_classes)
        instances += scene_instances
        vertices += scene_vertices
    return pd.DataFrame({
        "class_index": np.arange(classes.num_classes),
        "class_id": classes.class_ids,
        "class_name": classes.class_names,
        "frequency_group": classes.frequency_group,
        "num_instances": instances,
        "num_vertices": vertices,
    }, columns=list(COLUMNS))


def write_class_statistics(table: pd.DataFrame, out: str | Path) -> None:
    with atomic_file(out) as tmp:
        table.to_csv(tmp, index=False)
