"""The training loop for every run: language-grounded pre-training (contrastive loss to the text anchors) and
fine-tuning (cross-entropy or C-Focal, optionally from a pre-training, optionally with instance sampling).
SGD + MultiStep schedule per epoch, val every N epochs, atomic checkpoints, resume; DDP under torchrun."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from lgseg.data.augment import DEFAULT_STEPS
from lgseg.data.dataset import PointBudgetBatchSampler, SceneDataset, collate
from lgseg.data.instance_bank import read_instance_bank
from lgseg.data.instance_sampling import InstanceSampling
from lgseg.errors import ConfigError
from lgseg.evaluate.semantic import ConfusionAccumulator, semantic_metrics
from lgseg.models import Res16UNet
from lgseg.scannet.labels import IGNORE_INDEX, scannet200
from lgseg.scannet.splits import read_scene_list
from lgseg.sparse import get_backend
from lgseg.sparse.tensor import coordinate_keys
from lgseg.train import distributed
from lgseg.text.anchors import load_text_anchors
from lgseg.train import losses
from lgseg.train.checkpoint import load_checkpoint, load_matching_weights, save_checkpoint

log = logging.getLogger(__name__)
LAST, BEST = "last.pt", "best.pt"


def processed_root(config: dict) -> Path:
    return Path(config["data_dir"]) / "processed" / config["dataset"]["name"]


@dataclass(frozen=True)
class Run:
    """One training run: an entry of `pretraining` (kind "pretraining") or of `experiments` (kind "experiment")."""

    kind: str
    name: str
    entry: dict

    @property
    def pretrains(self) -> bool:
        return self.kind == "pretraining"

    @property
    def uses_anchors(self) -> bool:
        return self.pretrains or self.entry.get("pretraining") is not None


def find_run(config: dict, name: str, kind: str = "experiment") -> Run:
    section = "pretraining" if kind == "pretraining" else "experiments"
    if name not in config[section]:
        raise ConfigError(f"config key '{section}.{name}' is missing; defined: {', '.join(config[section]) or 'none'}")
    return Run(kind, name, config[section][name])


def text_anchor_path(config: dict) -> Path:
    return Path(config["data_dir"]) / "text" / f"{config['text']['encoder']}.npz"


def instance_bank_path(config: dict, annotation_ratio: float) -> Path:
    suffix = "" if annotation_ratio >= 1 else f"_{annotation_ratio:g}"
    return processed_root(config) / f"instance_bank{suffix}.npz"


def default_run_dir(config: dict, name: str, kind: str = "experiment") -> Path:
    """runs/<dataset>/<experiment>, or runs/<dataset>/pretrain/<name> (the workflow's layout)."""
    runs = Path("runs") / config["dataset"]["name"]
    return runs / "pretrain" / name if kind == "pretraining" else runs / name


def run_settings(config: dict, run: Run) -> dict:
    """The part of the config a run depends on, and its number of processes; the hash guards resuming."""
    train_cfg = {key: value for key, value in config["train"].items() if key != "gpus"}  # a request, not a setting
    settings = {"dataset": config["dataset"]["name"], "model": config["model"], "train": train_cfg,
                run.kind: run.entry, "processes": distributed.world_size()}
    if run.uses_anchors:
        settings["text"] = config["text"]
    if run.pretrains:
        settings["loss"] = config["losses"]["contrastive"]
    else:
        if run.entry["pretraining"]:
            settings["pretraining"] = config["pretraining"][run.entry["pretraining"]]
        if run.entry["loss"] == "focal":
            settings["loss"] = config["losses"]["focal"]
    if run.entry["instance_sampling"]:
        settings["instance_sampling"] = config["instance_sampling"]
    return settings


def settings_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def build_model(model_config: dict, seed: int, num_classes: int | None, feature_dim: int | None = None) -> Res16UNet:
    torch.manual_seed(seed)
    return Res16UNet(get_backend(model_config["backend"]), model_config["variant"], feature_dim=feature_dim,
                     num_classes=num_classes)


def device_for_training() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_datasets(config: dict, run: Run) -> tuple[SceneDataset, SceneDataset]:
    root, train_cfg, ratio = processed_root(config), config["train"], run.entry["annotation_ratio"]
    annotated = None
    if ratio < 1:
        with np.load(root / "masks" / f"annotated_{ratio:g}.npz") as masks:
            annotated = {scene: masks[scene] for scene in masks.files}
    sampling = None
    if run.entry["instance_sampling"]:
        options = config["instance_sampling"]
        sampling = InstanceSampling(read_instance_bank(instance_bank_path(config, ratio)), count=options["count"],
                                    max_tries=options["max_tries"], cell=options["cell"],
                                    min_coverage=options["min_coverage"], scale=tuple(options["scale"]))
    steps = train_cfg["augmentations"] if train_cfg["augmentations"] is not None else DEFAULT_STEPS
    train_set = split_dataset(config, "train", augmentations=steps, annotated=annotated, seed=train_cfg["seed"],
                              instance_sampling=sampling)
    return train_set, split_dataset(config, "val")


def split_dataset(config: dict, split: str, **options) -> SceneDataset:
    """The scenes of one split list of the processed store, at the configured voxel size."""
    root = processed_root(config)
    return SceneDataset(root, split, read_scene_list(root / "splits" / f"{split}.txt"), config["train"]["voxel_size"],
                        **options)


def predict_scenes(model: torch.nn.Module, dataset: SceneDataset, device: torch.device, workers: int = 0,
                   desc: str = "predict", scores=None):
    """Yield (scene id, voxel labels, voxel predictions, vertex labels, vertex predictions) scene by scene.

    `scores` maps the model's output features to class scores (default: they are the class logits).
    """
    backend = model.backend
    loader = DataLoader(dataset, batch_size=1, collate_fn=collate, num_workers=workers)
    model.eval()
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, unit="scene", leave=False, disable=not distributed.is_main()):
            out = model(backend.input_tensor(batch["coords"].to(device), batch["features"].to(device)))
            features = backend.features(out)
            voxel_pred = (scores(features) if scores is not None else features).argmax(1).cpu()
            if backend.name == "minkowski":  # MinkowskiEngine may reorder rows: restore the input order
                voxel_pred = _reorder_to_input(backend.coordinates(out).cpu(), batch["coords"], voxel_pred)
            inverse = batch["inverse"][0]
            yield (batch["scene_ids"][0], batch["labels"].numpy(), voxel_pred.numpy(),
                   batch["vertex_labels"][0].numpy(), voxel_pred[inverse].numpy())
    model.train()


def _reorder_to_input(out_coords, in_coords, values):
    out_keys, order = torch.sort(coordinate_keys(out_coords))
    return values[order[torch.searchsorted(out_keys, coordinate_keys(in_coords))]]


def confusions(model, dataset, device, workers, desc="val", scores=None) -> tuple[np.ndarray, np.ndarray]:
    """Confusion matrices over a dataset: per mesh vertex (official protocol) and per voxel (LGS protocol)."""
    vertex, voxel = ConfusionAccumulator(), ConfusionAccumulator()
    for _, voxel_gt, voxel_pred, vertex_gt, vertex_pred in predict_scenes(model, dataset, device, workers, desc,
                                                                          scores):
        voxel.add(voxel_gt, voxel_pred)
        vertex.add(vertex_gt, vertex_pred)
    return vertex.matrix, voxel.matrix


def validation_metrics(model, dataset, device, workers: int, scores=None) -> dict:
    """val/miou (official, per vertex), val/miou_lgs (per voxel) and val/accuracy (per vertex); each rank evaluates
    its share of the scenes."""
    matrices = confusions(model, distributed.shard_dataset(dataset), device, workers, scores=scores)
    vertex, voxel = (distributed.sum_over_ranks(torch.from_numpy(m).to(device)).cpu().numpy() for m in matrices)
    metrics = semantic_metrics(vertex, voxel)
    return {"val/miou": metrics["official"]["mean"]["iou"]["all"] or 0.0,  # None: no val class in the ground truth
            "val/miou_lgs": metrics["lgs"]["mean"]["iou"]["all"] or 0.0,
            "val/accuracy": float(np.trace(vertex) / max(vertex.sum(), 1))}


class Objective:
    """A run's loss (as a sum and the denominator of its global mean) and how its outputs become class scores."""

    def __init__(self, config: dict, run: Run, anchors: torch.Tensor | None, device: torch.device):
        self.run, self.anchors = run, anchors
        self.contrastive = config["losses"]["contrastive"]
        self.focal = config["losses"]["focal"]
        self.alpha = None
        if not run.pretrains and run.entry["loss"] == "focal":
            import pandas as pd

            stats = pd.read_csv(processed_root(config) / "class_stats.csv")
            self.alpha = losses.alpha_from_class_stats(stats, formula=self.focal["alpha"],
                                                       normalization=self.focal["alpha_normalization"]).to(device)
        self.generator = torch.Generator(device=device)

    def start_epoch(self, seed: int, epoch: int) -> None:
        """Negatives are drawn from a generator seeded per (seed, epoch, rank), so resumed runs draw the same."""
        self.generator.manual_seed(seed * 1_000_003 + epoch * 1_009 + distributed.rank())

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        return losses.cosine_to_anchors(features, self.anchors) if self.run.pretrains else features

    def loss(self, features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of the per-point losses, number they are averaged over)."""
        labelled = (labels != IGNORE_INDEX).sum()
        if self.run.pretrains:
            c = self.contrastive
            per_point = losses.language_contrastive_loss(
                features, labels, self.anchors, pos_threshold=c["pos_threshold"], neg_threshold=c["neg_threshold"],
                neg_weight=c["neg_weight"], num_negatives=c["num_negatives"], generator=self.generator,
                reduction="none")
            return per_point.sum(), (torch.tensor(labels.numel(), device=labels.device) if c["reduction"] == "mean_all"
                                     else labelled)
        if self.run.entry["loss"] == "focal":
            return losses.focal_loss(features, labels, self.alpha, gamma=self.focal["gamma"]) * labelled, labelled
        return torch.nn.functional.cross_entropy(features.float(), labels, ignore_index=IGNORE_INDEX,
                                                 reduction="sum"), labelled


def train(config: dict, name: str, run_dir: str | Path, resume: str = "auto", kind: str = "experiment") -> dict:
    """Train one run (an experiment, or a pre-training with kind="pretraining") into `run_dir` (last.pt, best.pt,
    dvclive/); resume from last.pt when asked.

    Under torchrun every process trains on its share of each epoch's batches (DDP, batch norm synchronised) and
    evaluates its share of val; rank 0 alone writes.
    """
    run = find_run(config, name, kind)
    with distributed.process_group() as device:
        return _train(config, run, Path(run_dir), resume, device)


def _model_for(config: dict, run: Run, device: torch.device) -> tuple[Res16UNet, dict, torch.Tensor | None]:
    """The run's network, the arguments it was built with (stored in checkpoints) and the anchors it uses."""
    anchors = None
    if run.uses_anchors:
        anchors = torch.from_numpy(load_text_anchors(text_anchor_path(config)).embeddings).to(device)
    model_args = {"num_classes": None if run.pretrains else scannet200().num_classes,
                  "feature_dim": None if anchors is None else anchors.shape[1]}
    return build_model(config["model"], config["train"]["seed"], **model_args).to(device), model_args, anchors


def _train(config: dict, run: Run, run_dir: Path, resume: str, device: torch.device) -> dict:
    from dvclive import Live

    settings = run_settings(config, run)
    train_cfg = config["train"]
    epochs = run.entry.get("epochs") or train_cfg["epochs"]
    milestones = run.entry.get("milestones") or train_cfg["milestones"]
    run_dir.mkdir(parents=True, exist_ok=True)
    main = distributed.is_main()
    use_amp = train_cfg["amp"] == "on" or (train_cfg["amp"] == "auto" and device.type == "cuda")
    train_set, val_set = make_datasets(config, run)
    net, model_args, anchors = _model_for(config, run, device)
    objective = Objective(config, run, anchors, device)
    model = distributed.parallel(net, device)
    optimizer = torch.optim.SGD(net.parameters(), lr=train_cfg["lr"], momentum=train_cfg["momentum"],
                                dampening=train_cfg["dampening"], weight_decay=train_cfg["weight_decay"])
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones, train_cfg["gamma"])
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    start_epoch, best_miou = 0, -1.0
    init = (default_run_dir(config, run.entry["pretraining"], "pretraining") / BEST if run.entry.get("pretraining")
            else run.entry.get("init"))
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
    elif init:
        loaded, fresh = load_matching_weights(net, load_checkpoint(init, map_location=device)["model"])
        log.info("initialised %d tensors from %s; new: %s", len(loaded), init, ", ".join(fresh) or "none")
    sampler = PointBudgetBatchSampler(train_set.num_vertices, train_cfg["batch_size"], train_cfg["max_points"],
                                      shuffle=True, seed=train_cfg["seed"])
    backend = net.backend
    metrics_log = (Live(str(run_dir / "dvclive"), resume=start_epoch > 0, save_dvc_exp=False, dvcyaml=None) if main
                   else contextlib.nullcontext())
    metrics = {}
    with metrics_log as live:
        for epoch in range(start_epoch, epochs):
            train_set.epoch = sampler.epoch = epoch
            objective.start_epoch(train_cfg["seed"], epoch)
            loader = DataLoader(train_set, batch_sampler=distributed.shard_batches(list(sampler)),
                                collate_fn=collate, num_workers=train_cfg["workers"])
            loss_total, steps, correct, labelled, cosine_total = 0.0, 0, 0, 0, 0.0
            for batch in tqdm(loader, desc=f"{run.name} epoch {epoch + 1}/{epochs}", unit="batch",
                              disable=not main):
                labels = batch["labels"].to(device)
                valid = labels != IGNORE_INDEX
                with torch.autocast(device.type, enabled=use_amp):
                    x = backend.input_tensor(batch["coords"].to(device), batch["features"].to(device))
                    features = backend.features(model(x))
                    loss = distributed.global_mean_loss(*objective.loss(features, labels))
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                loss_total += loss.item()
                steps += 1
                with torch.no_grad():
                    scores = objective.scores(features.detach())
                    correct += int((scores.argmax(1)[valid] == labels[valid]).sum())
                    labelled += int(valid.sum())
                    if run.pretrains and valid.any():
                        cosine_total += float(losses.positive_cosine(features.detach(), labels, anchors)) * int(
                            valid.sum())
            scheduler.step()
            # sums over ranks; a rank's loss is its share of the step's loss times the number of ranks
            loss_total, steps, correct, labelled, cosine_total = distributed.sum_over_ranks(torch.tensor(
                [loss_total, steps, correct, labelled, cosine_total], dtype=torch.float64, device=device)).tolist()
            metrics = {"train/loss": loss_total / steps, "train/accuracy": correct / max(labelled, 1),
                       "train/lr": optimizer.param_groups[0]["lr"]}
            if run.pretrains:
                metrics["train/positive_cosine"] = cosine_total / max(labelled, 1)
            last_epoch = epoch + 1 == epochs
            validate = (epoch + 1) % train_cfg["val_every"] == 0 or last_epoch
            if validate:
                metrics.update(validation_metrics(net, val_set, device, train_cfg["workers"], objective.scores))
                log.info("epoch %d: loss %.4f, val mIoU %.4f", epoch + 1, metrics["train/loss"], metrics["val/miou"])
            if live is not None:
                for metric, value in metrics.items():
                    live.log_metric(metric, value)
            if validate and metrics["val/miou"] > best_miou:
                best_miou = metrics["val/miou"]
                if main:
                    save_checkpoint(run_dir / BEST, model=net.state_dict(), model_args=model_args, epoch=epoch + 1,
                                    val_miou=best_miou, settings=settings, settings_hash=settings_hash(settings))
            if main and ((epoch + 1) % train_cfg["checkpoint_every"] == 0 or last_epoch):
                save_checkpoint(run_dir / LAST, model=net.state_dict(), model_args=model_args,
                                optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), epoch=epoch + 1,
                                best_miou=best_miou, settings=settings, settings_hash=settings_hash(settings))
            if live is not None:
                live.next_step()
    return {"epochs": epochs, "best_val_miou": best_miou, "last_epoch_metrics": metrics}
