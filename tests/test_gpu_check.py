"""The prepared GPU check (bench/gpu_check.sh) in its --smoke form, on whatever device this machine has."""

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # a whole run of the script: generated rooms, a processed store, the loader
def test_gpu_check_smoke_run_measures_every_section(tmp_path):
    out = tmp_path / "gpu.json"
    env = {k: v for k, v in os.environ.items() if k != "ME_SDIST"}
    result = subprocess.run(["bash", "bench/gpu_check.sh", "--smoke"], cwd=REPO, capture_output=True, text=True,
                            env={**env, "GPU_CHECK_OUT": str(out)}, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["header"]["smoke"] is True
    sections = data["sections"]
    (parity,) = sections["parity"]
    assert "error" not in parity, parity
    # float32 against float64 on the same CPU: small but not zero (the reference really is another precision)
    assert 0 < parity["cpu_float32"]["output"] <= parity["tolerance"] and parity["pass"]
    speeds = [e for e in sections["speed"] if e["backend"] == "torch"]
    assert {(e["copies"], e["precision"]) for e in speeds} == {(1, "float32"), (1, "bf16"), (2, "float32"),
                                                               (2, "bf16")}
    for entry in speeds:
        assert "error" not in entry, entry
        assert entry["forward_backward"]["median_ms"] > 0 and entry["forward"]["voxels_per_s"] > 0
    single = next(e["voxels"] for e in speeds if e["copies"] == 1)
    assert all(e["voxels"] == single * e["copies"] for e in speeds)  # the batch holds copies of the one room
    (step,) = sections["training_step"]
    assert "error" not in step, step
    assert step["loader_s_per_batch"] > 0 and step["step_s_per_batch"] > 0 and step["scenes_per_batch"] >= 1
    assert sections["minkowski"][0]["status"]
    report = out.with_suffix(".md").read_text()
    for heading in ("## Parity", "## Speed and memory", "## Training step", "## MinkowskiEngine"):
        assert heading in report
