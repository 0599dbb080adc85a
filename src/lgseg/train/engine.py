"""The training loop: SGD + MultiStep schedule per epoch, val every N epochs, atomic checkpoints, resume; DDP under
torchrun (see lgseg.train.distributed)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from lgseg.data.augment import DEFAULT_STEPS
from lgseg.data.dataset import PointBudgetBatchSampler, SceneDataset, collate
from lgseg.errors import ConfigError
from lgseg.evaluate.semantic import ConfusionAccumulator, semantic_metrics
from lgseg.models import Res16UNet
from lgseg.scannet.labels import IGNORE_INDEX, scannet200
from lgseg.scannet.splits import read_scene_list
from lgseg.sparse import get_backend
from lgseg.sparse.tensor import coordinate_keys
from lgseg.train import distributed
from lgseg.train.checkpoint import load_checkpoint, load_matching_weights, save_checkpoint

log = logging.getLogger(__name__)
LAST, BEST = "last.pt", "best.pt"


def processed_root(config: dict) -> Path:
    return Path(config["data_dir"]) / "processed" / config["dataset"]["name"]


def run_settings(config: dict, experiment: str) -> dict:
    """The part of the config a run depends on, and its number of processes; the hash guards resuming."""
    if experiment not in config["experiments"]:
        raise ConfigError(f"config key 'experiments.{experiment}' is missing; experiments defined: "
                          f"{', '.join(config['experiments'])}")
    train_cfg = {key: value for key, value in config["train"].items() if key != "gpus"}  # a request, not a setting
    return {"dataset": config["dataset"]["name"], "model": config["model"], "train": train_cfg,
            "experiment": config["experiments"][experiment], "processes": distributed.world_size()}


def settings_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def build_model(model_config: dict, num_classes: int | None, seed: int) -> Res16UNet:
    torch.manual_seed(seed)
    return Res16UNet(get_backend(model_config["backend"]), model_config["variant"], num_classes=num_classes)


def device_for_training() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_datasets(config: dict, experiment: dict) -> tuple[SceneDataset, SceneDataset]:
    root, train_cfg = processed_root(config), config["train"]
    annotated = None
    if experiment["annotation_ratio"] < 1:
        mask_file = root / "masks" / f"annotated_{experiment['annotation_ratio']:g}.npz"
        with np.load(mask_file) as masks:
            annotated = {scene: masks[scene] for scene in masks.files}
    steps = train_cfg["augmentations"] if train_cfg["augmentations"] is not None else DEFAULT_STEPS
    train_set = split_dataset(config, "train", augmentations=steps, annotated=annotated, seed=train_cfg["seed"])
    return train_set, split_dataset(config, "val")


def split_dataset(config: dict, split: str, **options) -> SceneDataset:
    """The scenes of one split list of the processed store, at the configured voxel size."""
    root = processed_root(config)
    return SceneDataset(root, split, read_scene_list(root / "splits" / f"{split}.txt"), config["train"]["voxel_size"],
                        **options)


def predict_scenes(model: torch.nn.Module, dataset: SceneDataset, device: torch.device, workers: int = 0,
                   desc: str = "predict"):
    """Yield (scene id, voxel labels, voxel predictions, vertex labels, vertex predictions) scene by scene."""
    backend = model.backend
    loader = DataLoader(dataset, batch_size=1, collate_fn=collate, num_workers=workers)
    model.eval()
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, unit="scene", leave=False, disable=not distributed.is_main()):
            out = model(backend.input_tensor(batch["coords"].to(device), batch["features"].to(device)))
            voxel_pred = backend.features(out).argmax(1).cpu()
            if backend.name == "minkowski":  # MinkowskiEngine may reorder rows: restore the input order
                voxel_pred = _reorder_to_input(backend.coordinates(out).cpu(), batch["coords"], voxel_pred)
            inverse = batch["inverse"][0]
            yield (batch["scene_ids"][0], batch["labels"].numpy(), voxel_pred.numpy(),
                   batch["vertex_labels"][0].numpy(), voxel_pred[inverse].numpy())
    model.train()


def _reorder_to_input(out_coords, in_coords, values):
    out_keys, order = torch.sort(coordinate_keys(out_coords))
    return values[order[torch.searchsorted(out_keys, coordinate_keys(in_coords))]]


def confusions(model, dataset, device, workers, desc="val") -> tuple[np.ndarray, np.ndarray]:
    """Confusion matrices over a dataset: per mesh vertex (official protocol) and per voxel (LGS protocol)."""
    vertex, voxel = ConfusionAccumulator(), ConfusionAccumulator()
    for _, voxel_gt, voxel_pred, vertex_gt, vertex_pred in predict_scenes(model, dataset, device, workers, desc):
        voxel.add(voxel_gt, voxel_pred)
        vertex.add(vertex_gt, vertex_pred)
    return vertex.matrix, voxel.matrix


def validation_metrics(model, dataset, device, workers: int) -> dict:
    """val/miou (official, per vertex) and val/miou_lgs (per voxel); each rank evaluates its share of the scenes."""
    matrices = confusions(model, distributed.shard_dataset(dataset), device, workers)
    vertex, voxel = (distributed.sum_over_ranks(torch.from_numpy(m).to(device)).cpu().numpy() for m in matrices)
    scores = semantic_metrics(vertex, voxel)
    return {"val/miou": scores["official"]["mean"]["iou"]["all"] or 0.0,  # None: no val class in the ground truth
            "val/miou_lgs": scores["lgs"]["mean"]["iou"]["all"] or 0.0}


def train(config: dict, experiment: str, run_dir: str | Path, resume: str = "auto") -> dict:
    """Train one experiment into `run_dir` (last.pt, best.pt, dvclive/); resume from last.pt when asked.

    Under torchrun every process trains on its share of each epoch's batches (DDP, batch norm synchronised) and
    evaluates its share of val; rank 0 alone writes.
    """
    with distributed.process_group() as device:
        return _train(config, experiment, Path(run_dir), resume, device)


def _train(config: dict, experiment: str, run_dir: Path, resume: str, device: torch.device) -> dict:
    from dvclive import Live

    settings = run_settings(config, experiment)
    train_cfg, exp_cfg = config["train"], config["experiments"][experiment]
    run_dir.mkdir(parents=True, exist_ok=True)
    main = distributed.is_main()
    use_amp = train_cfg["amp"] == "on" or (train_cfg["amp"] == "auto" and device.type == "cuda")
    train_set, val_set = make_datasets(config, exp_cfg)
    net = build_model(config["model"], scannet200().num_classes, train_cfg["seed"]).to(device)
    model = distributed.parallel(net, device)
    optimizer = torch.optim.SGD(net.parameters(), lr=train_cfg["lr"], momentum=train_cfg["momentum"],
                                dampening=train_cfg["dampening"], weight_decay=train_cfg["weight_decay"])
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, train_cfg["milestones"], train_cfg["gamma"])
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    start_epoch, best_miou = 0, -1.0
    if resume == "auto" and (run_dir / LAST).exists():
        state = load_checkpoint(run_dir / LAST, map_location=device)
        if state["settings_hash"] != settings_hash(settings):
            raise ConfigError(f"{run_dir / LAST}: written with other settings (or another number of processes); "
                              "delete the run folder or use --resume never to start over")
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best_miou = state["epoch"], state["best_miou"]
        log.info("resuming %s after epoch %d", run_dir / LAST, start_epoch)
    elif exp_cfg["init"]:
        load_matching_weights(net, load_checkpoint(exp_cfg["init"])["model"])
    sampler = PointBudgetBatchSampler(train_set.num_vertices, train_cfg["batch_size"], train_cfg["max_points"],
                                      shuffle=True, seed=train_cfg["seed"])
    criterion = torch.nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction="sum")
    backend = net.backend
    epochs = train_cfg["epochs"]
    metrics_log = (Live(str(run_dir / "dvclive"), resume=start_epoch > 0, save_dvc_exp=False, dvcyaml=None) if main
                   else contextlib.nullcontext())
    with metrics_log as live:
        for epoch in range(start_epoch, epochs):
            train_set.epoch = sampler.epoch = epoch
            loader = DataLoader(train_set, batch_sampler=distributed.shard_batches(list(sampler)),
                                collate_fn=collate, num_workers=train_cfg["workers"])
            loss_total, steps, correct, labelled = 0.0, 0, 0, 0
            for batch in tqdm(loader, desc=f"{experiment} epoch {epoch + 1}/{epochs}", unit="batch",
                              disable=not main):
                labels = batch["labels"].to(device)
                valid = labels != IGNORE_INDEX
                with torch.autocast(device.type, enabled=use_amp):
                    x = backend.input_tensor(batch["coords"].to(device), batch["features"].to(device))
                    logits = backend.features(model(x))
                    loss = distributed.global_mean_loss(criterion(logits.float(), labels), valid.sum())
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                loss_total += loss.item()
                steps += 1
                correct += int((logits.argmax(1)[valid] == labels[valid]).sum())
                labelled += int(valid.sum())
            scheduler.step()
            # sums over ranks; a rank's loss is its share of the step's loss times the number of ranks
            loss_total, steps, correct, labelled = distributed.sum_over_ranks(
                torch.tensor([loss_total, steps, correct, labelled], dtype=torch.float64, device=device)).tolist()
            metrics = {"train/loss": loss_total / steps, "train/accuracy": correct / max(labelled, 1),
                       "train/lr": optimizer.param_groups[0]["lr"]}
            last_epoch = epoch + 1 == epochs
            validate = (epoch + 1) % train_cfg["val_every"] == 0 or last_epoch
            if validate:
                metrics.update(validation_metrics(net, val_set, device, train_cfg["workers"]))
                log.info("epoch %d: loss %.4f, val mIoU %.4f", epoch + 1, metrics["train/loss"], metrics["val/miou"])
            if live is not None:
                for name, value in metrics.items():
                    live.log_metric(name, value)
            if validate and metrics["val/miou"] > best_miou:
                best_miou = metrics["val/miou"]
                if main:
                    save_checkpoint(run_dir / BEST, model=net.state_dict(), epoch=epoch + 1, val_miou=best_miou,
                                    settings=settings, settings_hash=settings_hash(settings))
            if main and ((epoch + 1) % train_cfg["checkpoint_every"] == 0 or last_epoch):
                save_checkpoint(run_dir / LAST, model=net.state_dict(), optimizer=optimizer.state_dict(),
                                scheduler=scheduler.state_dict(), epoch=epoch + 1, best_miou=best_miou,
                                settings=settings, settings_hash=settings_hash(settings))
            if live is not None:
                live.next_step()
    return {"epochs": epochs, "best_val_miou": best_miou}
