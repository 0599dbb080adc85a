"""Paths and scene lists shared by the rules; everything derives from the validated config."""

import json

from lgseg.scannet.demo import DemoSettings, demo_scene_ids
from lgseg.scannet.splits import official_scene_lists

DATA = config["data_dir"]
RESULTS = config["results_dir"]
DATASET = config["dataset"]["name"]
PROCESSED = f"{DATA}/processed/{DATASET}"
LOGS = f"logs/{DATASET}"
RATIOS = [f"{r:g}" for r in config["annotation"]["ratios"]]
IS_DEMO = config["dataset"]["source"] == "demo"


def demo_settings():
    d = config["demo"]
    return DemoSettings(
        seed=d["seed"],
        num_train=d["num_train"],
        num_val=d["num_val"],
        num_test=d["num_test"],
        vertex_spacing=d["vertex_spacing"],
        objects_per_room=tuple(d["objects_per_room"]),
    )


if IS_DEMO:
    RAW_DIR = f"{DATA}/raw/{DATASET}"
    LABEL_TSV = f"{RAW_DIR}/scannetv2-labels.combined.tsv"
    SCENES = sorted(
        s for scenes in demo_scene_ids(demo_settings()).values() for s in scenes
    )
else:
    RAW_DIR = config["scannet"]["raw_dir"]
    LABEL_TSV = (
        config["scannet"]["label_map"] or f"{RAW_DIR}/scannetv2-labels.combined.tsv"
    )
    SCENES = sorted(
        config["scannet"]["scenes"]
        or [
            s
            for split in config["scannet"]["splits"]
            for s in official_scene_lists()[split]
        ]
    )

SHARD_SIZE = config["preprocess"]["scenes_per_shard"]
SHARDS = [f"{k:03d}" for k in range((len(SCENES) + SHARD_SIZE - 1) // SHARD_SIZE)]


def shard_scenes(wildcards):
    k = int(wildcards.shard)
    return " ".join(SCENES[k * SHARD_SIZE : (k + 1) * SHARD_SIZE])


DOWNLOAD = config["scannet"]["download"]
DOWNLOAD_MANIFEST = f"{DATA}/raw/{DATASET}.download.json"


def raw_source(wildcards):
    """What makes the raw folder: the demo generator, the download rule, or nothing (a user's own copy)."""
    if IS_DEMO:
        return [RAW_DIR]
    return [DOWNLOAD_MANIFEST] if DOWNLOAD["enabled"] else []


def processed_root(wildcards, input):
    """The processed store root, from a split list input `<root>/splits/<split>.txt`."""
    return os.path.dirname(os.path.dirname(input[0]))


TEXT = config["text"]
TEXT_ANCHORS = f"{DATA}/text/{TEXT['encoder']}.npz"

RUNS = f"runs/{DATASET}"
EXPERIMENTS = list(config["experiments"])
SECTION = {"pretraining": "pretraining", "experiment": "experiments"}


def _run_entry(kind, name):
    return config[SECTION[kind]][name]


def run_config(kind):
    """The settings one training run depends on, as JSON (written into the run folder; a change re-runs it).
    Sections a run does not read (text anchors, loss settings, instance sampling) are left to their defaults.
    """

    def settings(wildcards):
        keys = ("data_dir", "dataset", "scannet", "annotation", "model", "train")
        part = {key: config[key] for key in keys}
        entry = _run_entry(kind, wildcards.name)
        part[SECTION[kind]] = {wildcards.name: entry}
        if kind == "experiment":
            pretraining = entry["pretraining"]
            part["pretraining"] = (
                {pretraining: config["pretraining"][pretraining]} if pretraining else {}
            )
        if kind == "pretraining" or entry["pretraining"]:
            part["text"] = config["text"]
        if kind == "pretraining":
            part["losses"] = {"contrastive": config["losses"]["contrastive"]}
        elif entry["loss"] == "focal":
            part["losses"] = {"focal": config["losses"]["focal"]}
        if entry["instance_sampling"]:
            part["instance_sampling"] = config["instance_sampling"]
        return json.dumps(part, sort_keys=True)

    return settings


def instance_bank(ratio):
    return f"{PROCESSED}/instance_bank{'' if ratio >= 1 else f'_{ratio:g}'}.npz"


def training_inputs(kind):
    """Split lists, plus what the run reads: annotation mask, instance bank, class statistics (C-Focal), text
    anchors and the pre-training it starts from."""

    def inputs(wildcards):
        entry = _run_entry(kind, wildcards.name)
        ratio = entry["annotation_ratio"]
        files = [f"{PROCESSED}/splits/train.txt", f"{PROCESSED}/splits/val.txt"]
        if ratio < 1:
            files.append(f"{PROCESSED}/masks/annotated_{ratio:g}.npz")
        if entry["instance_sampling"]:
            files.append(instance_bank(ratio))
        if kind == "pretraining" or entry["pretraining"]:
            files.append(TEXT_ANCHORS)
        if kind == "experiment" and entry["loss"] == "focal":
            files.append(f"{PROCESSED}/class_stats.csv")
        if kind == "experiment" and entry["pretraining"]:
            files.append(f"{RUNS}/pretrain/{entry['pretraining']}/train_summary.json")
        return files

    return inputs


def experiment_label(name):
    return config["experiments"][name].get("label", name)
