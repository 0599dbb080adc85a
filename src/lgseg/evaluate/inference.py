"""Running a network over scenes: its outputs per voxel, predictions per scene and confusion matrices (both
evaluation protocols). Used by validation during training, `evaluate` and `export-benchmark`."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from lgseg.data.dataset import SceneDataset, collate
from lgseg.evaluate.semantic import ConfusionAccumulator, semantic_metrics
from lgseg.train import distributed


def network_outputs(model: torch.nn.Module, backend, batch: dict, device: torch.device) -> dict[str, torch.Tensor]:
    """The network's outputs for a collated batch, one row per input voxel in the batch's order: "features" (and
    the other heads' outputs of a network that returns several, e.g. "offsets")."""
    coords = batch["coords"].to(device)
    out = model(backend.input_tensor(coords, batch["features"].to(device)))
    heads = out if isinstance(out, dict) else {"features": out}
    return {name: backend.output_features(tensor, coords) for name, tensor in heads.items()}


def scene_outputs(model: torch.nn.Module, dataset: SceneDataset, device: torch.device, workers: int = 0,
                  desc: str = "predict") -> Iterator[tuple[dict, dict]]:
    """Yield (batch of one scene, the network's outputs) scene by scene, the model in eval mode."""
    loader = DataLoader(dataset, batch_size=1, collate_fn=collate, num_workers=workers)
    model.eval()
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, unit="scene", leave=False, disable=not distributed.is_main()):
            yield batch, network_outputs(model, model.backend, batch, device)
    model.train()


def predict_scenes(model: torch.nn.Module, dataset: SceneDataset, device: torch.device, workers: int = 0,
                   desc: str = "predict", scores: Callable[[dict], torch.Tensor] | None = None) -> Iterator[tuple]:
    """Yield (scene id, voxel labels, voxel predictions, vertex labels, vertex predictions) scene by scene.

    `scores` maps the network's outputs to class scores (default: the outputs are the class logits).
    """
    for batch, outputs in scene_outputs(model, dataset, device, workers, desc):
        yield semantic_predictions(batch, (scores(outputs) if scores is not None else outputs["features"]))


def semantic_predictions(batch: dict, class_scores: torch.Tensor) -> tuple:
    """(scene id, voxel labels, voxel predictions, vertex labels, vertex predictions) of a batch of one scene."""
    voxel_pred = class_scores.argmax(1).cpu()
    return (batch["scene_ids"][0], batch["labels"].numpy(), voxel_pred.numpy(), batch["vertex_labels"][0].numpy(),
            voxel_pred[batch["inverse"][0]].numpy())


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
