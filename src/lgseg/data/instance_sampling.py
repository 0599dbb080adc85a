"""Instance sampling (paper §3.2, docs/method.md §4): paste bank instances of rare classes into a train scene.

Placement works on the scene's vertex arrays, before the geometric augmentations and voxelisation, so the
usual voxelisation applies to the merged cloud. For each of `count` instances:

1. draw its class from the bank's class weights (with replacement), then one bank instance of that class
   uniformly; rotate it by a uniform angle about z and scale it by a uniform factor (the authors voxelise it
   with the dataset's rotation and scale augmentation);
2. up to `max_tries` times, draw a box centre uniformly over the XY extent of the scene and accept the spot if
   its XY box (closed intervals) overlaps no box of an existing instance and no box placed before it, contains
   no wall point, and at least `min_coverage` of its footprint cells (about `cell` metres wide) hold a
   support point (i.e. it stands on scanned ground, not outside the room);
3. rest it on the height map: its bottom goes to the highest support point inside its footprint (support =
   every point that is not wall or ceiling). The map is queried at point resolution, not on a grid.

Deviations from the authors' code (LGS `add_instances_to_cloud`), on purpose: an instance that finds no free
spot in `max_tries` is skipped (the authors keep the last rejected candidate); boxes placed earlier in the same
scene are avoided too; the overlap test is on XY boxes (the authors test 3-D boxes), so nothing is stacked on
furniture, which also makes the paper's "update the height map after each placement" moot; boxes of wall,
floor and ceiling instances are not obstacles (they span the room); the height map ignores ceiling points.
A point's class for these rules is its instance's class, so limited-annotation labels do not change placement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lgseg.data.instance_bank import InstanceBank
from lgseg.scannet.labels import IGNORE_INDEX, scannet200

STRUCTURE_CLASSES = ("wall", "floor", "ceiling")  # their instance boxes span the room: not obstacles


@dataclass(frozen=True)
class InstanceSampling:
    """Settings of train-time instance sampling (see the module docstring)."""

    bank: InstanceBank
    count: int = 5
    max_tries: int = 50
    cell: float = 0.1  # metres: footprint cells for the coverage test
    min_coverage: float = 0.75
    scale: tuple[float, float] = (0.9, 1.1)


@dataclass(frozen=True)
class PlacedInstance:
    bank_index: int
    class_index: int
    instance_id: int  # id of its points in the returned `instance` array
    box_min: np.ndarray  # xyz, metres
    box_max: np.ndarray


def _placement_classes(segment: np.ndarray, instance: np.ndarray) -> np.ndarray:
    """Class of every point for placement: its instance's class (any labelled member tells), else its own."""
    classes = segment.astype(np.int64)
    labelled = (instance >= 0) & (segment >= 0)
    class_of_instance = np.full(int(instance.max(initial=-1)) + 1, IGNORE_INDEX, dtype=np.int64)
    class_of_instance[instance[labelled]] = segment[labelled]
    grouped = instance >= 0
    classes[grouped] = class_of_instance[instance[grouped]]
    return classes


def instance_boxes(coord: np.ndarray, instance: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """XY boxes (K x 2 x 2: [min, max] x [x, y]) of the instances whose points are marked in `keep`."""
    ids = np.unique(instance[keep & (instance >= 0)])
    boxes = np.empty((len(ids), 2, 2))
    for row, instance_id in enumerate(ids):
        xy = coord[instance == instance_id, :2]
        boxes[row] = xy.min(0), xy.max(0)
    return boxes


def boxes_overlap(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Whether the XY box [min, max] overlaps each of `boxes` (closed intervals: touching counts)."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=bool)
    return np.all((box[0] <= boxes[:, 1]) & (boxes[:, 0] <= box[1]), axis=1)


class _Points2D:
    """Points sorted by x, for fast queries of the points inside an XY box."""

    def __init__(self, coord: np.ndarray):
        order = np.argsort(coord[:, 0], kind="stable")
        self.coord = coord[order]

    def inside(self, box: np.ndarray) -> np.ndarray:
        start = np.searchsorted(self.coord[:, 0], box[0, 0], side="left")
        stop = np.searchsorted(self.coord[:, 0], box[1, 0], side="right")
        strip = self.coord[start:stop]
        return strip[(strip[:, 1] >= box[0, 1]) & (strip[:, 1] <= box[1, 1])]


def _support_height(support: _Points2D, walls: _Points2D, box: np.ndarray, cell: float,
                    min_coverage: float) -> float | None:
    """Height of the highest support point under the XY box, or None if the box crosses a wall or does not
    stand on scanned ground (fewer than `min_coverage` of its footprint cells hold a support point)."""
    if len(walls.inside(box)):
        return None
    under = support.inside(box)
    if len(under) == 0:
        return None
    size = box[1] - box[0]
    cells = np.maximum(1, np.round(size / cell)).astype(np.int64)
    index = np.minimum((under[:, :2] - box[0]) / np.maximum(size, 1e-12) * cells, cells - 1).astype(np.int64)
    covered = len(np.unique(index[:, 0] * cells[1] + index[:, 1]))
    if covered < min_coverage * cells.prod():
        return None
    return float(under[:, 2].max())


def _posed_instance(coord: np.ndarray, rng: np.random.Generator, scale: tuple[float, float]) -> np.ndarray:
    """The bank points rotated about z and scaled at random, re-centred on their XY box, bottom at z = 0."""
    angle = rng.uniform(-np.pi, np.pi)
    c, s = np.cos(angle), np.sin(angle)
    rotation = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    posed = coord.astype(np.float64) @ rotation.T * rng.uniform(*scale)
    low, high = posed.min(0), posed.max(0)
    return posed - np.array([(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]])


def place_instances(scene: dict[str, np.ndarray], bank: InstanceBank, rng: np.random.Generator, count: int = 5,
                    max_tries: int = 50, cell: float = 0.1, min_coverage: float = 0.75,
                    scale: tuple[float, float] = (0.9, 1.1)) -> tuple[dict[str, np.ndarray], list[PlacedInstance]]:
    """Add up to `count` bank instances to the scene (coord, color, segment, instance arrays of one scene).

    Returns the merged arrays (coord as float64, the others in the scene's dtypes; scene points first, then the
    placed points with their bank labels and new instance ids) and the placements. Deterministic given the
    generator's state.
    """
    coord = np.asarray(scene["coord"], dtype=np.float64)
    segment, instance = np.asarray(scene["segment"]), np.asarray(scene["instance"])
    names = scannet200().class_names
    wall, floor, ceiling = (names.index(name) for name in STRUCTURE_CLASSES)
    classes = _placement_classes(segment, instance)
    obstacles = instance_boxes(coord, instance, ~np.isin(classes, [wall, floor, ceiling]))
    supporting = (classes != wall) & (classes != ceiling)
    support, walls = _Points2D(coord[supporting]), _Points2D(coord[classes == wall])
    if len(support.coord) == 0:
        return {**scene, "coord": coord}, []
    low, high = support.coord[:, :2].min(0), support.coord[:, :2].max(0)
    sampled = rng.choice(len(bank.class_weights), size=count, p=bank.class_weights)
    next_id = int(instance.max(initial=-1)) + 1
    placed_boxes = np.empty((0, 2, 2))
    added, placements = [], []
    for class_index in sampled:
        bank_index = int(rng.choice(bank.instances_of_class(class_index)))
        points, color, labels = bank.points(bank_index)
        posed = _posed_instance(points, rng, scale)
        half = posed[:, :2].max(0)
        for _ in range(max_tries):
            centre = rng.uniform(low, high)
            box = np.stack([centre - half, centre + half])
            if boxes_overlap(box, obstacles).any() or boxes_overlap(box, placed_boxes).any():
                continue
            height = _support_height(support, walls, box, cell, min_coverage)
            if height is None:
                continue
            moved = posed + np.array([centre[0], centre[1], height])
            added.append((moved, color, labels, next_id))
            placements.append(PlacedInstance(bank_index, int(class_index), next_id, moved.min(0), moved.max(0)))
            placed_boxes = np.concatenate([placed_boxes, box[None]])
            next_id += 1
            break
    if not added:
        return {**scene, "coord": coord}, []
    merged = {
        "coord": np.concatenate([coord] + [a[0] for a in added]),
        "color": np.concatenate([np.asarray(scene["color"])] + [a[1] for a in added]).astype(scene["color"].dtype),
        "segment": np.concatenate([segment] + [a[2] for a in added]).astype(segment.dtype),
        "instance": np.concatenate([instance] + [np.full(len(a[0]), a[3]) for a in added]).astype(instance.dtype),
    }
    return merged, placements
