"""The authors' checkpoints: LGS's Lightning .ckpt and CSC's .pth, written here with the authors' module names and
MinkowskiEngine's tensor shapes, read into our Res16UNet, fine-tuned from and evaluated."""

import json
import logging
import math
import sys
import types

import pytest
import torch
import yaml

from conftest import processed_demo_store
from lgseg.config import load_config
from lgseg.errors import DataError
from lgseg.models.external import from_authors
from lgseg.runs import resolve_run
from lgseg.scannet.demo import DemoSettings
from lgseg.train import engine
from lgseg.train.checkpoint import load_checkpoint, save_checkpoint

SETTINGS = DemoSettings(seed=5, num_train=2, num_val=1, num_test=0, vertex_spacing=0.2, objects_per_room=(4, 6))
INIT_DIM = 32
# the authors' Res16UNet layouts (their PLANES, LAYERS); Tiny is ours, written with their naming rule
TINY = ((16, 16, 32, 32, 32, 32, 16, 16), (1, 1, 1, 1, 1, 1, 1, 1))
RES16UNET34C = ((32, 64, 128, 256, 256, 128, 96, 96), (2, 3, 4, 6, 2, 2, 2, 2))
RES16UNET34D = ((32, 64, 128, 256, 256, 256, 256, 512), (2, 3, 4, 6, 2, 2, 2, 2))
# the authors' module -> ours, written out (the code under test derives it from rules)
OURS = {"conv0p1s1": "conv0p1s1", "bn0": "bn0", "final": "final",
        "conv1p1s2": "down_convs.0", "bn1": "down_norms.0", "block1": "down_blocks.0",
        "conv2p2s2": "down_convs.1", "bn2": "down_norms.1", "block2": "down_blocks.1",
        "conv3p4s2": "down_convs.2", "bn3": "down_norms.2", "block3": "down_blocks.2",
        "conv4p8s2": "down_convs.3", "bn4": "down_norms.3", "block4": "down_blocks.3",
        "convtr4p16s2": "up_convs.0", "bntr4": "up_norms.0", "block5": "up_blocks.0",
        "convtr5p8s2": "up_convs.1", "bntr5": "up_norms.1", "block6": "up_blocks.1",
        "convtr6p4s2": "up_convs.2", "bntr6": "up_norms.2", "block7": "up_blocks.2",
        "convtr7p2s2": "up_convs.3", "bntr7": "up_norms.3", "block8": "up_blocks.3"}
EXTRA_LGS = {"embedding_criterion.confusion_hist": torch.zeros(200, 200, dtype=torch.long),
             "embedding_criterion.projection_model.weight": torch.randn(8, 512),
             "embedding_criterion.projection_model.bias": torch.randn(8),
             "criterion.alpha": torch.ones(200)}


def authors_network(planes, layers, out_channels=None, seed=0, lazy=False):
    """A state dict named and shaped as the authors' Res16UNetBase.network_initialization + ResNetBase._make_layer
    build it with MinkowskiEngine 0.5: kernels [kernel volume, in, out] ([in, out] for 1x1x1), MinkowskiBatchNorm
    as `.bn`. `lazy`: zero-stride tensors (shapes only, no memory)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}

    def tensor(*shape):
        return torch.zeros(()).expand(shape) if lazy else torch.randn(shape, generator=generator)

    def conv(name, cin, cout, volume):
        kernel = tensor(volume, cin, cout) if volume > 1 else tensor(cin, cout)
        state[f"{name}.kernel"] = kernel / math.sqrt(volume * cin)  # a trained network's scale: no overflow

    def norm(name, width):
        for part in ("weight", "bias", "running_mean"):
            state[f"{name}.bn.{part}"] = tensor(width)
        state[f"{name}.bn.running_var"] = tensor(width).abs() + 0.5
        state[f"{name}.bn.num_batches_tracked"] = torch.tensor(1234)

    def make_layer(name, inplanes, width, blocks):
        for b in range(blocks):
            conv(f"{name}.{b}.conv1", inplanes if b == 0 else width, width, 27)
            norm(f"{name}.{b}.norm1", width)
            conv(f"{name}.{b}.conv2", width, width, 27)
            norm(f"{name}.{b}.norm2", width)
            if b == 0 and inplanes != width:
                conv(f"{name}.0.downsample.0", inplanes, width, 1)
                norm(f"{name}.0.downsample.1", width)
        return width

    conv("conv0p1s1", 3, INIT_DIM, 27)
    norm("bn0", INIT_DIM)
    inplanes = INIT_DIM
    for k in range(1, 5):
        conv(f"conv{k}p{2 ** (k - 1)}s2", inplanes, inplanes, 8)
        norm(f"bn{k}", inplanes)
        inplanes = make_layer(f"block{k}", inplanes, planes[k - 1], layers[k - 1])
    skip = {4: planes[2], 5: planes[1], 6: planes[0], 7: INIT_DIM}
    for k in range(4, 8):
        conv(f"convtr{k}p{2 ** (8 - k)}s2", inplanes, planes[k], 8)
        norm(f"bntr{k}", planes[k])
        inplanes = make_layer(f"block{k + 1}", planes[k] + skip[k], planes[k], layers[k])
    if out_channels:
        conv("final", planes[7], out_channels, 1)
        state["final.bias"] = tensor(1, out_channels)
    return state


def our_name(theirs):
    module, rest = theirs.split(".", 1)
    return f"{OURS[module]}.{rest}"


def lightning_file(path, network, extra=EXTRA_LGS, model="Res16UNet34D"):
    """As PyTorch Lightning's ModelCheckpoint saves LGS's LightningModule (the network is its `model`)."""
    state = {f"model.{k}": v for k, v in network.items()} | extra
    torch.save({"epoch": 7, "global_step": 1000, "pytorch-lightning_version": "1.6.0", "state_dict": state,
                "optimizer_states": [{}], "lr_schedulers": [], "hyper_parameters": {"model": model}}, path)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("external")
    processed_demo_store(root, SETTINGS)
    return root


def _config(root, init=None):
    path = root / f"config_{abs(hash(str(init)))}.yaml"
    path.write_text(yaml.safe_dump({
        "data_dir": str(root / "data"), "runs_dir": str(root / "runs"), "model": {"variant": "Res16UNet14Tiny"},
        "train": {"voxel_size": 0.3, "epochs": 1, "milestones": [1], "workers": 0, "batch_size": 2},
        "experiments": {"scratch": {"label": "Scratch", **({"init": str(init)} if init else {})}},
        "reports": {"table1": ["scratch"], "limited_annotations": [], "table2": [], "table3": [], "text_encoder_ablation": [], "fig6": [], "fig8": []}}))
    return path


def test_lgs_checkpoint_maps_every_tensor_to_its_place(tmp_path, caplog):
    network = authors_network(*TINY, out_channels=200)
    path = lightning_file(tmp_path / "checkpoint-val_miou=27.50-step=1000.ckpt", network)
    with caplog.at_level(logging.INFO, logger="lgseg.models.external"):
        state = load_checkpoint(path, variant="Res16UNet14Tiny")
    assert state["model_args"] == {"num_classes": 200, "feature_dim": None}
    assert len(network) == 188 and len(state["model"]) == 188  # 186 backbone tensors and the 200-class head
    assert set(state["model"]) == {our_name(k) for k in network}
    for theirs, value in network.items():
        assert torch.equal(state["model"][our_name(theirs)], value), theirs
    assert ("LanguageGroundedSemseg checkpoint of Res16UNet34D: 186 backbone tensors matched Res16UNet14Tiny, "
            "with its 200-class head; 4 keys ignored") in caplog.text
    assert all(key in caplog.text for key in EXTRA_LGS)
    assert "ends its last block" not in caplog.text  # the authors' 34D has no last ReLU, as ours

    # in a network: ME's kernel [volume, in, out] (volume index x fastest) is our layout, element for element
    net = engine.build_model("torch", "Res16UNet14Tiny", 0, **state["model_args"])
    net.load_state_dict(state["model"])
    theirs = network["convtr5p8s2.kernel"]
    assert theirs.shape == net.up_convs[1].kernel.shape == (8, 32, 32)
    for j, i, o in ((0, 0, 0), (1, 2, 3), (7, 31, 5), (4, 17, 30)):
        assert net.up_convs[1].kernel[j, i, o].item() == theirs[j, i, o].item()
    assert torch.equal(net.down_blocks[2][0].downsample[0].kernel, network["block3.0.downsample.0.kernel"])
    assert torch.equal(net.up_blocks[3][0].norm2.bn.running_var, network["block8.0.norm2.bn.running_var"])
    assert torch.equal(net.final.bias, network["final.bias"])


def test_classes_of_packages_not_installed_do_not_stop_reading(tmp_path, monkeypatch):
    """Lightning may pickle its own classes (e.g. an AttributeDict of hyper-parameters); lgseg needs no Lightning."""
    lightning = types.ModuleType("fake_lightning_parsing")
    attribute_dict = type("AttributeDict", (dict,), {"__module__": "fake_lightning_parsing"})
    lightning.AttributeDict = attribute_dict
    monkeypatch.setitem(sys.modules, "fake_lightning_parsing", lightning)
    network = authors_network(*TINY, out_channels=200)
    path = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in network.items()},
                "hyper_parameters": attribute_dict(model="Res16UNet34C", lr=0.05)}, path)
    monkeypatch.delitem(sys.modules, "fake_lightning_parsing")
    state = load_checkpoint(path, variant="Res16UNet14Tiny")
    assert len(state["model"]) == 188


def test_csc_checkpoint_with_module_prefix_and_a_contrastive_head(tmp_path, caplog):
    network = authors_network(*TINY, out_channels=32, seed=1)  # CSC pre-training: a 32-d feature head
    path = tmp_path / "checkpoint.pth"  # as CSC's ddp_trainer saves it under DDP (module.)
    torch.save({"curr_iter": 60000, "state_dict": {f"module.{k}": v for k, v in network.items()},
                "optimizer": {}, "scheduler": {}}, path)
    with caplog.at_level(logging.INFO, logger="lgseg.models.external"):
        state = load_checkpoint(path, variant="Res16UNet14Tiny")
    assert state["model_args"] == {"num_classes": None, "feature_dim": None}
    assert len(state["model"]) == 186 and "final.kernel" not in state["model"]
    for theirs, value in network.items():
        if not theirs.startswith("final."):
            assert torch.equal(state["model"][our_name(theirs)], value), theirs
    assert "2 keys ignored: final.kernel [16, 32], final.bias [1, 32]" in caplog.text
    assert "ends its last block with a ReLU" in caplog.text

    # a bare ME state dict, and one under "model", are read the same way
    torch.save(network, tmp_path / "bare.pth")
    torch.save({"model": network}, tmp_path / "model.pth")
    for name in ("bare.pth", "model.pth"):
        assert load_checkpoint(tmp_path / name, variant="Res16UNet14Tiny")["model"].keys() == state["model"].keys()


def test_the_authors_variants_by_shape():
    """Res16UNet34C / 34D as the authors release them (shapes only): every tensor has its place."""
    fine_tuned = authors_network(*RES16UNET34C, out_channels=200, lazy=True)
    content = {"state_dict": {f"model.{k}": v for k, v in fine_tuned.items()} | EXTRA_LGS}
    state = from_authors(content, "34C_CLIP_finetune.ckpt", "Res16UNet34C")
    assert len(fine_tuned) == 374 and len(state["model"]) == 374
    assert set(state["model"]) == {our_name(k) for k in fine_tuned}
    assert state["model_args"]["num_classes"] == 200

    pretrained = authors_network(*RES16UNET34D, lazy=True)  # RepresentationTrainerModule drops `final`
    projection = {"model.projection_layer.weight": torch.zeros(96, 512, 1)}  # 34CR_Proj's anchor projection
    content = {"state_dict": {f"model.{k}": v for k, v in pretrained.items()} | EXTRA_LGS | projection}
    state = from_authors(content, "34D_CLIP_pretrain.ckpt", "Res16UNet34D")
    assert len(state["model"]) == 372 and state["model_args"] == {"num_classes": None, "feature_dim": None}

    with pytest.raises(DataError, match=r"34D_CLIP_pretrain.ckpt: holds a LanguageGroundedSemseg network, but not a "
                                        r"Res16UNet34C: .* — set model.variant: Res16UNet34D"):
        from_authors(content, "34D_CLIP_pretrain.ckpt", "Res16UNet34C")


def test_files_that_are_not_such_checkpoints_are_clear_errors(tmp_path):
    torch.save({"weights": torch.ones(3), "epoch": 1}, tmp_path / "random.pth")
    with pytest.raises(DataError, match="random.pth: is not a Res16UNet checkpoint of lgseg, LanguageGroundedSemseg"):
        load_checkpoint(tmp_path / "random.pth", variant="Res16UNet14Tiny")
    (tmp_path / "notes.ckpt").write_text("this is text\n")
    with pytest.raises(DataError, match=r"notes.ckpt: unreadable checkpoint .* LanguageGroundedSemseg \(.ckpt\)"):
        load_checkpoint(tmp_path / "notes.ckpt", variant="Res16UNet14Tiny")
    with pytest.raises(DataError, match="nowhere.ckpt: checkpoint not found"):
        load_checkpoint(tmp_path / "nowhere.ckpt", variant="Res16UNet14Tiny")
    lightning_file(tmp_path / "34c.ckpt", authors_network(*RES16UNET34C, out_channels=200, lazy=True))
    with pytest.raises(DataError, match=r"34c.ckpt: holds a LanguageGroundedSemseg network, but not a "
                                        r"Res16UNet14Tiny: .* — set model.variant: Res16UNet34C"):
        load_checkpoint(tmp_path / "34c.ckpt", variant="Res16UNet14Tiny")
    ours = {"model": {"w": torch.ones(1)}, "model_args": {"num_classes": 200, "feature_dim": None}, "epoch": 3}
    save_checkpoint(tmp_path / "ours.pt", **ours)  # ours come back as they are
    assert load_checkpoint(tmp_path / "ours.pt", variant="Res16UNet14Tiny")["epoch"] == 3


class _Initialised(Exception):
    pass


def test_fine_tuning_starts_exactly_from_the_authors_checkpoint(store, monkeypatch):
    network = authors_network(*TINY, seed=2)  # a language pre-training: no class head
    path = lightning_file(store / "34d_like_pretrain.ckpt", network)
    spec = resolve_run(load_config([_config(store, init=path)]), "experiment", "scratch")
    original, seen = engine._initialise, {}

    def initialise_and_stop(net, spec, init_state, new_heads):
        original(net, spec, init_state, new_heads)
        seen.update(net.state_dict())
        raise _Initialised

    monkeypatch.setattr(engine, "_initialise", initialise_and_stop)
    with pytest.raises(_Initialised):
        engine.train(spec, store / "runs" / "from_lgs")
    for theirs, value in network.items():
        assert torch.equal(seen[our_name(theirs)], value), theirs
    assert seen["final.kernel"].shape == (16, 200)  # the new head
    assert len(seen) == len(network) + 2


def test_evaluate_checkpoint_evaluates_that_file(store):
    from lgseg.cli import main

    network = authors_network(*TINY, out_channels=200, seed=3)
    network["final.kernel"] = torch.zeros(16, 200)
    network["final.bias"] = torch.zeros(1, 200)
    network["final.bias"][0, 7] = 1.0  # every voxel is class 7
    path = lightning_file(store / "finetuned.ckpt", network)
    out = store / "metrics_lgs.json"
    assert main(["evaluate", "--config", str(_config(store)), "--experiment", "scratch", "--checkpoint", str(path),
                 "--out", str(out)]) == 0
    official = json.loads(out.read_text())["official"]
    per_class = list(official["per_class"].values())
    predicted = [c["tp"] + c["fp"] for c in per_class]
    labelled = sum(c["tp"] + c["fn"] for c in per_class)
    assert predicted[7] == labelled > 0 and sum(predicted) == predicted[7]
    pretrain = lightning_file(store / "pretrain.ckpt", authors_network(*TINY))
    assert main(["evaluate", "--config", str(_config(store)), "--experiment", "scratch", "--checkpoint",
                 str(pretrain), "--out", str(out)]) == 1  # no class head: an error, not a crash
