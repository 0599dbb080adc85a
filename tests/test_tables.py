"""Table 3 and the text-encoder ablation from the CLI, on metrics files and anchor caches made by hand."""

import json

import numpy as np
import pandas as pd
import pytest

from lgseg.cli import main
from lgseg.runs import RunSpec
from lgseg.scannet.labels import scannet200

GROUPS = ("head", "common", "tail", "all")


def _metrics(path, base):
    """A metrics.json whose official mIoU of group k is base + k / 100 and whose LGS mIoU is half of it."""
    means = {key: {g: base + k / 100 for k, g in enumerate(GROUPS)} for key in ("iou", "precision", "recall")}
    path.write_text(json.dumps({"official": {"mean": means},
                                "lgs": {"mean": {k: {g: v / 2 for g, v in m.items()} for k, m in means.items()}}}))
    return path


def _spec(path, kind, variant, epochs=6, files=None, settings=None):
    spec = RunSpec(kind=kind, name=path.stem, objective="cross_entropy" if kind == "experiment" else "language",
                   settings={"model": {"variant": variant}, "train": {"epochs": epochs}, **(settings or {})}, options={},
                   files=files or {}, processed="unused", run_dir="unused")
    path.write_text(spec.to_json())
    return path


def test_table3_states_each_backbone_and_its_parameter_count(tmp_path):
    rows = [("Scratch", "Res16UNet14Tiny", 6, 0.10), ("Scratch", "Res16UNet18C", 3, 0.20),
            ("Ours", "Res16UNet18C", 3, 0.30)]
    args = []
    for i, (label, variant, epochs, base) in enumerate(rows):
        args += ["--run", label, str(_spec(tmp_path / f"s{i}.json", "experiment", variant, epochs)),
                 str(_metrics(tmp_path / f"m{i}.json", base))]
    assert main(["table3", *args, "--out", str(tmp_path / "t3.csv"), "--markdown", str(tmp_path / "t3.md"),
                 "--dataset", "demo"]) == 0
    table = pd.read_csv(tmp_path / "t3.csv")
    official = table[table["protocol"] == "official"]
    assert official["backbone"].tolist() == ["Res16UNet14Tiny", "Res16UNet18C", "Res16UNet18C"]
    # 388,168 and 21,712,296 parameters with the 200-class head (tests/test_sparse.py counts them by hand)
    assert official["parameters_m"].tolist() == [0.39, 21.71, 21.71]
    assert official["epochs"].tolist() == [6, 3, 3]
    assert official["miou_all"].tolist() == pytest.approx([13.0, 23.0, 33.0])
    assert table[table["protocol"] == "lgs"]["miou_head"].tolist() == pytest.approx([5.0, 10.0, 15.0])
    text = (tmp_path / "t3.md").read_text()
    assert "| Ours | Res16UNet18C | 3 | 21.71 | 30.00 | 31.00 | 32.00 | 33.00 |" in text
    # the supplement's rows (secondary source) and Table 1's main-backbone rows beside them
    assert "22.08" in text and "25.93" in text and "secondary source" in text
    assert "Scratch 25.02, Ours 28.87" in text and "Res16UNet34D (79.4M parameters)" in text


def _anchor_cache(path, encoder):
    """Anchors of 200 classes: the first 100 along x, the others along y (not unit length), as the cache holds them.
    Of the 200 x 199 ordered pairs of two classes, 2 x 100 x 99 have cosine 1 and the rest 0: mean 0.4975."""
    embeddings = np.zeros((200, 2), dtype=np.float32)
    embeddings[:100, 0], embeddings[100:, 1] = 3.0, 0.5
    normalized = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    with open(path, "wb") as f:
        np.savez(f, embeddings=embeddings, normalized=normalized, class_names=np.array(scannet200().class_names),
                 metadata=np.array(json.dumps({"inputs": {"encoder": encoder}, "dim": 2})))
    return path


def test_ablation_rows_name_encoder_and_distance_with_the_supplements_number(tmp_path):
    rows = [("CLIP only", "minilm-l6", "cosine", 0.2), ("CLIP only, CLIP L2", "clip-vit-b32", "l2", 0.1)]
    args = []
    for i, (label, encoder, distance, base) in enumerate(rows):
        anchors = _anchor_cache(tmp_path / f"{encoder}.npz", encoder)
        spec = _spec(tmp_path / f"p{i}.json", "pretraining", "Res16UNet14Tiny", files={"anchors": str(anchors)},
                     settings={"losses.contrastive": {"distance": distance}})
        args += ["--run", label, str(spec), str(_metrics(tmp_path / f"m{i}.json", base))]
    assert main(["text-encoder-ablation", *args, "--out", str(tmp_path / "a.csv"), "--markdown",
                 str(tmp_path / "a.md"), "--dataset", "demo"]) == 0
    table = pd.read_csv(tmp_path / "a.csv")
    official = table[table["protocol"] == "official"]
    assert official["text_encoder"].tolist() == ["MiniLM-L6", "CLIP ViT-B/32"]
    assert official["distance"].tolist() == ["cosine", "l2"]
    assert official["anchor_dim"].tolist() == [2, 2]
    assert official["anchor_cosine"].tolist() == pytest.approx([0.497, 0.497], abs=1e-3)  # 0.4975, rounded
    assert official["miou_all"].tolist() == pytest.approx([23.0, 13.0])
    # the supplement has CLIP under L2 (23.04), nothing for MiniLM
    assert pd.isna(official["paper_miou_all"].iloc[0]) and official["paper_miou_all"].iloc[1] == 23.04
    text = (tmp_path / "a.md").read_text()
    assert "| CLIP only, CLIP L2 | CLIP ViT-B/32 | 2 | l2 | 0.50 | 10.00 | 11.00 | 12.00 | 13.00 | 23.04 |" in text
    assert "| CLIP only | BERT | cosine | 21.28 |" in text and "secondary source" in text


def test_an_ablation_row_must_be_a_language_pretraining(tmp_path, capsys):
    spec = _spec(tmp_path / "p.json", "pretraining", "Res16UNet14Tiny")  # no losses.contrastive: not language
    assert main(["text-encoder-ablation", "--run", "X", str(spec), str(_metrics(tmp_path / "m.json", 0.1)),
                 "--out", str(tmp_path / "a.csv"), "--markdown", str(tmp_path / "a.md"), "--dataset", "demo"]) != 0
    assert f"{spec}: is not a language pre-training (row 'X')" in capsys.readouterr().err
    assert not (tmp_path / "a.csv").exists()
