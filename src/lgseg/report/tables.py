"""Result tables made only from per-run metrics.json files, printed beside the paper's numbers."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pandas as pd

from lgseg.fileio import atomic_file, write_text

PROTOCOLS = ("official", "lgs")
METRICS = ("miou", "precision", "recall")
GROUPS = ("head", "common", "tail", "all")
COLUMNS = [f"{m}_{g}" for m in METRICS for g in GROUPS]
_KEY = {"miou": "iou", "precision": "precision", "recall": "recall"}


def paper_table1() -> pd.DataFrame:
    """The paper's Table 1 (bundled data file, see resources/paper/SOURCES.md)."""
    return pd.read_csv(Path(str(resources.files("lgseg") / "resources" / "paper" / "table1.csv")))


def metrics_row(metrics: dict, protocol: str) -> dict[str, float]:
    """The 12 numbers of one run (in %), from a metrics.json dict."""
    means = metrics[protocol]["mean"]
    return {f"{m}_{g}": (None if means[_KEY[m]][g] is None else round(100 * means[_KEY[m]][g], 2))
            for m in METRICS for g in GROUPS}


def table1(runs: dict[str, str | Path], protocol: str = "official") -> pd.DataFrame:
    """One row per method (label -> metrics.json), columns mIoU / precision / recall x head / common / tail / all."""
    rows = [{"method": label, **metrics_row(json.loads(Path(path).read_text()), protocol)}
            for label, path in runs.items()]
    return pd.DataFrame(rows, columns=["method", *COLUMNS])


def _markdown(frame: pd.DataFrame) -> str:
    header = "| method | " + " | ".join(c.replace("_", " ") for c in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    for _, row in frame.iterrows():
        values = ["–" if pd.isna(row[c]) else f"{row[c]:.2f}" for c in COLUMNS]
        lines.append(f"| {row['method']} | " + " | ".join(values) + " |")
    return "\n".join(lines)


DEMO_NOTE = ("> These runs use the synthetic demo data: they check that the pipeline works end to end and are not a "
             "reproduction of the paper's numbers, which need real ScanNet and paper-scale training.")
SCENE_VIEWS_NOTE = ("A CSC row here pre-trains CSC on two cropped views of each reconstructed scene (\"scene views\"); "
                    "the paper's CSC used pairs of RGB-D frames (README, Training and evaluation).")
PROTOCOL_NOTE = ("**Official protocol**: per mesh vertex, classes absent from the val ground truth left out. **LGS "
                 "protocol**: per voxel, classes absent from ground truth and prediction count 0, as the authors' code "
                 "computes it.")


def write_table1(runs: dict[str, str | Path], out_csv: str | Path, out_md: str | Path, dataset: str) -> None:
    ours = table1(runs, "official")
    with atomic_file(out_csv) as tmp:
        ours.to_csv(tmp, index=False)
    lgs = table1(runs, "lgs")
    paper = paper_table1()
    text = [
        f"# Table 1: ScanNet200 semantic segmentation (val), dataset `{dataset}`",
        "",
        f"Numbers in %. {PROTOCOL_NOTE} **Paper**: Table 1 of Rozenberszki et al. (ECCV 2022), real ScanNet.",
        "",
    ]
    text += [SCENE_VIEWS_NOTE, ""]
    if dataset != "scannet200":
        text += [DEMO_NOTE, ""]
    text += ["## Ours (official protocol)", "", _markdown(ours), "", "## Ours (LGS protocol)", "", _markdown(lgs), "",
             "## Paper", "", _markdown(paper), ""]
    write_text(out_md, "\n".join(text))


def limited_annotations(runs: list[tuple[str, float, str | Path]]) -> pd.DataFrame:
    """One row per (method, annotated fraction, protocol) from (label, ratio, metrics.json) triples."""
    metrics = {path: json.loads(Path(path).read_text()) for _, _, path in runs}
    rows = [{"method": label, "annotated": ratio, "protocol": protocol, **metrics_row(metrics[path], protocol)}
            for protocol in PROTOCOLS for label, ratio, path in runs]
    return pd.DataFrame(rows, columns=["method", "annotated", "protocol", *COLUMNS])


def write_limited_annotations(runs: list[tuple[str, float, str | Path]], out_csv: str | Path, out_md: str | Path,
                              dataset: str) -> None:
    table = limited_annotations(runs)
    with atomic_file(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    text = [f"# Limited annotations (paper Fig. 5): ScanNet200 semantic segmentation (val), dataset `{dataset}`", "",
            "Each method trained on a fraction of each train instance's labelled vertices (farthest-point sampled; "
            "val fully labelled); its language pre-training sees the same fraction, a label-free one (CSC) all of "
            f"the geometry. Numbers in %. {PROTOCOL_NOTE} The paper gives these results as a chart only (Fig. 5), so "
            "no paper numbers are printed beside.", ""]
    text += [SCENE_VIEWS_NOTE, ""]
    if dataset != "scannet200":
        text += [DEMO_NOTE, ""]
    for protocol in PROTOCOLS:
        part = table[table["protocol"] == protocol].assign(
            method=lambda f: f["method"] + " @ " + (100 * f["annotated"]).map("{:g} %".format))
        text += [f"## {protocol} protocol", "", _markdown(part), ""]
    write_text(out_md, "\n".join(text))
