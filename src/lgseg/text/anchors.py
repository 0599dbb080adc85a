"""The anchor cache `data/text/<encoder>.npz`: one embedding row per ScanNet200 class (row i = class i), its
L2-normalised copy, the class names and the inputs it was made from; rebuilt only when an input changes."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lgseg.errors import ConfigError, DataError
from lgseg.fileio import atomic_file, write_npz
from lgseg.scannet.labels import scannet200
from lgseg.text.encoders import TextEncoder

log = logging.getLogger(__name__)
DEFAULT_TEMPLATE = "{}"  # the bare class name, as the paper


@dataclass(frozen=True)
class TextAnchors:
    embeddings: np.ndarray  # [C, D] float32, as the encoder returned them
    normalized: np.ndarray  # [C, D] float32, unit rows
    class_names: tuple[str, ...]
    metadata: dict

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]


def prompts_for(class_names, template: str) -> list[str]:
    if "{}" not in template:
        raise ConfigError(f"config key 'text.template': {template!r} has no '{{}}' for the class name; use e.g. "
                          "'{}' (the paper) or 'a {} in a scene'")
    return [template.format(name) for name in class_names]


def cache_inputs(encoder: TextEncoder, template: str) -> dict:
    """What the embeddings are a function of: the encoder's fingerprint, the template and the class names."""
    names = scannet200().class_names
    return {**encoder.fingerprint(), "template": template, "class_names_sha256": _names_hash(names)}


def _names_hash(names) -> str:
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def load_text_anchors(path: str | Path) -> TextAnchors:
    """Read an anchor cache; checks that its rows are the ScanNet200 classes in order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "text-anchor cache not found", "run `python -m lgseg text-anchors` (rule text_anchors)")
    try:
        with np.load(path, allow_pickle=False) as data:
            anchors = TextAnchors(data["embeddings"], data["normalized"], tuple(str(n) for n in data["class_names"]),
                                  json.loads(str(data["metadata"])))
    except (OSError, ValueError, KeyError) as err:
        raise DataError(path, f"not a readable text-anchor cache ({err})", "delete it and run text-anchors again")
    if anchors.class_names != scannet200().class_names or anchors.embeddings.shape[0] != len(anchors.class_names):
        raise DataError(path, "rows are not the 200 ScanNet200 classes in order", "delete it and run text-anchors")
    return anchors


def build_text_anchors(encoder: TextEncoder, out: str | Path, template: str = DEFAULT_TEMPLATE) -> bool:
    """Write the cache for `encoder`; returns False (and does nothing) when `out` already holds these inputs."""
    out = Path(out)
    inputs = cache_inputs(encoder, template)
    if out.is_file():
        try:
            if load_text_anchors(out).metadata.get("inputs") == inputs:
                log.info("%s is up to date (same encoder, weights, template and classes)", out)
                return False
        except DataError as err:
            log.warning("rebuilding: %s", err)
    names = scannet200().class_names
    start = time.perf_counter()
    embeddings = np.ascontiguousarray(encoder.encode(prompts_for(names, template)), dtype=np.float32)
    if embeddings.shape[0] != len(names) or not np.isfinite(embeddings).all():
        raise DataError(encoder.checkpoint or encoder.name, f"encoder returned {embeddings.shape} values with "
                        "non-finite entries or a wrong row count", "check the weights file")
    normalized = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    metadata = {"inputs": inputs, "dim": int(embeddings.shape[1])}  # no timing: the same inputs, the same bytes
    write_npz(out, {"embeddings": embeddings, "normalized": normalized.astype(np.float32),
                    "class_names": np.array(names), "metadata": np.array(json.dumps(metadata, sort_keys=True))})
    log.info("wrote %s: %d x %d anchors from %s in %.1f s", out, *embeddings.shape, encoder.name,
             time.perf_counter() - start)
    return True


def nearest_classes(anchors: TextAnchors, name: str, k: int = 5) -> list[tuple[str, float]]:
    """The k classes whose anchors have the highest cosine similarity to class `name` (itself excluded)."""
    index = anchors.class_names.index(name)
    cosine = anchors.normalized @ anchors.normalized[index]
    order = [i for i in np.argsort(-cosine, kind="stable") if i != index][:k]
    return [(anchors.class_names[i], float(cosine[i])) for i in order]


def plot_similarity(anchors: TextAnchors, out: str | Path) -> None:
    """Heat map of the 200 x 200 anchor cosine similarities, classes grouped head / common / tail."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = scannet200()
    order = [i for group in ("head", "common", "tail") for i in classes.indices_of_group(group)]
    cosine = anchors.normalized[order] @ anchors.normalized[order].T
    fig, ax = plt.subplots(figsize=(13, 12), layout="constrained")
    image = ax.imshow(cosine, cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="cosine similarity")
    bounds = np.cumsum([len(classes.indices_of_group(g)) for g in ("head", "common")])
    for b in bounds:
        ax.axhline(b - 0.5, color="white", lw=0.8)
        ax.axvline(b - 0.5, color="white", lw=0.8)
    ticks = [anchors.class_names[i] for i in order]
    ax.set_xticks(range(len(ticks)), ticks, rotation=90, fontsize=3.5)
    ax.set_yticks(range(len(ticks)), ticks, fontsize=3.5)
    inputs = anchors.metadata["inputs"]
    ax.set_title(f"ScanNet200 text anchors: {inputs['encoder']}, template {inputs['template']!r}, "
                 f"{anchors.dim}-d (head | common | tail)")
    with atomic_file(out) as tmp:
        fig.savefig(tmp, format="png", dpi=200)
    plt.close(fig)


REPORT_CLASSES = ("chair", "table", "bed", "toilet", "window", "guitar")


def report(anchors: TextAnchors, k: int = 5) -> str:
    """Nearest neighbours of a few classes, as text."""
    lines = [f"{anchors.metadata['inputs']['encoder']} anchors, {anchors.dim}-d: nearest classes by cosine"]
    for name in REPORT_CLASSES:
        neighbours = ", ".join(f"{n} {c:.2f}" for n, c in nearest_classes(anchors, name, k))
        lines.append(f"  {name:<8} {neighbours}")
    return "\n".join(lines)
