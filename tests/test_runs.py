"""The run specification: for every run entry of the shipped configs, the files the engine opens are exactly the
workflow rule's inputs, and the identity holds exactly what changes the weights (checked by perturbing the config
and by recording what each objective reads)."""

import copy
import os
import re
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO, layout, processed_demo_store
from lgseg.config import SCHEMA_PATH, load_config, validate_config
from lgseg.data.annotation_masks import write_annotation_masks
from lgseg.data.class_stats import class_statistics, write_class_statistics
from lgseg.data.instance_bank import build_instance_bank, write_instance_bank
from lgseg.data.store import scene_folders
from lgseg.evaluate.tasks import TASKS
from lgseg.paths import SUMMARY
from lgseg.errors import ConfigError
from lgseg.runs import RunSpec, resolve_run, run_names, text_ablation_rows, text_encoders
from lgseg.scannet.demo import DemoSettings, demo_scene_ids
from lgseg.text.anchors import build_text_anchors
from lgseg.text.encoders import make_encoder
from lgseg.train.objectives import OBJECTIVES

sys.path.insert(0, str(REPO / "workflow" / "scripts"))
from dvc_yaml import workflow_jobs  # noqa: E402

SETTINGS = DemoSettings(seed=3, num_train=3, num_val=1, num_test=0, vertex_spacing=0.15, objects_per_room=(6, 9))
SHIPPED = ["config.yaml", "workflow/configs/scannet200.yaml"]
TINY = {"dataset": {"name": "demo", "source": "demo"},
        "demo": {"seed": 3, "num_train": 3, "num_val": 1, "num_test": 0, "vertex_spacing": 0.15,
                 "objects_per_room": [6, 9]},
        "model": {"backend": "torch", "variant": "Res16UNet14Tiny"},
        "train": {"voxel_size": 0.3, "epochs": 1, "milestones": [1], "workers": 0, "batch_size": 2, "gpus": 0},
        "text": {"encoder": "tiny-clip-random", "checkpoint": None},
        "annotation": {"ratios": [0.5, 1.0]}}  # the study's runs of one ratio stand for those of every ratio


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    processed = processed_demo_store(root, SETTINGS)
    folders = scene_folders(processed, "train", demo_scene_ids(SETTINGS)["train"])
    write_class_statistics(class_statistics(folders), layout(root).class_stats)
    write_instance_bank(build_instance_bank(folders, layout(root).class_stats, groups=("head", "common", "tail")),
                        layout(root).instance_bank())
    write_annotation_masks(folders, 0.5, layout(root).mask(0.5))
    write_instance_bank(build_instance_bank(folders, layout(root).class_stats, groups=("head", "common", "tail"),
                                            annotation_masks=layout(root).mask(0.5)), layout(root).instance_bank(0.5))
    for encoder in ("tiny-clip-random", "minilm-l6"):  # the global encoder and a shipped run's override
        build_text_anchors(make_encoder(encoder), layout(root).text_anchors(encoder))
    return root


def _tiny_config(root, shipped):
    """A shipped config with its run entries as they are, on the tiny store under `root`."""
    override = root / f"tiny_{Path(shipped).stem}.yaml"
    entries = yaml.safe_load((REPO / shipped).read_text())
    tiny_runs = {section: {name: {"train": {key: TINY["train"][key] for key in entry["train"] if key in TINY["train"]}}
                           for name, entry in (entries.get(section) or {}).items() if entry.get("train")}
                 for section in ("pretraining", "experiments")}  # a run's own voxel size or epochs stay tiny too
    override.write_text(yaml.safe_dump({**TINY, **tiny_runs, "data_dir": str(root / "data"),
                                        "runs_dir": str(root / "runs" / Path(shipped).stem)}))
    return [str(REPO / shipped), str(override)], load_config([REPO / shipped, override])


_RECORDING: list[set] = []  # the set of paths being recorded, while a call runs


def _record_opens(event, args):
    if _RECORDING and event == "open" and isinstance(args[0], (str, os.PathLike)):
        _RECORDING[-1].add(Path(os.fsdecode(args[0])).resolve())


sys.addaudithook(_record_opens)  # every file opened in this process (np.load, torch.load, open, ...)


def _opened_during(function):
    _RECORDING.append(set())
    try:
        function()
    finally:
        opened = _RECORDING.pop()
    return opened


@pytest.mark.parametrize("shipped", SHIPPED)
def test_engine_opens_exactly_the_rule_inputs(store, shipped):
    from lgseg.cli import main

    files, config = _tiny_config(store, shipped)
    jobs, _, _, _, _ = workflow_jobs(REPO, files, workdir=store)
    inputs = {(job.rule, job.wildcards.get("name")): {str((store / f).resolve()) for f in job.input} for job in jobs}
    paths = layout(store)
    scene_root = paths.processed.resolve()
    for kind, name in run_names(config):  # pre-trainings first: fine-tunings start from them
        spec = resolve_run(config, kind, name)
        spec_file = Path(config["runs_dir"]) / "demo" / "specs" / f"{kind}.{name}.json"
        spec_file.parent.mkdir(parents=True, exist_ok=True)
        spec_file.write_text(spec.to_json())
        rule = "pretrain" if kind == "pretraining" else "train"
        if (rule, name) not in inputs:  # a pre-training no artifact needs yet (the positives-only one) has no job
            assert kind == "pretraining" and all(resolve_run(config, "experiment", e).init != {"pretraining": name}
                                                 for k, e in run_names(config) if k == "experiment")
            continue
        declared = {str(Path(p).resolve()) for p in [spec_file, *spec.rule_inputs()]}
        assert inputs[(rule, name)] == declared, (shipped, name)

        opened = _opened_during(lambda: main(["train", "--spec", str(spec_file)]))
        run_dir = Path(spec.run_dir).resolve()
        read = {p for p in opened if p.is_relative_to(store) and not p.is_relative_to(run_dir)}
        scenes = {p for p in read if p.is_relative_to(scene_root / "train") or p.is_relative_to(scene_root / "val")}
        expected = {Path(p).resolve() for p in [spec_file, *spec.files.values()]}
        assert read - scenes == expected, (shipped, name)
        for split in ("train", "val"):  # every scene the split lists name, nothing else
            listed = set(paths.split_list(split).read_text().split())
            assert {p.relative_to(scene_root / split).parts[0] for p in scenes
                    if p.is_relative_to(scene_root / split)} == listed
        if spec.init and "pretraining" in spec.init:  # the declared input stands for the checkpoint read
            assert str(Path(spec.files["init"]).with_name(SUMMARY)) in spec.rule_inputs()


class _Recording(dict):
    def __init__(self, *args):
        super().__init__(*args)
        self.read = set()

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


@pytest.mark.parametrize("shipped", SHIPPED)
def test_identity_is_what_the_objective_reads(store, shipped):
    _, config = _tiny_config(store, shipped)
    for kind, name in run_names(config):
        spec = resolve_run(config, kind, name)
        cls = OBJECTIVES[spec.objective]
        assert set(spec.settings) == {"objective", "model", "train", "annotation_ratio", "instance_sampling",
                                      "init", "processes", *cls.reads}
        settings = _Recording(spec.settings)
        objective = cls(settings, {need: Path(spec.files[need]) for need in cls.needs}, torch.device("cpu"))
        outputs = {"features": torch.randn(30, objective.model_args(None)["feature_dim"] or 200),
                   "offsets": torch.randn(30, 3)}
        objective.start_epoch(0, 0)
        batch = {"labels": torch.randint(-1, 200, (30,)),  # CSC's view pairs: rows 0-14 matched to 15-29
                 "pairs": [torch.stack([torch.arange(15), torch.arange(15, 30)], 1)], "pair_coord": [torch.rand(15, 3)],
                 "instance": torch.randint(-1, 4, (30,)), "offsets": torch.randn(30, 3)}  # instance targets
        objective.loss(outputs, batch)
        assert settings.read == set(cls.reads), (name, settings.read)


def _set(config, dotted, value):
    node = config
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _perturbed(config, dotted, value):
    changed = copy.deepcopy(config)
    _set(changed, dotted, value)
    return changed


@pytest.mark.parametrize("key, value, changes", [
    ("train.lr", 0.01, True), ("train.max_grad_norm", 5.0, True), ("train.epochs", 3, True),
    ("train.voxel_size", 0.05, True),
    ("model.variant", "Res16UNet34C", True), ("losses.focal.gamma", 1.0, True),
    ("instance_sampling.count", 2, True), ("train.gpus", 2, True),
    ("experiments.ours.train", {"lr": 0.3}, True), ("experiments.ours.pretraining", "clip_l2", True),
    ("experiments.ours.label", "Renamed", False), ("train.workers", 7, False), ("train.val_every", 5, False),
    ("train.checkpoint_every", 3, False), ("annotation.ratios", [0.05, 0.1, 0.2, 0.5, 1.0], False),
    ("reports.limited_annotations", ["scratch"], False), ("instance_clustering.radius", 2.0, False),
    ("annotation.min_points", 9, False), ("model.backend", "minkowski", False), ("reports.table1", ["ours"], False),
    ("scannet.download.workers", 9, False), ("text.template", "a {}", False),
])
def test_identity_settings_change_exactly_with_what_changes_the_weights(key, value, changes):
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    config = validate_config(base, SCHEMA_PATH)
    other = validate_config(_perturbed(base, key, value), SCHEMA_PATH)
    before, after = resolve_run(config, "experiment", "ours"), resolve_run(other, "experiment", "ours")
    assert (before.settings != after.settings) is changes
    # what is not identity but still used travels in `options` (backend, workers, val_every, checkpoint_every)
    assert before.to_json() != after.to_json() or not changes


def test_an_experiments_own_model_override_is_part_of_its_identity():
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    before = resolve_run(validate_config(base, SCHEMA_PATH), "experiment", "scratch")
    after = resolve_run(validate_config(_perturbed(base, "experiments.scratch.model", {"variant": "Res16UNet18C"}),
                                        SCHEMA_PATH), "experiment", "scratch")
    assert before.settings["model"] == {"variant": "Res16UNet14Tiny"}
    assert after.settings == {**before.settings, "model": {"variant": "Res16UNet18C"}}


def test_an_unset_max_grad_norm_leaves_the_identity_as_before_the_key_existed():
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    for value, expected in ((None, "absent"), (3.0, 3.0)):
        spec = resolve_run(validate_config(_perturbed(base, "train.max_grad_norm", value), SCHEMA_PATH),
                           "experiment", "scratch")
        assert spec.settings["train"].get("max_grad_norm", "absent") == expected


def test_language_pretraining_reads_the_anchors_and_the_spec_file_round_trips(store):
    _, config = _tiny_config(store, "config.yaml")
    spec = resolve_run(config, "pretraining", "clip")
    assert spec.files["anchors"].endswith("tiny-clip-random.npz") and "text" not in spec.settings
    (store / "spec.json").write_text(spec.to_json())
    assert RunSpec.from_file(store / "spec.json") == spec


def test_a_pretraining_reads_the_anchors_of_its_own_text_encoder():
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    config = validate_config(base, SCHEMA_PATH)
    assert resolve_run(config, "pretraining", "clip").files["anchors"] == "data/text/minilm-l6.npz"
    assert resolve_run(config, "pretraining", "clip_tiny_random").files["anchors"] == "data/text/tiny-clip-random.npz"
    assert text_encoders(config) == ["minilm-l6", "tiny-clip-random"]
    assert text_ablation_rows(config) == [("clip_only", "clip"), ("clip_only_tiny_random", "clip_tiny_random"),
                                          ("clip_only_l2", "clip_l2"), ("clip_only_l1", "clip_l1")]
    # the distance is part of the pre-training's identity; its fine-tuning is another run through the init
    l2 = resolve_run(config, "pretraining", "clip_l2").settings["losses.contrastive"]
    assert l2 == {**resolve_run(config, "pretraining", "clip").settings["losses.contrastive"], "distance": "l2"}
    # an override to CLIP ViT-B/32 needs its weights file, named before any job
    with pytest.raises(ConfigError, match="'text.checkpoint' is required"):
        validate_config(_perturbed(base, "pretraining.clip_l2.text", {"encoder": "clip-vit-b32"}), SCHEMA_PATH)


@pytest.mark.parametrize("key, value, message", [
    ("experiments.ours_18c.model", {"variant": "Res16UNet14Tiny"}, "'experiments.ours_18c.model.variant': "
                                                                   "Res16UNet14Tiny cannot start from pre-training"),
    ("reports.text_encoder_ablation", ["clip_only", "scratch"], "experiment 'scratch', which does not start from a "
                                                               "language pre-training"),
    ("reports.text_encoder_ablation", ["supcon"], "experiment 'supcon', which does not start from a language"),
    ("reports.table3", ["instance_scratch"], "'reports.table3' names experiment 'instance_scratch', whose loss"),
    ("pretraining.csc.text", {"encoder": "tiny-clip-random"}, "'pretraining.csc.text': the run's objective 'csc' "
                                                             "reads no text anchors"),
])
def test_table3_and_ablation_mistakes_name_the_key(key, value, message):
    base = yaml.safe_load((REPO / "config.yaml").read_text())
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate_config(_perturbed(base, key, value), SCHEMA_PATH)


def test_the_paper_config_over_the_demo_config_trains_the_same_runs():
    """`snakemake --configfile workflow/configs/scannet200.yaml` merges it over config.yaml (the Snakefile's
    configfile): no demo setting of config.yaml may reach a paper run (the demo's shorter Table 3 runs, say)."""
    alone = load_config([REPO / "workflow/configs/scannet200.yaml"])
    merged = load_config([REPO / "config.yaml", REPO / "workflow/configs/scannet200.yaml"])
    assert sorted(run_names(merged)) == sorted(run_names(alone))
    for kind, name in run_names(alone):
        assert resolve_run(merged, kind, name).settings == resolve_run(alone, kind, name).settings, name
    assert resolve_run(alone, "experiment", "scratch_18c").settings["train"]["epochs"] == 400


def test_every_registered_objective_declares_its_needs_and_stage():
    for name, cls in OBJECTIVES.items():
        assert cls.name == name and cls.stage in ("pretraining", "experiment")
        assert set(cls.needs) <= {"anchors", "class_stats"}
        assert all(key.startswith("losses.") for key in cls.reads)
        assert cls.task in TASKS and (cls.task == "instance") == cls.instance_targets
    assert sorted(OBJECTIVES) == ["cross_entropy", "csc", "focal", "instance", "instance_focal", "language", "supcon"]


@pytest.mark.parametrize("settings, env", [({}, "envs/core.yaml"), ({"train": {"gpus": 2}}, "envs/cuda.yaml"),
                                           ({"model": {"backend": "minkowski"}}, "envs/cuda.yaml")])
def test_gpu_training_runs_in_the_cuda_env(tmp_path, settings, env):
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(settings))
    jobs, _, _, globals_, _ = workflow_jobs(REPO, [str(tmp_path / "c.yaml")], workdir=tmp_path)
    assert globals_["TRAIN_ENV"].endswith(env)
    assert {job.rule for job in jobs} >= {"pretrain", "train", "evaluate"}
