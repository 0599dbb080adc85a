"""Embedded demo dataset: synthetic indoor rooms written in genuine raw ScanNet file format.

Class looks come from the label table alone, never from a text encoder (class_catalogue): a class's kind is its
NYU40 class (the tsv's `nyu40class`), so chair, office chair and armchair share a shape family and differ by
proportions and colour shifts, while distinct kinds differ in family, size and colour; the classes of the catch-all
NYU40 classes are kinds of their own. Rooms are filled with objects whose classes are drawn in proportion to the
label table's `count` column, so head, common and tail classes occur with a real long tail; wall-mounted objects
stand out of the wall, and only some rooms have a (partial) ceiling, as in real scans. Scenes take their ids from
the official lists, so the official split lookup applies unchanged; a scene is a deterministic function of (seed,
scene id), and the catalogue is the same for every seed.
"""

from __future__ import annotations

import json
import shutil
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from lgseg.fileio import atomic_dir
from lgseg.parallel import map_with_progress
from lgseg.scannet.labels import IGNORE_INDEX, LABEL_TSV_NAME, read_label_table, resource_path, scannet200
from lgseg.scannet.ply import write_ply
from lgseg.scannet.raw import AGGREGATION_SUFFIX, MESH_SUFFIX, META_SUFFIX, SEGS_SUFFIX, apply_transform
from lgseg.scannet.splits import official_scene_lists

STRUCTURE = ("wall", "floor", "ceiling")
WALL_MOUNTED = {
    "door", "window", "picture", "whiteboard", "curtain", "blinds", "board", "mirror", "poster", "bulletin board",
    "doorframe", "radiator", "sign", "closet door", "calendar", "clock", "projector screen", "tv", "light switch",
    "fire alarm", "power outlet", "blackboard", "shower curtain", "paper towel dispenser", "soap dispenser",
    "toilet paper holder", "fire extinguisher", "handicap bar", "vent", "windowsill", "rail", "shower door",
    "bathroom stall door",
}
FAMILIES = ("box", "cylinder", "ellipsoid", "cone", "legged", "backrest", "shelf")
# The look of each NYU40 kind of the label table (its `nyu40class` column): shape family, width / depth / height in
# metres, RGB. Every class of a kind shares its family and differs by subtler cues (see class_catalogue); classes of
# the catch-all kinds (otherprop, otherfurniture, otherstructure) are kinds of their own, with a look drawn from
# their name. Wall-mounted looks stand >= 8 cm out of the wall, so that they show at the demo's 10 cm voxels.
KIND_LOOKS = {
    "wall": ("box", (1.4, 0.12, 2.2), (205, 200, 188)),  # wall, floor, ceiling themselves are the room's surfaces
    "floor": ("box", (1.2, 1.0, 0.04), (150, 118, 84)),
    "ceiling": ("box", (1.0, 1.0, 0.04), (236, 236, 232)),
    "chair": ("backrest", (0.5, 0.5, 0.9), (70, 90, 150)),
    "table": ("legged", (1.3, 0.8, 0.75), (160, 110, 60)),
    "desk": ("legged", (1.4, 0.7, 0.75), (110, 80, 50)),
    "door": ("box", (0.9, 0.1, 2.0), (120, 70, 40)),
    "window": ("box", (1.2, 0.1, 1.1), (150, 200, 230)),
    "cabinet": ("box", (0.8, 0.5, 0.9), (190, 170, 130)),
    "counter": ("box", (1.8, 0.6, 0.9), (90, 90, 95)),
    "bed": ("box", (1.5, 2.0, 0.55), (220, 215, 240)),
    "sofa": ("backrest", (2.0, 0.9, 0.85), (150, 40, 45)),
    "shelves": ("shelf", (1.0, 0.35, 1.6), (180, 180, 170)),
    "bookshelf": ("shelf", (0.9, 0.3, 1.9), (120, 90, 60)),
    "pillow": ("ellipsoid", (0.5, 0.35, 0.18), (240, 225, 160)),
    "picture": ("box", (0.6, 0.08, 0.5), (200, 60, 160)),
    "box": ("box", (0.4, 0.35, 0.35), (200, 160, 90)),
    "refrigerator": ("box", (0.7, 0.7, 1.8), (235, 240, 245)),
    "bag": ("ellipsoid", (0.4, 0.25, 0.4), (50, 50, 60)),
    "sink": ("cylinder", (0.5, 0.45, 0.25), (245, 245, 250)),
    "toilet": ("ellipsoid", (0.4, 0.65, 0.75), (250, 250, 245)),
    "curtain": ("box", (1.4, 0.12, 2.1), (120, 160, 90)),
    "books": ("box", (0.3, 0.22, 0.12), (60, 120, 200)),
    "lamp": ("cone", (0.4, 0.4, 1.4), (250, 220, 120)),
    "towel": ("box", (0.45, 0.1, 0.6), (90, 200, 200)),
    "clothes": ("ellipsoid", (0.5, 0.4, 0.25), (170, 50, 120)),
    "television": ("box", (1.0, 0.1, 0.6), (20, 20, 25)),
    "night stand": ("box", (0.5, 0.4, 0.55), (140, 100, 70)),
    "dresser": ("box", (1.2, 0.5, 1.0), (100, 60, 40)),
    "bathtub": ("box", (0.8, 1.6, 0.55), (230, 235, 240)),
    "whiteboard": ("box", (1.8, 0.08, 1.2), (250, 250, 250)),
    "shower curtain": ("box", (1.2, 0.1, 1.9), (140, 210, 240)),
    "mirror": ("box", (0.6, 0.08, 0.9), (170, 190, 200)),
    "paper": ("box", (0.3, 0.22, 0.03), (250, 250, 240)),
    "person": ("cylinder", (0.45, 0.3, 1.7), (200, 150, 120)),
    "blinds": ("box", (1.2, 0.1, 1.3), (225, 215, 180)),
    "floor mat": ("box", (1.0, 0.6, 0.03), (60, 100, 60)),
}
CATCH_ALL_KINDS = ("otherprop", "otherfurniture", "otherstructure")
CEILING_FRACTION = 0.4  # rooms with a scanned ceiling patch: real scans hold little ceiling
UNANNOTATED_FRACTION = 0.05  # objects without any segGroup (unlabelled in ScanNet too)
NON_BENCHMARK_FRACTION = 0.05  # objects labelled with a tsv category outside the 200 classes


@dataclass(frozen=True)
class DemoSettings:
    seed: int = 0
    num_train: int = 90
    num_val: int = 20
    num_test: int = 5
    vertex_spacing: float = 0.05  # metres between mesh vertices on flat surfaces
    objects_per_room: tuple[int, int] = (15, 30)
    room_size: tuple[float, float] = (3.0, 5.5)  # metres, range of each floor side


@dataclass
class ClassLook:
    kind: str  # the NYU40 class, or the class itself for the catch-all NYU40 classes
    family: str
    size: np.ndarray  # mean width, depth, height in metres
    color: np.ndarray  # mean RGB
    wall_mounted: bool


@dataclass
class DemoScene:
    """A generated scene plus its ground truth, known by construction."""

    scene_id: str
    raw_coord: np.ndarray  # vertex positions as stored in the PLY (before axis alignment)
    color: np.ndarray
    faces: np.ndarray
    alignment: np.ndarray  # 4 x 4 axisAlignment (raw -> aligned)
    seg_indices: np.ndarray
    groups: list[dict] = field(default_factory=list)  # segGroups as written
    segment: np.ndarray | None = None  # expected class index per vertex
    instance: np.ndarray | None = None  # expected instance id per vertex


def class_kind(name: str, nyu40_class: str) -> str:
    """The kind a class belongs to: its NYU40 class, or the class itself in the catch-all NYU40 classes."""
    return name if nyu40_class in CATCH_ALL_KINDS or not nyu40_class else nyu40_class


def _name_rng(name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(name.encode()))


def _kind_look(kind: str) -> tuple[str, np.ndarray, np.ndarray]:
    """Family, size and colour of a kind: from KIND_LOOKS, else drawn from the kind's name."""
    if kind in KIND_LOOKS:
        family, size, color = KIND_LOOKS[kind]
        return family, np.array(size, float), np.array(color, float)
    rng = _name_rng(kind)
    scale = np.exp(rng.uniform(np.log(0.2), np.log(1.4)))
    if kind in WALL_MOUNTED:
        family = "box"
        size = np.array([scale * rng.uniform(0.6, 1.6), rng.uniform(0.08, 0.15), scale * rng.uniform(0.6, 1.6)])
    else:
        family = FAMILIES[rng.integers(len(FAMILIES))]
        size = scale * rng.uniform(0.5, 1.5, size=3)
    wall = np.array(KIND_LOOKS["wall"][2], float)
    color = rng.uniform(30, 225, size=3)
    while kind in WALL_MOUNTED and np.linalg.norm(color - wall) < 90:  # wall-mounted: clearly off the wall's colour
        color = rng.uniform(30, 225, size=3)
    return family, np.clip(size, 0.06, [2.2, 2.2, 2.0]), color


@lru_cache(maxsize=1)
def class_catalogue() -> list[ClassLook]:
    """Look of every ScanNet200 class, from the label table alone (the same for every demo seed).

    A class takes its kind's family (class_kind, _kind_look); within a kind, classes differ by their proportions
    (x0.8-1.25 per side) and a colour shift (sd 20 per channel), drawn from the class name.
    """
    table = read_label_table(resource_path(LABEL_TSV_NAME))
    classes = scannet200()
    looks = []
    for name, class_id in zip(classes.class_names, classes.class_ids):
        kind = class_kind(name, table.nyu40_class_of_id.get(class_id, ""))
        family, size, color = _kind_look(kind)
        if kind != name:
            rng = _name_rng(name)
            size = size * rng.uniform(0.8, 1.25, size=3)
            color = color + rng.normal(0, 20, size=3)
        wall_mounted = name in WALL_MOUNTED or kind in WALL_MOUNTED
        if wall_mounted:
            size[1] = max(size[1], 0.08)
        looks.append(ClassLook(kind, family, np.clip(size, 0.03, [2.4, 2.4, 2.2]), np.clip(color, 0, 255),
                               wall_mounted))
    return looks


@lru_cache(maxsize=1)
def _label_choices() -> tuple[dict[int, tuple[list[str], np.ndarray]], np.ndarray, list[str]]:
    """Per class: its tsv raw categories (synonyms) and their counts; class sampling weights; non-200 labels."""
    table = read_label_table(resource_path(LABEL_TSV_NAME))
    classes = scannet200()
    index_of_label = table.class_index_of_label()
    synonyms: dict[int, list[str]] = {}
    for raw in table.raw_category_to_id:
        if raw in index_of_label:
            synonyms.setdefault(index_of_label[raw], []).append(raw)
    choices = {}
    weights = np.zeros(classes.num_classes)
    for index, names in synonyms.items():
        counts = np.array([max(table.count_of_raw_category[n], 1) for n in names], dtype=float)
        choices[index] = (names, counts / counts.sum())
        if classes.class_names[index] not in STRUCTURE:
            weights[index] = counts.sum()
    outside = sorted(raw for raw, raw_id in table.raw_category_to_id.items() if raw not in index_of_label and raw_id)
    return choices, weights / weights.sum(), outside


def _grid(corner, u, v, nu, nv):
    """A rectangle corner + [0,1]u + [0,1]v split into nu x nv cells, two triangles each."""
    a, b = np.meshgrid(np.linspace(0, 1, nu + 1), np.linspace(0, 1, nv + 1), indexing="ij")
    verts = np.asarray(corner) + a.reshape(-1, 1) * np.asarray(u) + b.reshape(-1, 1) * np.asarray(v)
    i, j = np.meshgrid(np.arange(nu), np.arange(nv), indexing="ij")
    p = (i * (nv + 1) + j).ravel()
    faces = np.concatenate([np.stack([p, p + nv + 1, p + nv + 2], 1), np.stack([p, p + nv + 2, p + 1], 1)])
    return verts, faces


def _cells(length: float, spacing: float) -> int:
    return max(2, int(np.ceil(length / spacing)))


def _merge(parts):
    verts, faces, offset = [], [], 0
    for v, f in parts:
        verts.append(v)
        faces.append(f + offset)
        offset += len(v)
    return np.concatenate(verts), np.concatenate(faces)


def _box(lo, hi, spacing):
    lo, hi = np.asarray(lo, float), np.asarray(hi, float)
    d = hi - lo
    parts = []
    for axis in range(3):
        u_axis, v_axis = [a for a in range(3) if a != axis]
        u, v = np.zeros(3), np.zeros(3)
        u[u_axis], v[v_axis] = d[u_axis], d[v_axis]
        for side in (lo, hi):
            corner = lo.copy()
            corner[axis] = side[axis]
            parts.append(_grid(corner, u, v, _cells(d[u_axis], spacing), _cells(d[v_axis], spacing)))
    return _merge(parts)


def _surface_of_revolution(radius_x, radius_y, heights, radii, spacing):
    """Closed surface around the z axis: ring k has height heights[k] and relative radius radii[k]."""
    n_theta = max(8, int(np.ceil(2 * np.pi * max(radius_x, radius_y) / spacing)))
    theta = np.linspace(0, 2 * np.pi, n_theta, endpoint=False)
    ring_x, ring_y = radius_x * np.cos(theta), radius_y * np.sin(theta)
    verts = np.concatenate([np.stack([r * ring_x, r * ring_y, np.full(n_theta, h)], 1) for h, r in zip(heights, radii)])
    k, t = np.meshgrid(np.arange(len(heights) - 1), np.arange(n_theta), indexing="ij")
    a = (k * n_theta + t).ravel()
    b = (k * n_theta + (t + 1) % n_theta).ravel()
    faces = np.concatenate([np.stack([a, b, b + n_theta], 1), np.stack([a, b + n_theta, a + n_theta], 1)])
    caps = np.array([[0, 0, heights[0]], [0, 0, heights[-1]]])
    bottom, top = len(verts), len(verts) + 1
    t = np.arange(n_theta)
    last = (len(heights) - 1) * n_theta
    cap_faces = np.concatenate([np.stack([np.full(n_theta, bottom), (t + 1) % n_theta, t], 1),
                                np.stack([np.full(n_theta, top), last + t, last + (t + 1) % n_theta], 1)])
    return np.concatenate([verts, caps]), np.concatenate([faces, cap_faces])


def _object_mesh(family: str, size: np.ndarray, spacing: float):
    """Mesh of one object in local coordinates: centred in x, y; standing on z = 0."""
    w, d, h = size
    spacing = min(spacing, max(min(size) / 3, 0.01))
    if family == "box":
        return _box([-w / 2, -d / 2, 0], [w / 2, d / 2, h], spacing)
    if family in ("cylinder", "cone"):
        top_radius = 1.0 if family == "cylinder" else 0.25
        rings = _cells(max(w, d) / 2, spacing)
        side = _cells(h, spacing) + 1
        bottom_cap = np.linspace(1 / rings, 1, rings, endpoint=False)
        top_cap = np.linspace(top_radius, top_radius / rings, rings)[1:]
        heights = np.concatenate([np.zeros(rings), np.linspace(0, h, side), np.full(rings - 1, h)])
        radii = np.concatenate([bottom_cap, np.linspace(1, top_radius, side), top_cap])
        return _surface_of_revolution(w / 2, d / 2, heights, radii, spacing)
    if family == "ellipsoid":
        phi = np.linspace(0.05, np.pi - 0.05, _cells(np.pi * h / 2, spacing) + 1)
        return _surface_of_revolution(w / 2, d / 2, h / 2 - h / 2 * np.cos(phi), np.sin(phi), spacing)
    if family == "legged":
        top = min(0.06, h / 4)
        leg = min(0.06, w / 5, d / 5)
        parts = [_box([-w / 2, -d / 2, h - top], [w / 2, d / 2, h], spacing)]
        for sx in (-1, 1):
            for sy in (-1, 1):
                cx, cy = sx * (w / 2 - leg), sy * (d / 2 - leg)
                parts.append(_box([cx - leg / 2, cy - leg / 2, 0], [cx + leg / 2, cy + leg / 2, h - top], spacing))
        return _merge(parts)
    if family == "backrest":
        seat = h * 0.45
        back = max(d * 0.2, 0.03)
        return _merge([_box([-w / 2, -d / 2, 0], [w / 2, d / 2, seat], spacing),
                       _box([-w / 2, d / 2 - back, seat], [w / 2, d / 2, h], spacing)])
    if family == "shelf":  # open front: two sides, back, bottom, top and two boards
        t = min(0.04, w / 6, d / 4, h / 8)
        parts = [_box([-w / 2, -d / 2, 0], [-w / 2 + t, d / 2, h], spacing),
                 _box([w / 2 - t, -d / 2, 0], [w / 2, d / 2, h], spacing),
                 _box([-w / 2 + t, d / 2 - t, 0], [w / 2 - t, d / 2, h], spacing)]
        for z in np.linspace(0, h - t, 4):
            parts.append(_box([-w / 2 + t, -d / 2, z], [w / 2 - t, d / 2 - t, z + t], spacing))
        return _merge(parts)
    raise ValueError(f"unknown shape family {family}")


def _without(verts, faces, hidden):
    """The mesh less the `hidden` vertices and every face that touches one."""
    keep = ~hidden
    new_index = np.cumsum(keep) - 1
    return verts[keep], new_index[faces[keep[faces].all(1)]]


def _rotation_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _overlaps(box, boxes, margin=0.05) -> bool:
    return any(box[0] < b[2] + margin and b[0] < box[2] + margin and box[1] < b[3] + margin and b[1] < box[3] + margin
               for b in boxes)


def generate_scene(scene_id: str, settings: DemoSettings = DemoSettings()) -> DemoScene:
    """One synthetic room; deterministic in (settings.seed, scene_id)."""
    rng = np.random.default_rng([settings.seed, zlib.crc32(scene_id.encode())])
    classes = scannet200()
    catalogue = class_catalogue()
    choices, class_weights, outside_labels = _label_choices()
    sp = settings.vertex_spacing
    width, depth = rng.uniform(*settings.room_size, size=2)
    height = rng.uniform(2.4, 3.0)
    objects = []  # (class index, vertices, faces)

    def add(class_index, verts, faces):
        objects.append((class_index, verts, faces))

    index_of = {name: i for i, name in enumerate(classes.class_names)}
    nw, nd, nh = _cells(width, sp), _cells(depth, sp), _cells(height, sp)
    add(index_of["floor"], *_grid([0, 0, 0], [width, 0, 0], [0, depth, 0], nw, nd))
    if rng.random() < CEILING_FRACTION:
        side = rng.uniform(0.3, 0.8, size=2) * [width, depth]
        lo = rng.uniform(0, [width, depth] - side)
        add(index_of["ceiling"], *_grid([lo[0], lo[1], height], [side[0], 0, 0], [0, side[1], 0],
                                        _cells(side[0], sp), _cells(side[1], sp)))
    for corner, along, n in (([0, 0, 0], [width, 0, 0], nw), ([0, depth, 0], [width, 0, 0], nw),
                             ([0, 0, 0], [0, depth, 0], nd), ([width, 0, 0], [0, depth, 0], nd)):
        add(index_of["wall"], *_grid(corner, along, [0, 0, height], n, nh))

    footprints, supports, wall_spans = [], [], {k: [] for k in range(4)}
    num_objects = rng.integers(settings.objects_per_room[0], settings.objects_per_room[1] + 1)
    for class_index in rng.choice(classes.num_classes, size=num_objects, p=class_weights):
        look = catalogue[class_index]
        size = look.size * rng.uniform(0.8, 1.2, size=3)
        verts, faces = _object_mesh(look.family, size, sp)
        # a scan sees no face that rests on the floor, a support or the wall
        verts, faces = _without(verts, faces, verts[:, 1] < 1e-9 - size[1] / 2 if look.wall_mounted
                                else verts[:, 2] < 1e-9)
        if look.wall_mounted:
            wall = int(rng.integers(4))
            length = width if wall < 2 else depth
            w = min(size[0], length - 0.4)
            for _ in range(20):
                start = rng.uniform(0.1, length - w - 0.1)
                if not _overlaps((start, 0, start + w, 1), wall_spans[wall]):
                    break
            else:
                continue
            wall_spans[wall].append((start, 0, start + w, 1))
            z0 = 0.0 if size[2] > 1.6 else rng.uniform(0.0, max(height - size[2] - 0.1, 0.01))  # doors stand
            local = verts
            along = start + w / 2 + local[:, 0] * (w / size[0])
            off = local[:, 1] + size[1] / 2 + 0.005
            placed = {0: np.stack([along, off, local[:, 2] + z0], 1),
                      1: np.stack([along, depth - off, local[:, 2] + z0], 1),
                      2: np.stack([off, along, local[:, 2] + z0], 1),
                      3: np.stack([width - off, along, local[:, 2] + z0], 1)}[wall]
            add(class_index, placed, faces)
            continue
        angle = rng.choice([0, np.pi / 2, np.pi, 3 * np.pi / 2]) + rng.uniform(-0.15, 0.15)
        rotated = verts @ _rotation_z(angle).T
        half = (rotated[:, :2].max(0) - rotated[:, :2].min(0)) / 2
        if size.max() < 0.4 and supports and rng.random() < 0.6:
            top, lo, hi = supports[rng.integers(len(supports))]
            centre = rng.uniform(np.minimum(lo + half, (lo + hi) / 2), np.maximum(hi - half, (lo + hi) / 2))
            add(class_index, rotated + [centre[0], centre[1], top], faces)
            continue
        for _ in range(30):
            centre = rng.uniform(half + 0.05, [width, depth] - half - 0.05) if np.all(half * 2 + 0.1 < [width, depth]) \
                else None
            if centre is None:
                break
            box = (*(centre - half), *(centre + half))
            if not _overlaps(box, footprints):
                footprints.append(box)
                if look.family in ("box", "legged", "cylinder") and size[2] < 1.3:
                    supports.append((rotated[:, 2].max(), centre - half, centre + half))
                add(class_index, rotated + [centre[0], centre[1], 0], faces)
                break
    return _assemble(scene_id, objects, rng, choices, outside_labels)


def _assemble(scene_id, objects, rng, choices, outside_labels) -> DemoScene:
    """Colour, over-segment and annotate the objects; hide the room behind a random axisAlignment."""
    catalogue = class_catalogue()
    structure = {scannet200().class_names.index(name) for name in STRUCTURE}
    coords, colors, faces, segment_keys, groups, segment = [], [], [], [], [], []
    offset = 0
    for k, (class_index, verts, tri) in enumerate(objects):
        look = catalogue[class_index]
        n = len(verts)
        noisy = verts + rng.normal(0, 0.003, size=verts.shape)
        tone = look.color + rng.normal(0, 14, size=3)
        colors.append(np.clip(tone + rng.normal(0, 9, size=(n, 3)), 0, 255).astype(np.uint8))
        coords.append(noisy)
        faces.append(tri + offset)
        is_structure = class_index in structure
        cell = 0.5 if is_structure else 0.2  # coarser over-segmentation on floor, ceiling and walls
        keys = np.floor(verts / cell).astype(np.int64)
        segment_keys.append(np.column_stack([np.full(n, k), keys]))
        draw = rng.random()
        if not is_structure and draw < UNANNOTATED_FRACTION:
            label = None
        elif not is_structure and draw < UNANNOTATED_FRACTION + NON_BENCHMARK_FRACTION:
            label = outside_labels[rng.integers(len(outside_labels))]
        else:
            names, p = choices[class_index]
            label = names[rng.choice(len(names), p=p)]
        groups.append(label)
        segment.append(np.full(n, class_index if label in choices[class_index][0] else IGNORE_INDEX, np.int16))
        offset += n
    coord = np.concatenate(coords)
    keys = np.concatenate(segment_keys)
    _, segment_of_vertex = np.unique(keys, axis=0, return_inverse=True)
    segment_of_vertex = segment_of_vertex.ravel()
    # ScanNet segment ids are arbitrary integers: use the smallest vertex index of each segment
    first_vertex = np.full(segment_of_vertex.max() + 1, len(coord), dtype=np.int64)
    np.minimum.at(first_vertex, segment_of_vertex, np.arange(len(coord)))
    seg_indices = first_vertex[segment_of_vertex]
    object_of_vertex = np.concatenate([np.full(len(c), k) for k, c in enumerate(coords)])
    expected_instance = np.full(len(coord), -1, dtype=np.int32)
    written_groups = []
    for k, label in enumerate(groups):
        if label is None:
            continue
        members = object_of_vertex == k
        expected_instance[members] = len(written_groups)
        written_groups.append({"id": len(written_groups), "objectId": len(written_groups), "label": label,
                               "segments": np.unique(seg_indices[members]).tolist()})
    expected_segment = np.concatenate(segment)
    expected_segment[expected_instance < 0] = IGNORE_INDEX
    angle = rng.uniform(0, 2 * np.pi)
    alignment = np.eye(4)
    alignment[:3, :3] = _rotation_z(angle)
    alignment[:3, 3] = [*rng.uniform(-3, 3, size=2), 0]
    raw_coord = apply_transform(np.linalg.inv(alignment), coord)
    return DemoScene(scene_id=scene_id, raw_coord=raw_coord, color=np.concatenate(colors),
                     faces=np.concatenate(faces).astype(np.int32), alignment=alignment, seg_indices=seg_indices,
                     groups=written_groups, segment=expected_segment, instance=expected_instance)


def write_scene(scene: DemoScene, folder: Path, labelled: bool) -> None:
    """Write the scene's files into `folder` (which must exist) in the official ScanNet raw format."""
    sid = scene.scene_id
    write_ply(folder / f"{sid}{MESH_SUFFIX}", scene.raw_coord, scene.color, scene.faces)
    matrix = " ".join(f"{x:.9g}" for x in scene.alignment.ravel())
    (folder / f"{sid}{META_SUFFIX}").write_text(
        f"axisAlignment = {matrix}\ncolorHeight = 968\ncolorWidth = 1296\ndepthHeight = 480\ndepthWidth = 640\n"
        "numColorFrames = 0\nnumDepthFrames = 0\nsceneType = Demo room\n")
    if labelled:
        (folder / f"{sid}{SEGS_SUFFIX}").write_text(json.dumps(
            {"params": {"kThresh": "0.0001", "segMinVerts": "20"}, "sceneId": f"{sid}_vh_clean_2",
             "segIndices": scene.seg_indices.tolist()}))
        (folder / f"{sid}{AGGREGATION_SUFFIX}").write_text(json.dumps(
            {"sceneId": f"scannet.{sid}", "appId": "lgseg.demo", "segGroups": scene.groups,
             "segmentsFile": f"scannet.{sid}{SEGS_SUFFIX}"}))


def demo_scene_ids(settings: DemoSettings) -> dict[str, list[str]]:
    """Scene ids of the demo per split: the first ids of each official list."""
    lists = official_scene_lists()
    return {"train": lists["train"][: settings.num_train], "val": lists["val"][: settings.num_val],
            "test": lists["test"][: settings.num_test]}


def _generate_one(job: tuple[str, str, bool, DemoSettings]) -> str:
    out_dir, scene_id, labelled, settings = job
    final = Path(out_dir) / ("scans" if labelled else "scans_test") / scene_id
    with atomic_dir(final) as tmp:
        write_scene(generate_scene(scene_id, settings), tmp, labelled)
    return scene_id


def write_demo_dataset(out_dir: str | Path, settings: DemoSettings = DemoSettings(), workers: int = 1) -> None:
    """Write the whole demo raw folder: scans/, scans_test/ and the label tsv."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(resource_path(LABEL_TSV_NAME), out_dir / LABEL_TSV_NAME)
    ids = demo_scene_ids(settings)
    jobs = [(str(out_dir), sid, split != "test", settings) for split, scenes in ids.items() for sid in scenes]
    for _ in map_with_progress(_generate_one, jobs, workers, "demo scenes"):
        pass
