"""Result tables made only from per-run metrics.json files, printed beside the paper's numbers."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pandas as pd

from lgseg.errors import DataError
from lgseg.fileio import atomic_file, write_text

PROTOCOLS = ("official", "lgs")
METRICS = ("miou", "precision", "recall")
GROUPS = ("head", "common", "tail", "all")
COLUMNS = [f"{m}_{g}" for m in METRICS for g in GROUPS]
_KEY = {"miou": "iou", "precision": "precision", "recall": "recall"}


def paper_table(name: str) -> pd.DataFrame:
    """The paper's table `name` ("table1", "table2"; bundled data files, see resources/paper/SOURCES.md)."""
    return pd.read_csv(Path(str(resources.files("lgseg") / "resources" / "paper" / f"{name}.csv")))


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


def _markdown(frame: pd.DataFrame, columns: list[str] = COLUMNS) -> str:
    header = "| method | " + " | ".join(c.replace("_", " ") for c in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    for _, row in frame.iterrows():
        values = ["–" if pd.isna(row[c]) else f"{row[c]:.2f}" for c in columns]
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
    paper = paper_table("table1")
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


TABLE2_COLUMNS = ["precision", "miou", "map50", "ap", "ap25", "ap_head", "ap_common", "ap_tail"]
INSTANCE_NOTE = ("**precision** = the class head's point accuracy, **mIoU** = its 200-class mIoU (semantic protocols "
                 "as Table 1); **mAP50 / AP / AP25** = instance AP over the 198 classes (all but wall and floor) at "
                 "IoU 0.5 / averaged over 0.50-0.90 / at 0.25; **AP head / common / tail** = AP over those classes of "
                 "each frequency group. **Official protocol**: per mesh vertex, proposals mapped to the vertices of "
                 "their voxels, instances and predictions under 100 vertices left out, as ScanNet's "
                 "evaluate_semantic_instance.py. **LGS protocol**: per voxel, minimum region 10 voxels, as the "
                 "authors' training code. A dash: undefined (no val class of that group).")


def _percent(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 2)


def table2_row(metrics: dict, protocol: str) -> dict[str, float | None]:
    """The Table 2 numbers of one instance run (in %), from its metrics.json dict."""
    semantic, instance = metrics[protocol], metrics["instance"][protocol]
    correct = sum(entry["tp"] for entry in semantic["per_class"].values())
    return {"precision": _percent(correct / semantic["num_points"] if semantic["num_points"] else None),
            "miou": _percent(semantic["mean"]["iou"]["all"]), "map50": _percent(instance["ap50"]),
            "ap": _percent(instance["ap"]), "ap25": _percent(instance["ap25"]),
            **{f"ap_{group}": _percent(instance["by_group"][group]["ap"]) for group in GROUPS[:3]}}


def table2(runs: dict[str, str | Path]) -> pd.DataFrame:
    """One row per (method, protocol) from label -> metrics.json of instance runs."""
    metrics = {label: json.loads(Path(path).read_text()) for label, path in runs.items()}
    for label, path in runs.items():
        if "instance" not in metrics[label]:
            raise DataError(path, f"has no instance metrics (row {label!r})",
                            "list instance runs in reports.table2 (loss instance or instance_focal)")
    rows = [{"method": label, "protocol": protocol, **table2_row(metrics[label], protocol)}
            for protocol in PROTOCOLS for label in runs]
    return pd.DataFrame(rows, columns=["method", "protocol", *TABLE2_COLUMNS])


def write_table2(runs: dict[str, str | Path], out_csv: str | Path, out_md: str | Path, dataset: str) -> None:
    table = table2(runs)
    with atomic_file(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    text = [f"# Table 2: ScanNet200 3D instance segmentation (val), dataset `{dataset}`", "",
            f"Numbers in %. {INSTANCE_NOTE} **Paper**: Table 2 of Rozenberszki et al. (ECCV 2022), real ScanNet, "
            "which gives Precision, mIoU and mAP@0.5 only and does not say which protocol.", "",
            SCENE_VIEWS_NOTE, ""]
    if dataset != "scannet200":
        text += [DEMO_NOTE, ""]
    for protocol in PROTOCOLS:
        text += [f"## Ours ({protocol} protocol)", "", _markdown(table[table["protocol"] == protocol], TABLE2_COLUMNS),
                 ""]
    text += ["## Paper", "", _markdown(paper_table("table2"), ["precision", "miou", "map50"]), ""]
    write_text(out_md, "\n".join(text))
