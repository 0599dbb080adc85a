"""Time instance clustering and AP evaluation per scene at real-scene size (about 150k mesh vertices, 2 cm voxels).

A demo room generated with a fine vertex spacing stands in for a real scan (real ScanNet is licence-gated). The
"network outputs" are made from its ground truth: logits = one-hot class + Gaussian noise, offsets = the true
offsets + Gaussian noise (metres), so clustering meets realistic input and the AP says whether it finds the
instances. Timed per scene, median of --repeat runs: voxelisation with instance targets (the data path),
clustering with the authors' parameters (radius 1.5 voxels, 50 / 100 voxels), the official protocol (proposals to
vertices + matching, minimum 100 vertices) and the LGS protocol (per voxel), and the AP computation itself; with
--all-pairs also the plain radius graph that lists every pair (which the Delaunay-based clustering avoids).

    python bench/instance_eval.py [--scenes 3] [--repeat 3] [--all-pairs] [--out results/bench/instance_eval.md]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from scipy.spatial import cKDTree

from lgseg.data.dataset import instance_offsets, instance_vertices, voxelize
from lgseg.evaluate.clustering import ClusteringSettings, cluster_proposals
from lgseg.evaluate.instance import MIN_REGION_SIZE, InstanceEvaluator, encode_ground_truth
from lgseg.evaluate.tasks import vertex_proposals
from lgseg.fileio import write_text
from lgseg.scannet.demo import DemoSettings, demo_scene_ids, generate_scene
from lgseg.scannet.labels import scannet200

AUTHORS = ClusteringSettings(radius=1.5, min_points=50, min_proposal_points=100, score="mean")
VOXEL_SIZE = 0.02


def timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def voxel_inputs(coord, labels, instance):
    voxels, first, inverse = voxelize(coord, VOXEL_SIZE)
    voxel_labels = labels[first]
    voxel_instance = instance_vertices(voxel_labels, instance[first])
    return voxels, inverse, voxel_labels, voxel_instance, instance_offsets(voxels, voxel_instance, VOXEL_SIZE)


def outputs(voxel_labels, offsets, rng, offset_noise):
    logits = rng.normal(0.0, 0.5, (len(voxel_labels), scannet200().num_classes)).astype(np.float32)
    labelled = voxel_labels >= 0
    logits[np.flatnonzero(labelled), voxel_labels[labelled]] += 3.0
    return logits, offsets + rng.normal(0.0, offset_noise, offsets.shape).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--spacing", type=float, default=0.03, help="demo vertex spacing (0.03 m: ~150k vertices)")
    parser.add_argument("--offset-noise", type=float, default=0.02, help="metres of noise on the true offsets")
    parser.add_argument("--all-pairs", action="store_true",
                        help="also time listing every voxel pair within the radius (cKDTree.query_pairs), once")
    parser.add_argument("--out", default="results/bench/instance_eval.md")
    args = parser.parse_args()
    settings = DemoSettings(seed=7, num_train=1, num_val=args.scenes, num_test=0, vertex_spacing=args.spacing,
                            objects_per_room=(20, 30))
    class_ids = scannet200().class_ids
    rng = np.random.default_rng(0)
    rows, evaluators = [], {p: InstanceEvaluator(MIN_REGION_SIZE[p]) for p in MIN_REGION_SIZE}
    for scene_id in demo_scene_ids(settings)["val"]:
        truth = generate_scene(scene_id, settings)
        coord = truth.raw_coord.astype(np.float64)  # the alignment only rotates and shifts the room
        labels, instance = truth.segment.astype(np.int64), truth.instance.astype(np.int64)
        times: dict[str, list[float]] = {}
        for _ in range(args.repeat):
            (voxels, inverse, voxel_labels, voxel_instance, offsets), t = timed(voxel_inputs, coord, labels, instance)
            times.setdefault("voxelise + targets", []).append(t)
            logits, predicted = outputs(voxel_labels, offsets, rng, args.offset_noise)
            proposals, t = timed(cluster_proposals, voxels, predicted, logits, VOXEL_SIZE, AUTHORS)
            times.setdefault("clustering", []).append(t)
            official, lgs = InstanceEvaluator(MIN_REGION_SIZE["official"]), InstanceEvaluator(MIN_REGION_SIZE["lgs"])
            start = time.perf_counter()
            per_vertex = (encode_ground_truth(labels, instance_vertices(labels, instance)),
                          [(v, class_ids[c], score) for v, c, score in vertex_proposals(proposals, inverse,
                                                                                         len(voxels))])
            official.add_scene(*per_vertex)
            times.setdefault("official matching", []).append(time.perf_counter() - start)
            start = time.perf_counter()
            per_voxel = (encode_ground_truth(voxel_labels, voxel_instance),
                             [(p.voxels, class_ids[p.class_index], p.score) for p in proposals])
            lgs.add_scene(*per_voxel)
            times.setdefault("LGS matching", []).append(time.perf_counter() - start)
            _, t = timed(official.average_precision)
            times.setdefault("AP of the scene", []).append(t)
        if args.all_pairs:  # the plain radius graph, every pair within the radius listed (what the CUDA op does)
            keep = np.isin(logits.argmax(1), scannet200().instance_classes)
            _, t = timed(cKDTree(voxels[keep] + predicted[keep] / VOXEL_SIZE).query_pairs, AUTHORS.radius)
            times["all pairs (query_pairs), once"] = [t]
        evaluators["official"].add_scene(*per_vertex)  # the last repeat's outputs, for the AP over all scenes
        evaluators["lgs"].add_scene(*per_voxel)
        medians = {name: statistics.median(values) for name, values in times.items()}
        rows.append((scene_id, len(coord), len(voxels), len(proposals), int(len(np.unique(voxel_instance)) - 1),
                     medians))
        print(scene_id, len(coord), "vertices", len(voxels), "voxels", len(proposals), "proposals",
              {k: round(v, 3) for k, v in medians.items()}, flush=True)
    names = list(rows[0][5])
    lines = ["# Instance clustering and AP evaluation per scene (CPU)", "",
             f"`python bench/instance_eval.py --scenes {args.scenes} --repeat {args.repeat} --spacing {args.spacing} "
             f"--offset-noise {args.offset_noise}{' --all-pairs' if args.all_pairs else ''}`: demo rooms at {args.spacing} m vertex spacing (real ScanNet scenes "
             f"hold ~150k vertices), {VOXEL_SIZE * 100:g} cm voxels, outputs made from the ground truth (logit +3 on "
             f"the true class, N(0, 0.5) noise; offsets + N(0, {args.offset_noise} m)), the authors' clustering "
             "(radius 1.5 voxels, 50 / 100 voxels). Seconds per scene, median of the repeats; one process, "
             "2-core machine; total = the evaluation's steps (without the all-pairs timing).", "",
             "| scene | vertices | voxels | GT instances | proposals | " + " | ".join(names) + " | total |",
             "|---" * (6 + len(names)) + "|"]
    for scene_id, vertices, voxels, proposals, instances, medians in rows:
        lines.append(f"| {scene_id} | {vertices} | {voxels} | {instances} | {proposals} | "
                     + " | ".join(f"{medians[n]:.3f}" for n in names)
                     + f" | {sum(v for n, v in medians.items() if not n.startswith('all pairs')):.3f} |")
    results = {p: e.results() for p, e in evaluators.items()}
    lines += ["", "AP over these scenes (a check that the clustering finds the instances, not a model's score): "
              + "; ".join(f"{p}: AP {r['ap']:.3f}, AP50 {r['ap50']:.3f}, AP25 {r['ap25']:.3f}"
                          for p, r in results.items()), ""]
    write_text(args.out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
