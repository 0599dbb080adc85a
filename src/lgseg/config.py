"""Workflow configuration: fill defaults from the JSON schema, validate, and name the offending key on error."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import yaml

from lgseg.errors import ConfigError


SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def _resolve(schema: dict, root: dict) -> dict:
    """A local `$ref` ("#/a/b") replaced by what it points to."""
    while "$ref" in schema:
        node = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def _fill_defaults(config: dict, schema: dict, root: dict) -> None:
    schema = _resolve(schema, root)
    if schema.get("x-overrides"):  # per-run overrides: an absent key means "the global value"
        return
    for key, sub in schema.get("properties", {}).items():
        sub = _resolve(sub, root)
        if key not in config and "default" in sub:
            config[key] = copy.deepcopy(sub["default"])
        if isinstance(config.get(key), dict) and sub.get("type") == "object":
            _fill_defaults(config[key], sub, root)
    if isinstance(schema.get("additionalProperties"), dict):
        for key, value in config.items():
            if key not in schema.get("properties", {}) and isinstance(value, dict):
                _fill_defaults(value, schema["additionalProperties"], root)


def _merge(base: dict, update: dict) -> dict:
    """Snakemake's rule for several config files: nested dicts merge, everything else is replaced."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def load_config(files: list[str | Path], schema_path: str | Path = SCHEMA_PATH) -> dict:
    """Merge YAML config files in order (later ones win, as with `snakemake --configfile`) and validate."""
    merged: dict = {}
    for path in files:
        try:
            content = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
        _merge(merged, content)
    return validate_config(merged, schema_path)


def _key_path(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def validate_config(config: dict, schema_path: str | Path) -> dict:
    """Return a copy of `config` with defaults filled in; raise ConfigError naming the first bad key."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    config = copy.deepcopy(dict(config))
    _fill_defaults(config, schema, schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = list(err.absolute_path)
        if err.validator == "additionalProperties":
            known = ", ".join(sorted(err.schema.get("properties", {})))
            unknown = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            key = _key_path(where + [unknown[0]]) if unknown else _key_path(where)
            raise ConfigError(f"config key '{key}' is not known (mistyped?); valid keys here: {known}")
        raise ConfigError(f"config key '{_key_path(where)}': {err.message}")
    download = config["scannet"]["download"]
    if download["enabled"] and not (download["accept_tos"] and download["base_url"]):
        from lgseg.scannet.download import TOS_HELP

        missing = "scannet.download.accept_tos" if not download["accept_tos"] else "scannet.download.base_url"
        raise ConfigError(f"config key '{missing}' must be set when scannet.download.enabled is true. {TOS_HELP}")
    if config["dataset"]["source"] == "scannet" and not config["scannet"]["raw_dir"]:
        raise ConfigError("config key 'scannet.raw_dir' is missing: dataset.source is 'scannet', so set "
                          "scannet.raw_dir to your ScanNet folder (the one holding scans/ and scans_test/)")
    _check_runs(config)
    return config


def _check_runs(config: dict) -> None:
    """Cross-references the schema cannot express: objectives, pre-trainings and report rows that exist, the
    CLIP file, the runs of the limited-annotation study."""
    from lgseg.runs import (REPORT_TASKS, SECTIONS, resolve_run, run_entries, text_ablation_rows, text_encoders,
                            tsne_panels)
    from lgseg.train.objectives import OBJECTIVES

    if "clip-vit-b32" in text_encoders(config) and not config["text"]["checkpoint"]:
        from lgseg.text.encoders import CLIP_CHECKPOINT_MISSING

        raise ConfigError(CLIP_CHECKPOINT_MISSING)
    runs, variants = run_entries(config), {}
    for kind, entries in runs.items():  # pre-trainings first
        for name, run in entries.items():
            key = f"{SECTIONS[kind]}.{name}"
            if run.get("pretraining") is not None and run["pretraining"] not in runs["pretraining"]:
                raise ConfigError(f"config key '{key}.pretraining': no pre-training named {run['pretraining']!r}; "
                                  f"defined: {', '.join(config['pretraining']) or 'none'}")
            if run.get("pretraining") is not None and run.get("init") is not None:
                raise ConfigError(f"config key '{key}.init': give either init or pretraining, not both")
            # a registered objective of the right stage; its effective model variant
            variant = variants[kind, name] = resolve_run(config, kind, name).settings["model"]["variant"]
            pre_variant = variants.get(("pretraining", run.get("pretraining")), variant)
            if variant != pre_variant:
                raise ConfigError(f"config key '{key}.model.variant': {variant} cannot start from pre-training "
                                  f"{run['pretraining']!r}, a {pre_variant}; give both the same model.variant")
    tsne_panels(config)  # Fig. 7's pre-trainings exist
    for group, names in config["reports"].items():
        for name in names:
            if name not in config["experiments"]:
                raise ConfigError(f"config key 'reports.{group}' names experiment {name!r}, which is not defined "
                                  f"(defined: {', '.join(config['experiments']) or 'none'}); list the experiments "
                                  f"{group} should show")
            task = OBJECTIVES[config["experiments"][name]["loss"]].task
            if task != REPORT_TASKS[group]:
                raise ConfigError(f"config key 'reports.{group}' names experiment {name!r}, whose loss "
                                  f"{config['experiments'][name]['loss']!r} is for {task} segmentation; {group} "
                                  f"shows {REPORT_TASKS[group]} segmentation runs")
    text_ablation_rows(config)  # the ablation's rows start from language pre-trainings
