"""Errors name the file and the fix: a full disk, an empty CLIP file, a short label-table row, a failing rule run
without the local profile."""

import os
import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from lgseg.errors import DataError
from lgseg.scannet.labels import read_label_table
from lgseg.text.encoders import make_encoder


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs: writes fail with ENOSPC like a full disk (needs root to mount)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_full_disk_names_the_file_and_the_fix(tiny_disk):
    out = tiny_disk / "raw"
    result = subprocess.run([sys.executable, "-m", "lgseg", "demo-scenes", "--out", str(out), "--train", "3",
                             "--val", "1", "--test", "0"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: {tiny_disk}") and "no space left on device" in error and "free space" in error
    leftovers = [p for p in tiny_disk.rglob("*") if p.name.endswith((".tmp", ".old"))]
    assert not leftovers  # nothing half-written stays behind


def test_empty_clip_checkpoint_says_it_is_empty(tmp_path):
    (tmp_path / "ViT-B-32.pt").write_bytes(b"")
    with pytest.raises(DataError, match=r"ViT-B-32.pt: CLIP checkpoint is empty \(0 bytes"):
        make_encoder("clip-vit-b32", tmp_path / "ViT-B-32.pt")


def test_label_table_row_with_only_an_id_is_refused(tmp_path):
    tsv = tmp_path / "labels.tsv"
    tsv.write_text("id\traw_category\tcategory\tcount\n1\twall\twall\t10\n7\n")
    with pytest.raises(DataError, match=r"labels.tsv: line 3: 1 of 4 tab-separated columns"):
        read_label_table(tsv)


def test_failing_rule_shows_its_error_without_the_profile(tmp_path):
    raw = tmp_path / "ScanNet"
    (raw / "scans").mkdir(parents=True)
    config = {"dataset": {"name": "mine", "source": "scannet"},
              "scannet": {"raw_dir": str(raw), "scenes": ["scene0000_00"]}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k != "SNAKEMAKE_PROFILE"}
    result = subprocess.run([sys.executable, "-m", "snakemake", "data/processed/mine/raw_manifest.json",
                             "--snakefile", str(REPO / "Snakefile"), "--cores", "1", "--directory", str(tmp_path),
                             "--configfile", str(tmp_path / "c.yaml")], capture_output=True, text=True, timeout=120,
                            env=env)
    assert result.returncode != 0
    assert "--- logs/mine/check_raw.log:" in result.stderr
    assert f"error: {raw}" in result.stderr and "scene0000_00_vh_clean_2.ply: missing" in result.stderr
