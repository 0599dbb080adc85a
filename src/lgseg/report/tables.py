"""Result tables made only from per-run metrics.json files (and the run specifications that say what each row is),
printed beside the paper's numbers."""

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
    """The paper's table `name` ("table1", "table2", "table3", "text_encoder_ablation"; bundled data files, see
    resources/paper/SOURCES.md)."""
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


def _write_protocol_tables(table: pd.DataFrame, out_csv: str | Path, out_md: str | Path, dataset: str,
                           intro: list[str], render, paper: list[str]) -> None:
    """The csv of `table`, and a markdown of `intro` (paragraphs), the demo note, one `render`ed table per protocol
    and the `paper` part."""
    with atomic_file(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    text = [line for paragraph in intro for line in (paragraph, "")]
    if dataset != "scannet200":
        text += [DEMO_NOTE, ""]
    for protocol in PROTOCOLS:
        text += [f"## Ours ({protocol} protocol)", "", render(table[table["protocol"] == protocol]), ""]
    write_text(out_md, "\n".join(text + paper))


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
    intro = [f"# Table 2: ScanNet200 3D instance segmentation (val), dataset `{dataset}`",
             f"Numbers in %. {INSTANCE_NOTE} **Paper**: Table 2 of Rozenberszki et al. (ECCV 2022), real ScanNet, "
             "which gives Precision, mIoU and mAP@0.5 only and does not say which protocol.", SCENE_VIEWS_NOTE]
    _write_protocol_tables(table2(runs), out_csv, out_md, dataset, intro, lambda t: _markdown(t, TABLE2_COLUMNS),
                           ["## Paper", "", _markdown(paper_table("table2"), ["precision", "miou", "map50"]), ""])

MIOU_COLUMNS = [f"miou_{g}" for g in GROUPS]
TABLE3_COLUMNS = ["backbone", "epochs", "parameters_m", *MIOU_COLUMNS]


def _miou_row(metrics: dict, protocol: str) -> dict[str, float | None]:
    row = metrics_row(metrics, protocol)
    return {column: row[column] for column in MIOU_COLUMNS}


def table3(runs: list[tuple[str, str, int, str | Path]]) -> pd.DataFrame:
    """One row per (method, protocol) from (label, model variant, epochs, metrics.json): the backbone, its parameter
    count with the 200-class head (millions), the epochs it trained and the mIoU of each frequency group."""
    from lgseg.models import parameter_count

    counts = {variant: round(parameter_count(variant) / 1e6, 2) for variant in {run[1] for run in runs}}
    metrics = {path: json.loads(Path(path).read_text()) for *_, path in runs}
    rows = [{"method": label, "protocol": protocol, "backbone": variant, "parameters_m": counts[variant],
             "epochs": epochs, **_miou_row(metrics[path], protocol)}
            for protocol in PROTOCOLS for label, variant, epochs, path in runs]
    return pd.DataFrame(rows, columns=["method", "protocol", *TABLE3_COLUMNS])


def _markdown_text(frame: pd.DataFrame, columns: list[str], numbers: list[str]) -> str:
    """A markdown table of text `columns` then `numbers` (2 decimals, a dash for missing) after the method."""
    header = "| method | " + " | ".join(c.replace("_", " ") for c in columns + numbers) + " |"
    lines = [header, "|" + "---|" * (len(columns) + len(numbers) + 1)]
    for _, row in frame.iterrows():
        values = [str(row[c]) for c in columns] + ["–" if pd.isna(row[c]) else f"{row[c]:.2f}" for c in numbers]
        lines.append(f"| {row['method']} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def write_table3(runs: list[tuple[str, str, int, str | Path]], out_csv: str | Path, out_md: str | Path,
                 dataset: str) -> None:
    from lgseg.models import parameter_count

    paper_main = paper_table("table1").set_index("method")["miou_all"]
    intro = [f"# Table 3: the smaller backbone, ScanNet200 semantic segmentation (val), dataset `{dataset}`",
             "The same comparison with a smaller 3D U-Net (the supplement's Table 3). **parameters m**: the network "
             "with its 200-class head, in millions (Res16UNet18C: Res16UNet18's blocks with Res16UNet34C's planes, "
             "the Res16UNet variant closest to the supplement's 20M). **epochs**: of the row's fine-tuning (its "
             "pre-training's may differ). mIoU in %. " + PROTOCOL_NOTE]
    paper = ["## Paper", "",
             "The supplement's Table 3 on its 20M-parameter U-Net, mIoU all, **transcribed from a secondary source** "
             "(a third-party summary of the supplement; its other columns were not recovered). Beside it, Table 1's "
             f"rows on the main backbone, Res16UNet34D ({parameter_count('Res16UNet34D') / 1e6:.1f}M parameters): "
             f"Scratch {paper_main['Scratch']:.2f}, Ours {paper_main['Ours']:.2f}.", "",
             _markdown_text(paper_table("table3"), ["backbone"], ["miou_all"]), ""]
    _write_protocol_tables(table3(runs), out_csv, out_md, dataset, intro,
                           lambda t: _markdown_text(t, ["backbone", "epochs"], ["parameters_m", *MIOU_COLUMNS]), paper)

ABLATION_COLUMNS = ["text_encoder", "anchor_dim", "anchor_cosine", "distance", *MIOU_COLUMNS, "paper_miou_all"]


def ablation_facts(anchors_path: str | Path) -> dict:
    """The text encoder of an anchor cache (its name), its width and the mean cosine between the anchors of two
    different classes (1: the anchors cannot tell classes apart)."""
    import numpy as np

    from lgseg.text.anchors import load_text_anchors

    anchors = load_text_anchors(anchors_path)
    cosine = anchors.normalized @ anchors.normalized.T
    off_diagonal = cosine[~np.eye(len(cosine), dtype=bool)]
    return {"text_encoder": anchors.metadata["inputs"]["encoder"], "anchor_dim": anchors.dim,
            "anchor_cosine": round(float(off_diagonal.mean()), 3)}


def _encoder_labels(table: pd.DataFrame) -> pd.DataFrame:
    """The table with its encoder names written as readers know them (clip-vit-b32 -> CLIP ViT-B/32)."""
    from lgseg.text.encoders import ENCODER_LABELS

    return table.assign(text_encoder=table["text_encoder"].map(lambda name: ENCODER_LABELS.get(name, name)))


def text_encoder_ablation(runs: list[tuple[str, str | Path, str, str | Path]]) -> pd.DataFrame:
    """One row per (method, protocol) from (label, text-anchor cache, distance, metrics.json) of fine-tunings of
    language pre-trainings, with the supplement's mIoU all for the same encoder and distance where it has one."""
    paper = paper_table("text_encoder_ablation").set_index(["text_encoder", "distance"])["miou_all"]
    facts = {path: ablation_facts(path) for _, path, _, _ in runs}
    metrics = {path: json.loads(Path(path).read_text()) for _, _, _, path in runs}
    rows = []
    for protocol in PROTOCOLS:
        for label, anchors, distance, path in runs:
            key = (facts[anchors]["text_encoder"], distance)
            rows.append({"method": label, "protocol": protocol, **facts[anchors], "distance": distance,
                         **_miou_row(metrics[path], protocol), "paper_miou_all": paper.get(key)})
    return _encoder_labels(pd.DataFrame(rows, columns=["method", "protocol", *ABLATION_COLUMNS]))


def write_text_encoder_ablation(runs: list[tuple[str, str | Path, str, str | Path]], out_csv: str | Path,
                                out_md: str | Path, dataset: str) -> None:
    intro = [f"# Text encoder and distance ablation: ScanNet200 semantic segmentation (val), dataset `{dataset}`",
             "Language pre-training with each row's text anchors and distance, then cross-entropy fine-tuning (the "
             "paper's \"CLIP only\" setting). **anchor cosine**: the mean cosine between the anchors of two different "
             "classes. **paper miou all**: the supplement's number for the same encoder and distance, **transcribed "
             "from a secondary source** (a third-party summary of the supplement). mIoU in %. " + PROTOCOL_NOTE]
    paper = ["## Supplement (secondary source)", "",
             _markdown_text(_encoder_labels(paper_table("text_encoder_ablation")), ["text_encoder", "distance"],
                            ["miou_all"]), ""]
    _write_protocol_tables(text_encoder_ablation(runs), out_csv, out_md, dataset, intro,
                           lambda t: _markdown_text(t, ["text_encoder", "anchor_dim", "distance"],
                                                    ["anchor_cosine", *MIOU_COLUMNS, "paper_miou_all"]), paper)
