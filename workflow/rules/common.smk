"""Paths, scene lists and run specifications shared by the rules; everything derives from the validated config.

Paths come from lgseg.paths (their one owner), runs from lgseg.runs (resolved once per run, as the engine, the
CLI and the DVC generator see them)."""

from lgseg.paths import METRICS, SPLITS, SUMMARY, Layout, ratio_tag
from lgseg.runs import (
    check_named_files,
    mask_ratios,
    report_groups,
    resolve_run,
    run_names,
    figure_scenes,
    study_runs,
    text_ablation_rows,
    text_encoders,
    tsne_panels,
)
from lgseg.scannet.demo import DemoSettings, demo_scene_ids
from lgseg.text.encoders import ENCODER_SETTINGS
from lgseg.scannet.splits import official_scene_lists, official_split

LAYOUT = Layout.of(config)
DATASET = config["dataset"]["name"]
LOGS = str(LAYOUT.logs)
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
    RAW_DIR = str(LAYOUT.demo_raw)
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
DOWNLOAD_MANIFEST = str(LAYOUT.download_manifest)


def raw_source(wildcards):
    """What makes the raw folder: the demo generator, the download rule, or nothing (a user's own copy)."""
    if IS_DEMO:
        return [RAW_DIR]
    return [DOWNLOAD_MANIFEST] if DOWNLOAD["enabled"] else []


def processed_root(wildcards, input):
    """The processed store root, from a split list input `<root>/splits/<split>.txt`."""
    return os.path.dirname(os.path.dirname(input[0]))


TEXT = config["text"]
# the global encoder and those of the runs' `text.encoder` overrides
TEXT_ENCODERS = text_encoders(config)


def encoder_reads(wildcards, setting):
    """Whether the anchors of the job's encoder depend on `text.<setting>`."""
    return setting in ENCODER_SETTINGS[wildcards.encoder]


# ------------------------------------------------------------------------------------------------- runs

check_named_files(config)
RUN_SPECS = {
    (kind, name): resolve_run(config, kind, name) for kind, name in run_names(config)
}
EXPERIMENTS = [name for kind, name in RUN_SPECS if kind == "experiment"]
RATIOS = [ratio_tag(r) for r in mask_ratios(config)]  # one limited-annotation mask each
REPORTS = report_groups(config)
STUDY_RUNS = study_runs(
    config
)  # (row, ratio, experiment run) of the limited-annotation study
TSNE = config["figures"]["tsne"]
TSNE_PANELS = tsne_panels(config)  # (label, pre-training) of Fig. 7
FIGURE_SCENES = figure_scenes(
    config, [s for s in SCENES if official_split(s) == "val"]
)  # Figs. 6 and 8


def run_path(kind, name, filename):
    return str(LAYOUT.run_file(kind, name, filename))


def spec_path(kind, name):
    return str(LAYOUT.run_spec(kind, name))


def run_inputs(kind):
    """The run's specification and every file it reads (a pre-training through its summary)."""

    def inputs(wildcards):
        spec = RUN_SPECS[(kind, wildcards.name)]
        files = {"spec": spec_path(kind, wildcards.name)}
        files.update({f"file{i}": path for i, path in enumerate(spec.rule_inputs())})
        return files

    return inputs


def experiment_label(name):
    return config["experiments"][name].get("label", name)


# GPU jobs run in the CUDA env (MinkowskiEngine); CPU jobs in the core env
TRAIN_ENV = (
    "../../envs/cuda.yaml"
    if config["train"]["gpus"] > 0 or config["model"]["backend"] == "minkowski"
    else "../../envs/core.yaml"
)


def print_failed_logs(snakemake_logs):
    """The error lines (or the last lines) of every failed job's log, read from Snakemake's own log: without
    --show-failed-logs (set in workflow/profiles/local) Snakemake names a failed job's log but does not show it.
    """
    if getattr(workflow.output_settings, "show_failed_logs", False):
        return
    for snakemake_log in snakemake_logs:
        text = open(snakemake_log).read() if os.path.exists(snakemake_log) else ""
        for job_logs in re.findall(r"^\s+log: (.+) \(check log file", text, flags=re.M):
            for path in job_logs.split(", "):
                lines = open(path).read().splitlines() if os.path.exists(path) else []
                first = next(
                    (i for i, line in enumerate(lines) if line.startswith("error: ")),
                    max(0, len(lines) - 12),
                )
                shown = [line[-300:] for line in lines[first : first + 12]]
                print(f"--- {path}:", *shown, sep="\n", file=sys.stderr)
