"""Figs. 6 and 8: a few val scenes rendered from above and obliquely, the input colours, the ground truth and each
run's predictions side by side — semantic classes in ScanNet200's benchmark palette (Fig. 6), instances in
distinct colours (Fig. 8). Vertices higher than `max_height` above a scene's lowest one (the ceiling) are cut away.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lgseg.fileio import atomic_file  # noqa: E402
from lgseg.report.render import OBLIQUE, TOP, render  # noqa: E402
from lgseg.scannet.labels import IGNORE_INDEX, scannet200_palette  # noqa: E402

UNLABELLED = (200, 200, 200)  # no class, no instance
VIEWS = (TOP, OBLIQUE)
NEAR_WALL_CUT = 0.3  # metres of the near walls left out of an oblique view
LEGEND_CLASSES = 24  # the ground truth's most frequent classes named below Fig. 6


def semantic_colors(labels: np.ndarray) -> np.ndarray:
    """RGB per vertex: the class's benchmark colour, light grey for IGNORE_INDEX."""
    palette = np.array(scannet200_palette() + (UNLABELLED,), np.uint8)  # last row: IGNORE_INDEX (-1)
    return palette[np.asarray(labels)]


def instance_colors(instance: np.ndarray) -> np.ndarray:
    """RGB per vertex: one colour per instance id (hues a golden angle apart, two lightness levels), light grey
    for IGNORE_INDEX. Ids of different panels are unrelated: colours only tell instances apart."""
    instance = np.asarray(instance)
    ids = np.unique(instance[instance != IGNORE_INDEX])
    table = np.array([colorsys.hls_to_rgb((0.618034 * k) % 1.0, 0.45 + 0.15 * (k % 2), 0.75)
                      for k in range(len(ids))] + [tuple(c / 255 for c in UNLABELLED)])
    index = np.where(instance == IGNORE_INDEX, len(ids), np.searchsorted(ids, instance))
    return np.rint(255 * table[index]).astype(np.uint8)


def visible_vertices(coord: np.ndarray, max_height: float) -> np.ndarray:
    """Vertices at most `max_height` metres above the scene's lowest vertex."""
    return np.flatnonzero(coord[:, 2] <= coord[:, 2].min() + max_height)


def cut_away(coord: np.ndarray, view, depth: float) -> np.ndarray:
    """Vertices not within `depth` metres of the bounding box's vertical sides that face the viewer (the near
    walls of an axis-aligned room, which would hide it in an oblique view)."""
    towards = view.rotation().T @ np.array([0.0, 0.0, 1.0])  # world direction to the viewer
    keep = np.ones(len(coord), bool)
    for axis in (0, 1):
        if abs(towards[axis]) > 1e-6:
            side = coord[:, axis].max() if towards[axis] > 0 else coord[:, axis].min()
            keep &= np.abs(coord[:, axis] - side) > depth
    return np.flatnonzero(keep)


def plot_scenes(scenes: list[tuple[str, np.ndarray, list[tuple[str, np.ndarray]]]], out: str | Path,
                panel_width: int, point_size: float, title: str = "",
                legend: list[tuple[str, tuple[int, int, int]]] = ()) -> None:
    """One row per scene and view, one column per panel: (scene id, coord N x 3, [(column title, RGB N x 3)]);
    oblique views leave out the near walls (`cut_away`); an optional legend of (name, colour) below."""
    columns = [name for name, _ in scenes[0][2]]
    rows = [(scene_id, coord, panels, view) for scene_id, coord, panels in scenes for view in VIEWS]
    height = int(panel_width * 0.8)
    inch = panel_width / 100
    extra = 0.6 + (0.25 * np.ceil(len(legend) / 6) if legend else 0)
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(inch * len(columns), 0.8 * inch * len(rows) + extra),
                             squeeze=False, layout="constrained")
    for r, (scene_id, coord, panels, view) in enumerate(rows):
        shown = cut_away(coord, view, NEAR_WALL_CUT) if view.elevation < 90 else np.arange(len(coord))
        for c, (name, colors) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(render(coord[shown], colors[shown], view, panel_width, height, point_size),
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if r == 0:
                ax.set_title(name, fontsize=11)
            if c == 0:
                ax.set_ylabel(f"{scene_id}\n{view.name}", fontsize=9)
    if legend:
        handles = [plt.Rectangle((0, 0), 1, 1, color=np.array(rgb) / 255) for _, rgb in legend]
        fig.legend(handles, [name for name, _ in legend], loc="outside lower center", ncol=min(len(legend), 8),
                   fontsize=9, frameon=False)
    if title:
        fig.suptitle(title)
    with atomic_file(out) as tmp:
        fig.savefig(tmp, format=Path(out).suffix.lstrip(".") or "png", dpi=100)
    plt.close(fig)


def run_vertex_predictions(spec, scene_ids: Sequence[str], task: str) -> dict[str, np.ndarray]:
    """Per scene the run's prediction per mesh vertex: its class (semantic) or its proposal's number, -1 where no
    proposal holds the vertex (instance); from the run's best checkpoint, without augmentation."""
    from lgseg.data.dataset import SceneDataset
    from lgseg.evaluate.clustering import ClusteringSettings
    from lgseg.evaluate.inference import scene_outputs, semantic_predictions
    from lgseg.evaluate.tasks import scene_proposals, vertex_proposals
    from lgseg.paths import BEST
    from lgseg.train.engine import device_for_training, load_network

    device = device_for_training()
    model = load_network(spec, Path(spec.run_dir) / BEST, device)
    dataset = SceneDataset(spec.processed, "val", list(scene_ids), spec.settings["train"]["voxel_size"])
    if task == "instance":  # only instance runs carry clustering settings
        settings = ClusteringSettings.of(spec.options["evaluation"]["instance_clustering"])
    predictions = {}
    for batch, outputs in scene_outputs(model, dataset, device, 0, desc=f"predict {spec.key}"):
        scene_id = batch["scene_ids"][0]
        if task == "semantic":
            predictions[scene_id] = semantic_predictions(batch, outputs["features"])[4]
            continue
        inverse = batch["inverse"][0].numpy()
        owner = np.full(len(inverse), IGNORE_INDEX, np.int64)
        proposals = scene_proposals(batch, outputs, dataset.voxel_size, settings)
        for k, (vertices, _, _) in enumerate(vertex_proposals(proposals, inverse, batch["voxel_counts"][0])):
            owner[vertices] = k
        predictions[scene_id] = owner
    return predictions


def write_qualitative(runs: list[tuple[str, object]], scene_ids: Sequence[str], task: str, max_height: float,
                      panel_width: int, out: str | Path, title: str = "") -> None:
    """Fig. 6 (task semantic: input, ground truth, then the runs) or Fig. 8 (task instance: input, the runs, then
    the ground truth) for (label, run specification) pairs on one processed store."""
    from lgseg.data.dataset import instance_vertices
    from lgseg.data.store import read_scene, scene_dir
    from lgseg.errors import ConfigError

    processed = runs[0][1].processed
    if any(spec.processed != processed for _, spec in runs):
        raise ConfigError("the runs of this figure read different processed stores; it compares predictions on "
                          "the same scenes")
    missing = [s for s in scene_ids if not (scene_dir(processed, "val", s) / "meta.json").exists()]
    if missing:
        raise ConfigError(f"config key 'figures.qualitative.scenes': {missing[0]} is not a val scene of "
                          f"{processed}; name scenes of its val list")
    predictions = [(label, run_vertex_predictions(spec, scene_ids, task)) for label, spec in runs]
    scenes, segments = [], []
    for scene_id in scene_ids:
        arrays = read_scene(scene_dir(processed, "val", scene_id))
        keep = visible_vertices(np.asarray(arrays["coord"]), max_height)
        coord, segment = np.asarray(arrays["coord"])[keep], np.asarray(arrays["segment"])
        segments.append(segment)
        if task == "semantic":
            truth = semantic_colors(segment)
            panels = [("ground truth", truth)] + [(label, semantic_colors(p[scene_id])) for label, p in predictions]
        else:
            truth = instance_colors(instance_vertices(segment, np.asarray(arrays["instance"])))
            panels = [(label, instance_colors(p[scene_id])) for label, p in predictions] + [("ground truth", truth)]
        panels = [("input", np.asarray(arrays["color"]))] + panels
        scenes.append((scene_id, coord, [(name, colors[keep]) for name, colors in panels]))
    legend = []
    if task == "semantic":
        from lgseg.scannet.labels import scannet200

        names, palette = scannet200().class_names, scannet200_palette()
        counts = np.bincount(np.concatenate(segments) + 1, minlength=len(names) + 1)[1:]  # [0]: unlabelled
        legend = [(names[c], palette[c]) for c in np.argsort(-counts, kind="stable")[:LEGEND_CLASSES] if counts[c]]
    plot_scenes(scenes, out, panel_width, 1.5 * vertex_spacing(scenes[0][1]), title, legend)


def vertex_spacing(coord: np.ndarray, samples: int = 2000) -> float:
    """The median distance from a vertex to its nearest other vertex (on a seeded subset): the size a vertex is
    drawn at, so that surfaces render closed."""
    from scipy.spatial import cKDTree

    subset = np.random.default_rng(0).choice(len(coord), size=min(samples, len(coord)), replace=False)
    distances, _ = cKDTree(coord).query(coord[subset], k=2)
    return float(np.median(distances[:, 1]))
