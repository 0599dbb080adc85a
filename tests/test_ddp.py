"""DDP on CPU (gloo) under torchrun: one step equals one process on the union batch, two 'nodes' on localhost,
resume after SIGKILL; rank 0 alone writes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import processed_demo_store
from lgseg.config import load_config
from lgseg.data.dataset import PointBudgetBatchSampler
from lgseg.errors import ConfigError
from lgseg.scannet.demo import DemoSettings
from lgseg.train.checkpoint import load_checkpoint
from lgseg.train.distributed import shard_batches
from lgseg.runs import resolve_run
from lgseg.train.engine import build_model, make_datasets, train

pytestmark = pytest.mark.slow  # end-to-end: `pytest -m "not slow"` runs the unit layer alone

SETTINGS = DemoSettings(seed=5, num_train=4, num_val=1, num_test=0, vertex_spacing=0.15, objects_per_room=(5, 8))
TIMEOUT = 300  # seconds for one torchrun launch
# One SGD step moves a weight by lr * (gradient + weight decay); tolerances of weights are lr times those of gradients.
ATOL, RTOL = 1e-6, 1e-5


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    processed_demo_store(root, SETTINGS)
    return root


def _config(root, name, **train_settings):
    settings = {"voxel_size": 0.2, "workers": 0, "milestones": [2], "max_points": 10**6,
                "augmentations": [{"name": "rotate", "max_xy": 0.05, "max_z": 3.14}, {"name": "flip", "p": 0.95}],
                **train_settings}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"data_dir": str(root / "data"), "runs_dir": str(root / "runs"), "train": settings,
                                    "experiments": {"scratch": {"label": "Scratch"}},
                                    "reports": {"table1": ["scratch"], "limited_annotations": [], "table2": [], "table3": [], "text_encoder_ablation": [], "fig6": [], "fig8": []}}))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(config_file, run_dir, *torchrun_args):
    """torchrun ... -m lgseg train, in its own session; stdout/stderr in run_dir.log."""
    command = [sys.executable, "-m", "torch.distributed.run", *torchrun_args, "-m", "lgseg", "train",
               "--config", str(config_file), "--experiment", "scratch", "--run-dir", str(run_dir),
               "--summary", str(run_dir / "summary.json")]
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{run_dir}.log", "a") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})


def _descendants(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid:
            children.append(int(stat.parent.name))
    return children + [d for child in children for d in _descendants(child)]


def _kill_tree(process):
    """SIGKILL torchrun and its workers (which torchrun starts in sessions of their own)."""
    for pid in [process.pid, *_descendants(process.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


def _finish(process, run_dir):
    try:
        process.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        _kill_tree(process)
        raise
    output = Path(f"{run_dir}.log").read_text()
    assert process.returncode == 0, output[-3000:]
    return output


def _two_processes(config_file, run_dir):
    return _finish(_launch(config_file, run_dir, "--standalone", "--nproc-per-node", "2"), run_dir)


def _assert_same_state(actual: dict, expected: dict):
    assert actual.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], atol=ATOL, rtol=RTOL, msg=key)


@pytest.fixture(scope="module")
def reference(store):
    """An uninterrupted 2-process run: 3 epochs, 2 batches of one scene per rank and epoch."""
    config_file = _config(store, "resumable", epochs=3, batch_size=1)
    run_dir = store / "runs" / "reference"
    _two_processes(config_file, run_dir)
    return config_file, load_checkpoint(run_dir / "last.pt")["model"]


def test_shards_are_disjoint_and_equal_sized(monkeypatch):
    batches = [[i] for i in range(7)]
    monkeypatch.setenv("WORLD_SIZE", "3")
    shards = []
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        shards.append(shard_batches(batches))
    assert shards == [[[0], [3]], [[1], [4]], [[2], [5]]]  # batch 6 is left out: no rank waits for another
    monkeypatch.setenv("WORLD_SIZE", "8")
    with pytest.raises(ConfigError, match="7 batches per epoch for 8 processes"):
        shard_batches(batches)


def test_one_step_of_two_processes_equals_one_process_on_the_union(store):
    """Synchronised batch norm plus a loss over all ranks' labelled points: one DDP step on batches A and B
    equals one single-process step on A+B (weights and batch-norm running statistics, float32 tolerance)."""
    two = _config(store, "two_halves", epochs=1, batch_size=2)
    one = _config(store, "one_union", epochs=1, batch_size=4)
    config = load_config([two])
    train_set, _ = make_datasets(resolve_run(config, "experiment", "scratch"))
    halves = list(PointBudgetBatchSampler(train_set.num_vertices, 2, 10**6, shuffle=True, seed=42))
    union = list(PointBudgetBatchSampler(train_set.num_vertices, 4, 10**6, shuffle=True, seed=42))
    assert len(halves) == 2 and union == [halves[0] + halves[1]]  # rank 0 takes halves[0], rank 1 halves[1]

    _two_processes(two, store / "runs" / "two_halves")
    train(resolve_run(load_config([one]), "experiment", "scratch"), store / "runs" / "one_union")
    ddp_state = load_checkpoint(store / "runs" / "two_halves" / "last.pt")
    # the number of processes is part of the identity: one process would start this run afresh
    assert ddp_state["epoch"] == 1 and ddp_state["identity"]["settings"]["processes"] == 2
    ddp = ddp_state["model"]
    single = load_checkpoint(store / "runs" / "one_union" / "last.pt")["model"]
    _assert_same_state(ddp, single)
    initial = build_model("torch", config["model"]["variant"], config["train"]["seed"], num_classes=200).state_dict()
    moved = max(float((ddp[k] - initial[k]).abs().max()) for k in initial if k.endswith("kernel"))
    assert moved > 1000 * ATOL  # the step is large against the tolerance


def test_two_nodes_on_localhost_train_like_one_node(store, reference):
    """Two torchrun agents (one process each) meet through a c10d rendezvous, as `srun torchrun` does on SLURM.

    Each 'node' gets its own run folder, so the test sees which rank wrote: only rank 0's folder has files.
    """
    config_file, expected = reference
    endpoint = f"127.0.0.1:{_free_port()}"
    run_dirs = [store / "runs" / f"node{n}" for n in range(2)]
    processes = [_launch(config_file, run_dir, "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                         "--rdzv-endpoint", endpoint, "--rdzv-id", "lgseg-test")
                 for run_dir in run_dirs]
    for process, run_dir in zip(processes, run_dirs):
        _finish(process, run_dir)
    written = [sorted(p.name for p in run_dir.iterdir()) if run_dir.exists() else [] for run_dir in run_dirs]
    assert sorted(written) == [[], ["best.pt", "dvclive", "last.pt", "run.json", "summary.json"]], written
    main_dir = run_dirs[written.index(max(written))]
    assert json.loads((main_dir / "summary.json").read_text())["epochs"] == 3
    _assert_same_state(load_checkpoint(main_dir / "last.pt")["model"], expected)


def test_killed_two_process_run_resumes_to_the_same_weights(store, reference):
    config_file, expected = reference
    run_dir = store / "runs" / "killed"
    process = _launch(config_file, run_dir, "--standalone", "--nproc-per-node", "2")
    deadline = time.time() + TIMEOUT
    while not (run_dir / "last.pt").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    _kill_tree(process)  # mid-way through epoch 2, as a preempted job
    assert load_checkpoint(run_dir / "last.pt")["epoch"] < 3
    output = _two_processes(config_file, run_dir)
    assert "resuming" in output
    _assert_same_state(load_checkpoint(run_dir / "last.pt")["model"], expected)
