"""Instance bank for instance sampling: every train instance of the sampled classes (tail by default) in one file.

Each instance is stored relative to the bottom-centre of its axis-aligned box (x, y at the box centre, z at its
lowest point), so placing it means adding a new bottom-centre. The per-class sampling weights are computed here
once, from the class-statistics table: w_c ∝ n_c ** -power over the sampled classes present in the bank
(n_c = train instances of class c; power 1 = inverse instance count, 0 = uniform over classes), 0 elsewhere.
The authors ship their weights as an opaque pickle; the formula is ours (docs/method.md §4).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lgseg.data.store import read_scene
from lgseg.errors import DataError
from lgseg.fileio import write_npz
from lgseg.parallel import map_with_progress
from lgseg.scannet.labels import FREQUENCY_GROUPS, IGNORE_INDEX, scannet200

BANK_ARRAYS = ("coord", "color", "segment", "offsets", "class_index", "scene_id", "source_instance", "origin",
               "class_weights")
_FIX = "re-run the instance-bank rule"


@dataclass(frozen=True)
class InstanceBank:
    """Concatenated instance points; instance k owns rows offsets[k]:offsets[k+1]."""

    coord: np.ndarray  # float32 P x 3, relative to the instance's box bottom-centre
    color: np.ndarray  # uint8 P x 3
    segment: np.ndarray  # int16 P: the instance's class, or -1 where a limited-annotation mask drops the point
    offsets: np.ndarray  # int64 K + 1
    class_index: np.ndarray  # int16 K
    scene_id: np.ndarray  # str K: the train scene it comes from
    source_instance: np.ndarray  # int32 K: its instance id in that scene
    origin: np.ndarray  # float64 K x 3: its box bottom-centre in scene coordinates
    class_weights: np.ndarray  # float64 per class (200), sums to 1; 0 for classes never sampled

    def __len__(self) -> int:
        return len(self.class_index)

    def points(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(coord, color, segment) of instance k."""
        rows = slice(self.offsets[k], self.offsets[k + 1])
        return self.coord[rows], self.color[rows], self.segment[rows]

    def instances_of_class(self, class_index: int) -> np.ndarray:
        return np.flatnonzero(self.class_index == class_index)


def selected_classes(groups: list[str] | tuple[str, ...]) -> np.ndarray:
    """Boolean mask over the 200 classes of the given frequency groups ('head', 'common', 'tail')."""
    unknown = set(groups) - set(FREQUENCY_GROUPS)
    if unknown:
        raise ValueError(f"unknown frequency groups {sorted(unknown)}; choose from {FREQUENCY_GROUPS}")
    return np.isin(np.array(scannet200().frequency_group), list(groups))


def sampling_weights(num_instances: np.ndarray, sampled: np.ndarray, power: float = 1.0) -> np.ndarray:
    """w_c = n_c ** -power / sum over sampled classes with n_c > 0; every other class gets 0."""
    num_instances = np.asarray(num_instances, dtype=np.float64)
    usable = np.asarray(sampled, dtype=bool) & (num_instances > 0)
    weights = np.zeros(len(num_instances))
    weights[usable] = num_instances[usable] ** -power
    total = weights.sum()
    return weights / total if total > 0 else weights


def read_instance_counts(path: str | Path) -> np.ndarray:
    """Train instances per class (in class-index order) from the `class-stats` csv."""
    fix = "pass the csv written by `python -m lgseg class-stats`"
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise DataError(path, "class statistics not found", fix) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(path, f"not a readable csv ({err})", fix) from None
    missing = {"class_index", "num_instances"} - set(table.columns)
    if missing:
        raise DataError(path, f"missing columns {sorted(missing)}", fix)
    num_classes = scannet200().num_classes
    if sorted(table["class_index"].tolist()) != list(range(num_classes)):
        raise DataError(path, f"class_index must list each of 0..{num_classes - 1} once", fix)
    return table.sort_values("class_index")["num_instances"].to_numpy(dtype=np.int64)


def _scene_instances(job: tuple[str, np.ndarray, np.ndarray | None]) -> list[dict]:
    """Instances of one processed scene whose class is sampled, each relative to its box bottom-centre."""
    folder, sampled, kept = job
    arrays = read_scene(folder)
    if "segment" not in arrays or "instance" not in arrays:
        raise DataError(folder, "scene has no labels (segment.npy / instance.npy)",
                        "build the instance bank from labelled train scenes only")
    coord = np.asarray(arrays["coord"], dtype=np.float64)
    segment = np.asarray(arrays["segment"], dtype=np.int64)
    instance = np.asarray(arrays["instance"], dtype=np.int64)
    if not len(coord) == len(segment) == len(instance):
        raise DataError(folder, f"array lengths differ (coord {len(coord)}, segment {len(segment)}, "
                        f"instance {len(instance)})", "re-run the preprocess rule for this scene")
    labels = segment
    if kept is not None:  # limited annotation: only the kept vertices keep their label
        labels = np.full_like(segment, IGNORE_INDEX)
        labels[kept] = segment[kept]
    color = np.asarray(arrays["color"], dtype=np.uint8)
    found = []
    with_class = (instance >= 0) & (segment >= 0)
    class_of_instance = np.full(int(instance.max(initial=-1)) + 1, IGNORE_INDEX, dtype=np.int64)
    class_of_instance[instance[with_class]] = segment[with_class]  # one segGroup = one class
    for source in np.flatnonzero(class_of_instance >= 0):
        class_index = int(class_of_instance[source])
        if not sampled[class_index]:
            continue
        members = np.flatnonzero(instance == source)
        points = coord[members]
        low, high = points.min(0), points.max(0)
        origin = np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]])
        found.append({"coord": (points - origin).astype(np.float32), "color": color[members],
                      "segment": labels[members].astype(np.int16), "class_index": class_index,
                      "scene_id": Path(folder).name, "source_instance": int(source), "origin": origin})
    return found


def build_instance_bank(scene_folders: list[Path], class_stats: str | Path, groups=("tail",), power: float = 1.0,
                        annotation_masks: str | Path | None = None, workers: int = 1) -> InstanceBank:
    """Collect the instances of the classes of `groups` from the processed scenes (in scene-list order).

    `class_stats` (the class-statistics csv of the same scenes) gives the sampling weights; `annotation_masks`
    (.npz, scene id -> kept vertex indices) marks the other points of each instance unlabelled, as in
    limited-annotation training.
    """
    sampled = selected_classes(groups)
    num_instances = read_instance_counts(class_stats)
    annotated = None
    if annotation_masks is not None:
        with np.load(annotation_masks) as masks:
            annotated = {scene: masks[scene] for scene in masks.files}
        missing = [folder.name for folder in scene_folders if folder.name not in annotated]
        if missing:
            raise DataError(annotation_masks, f"no mask for {len(missing)} train scenes, e.g. {missing[0]}",
                            "compute the masks over the same train list")
    jobs = [(str(folder), sampled, None if annotated is None else annotated[folder.name]) for folder in scene_folders]
    by_scene = {}
    for found in map_with_progress(_scene_instances, jobs, workers, "instance bank"):
        if found:
            by_scene[found[0]["scene_id"]] = found
    instances = [item for folder in scene_folders for item in by_scene.get(folder.name, [])]
    if not instances:
        raise DataError(class_stats, f"no instance of the {' + '.join(groups)} classes in the "
                        f"{len(scene_folders)} train scenes", "sample other frequency groups")
    class_index = np.array([item["class_index"] for item in instances], dtype=np.int16)
    uncounted = np.setdiff1d(class_index, np.flatnonzero(num_instances > 0))
    if uncounted.size:
        names = ", ".join(scannet200().class_names[c] for c in uncounted)
        raise DataError(class_stats, f"no instance of {names} counted, but the train scenes have some",
                        "compute the class statistics over the same train list")
    in_bank = np.zeros(len(num_instances), dtype=bool)
    in_bank[class_index] = True
    sizes = [len(item["coord"]) for item in instances]
    return InstanceBank(
        coord=np.concatenate([item["coord"] for item in instances]),
        color=np.concatenate([item["color"] for item in instances]),
        segment=np.concatenate([item["segment"] for item in instances]),
        offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        class_index=class_index,
        scene_id=np.array([item["scene_id"] for item in instances]),
        source_instance=np.array([item["source_instance"] for item in instances], dtype=np.int32),
        origin=np.stack([item["origin"] for item in instances]),
        class_weights=sampling_weights(num_instances, sampled & in_bank, power),
    )


def write_instance_bank(bank: InstanceBank, out: str | Path) -> None:
    """Store the bank as one compressed `.npz`, atomically."""
    write_npz(out, {name: getattr(bank, name) for name in BANK_ARRAYS}, compress=True)


def read_instance_bank(path: str | Path) -> InstanceBank:
    """Load and check a bank written by `write_instance_bank`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise DataError(path, "instance bank not found", _FIX) from None
    except (OSError, ValueError) as err:
        raise DataError(path, f"unreadable instance bank ({err})", _FIX) from None
    missing = set(BANK_ARRAYS) - set(arrays)
    if missing:
        raise DataError(path, f"not an instance bank (missing {sorted(missing)})", _FIX)
    bank = InstanceBank(**{name: arrays[name] for name in BANK_ARRAYS})
    k = len(bank.class_index)
    consistent = (len(bank.offsets) == k + 1 and bank.offsets[0] == 0 and bank.offsets[-1] == len(bank.coord)
                  and np.all(np.diff(bank.offsets) > 0) and len(bank.color) == len(bank.segment) == len(bank.coord)
                  and len(bank.origin) == len(bank.scene_id) == len(bank.source_instance) == k
                  and len(bank.class_weights) == scannet200().num_classes
                  and np.isclose(bank.class_weights.sum(), 1.0)
                  and np.all(np.isin(np.flatnonzero(bank.class_weights), bank.class_index)))
    if not consistent:
        raise DataError(path, "inconsistent instance bank (offsets, lengths or class weights)", _FIX)
    return bank
