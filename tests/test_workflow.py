"""The Snakemake workflow: lint/format clean, paper-scale DAG is sharded, and an end-to-end demo run's values."""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from lgseg.data.annotation_masks import num_annotated
from lgseg.scannet.demo import DemoSettings, demo_scene_ids, generate_scene
from conftest import REPO

pytestmark = pytest.mark.slow  # end-to-end: `pytest -m "not slow"` runs the unit layer alone

SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]


def _run(args, cwd, timeout=600):
    return subprocess.run(SNAKEMAKE + ["--directory", str(cwd)] + args, capture_output=True, text=True,
                          timeout=timeout)


def test_lint_and_format_are_clean(tmp_path):
    lint = _run(["--lint"], tmp_path)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "Snakefile", "workflow"], cwd=REPO,
                         capture_output=True, text=True)
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_paper_scale_dry_run_is_sharded(tmp_path):
    config = {"dataset": {"name": "scannet200", "source": "scannet"},
              "scannet": {"raw_dir": "/nonexistent/ScanNet", "splits": ["train", "val"]}}
    (tmp_path / "real.yaml").write_text(yaml.safe_dump(config))
    result = _run(["-n", "--configfile", str(tmp_path / "real.yaml")], tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.M))
    assert int(counts["preprocess"]) == 31  # 1513 scenes / 50 per shard, not one job per scene
    assert int(counts["annotation_masks"]) == 3 and int(counts["check_raw"]) == 1
    # Table 1 (3 pre-trainings, 7 fine-tunings), the study's runs at 5, 10, 50 % (3 language pre-trainings, CSC's
    # shared; 3 rows x 3 fine-tunings; 100 % are Table 1's), Table 2's 4 instance fine-tunings, Fig. 7's
    # positives-only pre-training, Table 3's (1 pre-training, 2 fine-tunings) and the ablation's (3 and 3)
    assert int(counts["pretrain"]) == 11 and int(counts["train"]) == 25 and int(counts["instance_bank"]) == 4
    assert int(counts["run_spec"]) == 36 and int(counts["fig5"]) == 1 and int(counts["table2"]) == 1
    assert int(counts["fig7"]) == 1 and int(counts["table3"]) == 1 and int(counts["text_encoder_ablation"]) == 1
    assert int(counts["text_anchors"]) == 2  # MiniLM-L6 and the tiny random CLIP


# seed 17: the train rooms hold tail objects (the instance bank needs one) and val has all three frequency groups
TINY = {"demo": {"seed": 17, "num_train": 4, "num_val": 2, "num_test": 1, "vertex_spacing": 0.15,
                 "objects_per_room": [6, 10]},
        "preprocess": {"scenes_per_shard": 3, "workers": 1},
        "annotation": {"ratios": [0.5, 1.0]},  # the study: scratch and ours at 50 % (and Table 1's runs)
        "train": {"voxel_size": 0.3, "epochs": 2, "milestones": [1], "workers": 0},
        "instance_clustering": {"min_points": 1, "min_proposal_points": 1},  # 30 cm voxels: few per object
        "figures": {"qualitative": {"panel_width": 64}}}


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("workflow")
    (work / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    result = _run(["--cores", "2", "--configfile", str(work / "tiny.yaml")], work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    settings = DemoSettings(seed=17, num_train=4, num_val=2, num_test=1, vertex_spacing=0.15, objects_per_room=(6, 10))
    return work, settings, result


def test_demo_run_outputs_match_the_generator_truth(demo_run):
    work, settings, _ = demo_run
    processed = work / "data" / "processed" / "demo"
    ids = demo_scene_ids(settings)
    for split in ("train", "val", "test"):
        assert (processed / "splits" / f"{split}.txt").read_text().split() == sorted(ids[split])
    assert len(list((processed / "shards").glob("*.json"))) == 3  # 7 scenes, 3 per shard
    truth = {scene: generate_scene(scene, settings) for scene in ids["train"]}
    for scene, t in truth.items():
        np.testing.assert_array_equal(np.load(processed / "train" / scene / "segment.npy"), t.segment)
        np.testing.assert_array_equal(np.load(processed / "train" / scene / "instance.npy"), t.instance)
    stats = pd.read_csv(processed / "class_stats.csv")
    expected_vertices = sum(np.bincount(t.segment[t.segment >= 0], minlength=200) for t in truth.values())
    np.testing.assert_array_equal(stats["num_vertices"].to_numpy(), expected_vertices)
    expected_instances = np.zeros(200, int)
    for t in truth.values():
        for k in np.unique(t.instance[t.instance >= 0]):
            classes = np.unique(t.segment[t.instance == k])
            if classes[0] >= 0:
                expected_instances[classes[0]] += 1
    np.testing.assert_array_equal(stats["num_instances"].to_numpy(), expected_instances)
    for ratio in (0.5,):
        masks = np.load(processed / "masks" / f"annotated_{ratio:g}.npz")
        assert sorted(masks.files) == sorted(ids["train"])
        for scene, t in truth.items():
            labelled = (t.segment >= 0) & (t.instance >= 0)
            sizes = np.bincount(t.instance[labelled])
            expected = sum(num_annotated(int(n), ratio) for n in sizes if n)
            assert len(masks[scene]) == expected and np.all(labelled[masks[scene]])
    figure = work / "results" / "figures" / "fig4_class_distribution.png"
    assert figure.read_bytes()[:4] == b"\x89PNG"


def test_demo_run_trains_evaluates_and_writes_table1(demo_run):
    work, settings, _ = demo_run
    metrics = json.loads((work / "runs" / "demo" / "scratch" / "metrics.json").read_text())
    val_truth = [generate_scene(scene, settings) for scene in demo_scene_ids(settings)["val"]]
    labelled = sum(int((t.segment >= 0).sum()) for t in val_truth)
    assert metrics["official"]["num_points"] == labelled  # every labelled val vertex evaluated
    present = set().union(*(set(np.unique(t.segment[t.segment >= 0]).tolist()) for t in val_truth))
    assert metrics["official"]["num_classes_in_mean"]["iou"]["all"] == len(present)
    table = pd.read_csv(work / "results" / "table1.csv")
    assert table["method"].tolist() == ["Scratch", "Ins. samp.", "C-Focal", "SupCon", "CSC (scene views)",
                                        "CLIP only", "Ours"]
    assert table.loc[0, "miou_all"] == round(100 * metrics["official"]["mean"]["iou"]["all"], 2)
    assert table.notna().all(axis=None)
    markdown = (work / "results" / "table1.md").read_text()
    assert "| Scratch |" in markdown and "48.29" in markdown and "synthetic demo" in markdown
    ours = json.loads((work / "runs" / "demo" / "ours" / "run.json").read_text())
    assert ours["spec"] == json.loads((work / "runs" / "demo" / "specs" / "experiment.ours.json").read_text())
    assert ours["spec"]["settings"]["init"] == {"pretraining": "clip"}
    assert ours["spec"]["settings"]["instance_sampling"]["count"] == 5
    assert set(ours["identity"]["content"]) == {"class_stats", "init", "instance_bank", "train_list", "train_scenes",
                                                "val_list", "val_scenes"}
    state = torch.load(work / "runs" / "demo" / "ours" / "best.pt", weights_only=False)
    assert state["model_args"] == {"num_classes": 200, "feature_dim": 384}  # MiniLM anchors are 384-d
    assert (work / "runs" / "demo" / "scratch" / "best.pt").exists()


def test_demo_run_makes_the_limited_annotation_study(demo_run):
    work, _, _ = demo_run
    study = pd.read_csv(work / "results" / "limited_annotations.csv")
    official = study[study["protocol"] == "official"]
    assert list(zip(official["method"], official["annotated"])) == [
        ("Scratch", 0.5), ("Scratch", 1.0), ("CSC (scene views)", 0.5), ("CSC (scene views)", 1.0), ("Ours", 0.5),
        ("Ours", 1.0)]
    table1 = pd.read_csv(work / "results" / "table1.csv").set_index("method")
    for method in ("Scratch", "Ours"):  # the 100 % points are Table 1's runs
        full = official[(official["method"] == method) & (official["annotated"] == 1.0)].iloc[0]
        assert full["miou_all"] == table1.loc[method, "miou_all"]
    spec = json.loads((work / "runs" / "demo" / "ours_ann0.5" / "run.json").read_text())
    assert spec["spec"]["settings"]["init"] == {"pretraining": "clip_ann0.5"}
    assert spec["spec"]["files"]["mask"].endswith("annotated_0.5.npz")
    assert {"mask", "instance_bank"} <= set(spec["identity"]["content"])
    pretraining = json.loads((work / "runs" / "demo" / "pretrain" / "clip_ann0.5" / "run.json").read_text())
    assert pretraining["spec"]["settings"]["annotation_ratio"] == 0.5 and "mask" in pretraining["identity"]["content"]
    figure = work / "results" / "figures" / "fig5_limited_annotations.png"
    assert figure.read_bytes()[:4] == b"\x89PNG"


def test_demo_run_makes_table3_and_the_text_encoder_ablation(demo_run):
    work, _, _ = demo_run
    table3 = pd.read_csv(work / "results" / "table3.csv")
    official = table3[table3["protocol"] == "official"]
    assert official["method"].tolist() == ["Scratch", "Ours", "Scratch", "Ours"]
    assert official["backbone"].tolist() == ["Res16UNet14Tiny"] * 2 + ["Res16UNet18C"] * 2
    assert official["parameters_m"].tolist() == [0.39, 0.39, 21.71, 21.71] and official["epochs"].tolist() == [2, 2, 3, 3]
    small = json.loads((work / "runs" / "demo" / "scratch_18c" / "metrics.json").read_text())
    assert official["miou_all"].iloc[2] == round(100 * small["official"]["mean"]["iou"]["all"], 2)
    ours = json.loads((work / "runs" / "demo" / "ours_18c" / "run.json").read_text())["spec"]["settings"]
    assert ours["model"]["variant"] == "Res16UNet18C" and ours["init"] == {"pretraining": "clip_18c"}

    ablation = pd.read_csv(work / "results" / "text_encoder_ablation.csv")
    official = ablation[ablation["protocol"] == "official"].set_index("method")
    assert official["text_encoder"].tolist() == ["MiniLM-L6", "tiny random CLIP", "MiniLM-L6", "MiniLM-L6"]
    assert official["distance"].tolist() == ["cosine", "cosine", "l2", "l1"]
    assert official["anchor_dim"].tolist() == [384, 32, 384, 384]
    tiny = np.load(work / "data" / "text" / "tiny-clip-random.npz")["normalized"]
    off_diagonal = (tiny @ tiny.T)[~np.eye(200, dtype=bool)]
    assert official.loc["CLIP only, tiny random text", "anchor_cosine"] == pytest.approx(off_diagonal.mean(), abs=1e-3)
    metrics = json.loads((work / "runs" / "demo" / "clip_only_l1" / "metrics.json").read_text())
    assert official.loc["CLIP only, L1", "miou_all"] == round(100 * metrics["official"]["mean"]["iou"]["all"], 2)
    for name, distance, encoder in (("clip_l2", "l2", "minilm-l6"), ("clip_tiny_random", "cosine", "tiny-clip-random")):
        spec = json.loads((work / "runs" / "demo" / "pretrain" / name / "run.json").read_text())["spec"]
        assert spec["settings"]["losses.contrastive"]["distance"] == distance
        assert spec["files"]["anchors"] == f"data/text/{encoder}.npz"
    assert (work / "results" / "figures" / "text_anchors_tiny-clip-random.png").read_bytes()[:4] == b"\x89PNG"


def test_demo_run_draws_figs_6_to_8(demo_run):
    work, _, _ = demo_run
    for name in ("fig6_qualitative", "fig7_tsne", "fig8_instances"):
        assert (work / "results" / "figures" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    log = (work / "logs" / "demo" / "fig7.log").read_text()
    counts = {label: int(n) for label, n in re.findall(r"^(.+): (\d+) points", log, flags=re.M)}
    assert list(counts) == ["CSC (scene views)", "SupCon", "Ours (positives only)", "Ours"]
    assert len(set(counts.values())) == 1  # the same sample in every panel


def test_demo_run_logs_progress_and_is_complete(demo_run):
    work, _, _ = demo_run
    log = (work / "logs" / "demo" / "preprocess" / "shard_000.log").read_text()
    assert "preprocess: 100%" in log and "3/3" in log
    again = _run(["-n", "--configfile", str(work / "tiny.yaml")], work)
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr
    manifest = json.loads((work / "data" / "processed" / "demo" / "raw_manifest.json").read_text())
    assert len(manifest["scenes"]) == 7


def test_download_rule_runs_first_only_when_enabled(tmp_path):
    config = {"dataset": {"name": "scannet200", "source": "scannet"},
              "scannet": {"raw_dir": str(tmp_path / "ScanNet"), "scenes": ["scene0191_00", "scene0707_00"],
                          "download": {"enabled": True, "accept_tos": True, "base_url": "http://127.0.0.1:9/"}}}
    (tmp_path / "dl.yaml").write_text(yaml.safe_dump(config))
    result = _run(["-n", "--configfile", str(tmp_path / "dl.yaml")], tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^download_scannet\s+1$", result.stdout, flags=re.M)
    config["scannet"]["download"]["enabled"] = False
    (tmp_path / "dl.yaml").write_text(yaml.safe_dump(config))
    result = _run(["-n", "--configfile", str(tmp_path / "dl.yaml")], tmp_path, timeout=120)
    assert result.returncode == 0 and "download_scannet" not in result.stdout


def test_rule_env_has_the_packages_pip_installs():
    import tomllib

    conda_name = {"torch": "pytorch"}
    pip_deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    expected = {conda_name.get(name, name) + spec for name, spec in
                (re.match(r"([A-Za-z0-9_-]+)(.*)", dep).groups() for dep in pip_deps) if name != "snakemake"}
    env = yaml.safe_load((REPO / "envs" / "core.yaml").read_text())["dependencies"]
    from_pip = next(d["pip"] for d in env if isinstance(d, dict))
    conda = {d for d in env if isinstance(d, str) and not d.startswith("python=") and d != "pip"}
    assert expected == conda | set(from_pip)


def test_benchmark_files_of_the_demo_run_score_like_metrics_json(demo_run, tmp_path):
    from lgseg.evaluate.benchmark_format import export_ground_truth

    work, settings, _ = demo_run
    run = work / "runs" / "demo" / "scratch"
    spec = work / "runs" / "demo" / "specs" / "experiment.scratch.json"
    exported = subprocess.run([sys.executable, "-m", "lgseg", "export-benchmark", "--spec", str(spec),
                               "--split", "val", "--out", str(tmp_path / "pred")],
                              cwd=work, capture_output=True, text=True, timeout=300)
    assert exported.returncode == 0, exported.stderr[-2000:]
    for scene in demo_scene_ids(settings)["val"]:
        export_ground_truth(tmp_path / "gt", scene, np.load(work / "data/processed/demo/val" / scene / "segment.npy"))
        lines = (tmp_path / "pred" / f"{scene}.txt").read_text().split()
        assert len(lines) == len(np.load(work / "data/processed/demo/val" / scene / "coord.npy"))
    scored = subprocess.run([sys.executable, "-m", "lgseg", "evaluate-benchmark", "--pred", str(tmp_path / "pred"),
                             "--gt", str(tmp_path / "gt"), "--out", str(tmp_path / "bench.json")],
                            capture_output=True, text=True, timeout=300)
    assert scored.returncode == 0, scored.stderr[-2000:]
    official = json.loads((run / "metrics.json").read_text())["official"]["per_class"]
    benchmark = json.loads((tmp_path / "bench.json").read_text())["per_class_iou"]
    in_ground_truth = [name for name, c in official.items() if c["tp"] + c["fn"] > 0]
    assert in_ground_truth
    for name in in_ground_truth:  # two evaluators, same files: same IoU for every class of the ground truth
        assert benchmark[name] == pytest.approx(official[name]["iou"], abs=1e-12)


def test_demo_run_writes_table2_and_instance_benchmark_files_score_like_metrics_json(demo_run, tmp_path):
    work, settings, _ = demo_run
    table = pd.read_csv(work / "results" / "table2.csv")
    assert list(zip(table["method"], table["protocol"]))[:4] == [
        ("Scratch", "official"), ("CSC (scene views)", "official"), ("CLIP only", "official"), ("Ours", "official")]
    assert table[["precision", "miou", "map50", "ap", "ap25"]].notna().all(axis=None)
    assert "27.91" in (work / "results" / "table2.md").read_text()  # the paper's CLIP only mAP@0.5 beside ours
    metrics = json.loads((work / "runs" / "demo" / "instance_scratch" / "metrics.json").read_text())
    official = metrics["instance"]["official"]
    assert official["num_predictions"] > 0 and metrics["instance"]["clustering"]["min_points"] == 1
    assert table.loc[0, "map50"] == round(100 * official["ap50"], 2)
    state = torch.load(work / "runs" / "demo" / "instance_ours" / "best.pt", weights_only=False)
    assert state["model_args"] == {"num_classes": 200, "feature_dim": 384, "offset_head": True}
    spec = work / "runs" / "demo" / "specs" / "experiment.instance_scratch.json"
    commands = [["export-benchmark", "--task", "instance", "--spec", str(spec), "--split", "val", "--out",
                 str(tmp_path / "pred")],
                ["benchmark-ground-truth", "--task", "instance", "--processed", "data/processed/demo", "--split", "val",
                 "--out", str(tmp_path / "gt")],
                ["evaluate-benchmark", "--task", "instance", "--pred", str(tmp_path / "pred"), "--gt",
                 str(tmp_path / "gt"), "--out", str(tmp_path / "bench.json")]]
    for command in commands:
        done = subprocess.run([sys.executable, "-m", "lgseg", *command], cwd=work, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    benchmark = json.loads((tmp_path / "bench.json").read_text())
    assert benchmark["num_predictions"] == official["num_predictions"]
    semantic_run = subprocess.run([sys.executable, "-m", "lgseg", "export-benchmark", "--task", "instance", "--spec",
                                   str(work / "runs" / "demo" / "specs" / "experiment.scratch.json"), "--split", "val",
                                   "--out", str(tmp_path / "none")], cwd=work, capture_output=True, text=True,
                                  timeout=300)
    assert semantic_run.returncode == 1 and "has no offset head" in semantic_run.stderr
    for key in ("ap", "ap50", "ap25"):  # files written and read back, scored again: the same AP
        assert benchmark[key] == pytest.approx(official[key], abs=1e-12)


# ------------------------------------------------------------------- re-runs follow the run identity (Snakemake)


@pytest.fixture
def rerun(demo_run, tmp_path):
    """A copy of the finished tiny demo project (outputs, .snakemake metadata, mtimes) and a runner for it."""
    work = tmp_path / "work"
    shutil.copytree(demo_run[0], work, symlinks=True)

    def run(change=None, *args):
        config = yaml.safe_load((work / "tiny.yaml").read_text())
        if change:
            change(config)
        (work / "tiny.yaml").write_text(yaml.safe_dump(config))
        result = _run(["--cores", "2", "--configfile", str(work / "tiny.yaml"), *args], work)
        jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout + result.stderr, flags=re.M))
        jobs.pop("total", None)
        return result, {rule: int(n) for rule, n in jobs.items()}

    return work, run


def _outputs(work):
    return {p.relative_to(work).as_posix(): p.read_bytes() for d in ("data", "runs", "results")
            for p in (work / d).rglob("*") if p.is_file()}


def test_label_rename_rebuilds_only_the_table(rerun):
    work, run = rerun
    before = _outputs(work)
    result, jobs = run(lambda c: c.setdefault("experiments", {}).update(ins_samp={"label": "Sampling"}))
    assert result.returncode == 0, result.stderr[-3000:]
    # a renamed label and the same entry otherwise: only the table
    assert set(jobs) == {"table1", "all"}, result.stdout[-3000:] + result.stderr[-3000:]
    changed = {p for p, content in _outputs(work).items() if before.get(p) != content}
    assert changed == {"results/table1.csv", "results/table1.md"}
    assert "Sampling" in (work / "results" / "table1.csv").read_text()


def test_new_ratio_trains_only_the_runs_of_that_ratio(rerun):
    work, run = rerun
    before = _outputs(work)
    result, jobs = run(lambda c: c["annotation"].update(ratios=[0.2, 0.5, 1.0]))
    assert result.returncode == 0, result.stderr[-3000:]
    assert jobs == {"annotation_masks": 1, "instance_bank": 1, "run_spec": 4, "pretrain": 1, "train": 3,
                    "evaluate": 3, "limited_annotations": 1, "fig5": 1, "all": 1}  # CSC's pre-training is shared
    changed = {p for p, content in _outputs(work).items() if before.get(p) != content}
    assert not any(p.startswith("runs/demo/") and "_ann0.2" not in p for p in changed), changed
    assert "results/table1.csv" not in changed


def test_lr_change_trains_that_run_afresh(rerun):
    work, run = rerun
    before = _outputs(work)
    result, jobs = run(lambda c: c.setdefault("experiments", {}).update(
        c_focal={"label": "C-Focal", "loss": "focal", "train": {"lr": 0.01}}))
    assert result.returncode == 0, result.stderr[-3000:]
    # C-Focal is a row of Table 1 and a column of Fig. 6: both are redrawn, nothing else
    assert jobs == {"run_spec": 1, "train": 1, "evaluate": 1, "table1": 1, "qualitative_figure": 1, "all": 1}
    log = (work / "logs" / "demo" / "train_c_focal.log").read_text()
    assert "another identity (changed: settings.train.lr)" in log and "resuming" not in log
    changed = {p for p, content in _outputs(work).items() if before.get(p) != content}
    assert "runs/demo/c_focal/last.pt" in changed and not any(p.startswith("runs/demo/scratch/") for p in changed)


def test_another_text_encoder_retrains_that_pretraining_and_its_fine_tuning(rerun):
    work, run = rerun
    result, jobs = run(lambda c: c.setdefault("pretraining", {}).update(
        clip_l2={"method": "language", "text": {"encoder": "tiny-clip-random"}}))
    assert result.returncode == 0, result.stderr[-3000:]
    # the pre-training's specification changes (its anchors file); its fine-tuning's does not, but it starts from
    # the new weights; only the ablation table shows it
    assert jobs == {"run_spec": 1, "pretrain": 1, "train": 1, "evaluate": 1, "text_encoder_ablation": 1, "all": 1}
    log = (work / "logs" / "demo" / "pretrain_clip_l2.log").read_text()
    assert "another identity (changed: content.anchors)" in log and "resuming" not in log
    ablation = pd.read_csv(work / "results" / "text_encoder_ablation.csv")
    row = ablation[(ablation["method"] == "CLIP only, L2") & (ablation["protocol"] == "official")].iloc[0]
    assert row["text_encoder"] == "tiny random CLIP" and row["distance"] == "l2"


def test_changed_raw_label_trains_afresh(rerun):
    """The reported stale re-run: a label edited in a raw scene, the pipeline re-run from preprocessing."""
    work, run = rerun
    scene = demo_scene_ids(DemoSettings(seed=17, num_train=4, num_val=2, num_test=1, vertex_spacing=0.15,
                                        objects_per_room=(6, 10)))["train"][0]
    aggregation = work / "data" / "raw" / "demo" / "scans" / scene / f"{scene}.aggregation.json"
    content = json.loads(aggregation.read_text())
    content["segGroups"][0]["label"] = "bathtub"
    aggregation.write_text(json.dumps(content))
    before = torch.load(work / "runs" / "demo" / "scratch" / "last.pt", weights_only=False)
    result, jobs = run(None, "--forcerun", "check_raw")
    assert result.returncode == 0, result.stderr[-3000:]
    # Table 1's 7, the study's 3 at 50 %, Table 2's 4, Table 3's 2, the ablation's 3; pre-trainings: Table 1's 3,
    # the study's, Fig. 7's positives-only, Table 3's and the ablation's 3
    assert jobs["train"] == 19 and jobs["pretrain"] == 9
    log = (work / "logs" / "demo" / "train_scratch.log").read_text()
    assert "another identity (changed: content.train_scenes)" in log and "resuming" not in log
    after = torch.load(work / "runs" / "demo" / "scratch" / "last.pt", weights_only=False)
    assert after["identity"]["content"]["train_scenes"] != before["identity"]["content"]["train_scenes"]


def test_finished_run_with_same_identity_trains_nothing(rerun):
    work, run = rerun
    before = torch.load(work / "runs" / "demo" / "scratch" / "last.pt", weights_only=False)
    result, jobs = run(None, "--forcerun", "train")
    assert result.returncode == 0 and jobs["train"] == 19, result.stderr[-3000:]
    assert "nothing to train" in (work / "logs" / "demo" / "train_scratch.log").read_text()
    after = torch.load(work / "runs" / "demo" / "scratch" / "last.pt", weights_only=False)
    assert after["summary"] == before["summary"]


@pytest.mark.parametrize("change, key", [
    (lambda c: c.update(text={"encoder": "clip-vit-b32", "checkpoint": "weights/ViT-B-32.pt"}), "text.checkpoint"),
    (lambda c: c.setdefault("experiments", {}).update(scratch={"label": "Scratch", "init": "weights/mine.pt"}),
     "experiments.scratch.init"),
])
def test_missing_named_file_stops_before_any_job(rerun, change, key):
    work, run = rerun
    before = _outputs(work)
    result, jobs = run(change)
    assert result.returncode != 0 and not jobs
    message = result.stdout + result.stderr
    assert f"config key '{key}'" in message and "does not exist" in message and "weights/" in message
    assert _outputs(work) == before


def _readme_commands(program):
    """Commands in the README's and docs' bash blocks (and the config headers) that start with `program`."""
    texts = [(REPO / "README.md").read_text(), (REPO / "docs" / "architecture.md").read_text()]
    texts += [line.lstrip("# ") for f in ("config.yaml", "workflow/configs/scannet200.yaml")
              for line in (REPO / f).read_text().splitlines() if line.lstrip("# ").startswith(program)]
    commands = []
    for text in texts:
        blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S) or [text]
        for block in blocks:
            for line in block.splitlines():
                line = line.split("  #")[0].strip()
                if line.startswith(program + " "):
                    commands.extend(part.strip() for part in line.split("&&") if part.strip().startswith(program))
    return commands


def test_snakemake_commands_in_the_docs_parse_as_written():
    """Snakemake's own parser reads each documented command: targets stay targets (`--configfile` takes every
    following word, so a target written after it would be read as a config file), config files exist."""
    import shlex

    from snakemake.cli import get_argument_parser

    commands = _readme_commands("snakemake")
    assert any("--configfile" in c for c in commands) and any("results/table1.csv" in c for c in commands)
    for command in commands:
        words = shlex.split(command)[1:]
        args = get_argument_parser().parse_args(words)
        after_cores = [w for w, before in zip(words[1:], words) if before != "--cores"]
        written_targets = {w for w in after_cores if w.endswith((".csv", ".png", ".html")) or w == "all"}
        assert written_targets <= set(args.targets or ()), command
        for path in args.configfile or ():
            assert (REPO / path).is_file(), (command, path)
        for profile in ([args.profile] if isinstance(args.profile, str) else args.profile or []):
            assert (REPO / profile / "config.yaml").is_file(), command
