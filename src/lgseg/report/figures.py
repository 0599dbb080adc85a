"""Paper figures drawn from pipeline outputs (Fig. 4: class distribution of the train split)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from lgseg.fileio import atomic_file  # noqa: E402

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
