"""Data loading and the training engine: voxelisation, augmentation, batching, overfitting, resume after a kill."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

from conftest import layout, processed_demo_store
from lgseg.config import load_config
from lgseg.data.augment import DEFAULT_STEPS, augment
from lgseg.data.dataset import PointBudgetBatchSampler, SceneDataset, collate, voxelize
from lgseg.errors import ConfigError, DataError, TrainingDiverged
from lgseg.models import Res16UNet
from lgseg.runs import resolve_run
from lgseg.scannet.demo import DemoSettings, demo_scene_ids
from lgseg.sparse import get_backend
from lgseg.train.checkpoint import load_checkpoint, load_matching_weights, save_checkpoint
from lgseg.train.engine import build_model, train

SETTINGS = DemoSettings(seed=2, num_train=3, num_val=1, num_test=0, vertex_spacing=0.15, objects_per_room=(5, 8))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A tiny processed demo store with split lists, in the layout the engine expects."""
    root = tmp_path_factory.mktemp("project")
    processed_demo_store(root, SETTINGS)
    return root


def _config(root, **train):
    settings = {"voxel_size": 0.2, "epochs": 3, "workers": 0, "milestones": [2], "batch_size": 2,
                "augmentations": [{"name": "rotate", "max_xy": 0.05, "max_z": 3.14}, {"name": "flip", "p": 0.95}],
                **train}
    path = root / f"config_{abs(hash(json.dumps(settings, sort_keys=True)))}.yaml"
    path.write_text(yaml.safe_dump({"data_dir": str(root / "data"), "runs_dir": str(root / "runs"),
                                    "train": settings, "experiments": {"scratch": {"label": "Scratch"}},
                                    "reports": {"table1": ["scratch"], "limited_annotations": [], "table2": [], "table3": [], "text_encoder_ablation": [], "fig6": [], "fig8": []}}))
    return path


def _spec(config_file, name="scratch"):
    return resolve_run(load_config([config_file]), "experiment", name)


def test_voxelize_keeps_the_first_point_and_maps_every_point():
    coord = np.array([[0.01, 0.01, 0.01], [0.5, 0.5, 0.5], [0.02, 0.03, 0.04], [0.55, 0.4, 0.45]])
    voxels, first, inverse = voxelize(coord, 0.1)
    assert voxels.tolist() == [[0, 0, 0], [5, 4, 4], [5, 5, 5]]  # voxels in key order
    assert first.tolist() == [0, 3, 1]  # the first point of each voxel
    assert inverse.tolist() == [0, 2, 0, 1]
    np.testing.assert_array_equal(voxels[inverse], np.floor(coord / 0.1).astype(int))


def test_augmentation_is_reproducible_and_changes_the_scene():
    rng = np.random.default_rng(0)
    coord, color = rng.random((500, 3)) * 3, rng.random((500, 3)) * 255
    a = augment(coord, color, DEFAULT_STEPS, np.random.default_rng([1, 2, 3]))
    b = augment(coord, color, DEFAULT_STEPS, np.random.default_rng([1, 2, 3]))
    c = augment(coord, color, DEFAULT_STEPS, np.random.default_rng([1, 2, 4]))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.allclose(a[0], c[0])
    assert a[1].min() >= 0 and a[1].max() <= 255
    extent = np.ptp(a[0], axis=0)
    assert np.all(extent > 1.5) and np.all(extent < 6)  # distorted and scaled, still a room-sized cloud


def test_a_step_without_parameters_takes_the_papers():
    coord, color = np.random.default_rng(5).random((200, 3)) * 3, np.full((200, 3), 100.0)
    bare = augment(coord, color, [{"name": "scale"}, {"name": "chromatic_jitter"}], np.random.default_rng(6))
    spelled = augment(coord, color, [{"name": "scale", "low": 0.9, "high": 1.1},  # docs/method.md: the LGS values
                                     {"name": "chromatic_jitter", "p": 0.95, "std": 0.05}], np.random.default_rng(6))
    np.testing.assert_array_equal(bare[0], spelled[0])
    np.testing.assert_array_equal(bare[1], spelled[1])
    halved = augment(coord, color, [{"name": "scale", "low": 0.5, "high": 0.5}], np.random.default_rng(6))
    np.testing.assert_allclose(halved[0], coord * 0.5)  # a given parameter wins


def test_rotation_keeps_distances():
    rng = np.random.default_rng(4)
    coord = rng.random((50, 3))
    rotated, _ = augment(coord, coord, [{"name": "rotate", "max_xy": 0.1, "max_z": 3.0}], rng)
    np.testing.assert_allclose(np.linalg.norm(rotated[1:] - rotated[0], axis=1),
                               np.linalg.norm(coord[1:] - coord[0], axis=1))


def test_limited_annotation_keeps_only_masked_vertices(store):
    processed = store / "data" / "processed" / "demo"
    scene = demo_scene_ids(SETTINGS)["train"][0]
    kept = np.array([0, 5, 17])
    dataset = SceneDataset(processed, "train", [scene], 0.2, annotated={scene: kept})
    item = dataset[0]
    labels = item["vertex_labels"].numpy()
    full = np.load(processed / "train" / scene / "segment.npy")
    assert np.all(labels[np.setdiff1d(np.arange(len(labels)), kept)] == -1)
    np.testing.assert_array_equal(labels[kept], full[kept])


def test_point_budget_batches():
    sampler = PointBudgetBatchSampler([10, 50, 30, 80, 5], batch_size=2, max_points=60, shuffle=False)
    assert list(sampler) == [[0, 1], [2], [3], [4]]  # 80 > budget goes alone; never more than 2 scenes
    shuffled = PointBudgetBatchSampler([10] * 9, batch_size=4, max_points=100, shuffle=True, seed=3)
    assert sorted(i for b in shuffled for i in b) == list(range(9))


def test_collate_offsets_batch_index(store):
    processed = store / "data" / "processed" / "demo"
    dataset = SceneDataset(processed, "train", demo_scene_ids(SETTINGS)["train"], 0.2)
    batch = collate([dataset[0], dataset[1]])
    counts = batch["voxel_counts"]
    assert batch["coords"][:, 0].tolist() == [0] * counts[0] + [1] * counts[1]
    assert len(batch["features"]) == len(batch["labels"]) == sum(counts)


def test_overfitting_one_scene(store):
    processed = store / "data" / "processed" / "demo"
    dataset = SceneDataset(processed, "train", demo_scene_ids(SETTINGS)["train"][:1], 0.15)
    batch = collate([dataset[0]])
    backend = get_backend("torch")
    torch.manual_seed(0)
    model = Res16UNet(backend, "Res16UNet14Tiny", num_classes=200)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, dampening=0.1)
    labels = batch["labels"]
    valid = labels >= 0
    losses = []
    for _ in range(120):
        logits = backend.features(model(backend.input_tensor(batch["coords"], batch["features"])))
        loss = torch.nn.functional.cross_entropy(logits, labels, ignore_index=-1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    accuracy = (logits.argmax(1)[valid] == labels[valid]).float().mean().item()
    assert losses[1] < losses[0]  # one step already lowers the loss on this batch
    assert accuracy > 0.9, accuracy


def test_shape_matched_loading_keeps_a_new_head():
    backend = get_backend("torch")
    pretrained = Res16UNet(backend, "Res16UNet14Tiny", feature_dim=16)
    state = {f"module.{k}": v for k, v in pretrained.state_dict().items()}
    state["final.kernel"] = torch.zeros(16, 5)  # a head of another shape: not loaded
    model = Res16UNet(backend, "Res16UNet14Tiny", num_classes=200)
    head = model.final.kernel.detach().clone()
    loaded, kept = load_matching_weights(model, state)
    assert kept == ["final.bias", "final.kernel"] and len(loaded) == len(pretrained.state_dict())
    assert torch.equal(model.final.kernel, head)
    assert torch.equal(model.conv0p1s1.kernel, pretrained.conv0p1s1.kernel)


def test_checkpoint_is_atomic_and_errors_are_clear(tmp_path):
    save_checkpoint(tmp_path / "a.pt", epoch=3, model={"w": torch.ones(2)})
    assert load_checkpoint(tmp_path / "a.pt")["epoch"] == 3 and not list(tmp_path.glob("*.tmp"))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="bad.pt: unreadable checkpoint"):
        load_checkpoint(tmp_path / "bad.pt")


def _weights(run_dir):
    return load_checkpoint(run_dir / "last.pt")["model"]


def test_resume_after_kill_gives_the_same_weights(store):
    config_file = _config(store, epochs=3)
    reference = store / "runs" / "reference"
    train(_spec(config_file), reference)
    killed = store / "runs" / "killed"
    command = [sys.executable, "-m", "lgseg", "train", "--config", str(config_file), "--experiment", "scratch",
               "--run-dir", str(killed)]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (killed / "last.pt").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # mid-way through epoch 2
    process.wait()
    assert load_checkpoint(killed / "last.pt")["epoch"] < 3
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stderr
    a, b = _weights(reference), _weights(killed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6)  # same seed: same run


def _files(run_dir):
    return {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_identity_decides_reuse_resume_or_fresh(store, caplog):
    """Same identity and finished: nothing trains. Operational settings: no retraining. lr, data: a fresh run."""
    caplog.set_level("INFO", logger="lgseg.train.engine")
    run_dir = store / "runs" / "identity"
    first = train(_spec(_config(store, epochs=1)), run_dir)
    before = _files(run_dir)
    assert train(_spec(_config(store, epochs=1)), run_dir) == first  # finished, same identity
    again = _spec(_config(store, epochs=1, workers=1, val_every=5, checkpoint_every=3))
    assert train(again, run_dir) == first  # cosmetic: not refused, not retrained
    assert _files(run_dir) == before and caplog.text.count("nothing to train") == 2

    caplog.clear()
    train(_spec(_config(store, epochs=1, lr=0.01)), run_dir)
    assert "another identity (changed: settings.train.lr)" in caplog.text and "resuming" not in caplog.text
    changed = _files(run_dir)
    assert changed["last.pt"] != before["last.pt"] and not list(store.glob("runs/.identity.*"))  # old one gone
    state = load_checkpoint(run_dir / "last.pt")
    assert state["epoch"] == 1 and state["identity"]["settings"]["train"]["lr"] == 0.01

    caplog.clear()  # the same settings on other data: the identity's content part changes
    segment = layout(store).split_dir("train") / demo_scene_ids(SETTINGS)["train"][0] / "segment.npy"
    original = segment.read_bytes()
    try:
        labels = np.load(segment)
        labels[labels == labels.max()] = 0
        np.save(segment, labels)
        train(_spec(_config(store, epochs=1, lr=0.01)), run_dir)
    finally:
        segment.write_bytes(original)
    assert "changed: content.train_scenes" in caplog.text
    assert load_checkpoint(run_dir / "last.pt")["identity"]["content"] != state["identity"]["content"]


def test_a_folder_with_other_files_is_never_replaced(store):
    folder = store / "runs" / "mine"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match=r"mine: holds files that are not a run's \(notes.txt\)"):
        train(_spec(_config(store, epochs=1)), folder)
    assert (folder / "notes.txt").read_text() == "keep me"


def test_missing_or_mismatched_init_is_a_clear_error(store):
    config_file = _config(store, epochs=1)
    config = yaml.safe_load(config_file.read_text())
    config["experiments"]["scratch"]["init"] = str(store / "nowhere.pt")
    config_file.write_text(yaml.safe_dump(config))
    with pytest.raises(DataError, match="nowhere.pt: input of the run is missing"):
        train(_spec(config_file), store / "runs" / "init_missing")
    other = Res16UNet(get_backend("torch"), "Res16UNet34C", num_classes=200)  # another variant: shapes differ
    save_checkpoint(store / "34c.pt", model=other.state_dict(), model_args={"num_classes": 200, "feature_dim": None})
    config["experiments"]["scratch"]["init"] = str(store / "34c.pt")
    config_file.write_text(yaml.safe_dump(config))
    with pytest.raises(DataError, match=r"34c.pt: matches \d+ of the network's \d+ tensors"):
        train(_spec(config_file), store / "runs" / "init_other")
    with pytest.raises(ConfigError, match="'experiments.nope' is missing"):
        _spec(config_file, "nope")


def test_a_diverging_loss_stops_training_with_the_setting_to_lower(store):
    with pytest.raises(TrainingDiverged, match=r"experiment 'scratch': the loss is (nan|inf) at epoch 1, step \d+ "
                                               r"\(lr 1e\+30\): training diverged — lower train.lr"):
        train(_spec(_config(store, epochs=1, lr=1e30)), store / "runs" / "diverged")
    assert not (store / "runs" / "diverged" / "last.pt").exists()


def test_gradient_clipping_bounds_every_step_so_a_huge_lr_does_not_diverge(store):
    # lr 1e30 diverges unclipped (above); clipped to norm c, SGD's momentum buffer (momentum 0.9, dampening 0.1)
    # stays below 10 c, so after n steps the weights have moved by at most n * lr * 10 c in L2 norm
    lr, max_norm = 1e30, 1e-36
    spec = _spec(_config(store, epochs=1, lr=lr, max_grad_norm=max_norm, weight_decay=0.0))
    train(spec, store / "runs" / "clipped")
    state = load_checkpoint(store / "runs" / "clipped" / "last.pt")
    initial = build_model("torch", spec.settings["model"]["variant"], spec.settings["train"]["seed"],
                          **state["model_args"]).named_parameters()
    moved = torch.cat([(state["model"][name] - value.detach()).flatten() for name, value in initial]).norm()
    steps = SETTINGS.num_train  # at most one step per train scene
    assert 0 < moved <= steps * lr * 10 * max_norm
