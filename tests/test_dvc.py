"""DVC: dvc.yaml is generated from the Snakemake workflow and current; on a fresh copy of the project `dvc repro` of a
tiny demo gives Snakemake's Table 1, `dvc push`/`dvc pull` restore data and checkpoints byte for byte, and a changed
experiment parameter re-runs only that experiment's stages and the table."""

import filecmp
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.slow  # end-to-end: `pytest -m "not slow"` runs the unit layer alone

TINY = {"demo": {"seed": 17, "num_train": 4, "num_val": 2, "num_test": 1, "vertex_spacing": 0.15,
                 "objects_per_room": [6, 10]},
        "preprocess": {"scenes_per_shard": 3, "workers": 1},
        "annotation": {"ratios": [0.1, 1.0]},  # the study: scratch at 10 % (scratch_ann0.1) and 100 %
        "train": {"voxel_size": 0.15, "epochs": 4, "milestones": [3], "workers": 0},
        "experiments": {"scratch": {"label": "Scratch"}, "half": {"label": "Half", "annotation_ratio": 0.5}},
        "reports": {"table1": ["scratch", "half"], "limited_annotations": ["scratch"], "table2": [], "table3": [], "text_encoder_ablation": [], "fig6": [], "fig8": []},
        "figures": {"tsne": {"pretrainings": []}}}  # no pre-training in this DAG
OUTPUT_DIRS = ("data", "runs", "results")  # what the pipeline writes


def _env(src=None):
    env = {k: v for k, v in os.environ.items() if k not in ("SNAKEMAKE_PROFILE", "PYTHONPATH")}
    env.update(DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.org",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.org")
    if src:
        env["PYTHONPATH"] = str(src)
    return env


def _run(cmd, cwd, timeout=120, check=True, src=None):
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=_env(src))
    if check:
        assert result.returncode == 0, f"{cmd}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def _dvc(args, cwd, timeout=120, check=True):
    return _run([sys.executable, "-m", "dvc", *args], cwd, timeout, check)


def _dvc_yaml(cwd, *args, check=True):
    return _run([sys.executable, "workflow/scripts/dvc_yaml.py", *args], cwd, check=check, src=cwd / "src")


def _ran(output):
    """DVC stages that ran, and the Snakemake rules they executed."""
    return re.findall(r"Running stage '([^']+)'", output), set(re.findall(r"^(?:local)?rule (\w+):$", output, re.M))


def _files(root):
    return sorted(p.relative_to(root).as_posix() for d in OUTPUT_DIRS for p in (root / d).rglob("*") if p.is_file())


def _same_files(a, b):
    names = _files(a)
    assert names == _files(b)
    _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert not mismatch and not errors, (mismatch, errors)
    return names


def test_committed_dvc_yaml_is_up_to_date():
    result = _run([sys.executable, "workflow/scripts/dvc_yaml.py", "--check"], REPO, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The working tree (tracked and new files, as a fresh clone would have them) with the tiny config, in git."""
    base = tmp_path_factory.mktemp("dvc")
    work = base / "work"
    listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        if (REPO / name).is_file() and not name.startswith(tuple(f"{d}/" for d in OUTPUT_DIRS)):
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, work / name)
    (work / "config.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False))
    shutil.copytree(work, base / "plain")  # the same project, for a plain Snakemake run
    _dvc_yaml(work)
    _run(["git", "init", "-q"], work)
    _run(["git", "add", "-A"], work)
    _run(["git", "commit", "-qm", "project with the tiny demo config"], work)
    return base


@pytest.fixture(scope="module")
def plain_run(project):
    plain = project / "plain"
    _run([sys.executable, "-m", "snakemake", "--cores", "2"], plain, timeout=400)
    return plain


@pytest.fixture(scope="module")
def repro(project):
    work = project / "work"
    start = time.monotonic()
    result = _dvc(["repro"], work, timeout=600)
    return work, result.stdout + result.stderr, time.monotonic() - start


@pytest.fixture(scope="module")
def pulled(repro, project):
    """`dvc push` to a local remote, commit dvc.lock, clone the repository and `dvc pull` there."""
    work, _, _ = repro
    _dvc(["remote", "add", "-d", "local", str(project / "remote")], work)
    _dvc(["push"], work, timeout=300)
    _run(["git", "add", "-A"], work)
    _run(["git", "commit", "-qm", "dvc.lock and the remote"], work)
    clone = project / "clone"
    _run(["git", "clone", "-q", str(work), str(clone)], project)
    assert not (clone / "data").exists() and not (clone / ".snakemake").exists()
    _dvc(["pull"], clone, timeout=300)
    return work, clone


def test_stages_are_the_snakemake_jobs(project):
    work = project / "work"
    assert "table1" in _dvc(["dag"], work).stdout  # what the README offers on a fresh clone
    assert "train-half" in _dvc(["status"], work).stdout
    stages = yaml.safe_load((work / "dvc.yaml").read_text())["stages"]
    assert {"demo_scenes", "check_raw", "preprocess-000", "preprocess-002", "splits", "annotation_masks-0_1",
            "annotation_masks-0_5", "run_spec-experiment-half", "train-scratch", "train-half", "evaluate-half",
            "table1", "train-scratch_ann0_1", "limited_annotations", "fig5"} <= set(stages)
    dry = _run([sys.executable, "-m", "snakemake", "-n"], work)  # one stage per job
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", dry.stdout, flags=re.M))
    assert sum(int(n) for rule, n in counts.items() if rule not in ("all", "total")) == len(stages)
    for name, stage in stages.items():
        rule = name.split("-")[0]
        assert stage["cmd"].startswith("snakemake ") and stage["cmd"].endswith(f"--allowed-rules {rule}")
        assert stage["deps"][-1].startswith("workflow/rules/")
        params = [entry["config.yaml"] for entry in stage.get("params", [])]
        if rule == "run_spec":  # every parameter: a run's settings reach it only through its specification
            assert params == [None], name
        elif rule not in ("table1", "limited_annotations"):
            assert not any(k.startswith("experiments") for keys in params for k in keys), name
    assert "params" not in stages["train-half"]
    assert "runs/demo/specs/experiment.half.json" in stages["train-half"]["deps"]
    assert stages["evaluate-half"]["metrics"] == ["runs/demo/half/metrics.json"]
    persisted = {path for out in stages["train-half"]["outs"] if isinstance(out, dict)
                 for path, options in out.items() if options == {"persist": True}}
    assert persisted == {"runs/demo/half/best.pt", "runs/demo/half/last.pt", "runs/demo/half/dvclive",
                         "runs/demo/half/run.json"}
    scenes = [o for name in stages if name.startswith("preprocess") for o in stages[name]["outs"]
              if "/shards/" not in o]
    assert len(scenes) == 7 and all(re.fullmatch(r"data/processed/demo/(train|val|test)/scene\d{4}_\d\d", s)
                                    for s in scenes)
    assert "data/processed/demo/train" in stages["annotation_masks-0_1"]["deps"]  # reads the scenes, not the list
    # code: the import closure of each rule's `python -m lgseg` command
    assert "src/lgseg/data/preprocess.py" in stages["preprocess-000"]["deps"]
    assert not any("train/" in d or "models/" in d for d in stages["preprocess-000"]["deps"])
    assert {"src/lgseg/train/engine.py", "src/lgseg/models/res16unet.py"} <= set(stages["train-half"]["deps"])
    assert "src/lgseg/resources/paper" in stages["table1"]["deps"]


def test_dvc_repro_gives_the_snakemake_table(repro, plain_run):
    work, output, seconds = repro
    stages = yaml.safe_load((work / "dvc.yaml").read_text())["stages"]
    ran, _ = _ran(output)
    assert sorted(ran) == sorted(stages)  # every stage once
    assert (work / "results" / "table1.csv").read_bytes() == (plain_run / "results" / "table1.csv").read_bytes()
    table = pd.read_csv(work / "results" / "table1.csv")
    assert table["method"].tolist() == ["Scratch", "Half"] and table["miou_all"].gt(0).all()
    for experiment in ("scratch", "half"):
        path = f"runs/demo/{experiment}/metrics.json"
        assert json.loads((work / path).read_text()) == json.loads((plain_run / path).read_text())
    assert "up to date" in _dvc(["status"], work).stdout
    print(f"dvc repro of the tiny demo: {seconds:.0f} s")


def test_push_pull_restores_data_and_checkpoints(pulled):
    work, clone = pulled
    names = _same_files(work, clone)
    assert "runs/demo/half/best.pt" in names and "data/processed/demo/train/scene0191_00/segment.npy" in names
    assert any(n.startswith("data/text/") for n in names)  # text anchors
    assert "up to date" in _dvc(["status"], clone).stdout


def _edit(clone, change):
    config = yaml.safe_load((clone / "config.yaml").read_text())
    change(config)
    (clone / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def _snapshot(clone):
    return {p: (clone / p).read_bytes() for p in _files(clone)}


def _changed(before, clone):
    after = _snapshot(clone)
    return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}


def test_label_rename_rebuilds_only_the_table(pulled):
    """On the fresh clone: no .snakemake metadata, files with the mtimes `dvc pull` gave them, then shuffled."""
    work, clone = pulled
    before = _snapshot(clone)
    now = time.time()
    for name in before:  # inputs newer than every output made from them: Snakemake's mtime trigger must not fire
        stamp = now - 5 if name.startswith("data/") else now - 3600
        os.utime(clone / name, (stamp, stamp))
    _edit(clone, lambda c: c["experiments"]["half"].update(label="Half (relabelled)"))
    _dvc_yaml(clone, "--check")  # a value changed, not the structure: dvc.yaml stays as it is

    status = json.loads(_dvc(["status", "--json"], clone).stdout)
    specs = ["run_spec-experiment-half", "run_spec-experiment-scratch", "run_spec-experiment-scratch_ann0_1"]
    assert set(status) == {*specs, "table1"}
    result = _dvc(["repro"], clone, timeout=300)
    ran, rules = _ran(result.stdout + result.stderr)
    assert sorted(ran) == [*specs, "table1"]
    assert rules == {"run_spec", "table1"}  # the specifications are rewritten unchanged; nothing trains
    assert _changed(before, clone) == {"results/table1.csv", "results/table1.md"}
    old = pd.read_csv(work / "results" / "table1.csv")
    new = pd.read_csv(clone / "results" / "table1.csv")
    assert new["method"].tolist() == ["Scratch", "Half (relabelled)"]
    pd.testing.assert_frame_equal(new.drop(columns="method"), old.drop(columns="method"))  # same numbers
    assert "up to date" in _dvc(["status"], clone).stdout


def test_new_ratio_trains_only_the_run_of_that_ratio(pulled):
    _, clone = pulled
    before = _snapshot(clone)
    _edit(clone, lambda c: c["annotation"]["ratios"].append(0.2))
    assert _dvc_yaml(clone, "--check", check=False).returncode == 1  # new stages: the structure changed
    _dvc_yaml(clone)
    ran, rules = _ran(_dvc(["repro"], clone, timeout=300).stdout)
    assert {"annotation_masks-0_2", "train-scratch_ann0_2", "limited_annotations", "fig5"} <= set(ran)
    assert not {"train-scratch", "train-half", "train-scratch_ann0_1", "table1"} & set(ran)
    assert not any(p.startswith(("runs/demo/scratch/", "runs/demo/half/", "runs/demo/scratch_ann0.1/",
                                 "results/table1")) for p in _changed(before, clone))


def test_changed_lr_trains_that_run_afresh(pulled):
    _, clone = pulled
    before = _snapshot(clone)
    _edit(clone, lambda c: c["experiments"]["half"].update(train={"lr": 0.01}))
    ran, rules = _ran(_dvc(["repro"], clone, timeout=300).stdout)
    assert {"train-half", "evaluate-half", "table1"} <= set(ran)
    assert not {"train-scratch", "train-scratch_ann0_1"} & set(ran)
    log = (clone / "logs" / "demo" / "train_half.log").read_text()
    assert "another identity (changed: settings.train.lr)" in log and "resuming" not in log
    changed = _changed(before, clone)
    assert "runs/demo/half/last.pt" in changed and not any(p.startswith("runs/demo/scratch/") for p in changed)


def test_changed_mask_content_trains_the_limited_run_afresh(pulled):
    """A data change upstream (the 50 % mask keeps more points): only the run reading that mask trains again."""
    _, clone = pulled
    before = _snapshot(clone)
    _edit(clone, lambda c: c["annotation"].update(min_points=400))
    output = _dvc(["repro"], clone, timeout=300).stdout
    ran, _ = _ran(output)
    assert {"annotation_masks-0_5", "train-half"} <= set(ran) and "train-scratch" not in ran, output
    assert "changed: content.mask" in (clone / "logs" / "demo" / "train_half.log").read_text()
    assert not any(p.startswith("runs/demo/scratch/") for p in _changed(before, clone))
    assert "up to date" in _dvc(["status"], clone).stdout


def test_missing_init_file_stops_naming_key_and_file(pulled):
    _, clone = pulled
    before = _snapshot(clone)
    _edit(clone, lambda c: c["experiments"]["half"].update(init="checkpoints/missing.pt"))
    result = _dvc_yaml(clone, check=False)
    assert result.returncode == 1
    assert "experiments.half.init" in result.stderr and "checkpoints/missing.pt does not exist" in result.stderr
    result = _dvc(["repro"], clone, timeout=300, check=False)
    assert result.returncode != 0
    assert "experiments.half.init" in result.stdout + result.stderr
    assert not any(p.startswith(("runs/demo/half/", "results/")) for p in _changed(before, clone))
