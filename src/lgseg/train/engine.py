"""The training loop for every run, driven by its run specification (`lgseg.runs.RunSpec`) and its registered
objective (`lgseg.train.objectives`): SGD + MultiStep schedule per epoch, val every N epochs, atomic checkpoints.

Re-runs follow the run's identity (settings + content of its inputs, `lgseg.runs.identity`): same identity and
finished -> nothing is trained; same identity, unfinished -> resume from last.pt; another identity -> the old run
folder is moved aside in one rename and training starts fresh. DDP under torchrun."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from lgseg.data.augment import DEFAULT_STEPS
from lgseg.data.dataset import PointBudgetBatchSampler, SceneDataset
from lgseg.data.instance_bank import read_instance_bank
from lgseg.data.instance_sampling import InstanceSampling
from lgseg.errors import DataError, TrainingDiverged
from lgseg.evaluate.inference import network_outputs, validation_metrics
from lgseg.fileio import write_text
from lgseg.models import Res16UNet
from lgseg.paths import BEST, LAST, LIVE, RUN_FILES, RUN_SPEC, split_list
from lgseg.runs import RunSpec, identity, identity_changes, identity_hash
from lgseg.scannet.splits import read_scene_list
from lgseg.sparse import get_backend
from lgseg.train import distributed
from lgseg.train.checkpoint import load_checkpoint, load_matching_weights, save_checkpoint
from lgseg.train.objectives import OBJECTIVES
from lgseg.train.schedules import SCHEDULES

log = logging.getLogger(__name__)


def build_model(backend: str, variant: str, seed: int, num_classes: int | None,
                feature_dim: int | None = None, embedding_dim: int | None = None,
                offset_head: bool = False) -> Res16UNet:
    torch.manual_seed(seed)
    return Res16UNet(get_backend(backend), variant, feature_dim=feature_dim, num_classes=num_classes,
                     embedding_dim=embedding_dim, offset_head=offset_head)


def load_network(spec: RunSpec, path: str | Path, device: torch.device) -> Res16UNet:
    """The network of a checkpoint (ours, or the authors' in the run's variant) with the run's backend, on
    `device`; DataError naming the file when it does not fit the variant."""
    variant = spec.settings["model"]["variant"]
    state = load_checkpoint(path, map_location=device, variant=variant)
    model = build_model(spec.options["backend"], variant, 0, **state["model_args"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:  # one of ours of another variant
        raise DataError(path, f"does not fit {variant}: {' '.join(str(err).split())[:300]}",
                        "use it with the model.variant it was trained with") from None
    return model.to(device)


def device_for_training() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def split_dataset(spec: RunSpec, split: str, **options) -> SceneDataset:
    """The scenes of one split list of the run's processed store, at the run's voxel size."""
    return SceneDataset(spec.processed, split, read_scene_list(split_list(spec.processed, split)),
                        spec.settings["train"]["voxel_size"], **options)


def make_datasets(spec: RunSpec) -> tuple[SceneDataset, SceneDataset]:
    train_cfg, annotated, sampling = spec.settings["train"], None, None
    if "mask" in spec.files:
        with np.load(spec.files["mask"]) as masks:
            annotated = {scene: masks[scene] for scene in masks.files}
    if spec.settings["instance_sampling"]:
        options = spec.settings["instance_sampling"]
        sampling = InstanceSampling(read_instance_bank(spec.files["instance_bank"]), count=options["count"],
                                    max_tries=options["max_tries"], cell=options["cell"],
                                    min_coverage=options["min_coverage"], scale=tuple(options["scale"]))
    steps = train_cfg["augmentations"] if train_cfg["augmentations"] is not None else DEFAULT_STEPS
    targets = OBJECTIVES[spec.objective].instance_targets
    train_set = split_dataset(spec, "train", augmentations=steps, annotated=annotated, seed=train_cfg["seed"],
                              instance_sampling=sampling, instance_targets=targets)
    return train_set, split_dataset(spec, "val")  # validation measures the class head only


def _objective_files(spec: RunSpec) -> dict[str, Path]:
    return {need: Path(spec.files[need]) for need in OBJECTIVES[spec.objective].needs}


def train(spec: RunSpec, run_dir: str | Path | None = None, options: dict | None = None, fresh: bool = False) -> dict:
    """Train one run into `run_dir` (default: the spec's) and return its summary. `options` override the spec's
    backend / workers / val_every / checkpoint_every; `fresh` starts over whatever the folder holds.

    Under torchrun every process trains on its share of each epoch's batches (DDP, batch norm synchronised) and
    evaluates its share of val; rank 0 alone writes.
    """
    with distributed.process_group() as device:
        return _train(spec, Path(run_dir or spec.run_dir), {**spec.options, **(options or {})}, fresh, device)


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def prepare_run_dir(run_dir: Path, record: dict, fresh: bool = False) -> dict | None:
    """The resumable state of `run_dir` if it was written for this identity; otherwise (or with `fresh`) the
    folder's old content is moved aside in one rename and deleted, and None is returned."""
    last = run_dir / LAST
    state = load_checkpoint(last) if last.exists() and not fresh else None
    if state is not None and state.get("identity") == record:
        return state
    foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_FILES and not p.name.startswith(".")) \
        if run_dir.is_dir() else []
    if foreign:  # never delete what training did not write
        raise DataError(run_dir, f"holds files that are not a run's ({', '.join(foreign[:5])}), so it is not replaced",
                        "train into an empty folder or a run folder (--run-dir), or move those files")
    if distributed.is_main():
        if state is not None:
            changed = identity_changes(state.get("identity") or {}, record)
            log.info("%s was trained with another identity (changed: %s): starting a fresh run", run_dir,
                     ", ".join(changed) or "format")
        if run_dir.exists() and any(run_dir.iterdir()):
            trash = Path(tempfile.mkdtemp(prefix=f".{run_dir.name}.", suffix=".old", dir=run_dir.parent))
            os.replace(run_dir, trash / run_dir.name)
            shutil.rmtree(trash)
        run_dir.mkdir(parents=True, exist_ok=True)
    _barrier()
    return None


def _initialise(net: Res16UNet, spec: RunSpec, init_state: dict, new_heads: set[str]) -> None:
    """Load the init checkpoint: every tensor of the network except its new heads must be in it."""
    path = spec.files["init"]
    loaded, fresh = load_matching_weights(net, init_state["model"])
    missing = sorted(name for name in fresh if name.split(".")[0] not in new_heads)
    if missing:
        raise DataError(path, f"matches {len(loaded)} of the network's {len(net.state_dict())} tensors; missing or "
                              f"of another shape: {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}",
                        f"use a checkpoint of {spec.settings['model']['variant']} (model.variant of the run)")
    log.info("initialised %d tensors from %s; new: %s", len(loaded), path, ", ".join(fresh) or "none")


def _train(spec: RunSpec, run_dir: Path, options: dict, fresh: bool, device: torch.device) -> dict:
    from dvclive import Live

    record = identity(spec, distributed.world_size())
    ident = identity_hash(record)
    train_cfg = spec.settings["train"]
    epochs, main = train_cfg["epochs"], distributed.is_main()
    state = prepare_run_dir(run_dir, record, fresh)
    if state is not None and state["epoch"] >= epochs and "summary" in state:
        log.info("%s is complete for this identity (%s): nothing to train", run_dir, ident)
        return state["summary"]
    if main:
        write_text(run_dir / RUN_SPEC, json.dumps({"spec": json.loads(spec.to_json()), "identity": record,
                                                   "identity_hash": ident}, indent=1, sort_keys=True) + "\n")
    use_amp = train_cfg["amp"] == "on" or (train_cfg["amp"] == "auto" and device.type == "cuda")
    train_set, val_set = make_datasets(spec)
    objective = OBJECTIVES[spec.objective](spec.settings, _objective_files(spec), device)
    train_items = objective.train_items(train_set)
    init_state = (load_checkpoint(spec.files["init"], map_location=device, variant=spec.settings["model"]["variant"])
                  if spec.init and state is None else None)
    model_args = state["model_args"] if state is not None else objective.model_args(
        init_state.get("model_args") if init_state else None)
    net = build_model(options["backend"], spec.settings["model"]["variant"], train_cfg["seed"], **model_args).to(device)
    model = distributed.parallel(net, device)
    optimizer = torch.optim.SGD(net.parameters(), lr=train_cfg["lr"], momentum=train_cfg["momentum"],
                                dampening=train_cfg["dampening"], weight_decay=train_cfg["weight_decay"])
    sampler = PointBudgetBatchSampler(train_items.num_vertices, train_cfg["batch_size"], train_cfg["max_points"],
                                      shuffle=True, seed=train_cfg["seed"])
    scheduler = SCHEDULES[train_cfg["scheduler"]].build(optimizer, train_cfg,
                                                        len(distributed.shard_batches(list(sampler))))
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    start_epoch, best = 0, -1.0
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, best = state["epoch"], state["best_miou"]
        objective.load_state(state.get("objective", {}))
        log.info("resuming %s after epoch %d", run_dir / LAST, start_epoch)
    elif spec.init:
        _initialise(net, spec, init_state, set(Res16UNet.TASK_HEADS) if model_args["num_classes"] else set())
    monitor = objective.monitor
    checkpoint = {"model_args": model_args, "identity": record, "identity_hash": ident}
    metrics_log = (Live(str(run_dir / LIVE), resume=start_epoch > 0, save_dvc_exp=False, dvcyaml=None) if main
                   else contextlib.nullcontext())
    metrics, summary = {}, {}
    with metrics_log as live:
        for epoch in range(start_epoch, epochs):
            train_set.epoch = sampler.epoch = epoch
            objective.start_epoch(train_cfg["seed"], epoch)
            loader = DataLoader(train_items, batch_sampler=distributed.shard_batches(list(sampler)),
                                collate_fn=objective.collate, num_workers=options["workers"])
            sums = {"loss": 0.0, "steps": 0.0, "correct": 0.0, "labelled": 0.0}
            extra: dict[str, list[float]] = {}
            for batch in tqdm(loader, desc=f"{spec.name} epoch {epoch + 1}/{epochs}", unit="batch",
                              disable=not main):
                batch["labels"] = batch["labels"].to(device)
                with torch.autocast(device.type, enabled=use_amp):
                    outputs = network_outputs(model, net.backend, batch, device)
                    loss = distributed.global_mean_loss(*objective.loss(outputs, batch))
                if not torch.isfinite(loss):  # the global mean: every process stops here together
                    raise TrainingDiverged(f"{spec.kind} '{spec.name}': the loss is {loss.item()} at epoch "
                                           f"{epoch + 1}, step {int(sums['steps']) + 1} (lr {train_cfg['lr']}): "
                                           "training diverged — lower train.lr, or this run's train.lr override")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if train_cfg.get("max_grad_norm") is not None:  # absent when not set (runs.IDENTITY_WHEN_SET)
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(net.parameters(), train_cfg["max_grad_norm"])
                scaler.step(optimizer)
                scaler.update()
                sums["loss"] += loss.item()
                sums["steps"] += 1
                with torch.no_grad():
                    detached = {key: value.detach() for key, value in outputs.items()}
                    labels = batch["labels"]
                    valid = labels >= 0
                    scores = objective.scores({key: value[valid] for key, value in detached.items()})
                    if scores is not None:
                        sums["correct"] += int((scores.argmax(1) == labels[valid]).sum())
                    sums["labelled"] += int(valid.sum())
                    for name, (total, count) in objective.observe(detached, batch, scores).items():
                        extra.setdefault(name, [0.0, 0.0])
                        extra[name][0] += total
                        extra[name][1] += count
            scheduler.step()
            names = list(sums) + [f"{n}/{part}" for n in extra for part in ("sum", "count")]
            values = list(sums.values()) + [v for pair in extra.values() for v in pair]
            # sums over ranks; a rank's loss is its share of the step's loss times the number of ranks
            totals = dict(zip(names, distributed.sum_over_ranks(torch.tensor(values, dtype=torch.float64,
                                                                             device=device)).tolist()))
            metrics = {"train/loss": totals["loss"] / totals["steps"], "train/lr": optimizer.param_groups[0]["lr"]}
            if monitor:
                metrics["train/accuracy"] = totals["correct"] / max(totals["labelled"], 1)
            for name in extra:
                metrics[f"train/{name}"] = totals[f"{name}/sum"] / max(totals[f"{name}/count"], 1)
            last_epoch = epoch + 1 == epochs
            validate = monitor is not None and ((epoch + 1) % options["val_every"] == 0 or last_epoch)
            if validate:
                metrics.update(validation_metrics(net, val_set, device, options["workers"], objective.scores))
                log.info("epoch %d: loss %.4f, %s %.4f", epoch + 1, metrics["train/loss"], monitor, metrics[monitor])
            if live is not None:
                for metric, value in metrics.items():
                    live.log_metric(metric, value)
            improved = validate and metrics[monitor] > best
            if improved:
                best = metrics[monitor]
            if main and (improved or (monitor is None and last_epoch)):
                save_checkpoint(run_dir / BEST, model=net.state_dict(), epoch=epoch + 1, val_miou=best, **checkpoint)
            if last_epoch:
                summary = {"epochs": epochs, "best_val_miou": best, "last_epoch_metrics": metrics,
                           "identity_hash": ident}
            if main and ((epoch + 1) % options["checkpoint_every"] == 0 or last_epoch):
                save_checkpoint(run_dir / LAST, model=net.state_dict(), optimizer=optimizer.state_dict(),
                                scheduler=scheduler.state_dict(), objective=objective.state(), epoch=epoch + 1,
                                best_miou=best,
                                **({"summary": summary} if last_epoch else {}), **checkpoint)
            if live is not None:
                live.next_step()
    return summary
