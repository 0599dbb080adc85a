"""What `python -m lgseg evaluate` measures for a run, chosen by its objective's `task` (`TASKS`):

* semantic: the semantic metrics of both protocols (lgseg.evaluate.semantic);
* instance: the same for the class head, plus AP / AP50 / AP25 of the clustered proposals (lgseg.evaluate.clustering,
  lgseg.evaluate.instance) in both protocols: official (proposal voxels mapped to mesh vertices, minimum region 100
  vertices) and LGS (per voxel, minimum region 10).

Each returns the JSON-able metrics dict that `evaluate` writes to metrics.json.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np

from lgseg.evaluate.clustering import ClusteringSettings, Proposal, cluster_proposals
from lgseg.evaluate.inference import confusions, scene_outputs, semantic_predictions
from lgseg.evaluate.instance import MIN_REGION_SIZE, InstanceEvaluator, encode_ground_truth
from lgseg.evaluate.semantic import ConfusionAccumulator, semantic_metrics
from lgseg.scannet.labels import scannet200

INSTANCE_PROTOCOLS = {
    "official": "per mesh vertex (proposal voxels mapped to the vertices they hold), minimum region 100 vertices, "
                "as ScanNet's evaluate_semantic_instance.py with the 198 ScanNet200 instance classes",
    "lgs": "per voxel, minimum region 10 voxels, as the authors' training code evaluates",
}


def evaluate_semantic(model, dataset, device, workers: int, options: dict, desc: str = "evaluate") -> dict:
    return semantic_metrics(*confusions(model, dataset, device, workers, desc))


def evaluate_instance(model, dataset, device, workers: int, options: dict, desc: str = "evaluate") -> dict:
    settings = ClusteringSettings.of(options["evaluation"]["instance_clustering"])
    class_ids = scannet200().class_ids
    vertex, voxel = ConfusionAccumulator(), ConfusionAccumulator()
    evaluators = {protocol: InstanceEvaluator(MIN_REGION_SIZE[protocol]) for protocol in INSTANCE_PROTOCOLS}
    for batch, outputs in scene_outputs(model, dataset, device, workers, desc):
        _, voxel_gt, voxel_pred, vertex_gt, vertex_pred = semantic_predictions(batch, outputs["features"])
        voxel.add(voxel_gt, voxel_pred)
        vertex.add(vertex_gt, vertex_pred)
        proposals = scene_proposals(batch, outputs, dataset.voxel_size, settings)
        evaluators["lgs"].add_scene(encode_ground_truth(voxel_gt, batch["instance"].numpy()),
                                    [(p.voxels, class_ids[p.class_index], p.score) for p in proposals])
        per_vertex = vertex_proposals(proposals, batch["inverse"][0].numpy(), batch["voxel_counts"][0])
        evaluators["official"].add_scene(encode_ground_truth(vertex_gt, batch["vertex_instance"][0].numpy()),
                                         [(v, class_ids[c], score) for v, c, score in per_vertex])
    metrics = semantic_metrics(vertex.matrix, voxel.matrix)
    metrics["instance"] = {"clustering": asdict(settings),
                           **{protocol: {"description": description, **evaluators[protocol].results()}
                              for protocol, description in INSTANCE_PROTOCOLS.items()}}
    return metrics


TASKS = {"semantic": evaluate_semantic, "instance": evaluate_instance}


def scene_proposals(batch: dict, outputs: dict, voxel_size: float, settings: ClusteringSettings) -> list[Proposal]:
    """The instance proposals of a batch of one scene (voxel rows of the batch)."""
    return cluster_proposals(batch["coords"][:, 1:], outputs["offsets"], outputs["features"], voxel_size, settings)


def vertex_proposals(proposals: list[Proposal], inverse: np.ndarray, num_voxels: int
                     ) -> list[tuple[np.ndarray, int, float]]:
    """(mesh vertices, class index, score) of each proposal: its vertices are those whose voxel (`inverse`) it
    holds (proposals are disjoint)."""
    owner = np.full(num_voxels, -1, dtype=np.int64)
    for k, proposal in enumerate(proposals):
        owner[proposal.voxels] = k
    vertex_owner = owner[inverse]
    order = np.argsort(vertex_owner, kind="stable")
    bounds = np.searchsorted(vertex_owner[order], np.arange(len(proposals) + 1))
    return [(order[bounds[k]:bounds[k + 1]], p.class_index, p.score) for k, p in enumerate(proposals)]
