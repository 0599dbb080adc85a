"""Paper figures drawn from pipeline outputs (Fig. 4: class distribution of the train split; Fig. 5: mIoU against
the annotated fraction; instance-sampling top views)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402

from lgseg.fileio import atomic_file  # noqa: E402
from lgseg.scannet.labels import scannet200  # noqa: E402

GROUP_COLORS = {"head": "#1f77b4", "common": "#ff7f0e", "tail": "#2ca02c"}


def plot_class_distribution(stats: pd.DataFrame, out: str | Path, title: str = "") -> None:
    """Fig. 4: classes ordered by instance count; log-scale bars of instances and of labelled vertices."""
    table = stats.sort_values(["num_instances", "num_vertices", "class_index"],
                              ascending=[False, False, True]).reset_index(drop=True)
    colors = [GROUP_COLORS[g] for g in table["frequency_group"]]
    present = int((table["num_instances"] > 0).sum())
    fig, axes = plt.subplots(2, 1, figsize=(22, 8.5), sharex=True, layout="constrained")
    for ax, column, label in ((axes[0], "num_instances", "instances"), (axes[1], "num_vertices", "labelled points")):
        ax.bar(range(len(table)), table[column].where(table[column] > 0), color=colors, width=0.8)
        ax.set_yscale("log")
        ax.set_ylabel(f"{label} (log)")
        ax.grid(axis="y", which="major", alpha=0.3)
        ax.set_xlim(-1, len(table))
    axes[1].set_xticks(range(len(table)))
    axes[1].set_xticklabels(table["class_name"], rotation=90, fontsize=5.5)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in GROUP_COLORS.values()]
    axes[0].legend(handles, list(GROUP_COLORS), title="ScanNet200 split", loc="upper right")
    axes[0].set_title(title or f"Class distribution of the train split ({present} of {len(table)} classes present)")
    with atomic_file(out) as tmp:
        fig.savefig(tmp, format=Path(out).suffix.lstrip(".") or "png", dpi=200)
    plt.close(fig)


def plot_limited_annotations(table: pd.DataFrame, out: str | Path, title: str = "",
                             protocol: str = "official") -> None:
    """Fig. 5: mIoU against the annotated fraction (log axis), one line per method, one panel per class group."""
    table = table[table["protocol"] == protocol]
    fractions = sorted(table["annotated"].unique())
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.9), layout="constrained")
    for ax, group in zip(axes, ("all", "head", "common", "tail")):
        for k, (method, rows) in enumerate(table.groupby("method", sort=False)):
            rows = rows.sort_values("annotated")
            ax.plot(100 * rows["annotated"], rows[f"miou_{group}"], marker="o", color=f"C{k}", label=method)
        ax.set_xscale("log")
        ax.set_xticks([100 * f for f in fractions], [f"{100 * f:g}%" for f in fractions])
        ax.minorticks_off()
        ax.set_xlabel("annotated vertices per instance")
        ax.set_title(group if group == "all" else f"{group} classes")
        # at least 0-1 %: a panel of near-zero values stays flat instead of magnifying noise
        ax.set_ylim(0, max(1.0, 1.15 * float(np.nanmax(table[f"miou_{group}"].to_numpy(dtype=float), initial=0))))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"val mIoU (%, {protocol} protocol)")
    axes[0].legend(loc="lower left")
    if title:
        fig.suptitle(title)
    with atomic_file(out) as tmp:
        fig.savefig(tmp, format=Path(out).suffix.lstrip(".") or "png", dpi=150)
    plt.close(fig)


def class_colors(classes: np.ndarray, shown: list[int]) -> np.ndarray:
    """RGB per point: the classes in `shown` get distinct colours (tab20, in that order), floor pale, wall dark,
    anything else (unlabelled, ignored) light grey."""
    names = scannet200().class_names
    palette = np.full((len(names) + 1, 3), 0.78)  # last row: label -1
    palette[names.index("floor")] = (0.91, 0.89, 0.85)
    palette[names.index("wall")] = (0.42, 0.42, 0.42)
    cycle = plt.get_cmap("tab20").colors
    for k, class_index in enumerate(shown):
        palette[class_index] = cycle[(2 * k) % 20 + (k // 10) % 2]  # dark shades first, then the light ones
    return palette[classes]


def plot_instance_sampling(before: dict, after: dict, placements: list, out: str | Path, title: str = "") -> None:
    """Top view of a scene coloured by class, before and after instance sampling, placed instances outlined.

    `before`/`after` hold `coord` and `segment` arrays; `placements` are `PlacedInstance`s. Ceiling points are
    left out; points are drawn from low to high, so the view shows the top surface.
    """
    names = scannet200().class_names
    ceiling = names.index("ceiling")
    panels = []
    for arrays in (before, after):
        coord, segment = np.asarray(arrays["coord"]), np.asarray(arrays["segment"]).astype(np.int64)
        visible = segment != ceiling
        order = np.argsort(coord[visible, 2], kind="stable")
        panels.append((coord[visible][order], segment[visible][order]))
    low, high = panels[1][0][:, :2].min(0), panels[1][0][:, :2].max(0)
    extent = high - low
    width = 7.0  # inches per panel
    height = max(2.5, width * extent[1] / max(extent[0], 1e-6))
    fig, axes = plt.subplots(1, 2, figsize=(2 * width, height + 1.3), layout="constrained")
    spacing = np.sqrt(extent.prod() / max(len(panels[0][0]), 1))  # metres between points, about
    marker = (2.0 * spacing * width * 72 / max(extent[0], 1e-6)) ** 2  # marker area in points^2
    structure = [names.index(n) for n in ("floor", "wall")]
    placed_classes = sorted({p.class_index for p in placements})
    others = sorted(set(np.unique(panels[1][1]).tolist()) - set(placed_classes) - set(structure) - {-1})
    shown = placed_classes + others
    for ax, (coord, segment), label in zip(axes, panels, ("original", f"with {len(placements)} sampled instances")):
        ax.scatter(coord[:, 0], coord[:, 1], c=class_colors(segment, shown), s=marker, marker="s", linewidths=0,
                   rasterized=True)
        ax.set_aspect("equal")
        ax.set_xlim(low[0] - 0.1, high[0] + 0.1)
        ax.set_ylim(low[1] - 0.1, high[1] + 0.1)
        ax.set_title(label)
        ax.set_xlabel("x (m)")
    axes[0].set_ylabel("y (m)")
    for placed in placements:
        size = placed.box_max[:2] - placed.box_min[:2]
        axes[1].add_patch(Rectangle(placed.box_min[:2], size[0], size[1], fill=False, edgecolor="black",
                                    linewidth=1.4))
        axes[1].annotate(names[placed.class_index], (placed.box_min[0], placed.box_max[1]), xytext=(0, 3),
                         textcoords="offset points", fontsize=8,
                         bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.8, "linewidth": 0})
    legend = [(c, names[c] + (" (placed)" if c in placed_classes else "")) for c in shown]
    legend += [(c, names[c]) for c in structure] + [(-1, "unlabelled")]
    handles = [Patch(color=class_colors(np.array([c]), shown)[0], label=text) for c, text in legend]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), frameon=False, fontsize=9)
    fig.suptitle(title or "Instance sampling: top view coloured by class (placed instances outlined)")
    with atomic_file(out) as tmp:
        fig.savefig(tmp, format=Path(out).suffix.lstrip(".") or "png", dpi=200)
    plt.close(fig)
