"""Fig. 7: t-SNE of pre-trained features on one class-balanced sample of val vertices, the same for every model.

The authors released no code for this figure; the protocol here: for each configured class, at most
`points_per_class` of its val vertices, drawn uniformly without replacement by one seeded draw over the processed
store before any model is read; each model's feature at the voxel of each sampled vertex, L2-normalised, reduced
by PCA to `pca_dims` dimensions (fewer if the features have fewer) and embedded in 2-D by t-SNE with a fixed seed.
Beside each panel: the leave-one-out k-nearest-neighbour class accuracy of the PCA features (how well the classes
separate before t-SNE's distortion).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from lgseg.fileio import atomic_file  # noqa: E402

NEIGHBOURS = 10  # k of the kNN accuracy shown in each panel


@dataclass(frozen=True)
class PointSample:
    """Sampled val vertices, ordered by scene then vertex: scene_ids[scene[i]], vertex[i], class index label[i]."""

    scene_ids: tuple[str, ...]
    scene: np.ndarray
    vertex: np.ndarray
    label: np.ndarray

    def vertices_of(self, scene_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(rows of the sample, vertex indices) of one scene."""
        rows = np.flatnonzero(self.scene == self.scene_ids.index(scene_id))
        return rows, self.vertex[rows]


def balanced_sample(segments: dict[str, np.ndarray], classes: Sequence[int], per_class: int,
                    seed: int) -> PointSample:
    """At most `per_class` vertices of each class in `classes`, uniformly without replacement over all scenes'
    vertices of that class (`segments`: scene id -> class index per vertex), one seeded draw per class in order."""
    scene_ids = tuple(sorted(segments))
    rng = np.random.default_rng(seed)
    scene_of, vertex_of = [], []
    for c in classes:
        where = [(k, np.flatnonzero(np.asarray(segments[s]) == c)) for k, s in enumerate(scene_ids)]
        scenes = np.concatenate([np.full(len(v), k) for k, v in where]) if where else np.zeros(0, int)
        vertices = np.concatenate([v for _, v in where]) if where else np.zeros(0, int)
        pick = rng.choice(len(vertices), size=min(per_class, len(vertices)), replace=False)
        scene_of.append(scenes[pick])
        vertex_of.append(vertices[pick])
    scene = np.concatenate(scene_of).astype(np.int64)
    vertex = np.concatenate(vertex_of).astype(np.int64)
    label = np.concatenate([np.full(len(v), c) for c, v in zip(classes, vertex_of)]).astype(np.int64)
    order = np.lexsort((vertex, scene))
    return PointSample(scene_ids, scene[order], vertex[order], label[order])


def sample_features(scene_batches: Iterable[tuple[dict, dict]], sample: PointSample) -> np.ndarray:
    """The network's feature at each sampled vertex's voxel ([n, D], sample order), from (batch of one scene,
    outputs) pairs such as lgseg.evaluate.inference.scene_outputs yields."""
    features, seen = None, set()
    for batch, outputs in scene_batches:
        scene_id = batch["scene_ids"][0]
        if scene_id not in sample.scene_ids:
            continue
        rows, vertices = sample.vertices_of(scene_id)
        voxel_features = outputs["features"].float().cpu()
        if features is None:
            features = np.zeros((len(sample.vertex), voxel_features.shape[1]), np.float32)
        features[rows] = voxel_features[batch["inverse"][0][torch.from_numpy(vertices)]].numpy()
        seen.add(scene_id)
    missing = sorted(set(sample.scene_ids[k] for k in np.unique(sample.scene)) - seen)
    if missing:
        raise ValueError(f"the model saw no outputs for sampled scenes {missing[:3]}")
    return features


def pca(features: np.ndarray, dims: int) -> np.ndarray:
    """The rows' coordinates on their `dims` leading principal axes (all axes if there are fewer)."""
    centred = features - features.mean(0)
    _, _, axes = np.linalg.svd(centred, full_matrices=False)
    signs = np.sign(axes[:, np.abs(axes).argmax(1)].diagonal())  # one fixed sign per axis
    return centred @ (axes[:dims] * signs[:dims, None]).T


def knn_accuracy(points: np.ndarray, labels: np.ndarray, k: int = NEIGHBOURS) -> float:
    """Leave-one-out accuracy of the majority class among each point's k nearest other points (ties: the lowest
    class index)."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(points) - 1)
    _, index = NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points)
    votes = labels[index[:, 1:]]
    classes = np.unique(labels)
    counts = (votes[:, :, None] == classes[None, None, :]).sum(1)
    return float((classes[counts.argmax(1)] == labels).mean())


def embed(features: np.ndarray, pca_dims: int, perplexity: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(2-D t-SNE embedding, PCA features) of L2-normalised features."""
    from sklearn.manifold import TSNE

    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    reduced = pca(unit.astype(np.float64), pca_dims)
    perplexity = min(perplexity, (len(reduced) - 1) / 3)  # t-SNE needs more points than 3 x perplexity
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed)
    return tsne.fit_transform(reduced), reduced


def plot_tsne(panels: list[tuple[str, np.ndarray, float]], labels: np.ndarray, class_names: dict[int, str],
              out: str | Path, title: str = "") -> None:
    """One panel per model (label, 2-D points, kNN accuracy), points coloured by class, one shared legend."""
    classes = [c for c in class_names if np.any(labels == c)]
    colors = plt.get_cmap("tab20")(np.linspace(0, 1, 20))[np.arange(len(classes)) % 20]
    markers = ["o", "^", "s", "D"]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 2.6, 4.6), layout="constrained",
                             squeeze=False)
    for ax, (label, points, accuracy) in zip(axes[0], panels):
        for k, c in enumerate(classes):
            mine = labels == c
            ax.scatter(points[mine, 0], points[mine, 1], s=3, color=colors[k], marker=markers[k // 20 % 4],
                       linewidths=0, label=class_names[c])
        ax.set_title(f"{label}\n{NEIGHBOURS}-NN accuracy {100 * accuracy:.1f} %", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right center", markerscale=4, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    with atomic_file(out) as tmp:
        fig.savefig(tmp, format=Path(out).suffix.lstrip(".") or "png", dpi=150)
    plt.close(fig)


def pretrained_features(spec, sample: PointSample) -> np.ndarray:
    """Features of a run's best checkpoint at the sampled vertices of its processed store's val split."""
    from lgseg.data.dataset import SceneDataset
    from lgseg.evaluate.inference import scene_outputs
    from lgseg.paths import BEST
    from lgseg.train.engine import device_for_training, load_network

    device = device_for_training()
    model = load_network(spec, Path(spec.run_dir) / BEST, device)
    scenes = [sample.scene_ids[k] for k in np.unique(sample.scene)]
    dataset = SceneDataset(spec.processed, "val", scenes, spec.settings["train"]["voxel_size"])
    return sample_features(scene_outputs(model, dataset, device, spec.options["workers"],
                                         desc=f"features {spec.key}"), sample)


def write_fig7(runs: list[tuple[str, object]], class_names: Sequence[str], per_class: int, seed: int,
               pca_dims: int, perplexity: float, out: str | Path, title: str = "") -> list[dict]:
    """Fig. 7 for (label, run specification) pairs of pre-trainings on one processed store; returns one record
    per panel (label, points, dimensions, kNN accuracy)."""
    from lgseg.data.store import read_scene, scene_folders
    from lgseg.errors import ConfigError
    from lgseg.paths import split_list
    from lgseg.scannet.labels import scannet200
    from lgseg.scannet.splits import read_scene_list

    table = scannet200()
    index = {name: k for k, name in enumerate(table.class_names)}
    unknown = [name for name in class_names if name not in index]
    if unknown:
        raise ConfigError(f"config key 'figures.tsne.classes': {unknown[0]!r} is not a ScanNet200 class name")
    stores = {str(spec.processed) for _, spec in runs}
    if len(stores) != 1:
        raise ConfigError(f"figures.tsne.pretrainings: the runs read different processed stores {sorted(stores)}; "
                          "Fig. 7 compares features of the same points")
    processed = runs[0][1].processed
    scene_ids = read_scene_list(split_list(processed, "val"))
    segments = {folder.name: read_scene(folder)["segment"] for folder in scene_folders(processed, "val", scene_ids)}
    classes = [index[name] for name in class_names]
    sample = balanced_sample(segments, classes, per_class, seed)
    if len(np.unique(sample.label)) < 2:
        raise ConfigError("figures.tsne.classes: fewer than 2 of the named classes occur in the val split; name "
                          "classes present in val")
    panels, records = [], []
    for label, spec in runs:
        points, reduced = embed(pretrained_features(spec, sample), pca_dims, perplexity, seed)
        accuracy = knn_accuracy(reduced, sample.label)
        panels.append((label, points, accuracy))
        records.append({"label": label, "run": spec.key, "points": len(points), "dims": reduced.shape[1],
                        "knn_accuracy": accuracy})
    names = {c: f"{table.class_names[c]} ({table.frequency_group[c]})" for c in classes}
    plot_tsne(panels, sample.label, names, out, title)
    return records
