"""The run specification: one training run resolved once from its config entry, for every orchestrator.

A run is an entry of `pretraining` (kind "pretraining") or of `experiments` (kind "experiment"), or one the
limited-annotation study derives from them (`run_entries`). `resolve_run`
turns it into a `RunSpec`: its objective (the registered class named by `method` / `loss`), the effective `model`
and `train` settings after the entry's overrides, its initialisation, the files it reads and its folder. The
Snakemake rules take their inputs and their re-run trigger from it, the engine trains from it (`run_spec` rule ->
specs/<kind>.<name>.json), the CLI resolves it from config files, the DVC generator reads the same inputs.

**Identity** = exactly what changes the weights: `settings` (effective settings the objective reads, annotation
ratio, instance-sampling settings, initialisation, number of processes) plus the content (sha256) of every file
the run reads: split lists, the processed scenes of its splits, mask, instance bank, class statistics, text
anchors, init checkpoint. Labels, workers, `val_every`, `checkpoint_every`, other ratios and download settings
are not part of it. Same identity: reuse or resume; another identity: a fresh run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lgseg.errors import ConfigError, DataError
from lgseg.paths import BEST, SUMMARY, Layout, ratio_tag, split_dir
from lgseg.train.objectives import FINETUNING, PRETRAINING, objective_class
from lgseg.train.schedules import SCHEDULES

SECTIONS = {PRETRAINING: "pretraining", FINETUNING: "experiments"}
OBJECTIVE_KEY = {PRETRAINING: "method", FINETUNING: "loss"}
# train.* keys that change the weights (a run may override each); the others only change how it runs
# (plus the keys of its `train.scheduler`, lgseg.train.schedules)
TRAIN_IDENTITY = ("voxel_size", "epochs", "batch_size", "max_points", "lr", "max_grad_norm", "momentum", "dampening",
                  "weight_decay", "seed", "augmentations", "amp", "scheduler")
IDENTITY_WHEN_SET = ("max_grad_norm",)  # left out while null, so runs from before the key keep their identity
TRAIN_OPTIONS = ("workers", "val_every", "checkpoint_every")
MODEL_IDENTITY = ("variant",)  # the sparse backend computes the same function (tests/test_sparse.py): not identity
SCENE_SPLITS = ("train", "val")  # a run trains on train and picks its checkpoint on val
STUDY = "limited_annotations"  # the report group whose experiments run at every annotation.ratios fraction
REPORT_TASKS = {"table1": "semantic", STUDY: "semantic", "table2": "instance", "table3": "semantic",
                "text_encoder_ablation": "semantic", "fig6": "semantic", "fig8": "instance"}  # what each group's rows are


@dataclass(frozen=True)
class RunSpec:
    """One resolved run. `settings` is the settings part of the identity; `files` the named files it reads."""

    kind: str
    name: str
    objective: str
    settings: dict
    options: dict
    files: dict[str, str]
    processed: str  # the processed store; the run reads the scenes its split lists name
    run_dir: str
    groups: tuple[str, ...] = field(default=(), compare=False)  # report groups showing it (not serialised)

    @property
    def init(self) -> dict | None:
        """{"pretraining": name}, {"file": path}, or None (from scratch)."""
        return self.settings["init"]

    @property
    def key(self) -> str:
        return f"{SECTIONS[self.kind]}.{self.name}"

    def to_json(self) -> str:
        record = asdict(self)
        del record["groups"]
        return json.dumps(record, sort_keys=True, indent=1)

    @classmethod
    def from_file(cls, path: str | Path) -> "RunSpec":
        try:
            return cls(**json.loads(Path(path).read_text()))
        except FileNotFoundError:
            raise DataError(path, "run specification not found", "run the run_spec rule (or pass --config)") \
                from None
        except (json.JSONDecodeError, TypeError) as err:
            raise DataError(path, f"not a run specification ({err})", "delete it and re-run the workflow") from None

    def rule_inputs(self) -> list[str]:
        """The files as the workflow declares them: a pre-training is reached through its summary."""
        files = dict(self.files)
        if self.init and "pretraining" in self.init:
            files["init"] = str(Path(files["init"]).with_name(SUMMARY))
        return sorted(set(files.values()))


def study_run_name(name: str, ratio: float) -> str:
    """The limited-annotation study's run of `name` (an experiment or a pre-training) at `ratio` < 1."""
    return f"{name}_ann{ratio_tag(ratio)}"


def run_entries(config: dict) -> dict[str, dict[str, dict]]:
    """kind -> name -> config entry: the entries of `pretraining` and `experiments`, plus the runs of the
    limited-annotation study. Every experiment of `reports.limited_annotations` runs at every `annotation.ratios`
    fraction; at 1.0 it is the experiment itself (the run Table 1 shows), below 1 a copy at that ratio named
    `<experiment>_ann<ratio>`. Its pre-training runs at the same ratio (`<pretraining>_ann<ratio>`, shared by the
    rows that use it) when its objective learns from labels; a label-free one is shared by all ratios."""
    entries = {kind: dict(config[SECTIONS[kind]]) for kind in SECTIONS}
    derived: set[tuple[str, str]] = set()

    def add(kind: str, name: str, entry: dict) -> None:
        if name in config[SECTIONS[kind]]:
            raise ConfigError(f"config key '{SECTIONS[kind]}.{name}' is also the name of a run of the "
                              f"limited-annotation study (reports.{STUDY} x annotation.ratios); rename it")
        entries[kind][name] = entry
        derived.add((kind, name))

    for row in config["reports"][STUDY]:
        experiment = config["experiments"].get(row)
        if experiment is None:
            continue  # named in the error of the report-group check (config._check_runs)
        if experiment["annotation_ratio"] != 1:
            raise ConfigError(f"config key 'experiments.{row}.annotation_ratio': an experiment of reports.{STUDY} "
                              f"must use all labels (1.0); the study makes its runs at annotation.ratios")
        for ratio in config["annotation"]["ratios"]:
            if ratio == 1:
                continue
            entry = {**experiment, "annotation_ratio": ratio}
            pretraining = experiment.get("pretraining")
            if pretraining in config["pretraining"] and _learns_from_labels(config, pretraining):
                entry["pretraining"] = study_run_name(pretraining, ratio)
                if (PRETRAINING, entry["pretraining"]) not in derived:
                    add(PRETRAINING, entry["pretraining"], {**config["pretraining"][pretraining],
                                                             "annotation_ratio": ratio})
            add(FINETUNING, study_run_name(row, ratio), entry)
    return entries


def _learns_from_labels(config: dict, pretraining: str) -> bool:
    method = config["pretraining"][pretraining][OBJECTIVE_KEY[PRETRAINING]]
    return objective_class(method, PRETRAINING, f"pretraining.{pretraining}.method").uses_labels


def run_names(config: dict) -> list[tuple[str, str]]:
    """(kind, name) of every run of the config (the study's included), pre-trainings first."""
    entries = run_entries(config)
    return [(kind, name) for kind in (PRETRAINING, FINETUNING) for name in entries[kind]]


def study_runs(config: dict) -> list[tuple[str, float, str]]:
    """(row experiment, annotation ratio, experiment run) of the limited-annotation study, rows in report order."""
    return [(row, ratio, row if ratio == 1 else study_run_name(row, ratio))
            for row in config["reports"][STUDY] for ratio in config["annotation"]["ratios"]]


def mask_ratios(config: dict) -> list[float]:
    """The annotation ratios below 1 that some run uses: one limited-annotation mask each."""
    return sorted({entry["annotation_ratio"] for section in run_entries(config).values()
                   for entry in section.values() if entry["annotation_ratio"] < 1})


def report_groups(config: dict) -> dict[str, list[str]]:
    """Report group -> the experiments it shows, in order (config `reports`; the study's runs for its group)."""
    groups = {group: list(names) for group, names in config["reports"].items()}
    groups[STUDY] = [run for _, _, run in study_runs(config)]
    return groups


def tsne_panels(config: dict) -> list[tuple[str, str]]:
    """(label, pre-training) of Fig. 7's panels in order (config `figures.tsne`; ConfigError naming an unknown run)."""
    panels = []
    for name in config["figures"]["tsne"]["pretrainings"]:
        if name not in config[SECTIONS[PRETRAINING]]:
            raise ConfigError(f"config key 'figures.tsne.pretrainings': {name!r} is not defined under "
                              f"'{SECTIONS[PRETRAINING]}' ({', '.join(config[SECTIONS[PRETRAINING]])})")
        panels.append((config[SECTIONS[PRETRAINING]][name].get("label", name), name))
    return panels


def anchor_encoder(config: dict, entry: dict) -> str:
    """The text encoder whose anchors a run's entry reads: its `text.encoder` override, else the global one."""
    return entry.get("text", {}).get("encoder", config["text"]["encoder"])


def text_encoders(config: dict) -> list[str]:
    """Every text encoder whose anchors the workflow makes: the global one and those of the runs that read anchors."""
    used = {anchor_encoder(config, entry) for kind, entries in run_entries(config).items()
            for name, entry in entries.items()
            if "anchors" in objective_class(entry[OBJECTIVE_KEY[kind]], kind, f"{SECTIONS[kind]}.{name}").needs}
    return sorted(used | {config["text"]["encoder"]})


def text_ablation_rows(config: dict) -> list[tuple[str, str]]:
    """(experiment, its language pre-training) of each row of `reports.text_encoder_ablation` (ConfigError naming the
    key for a row that starts from no language pre-training)."""
    rows = []
    for name in config["reports"]["text_encoder_ablation"]:
        pretraining = config["experiments"][name].get("pretraining")
        if not pretraining or "losses.contrastive" not in resolve_run(config, PRETRAINING, pretraining).settings:
            raise ConfigError(f"config key 'reports.text_encoder_ablation' names experiment {name!r}, which does "
                              "not start from a language pre-training (method: language); list fine-tunings of "
                              "language pre-trainings")
        rows.append((name, pretraining))
    return rows


def figure_scenes(config: dict, val_scenes: list[str], default_count: int = 2) -> list[str]:
    """The val scenes Figs. 6 and 8 render: `figures.qualitative.scenes`, or if null the first scan of each of the
    first `default_count` rooms in id order (a room's rescans share its sceneXXXX prefix); [] without val scenes.
    ConfigError naming the key, before any job, for a listed scene that is not in val."""
    listed = config["figures"]["qualitative"]["scenes"]
    if listed is None:
        rooms = {}
        for scene in sorted(val_scenes):
            rooms.setdefault(scene[:9], scene)
        return list(rooms.values())[:default_count]
    in_val = set(val_scenes)
    missing = [s for s in listed if s not in in_val]
    if missing and (config["reports"]["fig6"] or config["reports"]["fig8"]):
        raise ConfigError(f"config key 'figures.qualitative.scenes': {missing[0]} is not a val scene of this "
                          f"dataset (val: {', '.join(sorted(val_scenes)[:5])}{' ...' if len(val_scenes) > 5 else ''}); "
                          "name val scenes, null for the first two rooms, or set reports.fig6 and reports.fig8 to []")
    return list(listed)


def _effective(defaults: dict, overrides: dict, keys: tuple[str, ...]) -> dict:
    return {key: overrides.get(key, defaults[key]) for key in keys}


def resolve_run(config: dict, kind: str, name: str) -> RunSpec:
    """The specification of run `name` of `kind` in a validated config (ConfigError naming the key if wrong)."""
    section, entries = SECTIONS[kind], run_entries(config)[kind]
    if name not in entries:
        raise ConfigError(f"config key '{section}.{name}' is missing; defined: {', '.join(entries) or 'none'}")
    entry, layout = entries[name], Layout.of(config)
    objective = objective_class(entry[OBJECTIVE_KEY[kind]], kind, f"{section}.{name}.{OBJECTIVE_KEY[kind]}")
    if entry.get("text") and "anchors" not in objective.needs:
        raise ConfigError(f"config key '{section}.{name}.text': the run's objective {objective.name!r} reads no "
                          "text anchors; remove it")
    unread = sorted(set(entry["losses"]) - {key.partition(".")[2] for key in objective.reads if key.startswith("losses.")})
    if unread:
        raise ConfigError(f"config key '{section}.{name}.losses.{unread[0]}': the run's objective "
                          f"{objective.name!r} does not read losses.{unread[0]}; set it on the run that does "
                          f"(e.g. its pre-training) or remove it")
    train = _effective(config["train"], entry["train"], TRAIN_IDENTITY)
    train.update(_effective(config["train"], entry["train"], SCHEDULES[train["scheduler"]].reads))
    train = {key: value for key, value in train.items() if value is not None or key not in IDENTITY_WHEN_SET}
    ratio = entry["annotation_ratio"]
    settings = {
        "objective": objective.name,
        **{key: _objective_setting(config, entry, key) for key in objective.reads},
        "model": _effective(config["model"], entry["model"], MODEL_IDENTITY),
        "train": train,
        "annotation_ratio": ratio,
        "instance_sampling": config["instance_sampling"] if entry["instance_sampling"] else None,
        "processes": max(1, config["train"]["gpus"]),
    }
    files = {f"{split}_list": str(layout.split_list(split)) for split in SCENE_SPLITS}
    if ratio < 1:
        files["mask"] = str(layout.mask(ratio))
    if entry["instance_sampling"]:
        files["instance_bank"] = str(layout.instance_bank(ratio))
    if "anchors" in objective.needs:
        files["anchors"] = str(layout.text_anchors(anchor_encoder(config, entry)))
    if "class_stats" in objective.needs:
        files["class_stats"] = str(layout.class_stats)
    init = None
    if entry.get("pretraining"):
        init = {"pretraining": entry["pretraining"]}
        files["init"] = str(layout.run_file(PRETRAINING, entry["pretraining"], BEST))
    elif entry.get("init"):
        init = {"file": entry["init"]}
        files["init"] = entry["init"]
    settings["init"] = init
    groups = tuple(g for g, names in report_groups(config).items() if kind == FINETUNING and name in names)
    return RunSpec(kind=kind, name=name, objective=objective.name, settings=settings,
                   options={"backend": config["model"]["backend"],
                            **_effective(config["train"], entry["train"], TRAIN_OPTIONS),
                            # what its evaluation reads (instance clustering): a change re-evaluates, and the
                            # training job finds the run complete for its identity
                            **({"evaluation": {key: _config_value(config, key) for key in objective.evaluation}}
                               if objective.evaluation else {})},
                   files=files,
                   processed=str(layout.processed),
                   run_dir=str(layout.run_dir(kind, name)), groups=groups)


def check_named_files(config: dict) -> None:
    """Files the user names in the config (the CLIP weights, `init` checkpoints) must exist: checked before any job
    is planned, since a workflow whose outputs exist would otherwise quietly keep them (ConfigError naming the key)."""
    named = [("text.checkpoint", config["text"]["checkpoint"])]
    named += [(f"{SECTIONS[kind]}.{name}.init", entry.get("init")) for kind in SECTIONS
              for name, entry in config[SECTIONS[kind]].items()]
    for key, path in named:
        if path and not Path(path).is_file():
            raise ConfigError(f"config key '{key}': {path} does not exist — put the file there or fix the path")


def _config_value(config: dict, key: str):
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def _objective_setting(config: dict, entry: dict, key: str):
    """The value of a key the objective reads; a `losses.<section>` takes the run's own `losses` overrides."""
    value = _config_value(config, key)
    section, _, name = key.partition(".")
    if section == "losses" and name in entry["losses"]:
        value = {**value, **entry["losses"][name]}
    return value


# ------------------------------------------------------------------------------------------------ identity


def file_digest(path: str | Path) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        raise DataError(path, "input of the run is missing", "run the workflow (or the rule that makes it)") \
            from None


def scenes_digest(folder: str | Path, split_list: str | Path) -> str:
    """sha256 over the files of the processed scenes a split list names (names and contents)."""
    digest = hashlib.sha256()
    for scene in Path(split_list).read_text().split():
        scene_dir = Path(folder) / scene
        if not scene_dir.is_dir():
            raise DataError(scene_dir, "processed scene missing", "re-run the preprocess rule for this dataset")
        for path in sorted(scene_dir.iterdir()):
            digest.update(f"{scene}/{path.name}\0{file_digest(path)}\0".encode())
    return digest.hexdigest()


def content_ids(spec: RunSpec) -> dict[str, str]:
    """sha256 of every file the run reads, and of the scenes of each split it reads."""
    ids = {name: file_digest(path) for name, path in sorted(spec.files.items())}
    for split in SCENE_SPLITS:
        ids[f"{split}_scenes"] = scenes_digest(split_dir(spec.processed, split), spec.files[f"{split}_list"])
    return ids


def identity(spec: RunSpec, processes: int) -> dict:
    """The run's identity record: settings (with the actual number of processes) and input contents."""
    return {"settings": {**spec.settings, "processes": processes}, "content": content_ids(spec)}


def identity_hash(record: dict) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def identity_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two identity records (for the log)."""
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += identity_changes(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(prefix + key)
    return changed
