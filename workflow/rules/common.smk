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


def run_config(wildcards):
    """The settings one training run depends on, as JSON (written into the run folder; a change re-runs it)."""
    keys = ("data_dir", "dataset", "scannet", "model", "train")
    part = {key: config[key] for key in keys}
    part["experiments"] = {
        wildcards.experiment: config["experiments"][wildcards.experiment]
    }
    return json.dumps(part, sort_keys=True)


def training_inputs(wildcards):
    """Split lists, plus the annotation mask when the experiment uses limited annotations."""
    ratio = config["experiments"][wildcards.experiment]["annotation_ratio"]
    inputs = [f"{PROCESSED}/splits/train.txt", f"{PROCESSED}/splits/val.txt"]
    if ratio < 1:
        inputs.append(f"{PROCESSED}/masks/annotated_{ratio:g}.npz")
    return inputs


def experiment_label(name):
    return config["experiments"][name].get("label", name)
