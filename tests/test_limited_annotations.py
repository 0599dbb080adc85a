"""The limited-annotation study: its runs, the voxel-label rule under a mask, losses on exactly the annotated
voxels, the study's table and figure."""

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import REPO, layout, processed_demo_store
from lgseg.cli import main
from lgseg.config import SCHEMA_PATH, load_config, validate_config
from lgseg.data.annotation_masks import write_annotation_masks
from lgseg.data.dataset import collate, first_labelled
from lgseg.data.store import scene_folders
from lgseg.errors import ConfigError
from lgseg.runs import mask_ratios, resolve_run, run_names, study_runs
from lgseg.scannet.demo import DemoSettings, demo_scene_ids
from lgseg.text.anchors import build_text_anchors
from lgseg.text.encoders import make_encoder
from lgseg.train import objectives
from lgseg.train.engine import make_datasets

SETTINGS = DemoSettings(seed=4, num_train=3, num_val=1, num_test=0, vertex_spacing=0.1, objects_per_room=(6, 9))
RATIO = 0.1


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A tiny processed demo store with a 10 % mask and tiny-CLIP anchors."""
    root = tmp_path_factory.mktemp("limited")
    processed = processed_demo_store(root, SETTINGS)
    folders = scene_folders(processed, "train", demo_scene_ids(SETTINGS)["train"])
    write_annotation_masks(folders, RATIO, layout(root).mask(RATIO))
    build_text_anchors(make_encoder("tiny-clip-random"), layout(root).text_anchors("tiny-clip-random"))
    return root


def _config(root=None, **changes):
    """A validated config of two rows (scratch, ours with a language pre-training) at 10 % and 100 %."""
    config = {"text": {"encoder": "tiny-clip-random"},
              "train": {"voxel_size": 0.15, "workers": 0, "batch_size": 3},
              "annotation": {"ratios": [RATIO, 1.0]},
              "pretraining": {"lang": {}}, "figures": {"tsne": {"pretrainings": []}},
              "experiments": {"scratch": {"label": "Scratch"}, "ours": {"label": "Ours", "pretraining": "lang"}},
              "reports": {"table1": ["scratch", "ours"], "limited_annotations": ["scratch", "ours"], "table2": [], "table3": [], "text_encoder_ablation": [], "fig6": [], "fig8": []}, **changes}
    if root is not None:
        config.update(data_dir=str(root / "data"), runs_dir=str(root / "runs"))
    return validate_config(config, SCHEMA_PATH)


def test_the_study_expands_into_runs_and_shares_the_full_label_runs():
    config = load_config([REPO / "config.yaml"])
    names = set(run_names(config))
    rows = ("scratch", "csc", "ours")
    derived = {("pretraining", f"clip_ann{r}") for r in ("0.05", "0.1", "0.5")} | {
        ("experiment", f"{row}_ann{r}") for row in rows for r in ("0.05", "0.1", "0.5")}
    configured = {("pretraining", p) for p in config["pretraining"]} | {("experiment", e) for e in config["experiments"]}
    assert names == configured | derived  # CSC learns without labels: one pre-training for every ratio
    assert study_runs(config) == [(row, r, row if r == 1 else f"{row}_ann{r:g}")
                                  for row in rows for r in (0.05, 0.1, 0.5, 1.0)]
    assert resolve_run(config, "experiment", "csc_ann0.05").init == {"pretraining": "csc"}
    ours = resolve_run(config, "experiment", "ours_ann0.05")
    assert ours.init == {"pretraining": "clip_ann0.05"} and ours.settings["annotation_ratio"] == 0.05
    assert ours.files["mask"].endswith("masks/annotated_0.05.npz")
    assert ours.files["instance_bank"].endswith("instance_bank_0.05.npz")  # drawn from the 5 % annotations
    assert ours.files["init"].endswith("pretrain/clip_ann0.05/best.pt")
    pretraining = resolve_run(config, "pretraining", "clip_ann0.05")
    assert pretraining.settings["annotation_ratio"] == 0.05
    assert pretraining.files["mask"] == ours.files["mask"]  # the language pre-training sees the same labels
    assert mask_ratios(config) == [0.05, 0.1, 0.5]
    # the 100 % points are Table 1's runs: the same specification with or without the study
    without = {**config, "reports": {**config["reports"], "limited_annotations": []}}
    for name in ("scratch", "ours"):
        assert resolve_run(config, "experiment", name).to_json() == resolve_run(without, "experiment", name).to_json()
    assert resolve_run(config, "experiment", "ours").groups == ("table1", "limited_annotations", "table3", "fig6")


def test_a_label_free_pretraining_is_shared_by_every_ratio():
    config = _config(pretraining={"lang": {"method": "csc"}})
    assert ("pretraining", "lang_ann0.1") not in run_names(config)
    assert resolve_run(config, "experiment", "ours_ann0.1").init == {"pretraining": "lang"}


@pytest.mark.parametrize("changes, message", [
    ({"experiments": {"scratch": {}, "ours": {}, "scratch_ann0.1": {}}}, "'experiments.scratch_ann0.1' is also"),
    ({"experiments": {"scratch": {"annotation_ratio": 0.5}, "ours": {}}}, "'experiments.scratch.annotation_ratio'"),
    ({"reports": {"table1": [], "limited_annotations": ["nope"], "table2": [], "table3": [], "text_encoder_ablation": [], "fig6": [], "fig8": []}}, "'reports.limited_annotations' names"),
])
def test_study_errors_name_the_key(changes, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        _config(**changes)


def test_a_voxel_takes_the_label_of_its_first_annotated_vertex():
    # voxel 0: unannotated, annotated 3, annotated 5; voxel 1: nothing annotated; voxel 2: annotated 7 only
    labels = np.array([-1, 3, 5, -1, -1, 7])
    inverse = np.array([0, 0, 0, 1, 1, 2])
    np.testing.assert_array_equal(first_labelled(labels, inverse, 3), [3, -1, 7])
    np.testing.assert_array_equal(first_labelled(labels, inverse, 4), [3, -1, 7, -1])  # a voxel with no vertex


def _annotated_voxels(item, kept, full_labels):
    """Brute force: per voxel, the label of the first of its vertices that is in the mask and labelled."""
    inverse = item["inverse"].numpy()[:len(full_labels)]  # the scene's own vertices (no pasted instances here)
    kept = set(kept.tolist())
    out = np.full(len(item["coords"]), -1)
    for voxel in range(len(out)):
        for vertex in np.flatnonzero(inverse == voxel):
            if vertex in kept and full_labels[vertex] >= 0:
                out[voxel] = full_labels[vertex]
                break
    return out


@pytest.mark.parametrize("kind, name", [("experiment", "scratch_ann0.1"), ("pretraining", "lang_ann0.1")])
def test_the_loss_is_computed_on_exactly_the_annotated_voxels(project, kind, name):
    spec = resolve_run(_config(project), kind, name)
    assert spec.settings["annotation_ratio"] == RATIO
    train_set, _ = make_datasets(spec)  # the engine's data path: mask, augmentation, voxelisation
    with np.load(spec.files["mask"]) as masks:
        kept = {scene: masks[scene] for scene in masks.files}
    items = [train_set[i] for i in range(len(train_set))]
    expected = []
    for item in items:
        full = np.load(train_set.folders[[f.name for f in train_set.folders].index(item["scene_id"])] / "segment.npy")
        expected.append(_annotated_voxels(item, kept[item["scene_id"]], full))
    expected = np.concatenate(expected)
    batch = collate(items)
    np.testing.assert_array_equal(batch["labels"].numpy(), expected)
    assert 0 < (expected >= 0).sum() < 0.5 * len(expected)  # a real subset of the voxels
    objective = objectives.OBJECTIVES[spec.objective](spec.settings, {n: spec.files[n] for n in
                                                                      objectives.OBJECTIVES[spec.objective].needs},
                                                      torch.device("cpu"))
    width = objective.model_args(None)["num_classes"] or objective.model_args(None)["feature_dim"]
    objective.start_epoch(0, 0)
    features = torch.randn(len(expected), width, generator=torch.Generator().manual_seed(0), requires_grad=True)
    total, count = objective.loss({"features": features}, batch)
    total.backward()
    touched = features.grad.abs().sum(1) > 0
    np.testing.assert_array_equal(touched.numpy(), expected >= 0)  # every annotated voxel and no other
    if spec.settings.get("losses.contrastive", {}).get("reduction") != "mean_all":
        assert int(count) == int((expected >= 0).sum())


def test_study_table_and_figure_commands(tmp_path):
    runs = []
    for label, base in (("Scratch", 0.1), ("Ours", 0.2)):
        for ratio in (0.05, 0.1, 0.5, 1.0):
            means = {key: {g: base * (1 + ratio) + k * 0.01 for k, g in enumerate(("head", "common", "tail", "all"))}
                     for key in ("iou", "precision", "recall")}
            path = tmp_path / f"{label}_{ratio}.json"
            path.write_text(json.dumps({"official": {"mean": means},
                                        "lgs": {"mean": {k: {g: v / 2 for g, v in m.items()}
                                                         for k, m in means.items()}}}))
            runs.append((label, ratio, path))
    assert main(["limited-annotations", *[a for label, ratio, path in runs for a in ("--run", label, str(ratio),
                                                                                    str(path))],
                 "--out", str(tmp_path / "la.csv"), "--markdown", str(tmp_path / "la.md"), "--dataset", "demo"]) == 0
    table = pd.read_csv(tmp_path / "la.csv")
    assert len(table) == 16 and set(table["protocol"]) == {"official", "lgs"}
    row = table[(table["method"] == "Ours") & (table["annotated"] == 0.05) & (table["protocol"] == "official")]
    assert row["miou_tail"].item() == pytest.approx(100 * (0.2 * 1.05 + 0.02))
    assert row["recall_all"].item() == pytest.approx(100 * (0.2 * 1.05 + 0.03))
    lgs = table[(table["method"] == "Scratch") & (table["annotated"] == 1.0) & (table["protocol"] == "lgs")]
    assert lgs["miou_head"].item() == pytest.approx(100 * 0.1 * 2 / 2)
    assert "Ours @ 5 %" in (tmp_path / "la.md").read_text()
    figure = tmp_path / "fig5.png"
    assert main(["plot-limited-annotations", "--table", str(tmp_path / "la.csv"), "--out", str(figure)]) == 0
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dry_run_trains_each_run_once(tmp_path):
    """Table 1 and Fig. 5 together: every run trained once, the 100 % points by Table 1's own jobs."""
    result = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "-n",
                             "--directory", str(tmp_path), "results/table1.csv",
                             "results/figures/fig5_limited_annotations.png"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    trained = re.findall(r"rule (train|pretrain):\n(?:.*\n)*?\s+wildcards: name=(\S+)", result.stdout)
    experiments = sorted(name for rule, name in trained if rule == "train")
    assert experiments == sorted(["scratch", "ins_samp", "c_focal", "supcon", "csc", "clip_only", "ours"] +
                                 [f"{row}_ann{r}" for row in ("scratch", "csc", "ours") for r in ("0.05", "0.1", "0.5")])
    assert sorted(name for rule, name in trained if rule == "pretrain") == ["clip", "clip_ann0.05", "clip_ann0.1",
                                                                            "clip_ann0.5", "csc", "supcon"]
