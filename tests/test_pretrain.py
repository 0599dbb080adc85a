"""Language-grounded pre-training through the engine, and fine-tuning from it with C-Focal and instance sampling."""

import csv

import numpy as np
import pytest
import torch
import yaml

from conftest import layout, processed_demo_store
from lgseg.config import load_config
from lgseg.data.class_stats import class_statistics, write_class_statistics
from lgseg.data.instance_bank import build_instance_bank, write_instance_bank
from lgseg.data.store import scene_folders
from lgseg.errors import ConfigError
from lgseg.scannet.demo import DemoSettings, demo_scene_ids
from lgseg.text.anchors import build_text_anchors, load_text_anchors
from lgseg.text.encoders import make_encoder
from lgseg.train import losses
from lgseg.train.checkpoint import load_checkpoint
from lgseg.runs import resolve_run
from lgseg.train.engine import train
from lgseg.train.objectives import ClassBalancedFocal, LanguageContrastive

SETTINGS = DemoSettings(seed=5, num_train=3, num_val=1, num_test=0, vertex_spacing=0.15, objects_per_room=(6, 9))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A tiny processed demo store with splits, class statistics, an instance bank and tiny-CLIP anchors."""
    root = tmp_path_factory.mktemp("pretrain")
    processed = processed_demo_store(root, SETTINGS)
    ids = demo_scene_ids(SETTINGS)
    folders = scene_folders(processed, "train", ids["train"])
    write_class_statistics(class_statistics(folders), processed / "class_stats.csv")
    groups = ("head", "common", "tail")
    write_instance_bank(build_instance_bank(folders, processed / "class_stats.csv", groups=groups),
                        layout(root).instance_bank())
    build_text_anchors(make_encoder("tiny-clip-random"), layout(root).text_anchors("tiny-clip-random"))
    return root


def _config(root, lr=0.05):
    path = root / f"config_{lr:g}.yaml"  # config_0.05.yaml: the default
    path.write_text(yaml.safe_dump({
        "data_dir": str(root / "data"),
        "runs_dir": str(root / "runs"),
        "text": {"encoder": "tiny-clip-random"},
        "train": {"voxel_size": 0.2, "epochs": 2, "workers": 0, "milestones": [10], "batch_size": 2, "lr": lr,
                  "augmentations": []},
        "instance_sampling": {"groups": ["head", "common", "tail"], "count": 2},
        "pretraining": {"lang": {"train": {"epochs": 4}}}, "figures": {"tsne": {"pretrainings": []}},
        "experiments": {"ours": {"label": "Ours", "pretraining": "lang", "loss": "focal",
                                 "instance_sampling": True}},
        "reports": {"table1": ["ours"], "limited_annotations": [], "table2": [], "table3": [], "text_encoder_ablation": [], "fig6": [], "fig8": []}}))
    return load_config([path])


def _metric(run_dir, name):
    with open(run_dir / "dvclive" / "plots" / "metrics" / f"{name}.tsv") as f:
        return [float(row[name.split("/")[-1]]) for row in csv.DictReader(f, delimiter="\t")]


def test_pretraining_pulls_features_to_their_anchors(project):
    summary = train(resolve_run(_config(project), "pretraining", "lang"))
    run_dir = layout(project).run_dir("pretraining", "lang")
    cosine = _metric(run_dir, "train/positive_cosine")
    assert len(cosine) == 4 and cosine[-1] > cosine[0] + 0.1, cosine
    state = load_checkpoint(run_dir / "best.pt")
    assert state["model_args"] == {"num_classes": None, "feature_dim": 32}  # output width = anchor width
    assert "final.kernel" not in state["model"] and state["model"]["projection.kernel"].shape == (16, 32)
    assert summary["last_epoch_metrics"]["val/accuracy"] >= 0


def test_finetuning_starts_from_the_pretraining_with_a_new_head(project):
    paths = layout(project)
    train(resolve_run(_config(project), "pretraining", "lang"))  # done by the test above: reused
    pretrained = load_checkpoint(paths.run_file("pretraining", "lang", "best.pt"))["model"]
    config = _config(project, lr=1e-30)  # the weights stay what initialisation gave them
    spec = resolve_run(config, "experiment", "ours")
    train(spec)
    state = load_checkpoint(paths.run_file("experiment", "ours", "last.pt"))
    assert state["model_args"] == {"num_classes": 200, "feature_dim": 32}
    for name, value in pretrained.items():
        if not name.endswith(("running_mean", "running_var", "num_batches_tracked")):  # parameters
            torch.testing.assert_close(state["model"][name], value, rtol=0, atol=1e-12)
    assert state["model"]["final.kernel"].shape == (32, 200)
    settings = spec.settings
    assert settings["losses.focal"] == config["losses"]["focal"] and settings["init"] == {"pretraining": "lang"}
    assert settings["instance_sampling"]["count"] == 2 and "text" not in settings  # anchors: not read when fine-tuning
    assert "anchors" not in spec.files and spec.files["init"] == str(paths.run_file("pretraining", "lang", "best.pt"))


def test_objective_losses_match_the_loss_functions(project):
    config = _config(project)
    anchors = torch.from_numpy(load_text_anchors(project / "data" / "text" / "tiny-clip-random.npz").embeddings)
    features = torch.randn(50, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(-1, 200, (50,), generator=torch.Generator().manual_seed(1))
    pre_spec = resolve_run(config, "pretraining", "lang")
    pre = LanguageContrastive(pre_spec.settings, {"anchors": pre_spec.files["anchors"]}, torch.device("cpu"))
    pre.start_epoch(0, 3)
    total, count = pre.loss({"features": features}, {"labels": labels})
    expected = losses.language_contrastive_loss(features, labels, anchors, reduction="mean_all",
                                                generator=torch.Generator().manual_seed(3_027))
    torch.testing.assert_close(total / count, expected)  # the authors' mean over all points, same negatives
    assert int(count) == 50
    torch.testing.assert_close(pre.scores({"features": features}), losses.cosine_to_anchors(features, anchors))
    valid = labels >= 0  # the engine passes the scores of the labelled voxels
    (cosine_sum, labelled), = pre.observe({"features": features}, {"labels": labels},
                                               pre.scores({"features": features[valid]})).values()
    assert labelled == int(valid.sum())
    assert cosine_sum / labelled == pytest.approx(float(losses.positive_cosine(features, labels, anchors)), abs=1e-6)
    spec = resolve_run(config, "experiment", "ours")
    fine = ClassBalancedFocal(spec.settings, {"class_stats": spec.files["class_stats"]}, torch.device("cpu"))
    logits = torch.randn(50, 200, generator=torch.Generator().manual_seed(2))
    total, count = fine.loss({"features": logits}, {"labels": labels})
    assert int(count) == int((labels >= 0).sum())
    torch.testing.assert_close(total / count, losses.focal_loss(logits, labels, fine.alpha, gamma=2.0))
    alpha = fine.alpha.numpy()
    assert np.isclose(alpha.mean(), 1.0, atol=1e-5)  # inverse_log, normalised to mean 1


@pytest.mark.parametrize("distance", ["l2", "l1"])
def test_the_objective_trains_and_monitors_under_its_distance(project, distance):
    """A pre-training with losses.contrastive.distance l2 / l1: its loss, its class scores (the nearest anchor under
    that distance) and its logged positive cosine are those of the loss functions."""
    config = _config(project)
    spec = resolve_run(config, "pretraining", "lang")
    settings = {**spec.settings, "losses.contrastive": {**spec.settings["losses.contrastive"], "distance": distance}}
    anchors = torch.from_numpy(load_text_anchors(spec.files["anchors"]).embeddings)
    features = torch.randn(50, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(-1, 200, (50,), generator=torch.Generator().manual_seed(1))
    pre = LanguageContrastive(settings, {"anchors": spec.files["anchors"]}, torch.device("cpu"))
    pre.start_epoch(0, 3)
    total, count = pre.loss({"features": features}, {"labels": labels})
    expected = losses.language_contrastive_loss(features, labels, anchors, reduction="mean_all", distance=distance,
                                                generator=torch.Generator().manual_seed(3_027))
    torch.testing.assert_close(total / count, expected)
    cosine = losses.language_contrastive_loss(features, labels, anchors, reduction="mean_all",
                                              generator=torch.Generator().manual_seed(3_027))
    assert not torch.isclose(expected, cosine)  # another distance, another loss
    scores = pre.scores({"features": features})
    torch.testing.assert_close(scores, losses.anchor_scores(features, anchors, distance))
    unit = anchors / anchors.norm(dim=1, keepdim=True)
    nearest = (features[:, None, :] - unit[None]).norm(p=1 if distance == "l1" else 2, dim=2).argmin(1)
    assert torch.equal(scores.argmax(1), nearest)
    valid = labels >= 0
    (cosine_sum, labelled), = pre.observe({"features": features}, {"labels": labels}, scores[valid]).values()
    assert cosine_sum / labelled == pytest.approx(float(losses.positive_cosine(features, labels, anchors)), abs=1e-6)


def test_config_cross_references_are_checked(project):
    base = yaml.safe_load((project / "config_0.05.yaml").read_text())
    for change, message in (
            ({"experiments": {"x": {"pretraining": "nope"}}}, "experiments.x.pretraining': no pre-training named"),
            ({"experiments": {"x": {"pretraining": "lang", "init": "a.pt"}}}, "either init or pretraining"),
            ({"text": {"encoder": "clip-vit-b32"}}, "text.checkpoint' is required")):
        path = project / "bad.yaml"
        path.write_text(yaml.safe_dump({**base, **change}))
        with pytest.raises(ConfigError, match=message):
            load_config([path])
