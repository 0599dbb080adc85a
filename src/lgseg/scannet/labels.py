"""ScanNet200 classes and the label map: segGroup label -> tsv raw_category -> tsv id -> class index 0..199."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from lgseg.errors import DataError

IGNORE_INDEX = -1
NON_INSTANCE_CLASSES = ("wall", "floor")  # the instance task's classes are the other 198 (docs/method.md §8)
FREQUENCY_GROUPS = ("head", "common", "tail")
LABEL_TSV_NAME = "scannetv2-labels.combined.tsv"


def resource_path(name: str) -> Path:
    """Path of a file bundled in `lgseg/resources/scannet_meta/`."""
    return Path(str(resources.files("lgseg") / "resources" / "scannet_meta" / name))


@dataclass(frozen=True)
class ScanNet200:
    """The 200 benchmark classes in ascending raw-id order; index i = row i of every per-class array."""

    class_ids: tuple[int, ...]
    class_names: tuple[str, ...]
    frequency_group: tuple[str, ...]  # 'head' | 'common' | 'tail' per class
    val_absent_class_ids: tuple[int, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)

    def indices_of_group(self, group: str) -> list[int]:
        return [i for i, g in enumerate(self.frequency_group) if g == group]

    @property
    def instance_classes(self) -> tuple[int, ...]:
        """Indices of the instance-segmentation classes: all but wall and floor."""
        return tuple(i for i, name in enumerate(self.class_names) if name not in NON_INSTANCE_CLASSES)


@lru_cache(maxsize=1)
def scannet200() -> ScanNet200:
    """Load the bundled ScanNet200 constants (scannet200.json)."""
    meta = json.loads(resource_path("scannet200.json").read_text())
    group_of = {name: group for group in FREQUENCY_GROUPS for name in meta[group]}
    order = sorted(range(len(meta["class_ids"])), key=lambda i: meta["class_ids"][i])
    return ScanNet200(
        class_ids=tuple(meta["class_ids"][i] for i in order),
        class_names=tuple(meta["class_names"][i] for i in order),
        frequency_group=tuple(group_of[meta["class_names"][i]] for i in order),
        val_absent_class_ids=tuple(meta["val_absent_class_ids"]),
    )


@lru_cache(maxsize=1)
def scannet200_palette() -> tuple[tuple[int, int, int], ...]:
    """The benchmark's RGB colour (0-255) of each class, in class index order (scannet200_colors.tsv)."""
    path = resource_path("scannet200_colors.tsv")
    with open(path, newline="") as f:
        rows = {int(r["id"]): (int(r["r"]), int(r["g"]), int(r["b"])) for r in csv.DictReader(f, delimiter="\t")}
    missing = [i for i in scannet200().class_ids if i not in rows]
    if missing:
        raise DataError(path, f"no colour for class ids {missing[:5]}", "restore the bundled file")
    return tuple(rows[i] for i in scannet200().class_ids)


@dataclass(frozen=True)
class LabelTable:
    """The rows of `scannetv2-labels.combined.tsv` needed for ScanNet200: raw_category -> id (and count, NYU40 kind)."""

    raw_category_to_id: dict[str, int]
    count_of_raw_category: dict[str, int]
    nyu40_class_of_id: dict[int, str] = field(default_factory=dict)  # '' where the tsv has no nyu40class column

    def class_index_of_label(self) -> dict[str, int]:
        """segGroup label string -> class index 0..199; labels outside the 200 classes are absent."""
        index_of_id = {raw_id: i for i, raw_id in enumerate(scannet200().class_ids)}
        return {raw: index_of_id[raw_id] for raw, raw_id in self.raw_category_to_id.items() if raw_id in index_of_id}


def read_label_table(path: str | Path) -> LabelTable:
    """Read the ScanNet label tsv; the first row for a raw_category wins, as in the official script."""
    path = Path(path)
    fix = "pass the ScanNet file scannetv2-labels.combined.tsv (--label-map, or put it in the raw folder)"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(path, "label table not found", fix) from None
    rows = list(csv.DictReader(text.splitlines(), delimiter="\t"))
    if not rows or not {"raw_category", "id"} <= set(rows[0]):
        raise DataError(path, "label table needs tab-separated columns 'raw_category' and 'id'", fix)
    to_id: dict[str, int] = {}
    counts: dict[str, int] = {}
    nyu40: dict[int, str] = {}
    for line_number, row in enumerate(rows, start=2):
        if None in row.values() or not row["raw_category"]:  # a short row: DictReader fills missing columns with None
            raise DataError(path, f"line {line_number}: {len(rows[0]) - list(row.values()).count(None)} of "
                                  f"{len(rows[0])} tab-separated columns (raw_category {row['raw_category']!r})", fix)
        try:
            raw_id = int(row["id"])
        except (TypeError, ValueError):
            raise DataError(path, f"line {line_number}: id '{row['id']}' is not an integer", fix) from None
        to_id.setdefault(row["raw_category"], raw_id)
        counts.setdefault(row["raw_category"], int(row.get("count") or 0))
        nyu40.setdefault(raw_id, row.get("nyu40class") or "")
    return LabelTable(raw_category_to_id=to_id, count_of_raw_category=counts, nyu40_class_of_id=nyu40)


def write_label_map(label_tsv: str | Path, out: str | Path) -> None:
    """Write the human-readable map raw_category -> id -> class index (0..199, -1 ignore) -> name, group.

    The output keeps the `raw_category` and `id` columns, so it is itself a valid label table for `preprocess`.
    """
    from lgseg.fileio import atomic_file

    table = read_label_table(label_tsv)
    classes = scannet200()
    index_of_id = {raw_id: i for i, raw_id in enumerate(classes.class_ids)}
    lines = ["raw_category\tid\tclass_index\tclass_name\tfrequency_group"]
    for raw, raw_id in table.raw_category_to_id.items():
        index = index_of_id.get(raw_id, IGNORE_INDEX)
        name, group = (classes.class_names[index], classes.frequency_group[index]) if index >= 0 else ("", "")
        lines.append(f"{raw}\t{raw_id}\t{index}\t{name}\t{group}")
    unreachable = sorted(set(range(classes.num_classes)) - set(table.class_index_of_label().values()))
    if unreachable:
        names = ", ".join(classes.class_names[i] for i in unreachable)
        raise DataError(label_tsv, f"{len(unreachable)} ScanNet200 classes have no raw_category: {names}",
                        "use the official scannetv2-labels.combined.tsv")
    with atomic_file(out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
