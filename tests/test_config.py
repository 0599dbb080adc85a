"""Config validation: defaults filled, and mistakes fail fast with the key named (also through Snakemake)."""

import subprocess
import sys

import pytest
import yaml

from lgseg.config import validate_config
from lgseg.errors import ConfigError
from conftest import REPO

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def test_defaults_are_filled_and_shipped_configs_are_valid():
    config = validate_config({}, SCHEMA)
    assert config["dataset"] == {"name": "demo", "source": "demo"}
    assert config["annotation"]["ratios"] == [0.05, 0.1, 0.5, 1.0]
    assert config["preprocess"]["scenes_per_shard"] == 50
    assert validate_config(yaml.safe_load((REPO / "config.yaml").read_text()), SCHEMA) == config
    real = validate_config(yaml.safe_load((REPO / "workflow/configs/scannet200.yaml").read_text()), SCHEMA)
    assert real["dataset"]["source"] == "scannet" and real["scannet"]["raw_dir"]
    assert real["model"] == {"backend": "minkowski", "variant": "Res16UNet34D"}
    assert config["model"] == {"backend": "torch", "variant": "Res16UNet14Tiny"}


@pytest.mark.parametrize("config, key", [
    ({"annotaton": {"ratios": [0.1]}}, "'annotaton' is not known"),
    ({"annotation": {"ratio": [0.1]}}, "'annotation.ratio' is not known"),
    ({"annotation": {"ratios": [0.1, -0.5]}}, "'annotation.ratios[1]': -0.5 is less than or equal to the minimum"),
    ({"preprocess": {"workers": "two"}}, "'preprocess.workers': 'two' is not of type 'integer'"),
    ({"dataset": {"source": "scannet"}}, "'scannet.raw_dir' is missing"),
    ({"dataset": {"source": "scanet"}}, "'dataset.source': 'scanet' is not one of"),
    ({"model": {"backend": "spconv"}}, "'model.backend': 'spconv' is not one of"),
])
def test_mistakes_name_the_key(config, key):
    with pytest.raises(ConfigError) as err:
        validate_config(config, SCHEMA)
    assert key in str(err.value)


@pytest.mark.parametrize("override, key", [
    ("annotation:\n  ratios: [-0.1]\n", "annotation.ratios[0]"),
    ("demo:\n  num_trian: 3\n", "demo.num_trian"),
    ("dataset:\n  source: scannet\n", "scannet.raw_dir"),
    ("figures:\n  qualitative:\n    scenes: [scene0191_00]\n", "figures.qualitative.scenes"),  # a train scene
])
def test_snakemake_fails_before_any_job_and_names_the_key(tmp_path, override, key):
    (tmp_path / "bad.yaml").write_text(override)
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--snakefile", str(REPO / "Snakefile"),
                             "--directory", str(tmp_path), "--configfile", str(tmp_path / "bad.yaml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert key in result.stdout + result.stderr
    assert not (tmp_path / "data").exists()
