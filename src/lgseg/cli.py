"""`python -m lgseg <command>`: the one command-line interface every Snakemake rule and DVC stage calls."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lgseg.errors import ConfigError, DataError


def _demo_scenes(args) -> None:
    from lgseg.scannet.demo import DemoSettings, write_demo_dataset

    settings = DemoSettings(seed=args.seed, num_train=args.train, num_val=args.val, num_test=args.test,
                            vertex_spacing=args.vertex_spacing,
                            objects_per_room=(args.min_objects, args.max_objects))
    write_demo_dataset(args.out, settings, workers=args.workers)


def _check_raw(args) -> None:
    from lgseg.scannet.raw_check import check_raw_dir

    check_raw_dir(args.raw_dir, args.scenes, args.label_map, args.out)


def _download(args) -> None:
    from lgseg.scannet.download import download
    from lgseg.scannet.splits import official_scene_lists

    scenes = args.scenes or [s for split in args.splits for s in official_scene_lists()[split]]
    download(args.base_url, args.out, scenes, accept_tos=args.accept_tos, extra_types=args.extra_types,
             workers=args.workers, retries=args.retries, backoff=args.backoff, manifest=args.manifest)


def _label_map(args) -> None:
    from lgseg.scannet.labels import write_label_map

    write_label_map(args.label_map, args.out)


def _preprocess(args) -> None:
    from lgseg.data.preprocess import preprocess

    preprocess(args.raw_dir, args.out, scenes=args.scenes, label_map=args.label_map, workers=args.workers,
               manifest=args.manifest)


def _splits(args) -> None:
    from lgseg.data.splits import write_split_lists

    write_split_lists(args.manifests, args.out_dir)


def _annotation_masks(args) -> None:
    from lgseg.data.annotation_masks import write_annotation_masks
    from lgseg.data.store import scene_folders
    from lgseg.scannet.splits import read_scene_list

    folders = scene_folders(args.processed, "train", read_scene_list(args.train_list))
    write_annotation_masks(folders, args.ratio, args.out, min_points=args.min_points, workers=args.workers)


def _class_stats(args) -> None:
    from lgseg.data.class_stats import class_statistics, write_class_statistics
    from lgseg.data.store import scene_folders
    from lgseg.scannet.splits import read_scene_list

    folders = scene_folders(args.processed, "train", read_scene_list(args.train_list))
    write_class_statistics(class_statistics(folders), args.out)


def _instance_bank(args) -> None:
    from lgseg.data.instance_bank import build_instance_bank, write_instance_bank
    from lgseg.data.store import scene_folders
    from lgseg.scannet.splits import read_scene_list

    folders = scene_folders(args.processed, "train", read_scene_list(args.train_list))
    bank = build_instance_bank(folders, args.stats, groups=args.groups, power=args.power,
                               annotation_masks=args.annotation_masks, workers=args.workers)
    write_instance_bank(bank, args.out)


def _plot_instance_sampling(args) -> None:
    import numpy as np

    from lgseg.data.instance_bank import read_instance_bank
    from lgseg.data.instance_sampling import place_instances
    from lgseg.data.store import read_scene, scene_dir
    from lgseg.report.figures import plot_instance_sampling
    from lgseg.scannet.labels import scannet200

    folder = scene_dir(args.processed, args.split, args.scene)
    arrays = read_scene(folder, mmap=False)
    if "instance" not in arrays:
        raise DataError(folder, "scene has no labels", "pick a train or val scene")
    after, placements = place_instances(arrays, read_instance_bank(args.bank), np.random.default_rng(args.seed),
                                        args.count, args.max_tries)
    for placed in placements:
        print(f"placed {scannet200().class_names[placed.class_index]} (bank instance {placed.bank_index}) "
              f"at x {placed.box_min[0]:.2f}..{placed.box_max[0]:.2f}, y {placed.box_min[1]:.2f}.."
              f"{placed.box_max[1]:.2f}, z {placed.box_min[2]:.2f}")
    plot_instance_sampling(arrays, after, placements, args.out, title=args.title)


def _plot_class_stats(args) -> None:
    import pandas as pd

    from lgseg.report.figures import plot_class_distribution

    plot_class_distribution(pd.read_csv(args.stats), args.out, title=args.title)


def _text_anchors(args) -> None:
    from lgseg.text.anchors import build_text_anchors, load_text_anchors, plot_similarity, report
    from lgseg.text.encoders import make_encoder

    encoder = make_encoder(args.encoder, args.checkpoint, quick_gelu=args.quick_gelu)
    build_text_anchors(encoder, args.out, template=args.template)
    if args.report:
        anchors = load_text_anchors(args.out)
        print(report(anchors))
        plot_similarity(anchors, args.report)


def _run_spec(args):
    """The run an evaluate/train/export command works on: --spec FILE, or --config FILES with --experiment or
    --pretraining."""
    from lgseg.runs import RunSpec, resolve_run

    if args.spec:
        return RunSpec.from_file(args.spec)
    name = args.experiment or getattr(args, "pretraining", None)
    if not args.config or not name:
        raise ConfigError("name the run: --spec FILE (written by the run_spec rule), or --config FILE [FILE ...] "
                          "with --experiment NAME" + (" or --pretraining NAME" if hasattr(args, "pretraining") else ""))
    from lgseg.config import load_config

    kind = "experiment" if args.experiment else "pretraining"
    return resolve_run(load_config(args.config), kind, name)


def _write_run_spec(args) -> None:
    from lgseg.fileio import write_text

    write_text(args.out, _run_spec(args).to_json() + "\n")


def _train(args) -> None:
    from lgseg.fileio import write_json
    from lgseg.train.distributed import is_main
    from lgseg.train.engine import train

    spec = _run_spec(args)
    summary = train(spec, args.run_dir, fresh=args.resume == "never")
    if args.summary and is_main():
        write_json(args.summary, summary)


def _run_model(args, spec, split: str, instance_targets: bool = False):
    """The run's best model and a dataset of `split` (no augmentation; with instance targets if asked)."""
    from lgseg.paths import BEST
    from lgseg.train.engine import device_for_training, load_network, split_dataset

    path = Path(args.checkpoint) if args.checkpoint else Path(args.run_dir or spec.run_dir) / BEST
    device = device_for_training()
    model = load_network(spec, path, device)
    if model.final is None:
        raise DataError(path, "is a pre-training checkpoint (features, no class head)",
                        "evaluate a fine-tuned run (an experiment) instead")
    return model, split_dataset(spec, split, instance_targets=instance_targets), device


def _needs_offset_head(args, spec, model) -> None:
    """Instances need a network with an offset head: one of our instance runs (the authors' checkpoints load as
    semantic networks)."""
    if model.offset is None:
        from lgseg.paths import BEST

        raise DataError(args.checkpoint or Path(args.run_dir or spec.run_dir) / BEST, "has no offset head, so it "
                        "predicts no instances", "use the best.pt of an instance run (an experiment with loss "
                        "instance or instance_focal)")


def _evaluate(args) -> None:
    from lgseg.evaluate.tasks import TASKS
    from lgseg.fileio import write_json
    from lgseg.train.objectives import OBJECTIVES

    spec = _run_spec(args)
    task = OBJECTIVES[spec.objective].task
    model, dataset, device = _run_model(args, spec, args.split, instance_targets=task == "instance")
    if task == "instance":
        _needs_offset_head(args, spec, model)
    metrics = TASKS[task](model, dataset, device, spec.options["workers"], spec.options,
                          desc=f"evaluate {args.split}")
    write_json(args.out, {"info": {"run": spec.key, "run_dir": str(args.run_dir or spec.run_dir), "split": args.split,
                                   "task": task}, **metrics})


def _export_benchmark(args) -> None:
    from lgseg.evaluate import benchmark_format
    from lgseg.evaluate.clustering import ClusteringSettings
    from lgseg.evaluate.inference import scene_outputs, semantic_predictions
    from lgseg.evaluate.tasks import scene_proposals, vertex_proposals

    spec = _run_spec(args)
    model, dataset, device = _run_model(args, spec, args.split)
    if args.task == "instance":
        _needs_offset_head(args, spec, model)
        settings = ClusteringSettings.of(spec.options["evaluation"]["instance_clustering"])
    for batch, outputs in scene_outputs(model, dataset, device, spec.options["workers"], desc="export"):
        scene_id = batch["scene_ids"][0]
        if args.task == "semantic":
            benchmark_format.export_predictions(args.out, scene_id, semantic_predictions(batch, outputs["features"])[4])
            continue
        proposals = scene_proposals(batch, outputs, dataset.voxel_size, settings)
        benchmark_format.export_instance_predictions(
            args.out, scene_id, vertex_proposals(proposals, batch["inverse"][0].numpy(), batch["voxel_counts"][0]),
            len(batch["inverse"][0]))


def _evaluate_benchmark(args) -> None:
    from lgseg.evaluate import benchmark_format
    from lgseg.fileio import write_json

    if args.task == "semantic":
        result = benchmark_format.evaluate_benchmark(args.pred, args.gt)
        print(benchmark_format.format_benchmark_result(result))
    else:
        result = benchmark_format.evaluate_instance_benchmark(args.pred, args.gt)
        print(benchmark_format.format_instance_result(result))
    if args.out:
        write_json(args.out, result)


def _benchmark_ground_truth(args) -> None:
    from lgseg.evaluate import benchmark_format
    from lgseg.data.store import read_scene, scene_folders
    from lgseg.paths import split_list
    from lgseg.scannet.splits import read_scene_list

    folders = scene_folders(args.processed, args.split, read_scene_list(split_list(args.processed, args.split)))
    for folder in folders:
        arrays = read_scene(folder)
        if "segment" not in arrays or "instance" not in arrays:
            raise DataError(folder, "has no labels (segment.npy, instance.npy)",
                            "write ground truth of a labelled split (train or val); re-run the preprocess rule if "
                            "a labelled scene lacks them")
        if args.task == "semantic":
            benchmark_format.export_ground_truth(args.out, folder.name, arrays["segment"])
        else:
            benchmark_format.export_instance_ground_truth(args.out, folder.name, arrays["segment"], arrays["instance"])
    print(f"wrote {args.task} ground truth of {len(folders)} {args.split} scenes to {args.out}")


def _table(args) -> None:
    from lgseg.report import tables

    runs = dict(item.split("=", 1) for item in args.runs)
    getattr(tables, f"write_{args.command}")(runs, args.out, args.markdown, args.dataset)


def _table3(args) -> None:
    from lgseg.report.tables import write_table3
    from lgseg.runs import RunSpec

    specs = [(label, RunSpec.from_file(spec).settings, metrics) for label, spec, metrics in args.runs]
    runs = [(label, settings["model"]["variant"], settings["train"]["epochs"], metrics)
            for label, settings, metrics in specs]
    write_table3(runs, args.out, args.markdown, args.dataset)


def _text_encoder_ablation(args) -> None:
    from lgseg.report.tables import write_text_encoder_ablation
    from lgseg.runs import RunSpec

    runs = []
    for label, spec_path, metrics in args.runs:
        spec = RunSpec.from_file(spec_path)
        if "losses.contrastive" not in spec.settings:
            raise DataError(spec_path, f"is not a language pre-training (row {label!r})",
                            "list fine-tunings of language pre-trainings in reports.text_encoder_ablation")
        runs.append((label, spec.files["anchors"], spec.settings["losses.contrastive"]["distance"], metrics))
    write_text_encoder_ablation(runs, args.out, args.markdown, args.dataset)


def _limited_annotations(args) -> None:
    from lgseg.report.tables import write_limited_annotations

    runs = [(label, float(ratio), path) for label, ratio, path in args.study_runs]
    write_limited_annotations(runs, args.out, args.markdown, args.dataset)


def _plot_limited_annotations(args) -> None:
    import pandas as pd

    from lgseg.report.figures import plot_limited_annotations

    plot_limited_annotations(pd.read_csv(args.table), args.out, args.title)


def _plot_tsne(args) -> None:
    from lgseg.report.tsne import write_fig7
    from lgseg.runs import RunSpec

    runs = [(label, RunSpec.from_file(spec)) for label, spec in args.runs]
    for record in write_fig7(runs, args.classes, args.points_per_class, args.seed, args.pca_dims, args.perplexity,
                             args.out, args.title):
        print(f"{record['label']}: {record['points']} points, {record['dims']}-d after PCA, "
              f"kNN accuracy {100 * record['knn_accuracy']:.1f} %", file=sys.stderr)


def _plot_qualitative(args) -> None:
    from lgseg.report.qualitative import write_qualitative
    from lgseg.runs import RunSpec

    runs = [(label, RunSpec.from_file(spec)) for label, spec in args.runs]
    write_qualitative(runs, args.scenes, args.task, args.max_height, args.panel_width, args.out, args.title)


def _add_run_arguments(p: argparse.ArgumentParser, pretraining: bool) -> None:
    p.add_argument("--spec", help="run specification JSON (runs/<dataset>/specs/<kind>.<name>.json)")
    p.add_argument("--config", nargs="+", help="or: config files, merged in order (later ones win)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--experiment", help="with --config: a key of `experiments`")
    if pretraining:
        which.add_argument("--pretraining", help="with --config: a key of `pretraining`")
    p.add_argument("--run-dir", help="run folder (default: the run's, runs/<dataset>/<experiment> or "
                                     "runs/<dataset>/pretrain/<name>)")


def build_parser() -> argparse.ArgumentParser:
    from lgseg.scannet.demo import DemoSettings  # the demo's defaults

    parser = argparse.ArgumentParser(prog="python -m lgseg", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("demo-scenes", help="write the synthetic demo dataset in raw ScanNet format")
    p.add_argument("--out", required=True, help="raw folder to create (scans/, scans_test/, label tsv)")
    p.add_argument("--seed", type=int, default=DemoSettings.seed)
    p.add_argument("--train", type=int, default=DemoSettings.num_train, help="number of train rooms")
    p.add_argument("--val", type=int, default=DemoSettings.num_val, help="number of val rooms")
    p.add_argument("--test", type=int, default=DemoSettings.num_test, help="number of test rooms (no labels)")
    p.add_argument("--vertex-spacing", type=float, default=DemoSettings.vertex_spacing,
                   help="metres between mesh vertices")
    p.add_argument("--min-objects", type=int, default=DemoSettings.objects_per_room[0])
    p.add_argument("--max-objects", type=int, default=DemoSettings.objects_per_room[1])
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(run=_demo_scenes)

    p = commands.add_parser("check-raw", help="validate a local raw ScanNet copy and write a manifest")
    p.add_argument("--raw-dir", required=True)
    p.add_argument("--scenes", nargs="+", required=True)
    p.add_argument("--label-map", help="label tsv (default RAW/scannetv2-labels.combined.tsv)")
    p.add_argument("--out", required=True, help="manifest JSON to write")
    p.set_defaults(run=_check_raw)

    p = commands.add_parser("download", help="download the raw ScanNet files the pipeline needs (TOS-gated)")
    p.add_argument("--base-url", help="BASE_URL of the download script ScanNet sent you")
    p.add_argument("--out", required=True, help="raw folder to fill (scans/, scans_test/, label tsv)")
    p.add_argument("--accept-tos", action="store_true", help="confirm you have accepted the ScanNet Terms of Use")
    p.add_argument("--scenes", nargs="+", help="scene ids (default: every scene of --splits)")
    p.add_argument("--splits", nargs="+", default=["train", "val", "test"], choices=["train", "val", "test"])
    p.add_argument("--extra-types", nargs="*", default=[], help="more file suffixes, e.g. _vh_clean_2.labels.ply")
    p.add_argument("--workers", type=int, default=4, help="parallel downloads")
    p.add_argument("--retries", type=int, default=5, help="retries per file on transient errors")
    p.add_argument("--backoff", type=float, default=1.0, help="seconds before the first retry (doubles each time)")
    p.add_argument("--manifest", help="JSON listing the files (written only when every file is present)")
    p.set_defaults(run=_download)

    p = commands.add_parser("label-map", help="write the raw_category -> id -> class index table")
    p.add_argument("--label-map", required=True, help="ScanNet scannetv2-labels.combined.tsv")
    p.add_argument("--out", required=True, help="tsv to write")
    p.set_defaults(run=_label_map)

    p = commands.add_parser("preprocess", help="raw scenes -> processed store OUT/<split>/<scene>/*.npy")
    p.add_argument("--raw-dir", required=True, help="ScanNet folder with scans/ and scans_test/")
    p.add_argument("--out", required=True, help="processed store root")
    p.add_argument("--scenes", nargs="+", help="scene ids (default: every scene folder found)")
    p.add_argument("--label-map", help="label tsv (default RAW/scannetv2-labels.combined.tsv)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--manifest", help="JSON listing the scenes written (for the workflow)")
    p.set_defaults(run=_preprocess)

    p = commands.add_parser("splits", help="write train/val/test scene lists of the processed scenes")
    p.add_argument("--manifests", nargs="+", required=True)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(run=_splits)

    p = commands.add_parser("annotation-masks", help="limited-annotation vertex indices for one ratio (FPS)")
    p.add_argument("--processed", required=True, help="processed store root")
    p.add_argument("--train-list", required=True, help="train scene list")
    p.add_argument("--ratio", type=float, required=True)
    p.add_argument("--min-points", type=int, default=5)
    p.add_argument("--out", required=True, help=".npz to write (scene id -> kept vertex indices)")
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(run=_annotation_masks)

    p = commands.add_parser("class-stats", help="instances and labelled vertices per class over train scenes")
    p.add_argument("--processed", required=True)
    p.add_argument("--train-list", required=True)
    p.add_argument("--out", required=True, help="csv to write")
    p.set_defaults(run=_class_stats)

    p = commands.add_parser("text-anchors", help="cache the class-name embeddings of a text encoder (.npz)")
    p.add_argument("--encoder", required=True, help="clip-vit-b32 (the paper) | minilm-l6 | tiny-clip-random")
    p.add_argument("--checkpoint", help="local weights file (clip-vit-b32 only)")
    p.add_argument("--quick-gelu", action=argparse.BooleanOptionalAction, default=True,
                   help="QuickGELU activations, as OpenAI's CLIP weights need (default on)")
    p.add_argument("--template", default="{}", help="prompt template; {} = class name (default: the bare name)")
    p.add_argument("--out", required=True, help=".npz to write; left alone when it holds the same inputs")
    p.add_argument("--report", metavar="PNG", help="also print nearest classes and draw the similarity heat map")
    p.set_defaults(run=_text_anchors)

    p = commands.add_parser("run-spec", help="write the resolved specification of one run (what the run_spec "
                                             "rule writes and train/evaluate read)")
    _add_run_arguments(p, pretraining=True)
    p.add_argument("--out", required=True, help="JSON to write")
    p.set_defaults(run=_write_run_spec)

    p = commands.add_parser("train", help="train one experiment or pre-training (resumable; same identity: reused; "
                                          "DDP under torchrun)")
    _add_run_arguments(p, pretraining=True)
    p.add_argument("--resume", choices=["auto", "never"], default="auto",
                   help="auto: reuse or continue RUN_DIR when it holds this run's identity; never: start over")
    p.add_argument("--summary", help="JSON written when training has finished")
    p.set_defaults(run=_train)

    for name, helptext in (("evaluate", "metrics of a run's best checkpoint (both protocols; an instance run: "
                                        "also AP of its clustered instances)"),
                           ("export-benchmark", "write ScanNet200 benchmark files (semantic: <scene>.txt, raw id per "
                                                "vertex; instance: <scene>.txt + pred_mask/)")):
        p = commands.add_parser(name, help=helptext)
        _add_run_arguments(p, pretraining=False)
        p.add_argument("--split", default="val" if name == "evaluate" else "test")
        p.add_argument("--out", required=True, help="metrics.json" if name == "evaluate" else "output folder")
        p.add_argument("--checkpoint", metavar="FILE", help="use this checkpoint instead of the run's best.pt: one "
                       "of ours, or the authors' (LGS .ckpt, CSC .pth) of the run's model.variant")
        if name == "export-benchmark":
            p.add_argument("--task", choices=["semantic", "instance"], default="semantic",
                           help="instance: needs an instance run (loss instance / instance_focal)")
        p.set_defaults(run=_evaluate if name == "evaluate" else _export_benchmark)

    p = commands.add_parser("evaluate-benchmark", help="evaluate benchmark files as ScanNet's official scripts do")
    p.add_argument("--task", choices=["semantic", "instance"], default="semantic")
    p.add_argument("--pred", required=True, help="folder of predicted <scene>.txt (instance: and their pred_mask/)")
    p.add_argument("--gt", required=True, help="folder of ground-truth <scene>.txt (semantic: raw ids, 0 = "
                                               "unannotated; instance: raw id * 1000 + instance id)")
    p.add_argument("--out", help="JSON to write")
    p.set_defaults(run=_evaluate_benchmark)

    p = commands.add_parser("benchmark-ground-truth", help="write benchmark-format ground truth of a labelled split "
                                                           "from the processed store")
    p.add_argument("--processed", required=True, help="processed store root (data/processed/<dataset>)")
    p.add_argument("--split", default="val", choices=["train", "val"])
    p.add_argument("--task", choices=["semantic", "instance"], default="semantic")
    p.add_argument("--out", required=True, help="folder to write <scene>.txt into")
    p.set_defaults(run=_benchmark_ground_truth)

    for name, runs in (("table1", "runs'"), ("table2", "instance runs'")):
        p = commands.add_parser(name, help=f"results/{name}.csv and .md from {runs} metrics.json")
        p.add_argument("--runs", nargs="+", required=True, help="LABEL=path/to/metrics.json, one per method")
        p.add_argument("--out", required=True, help="csv to write")
        p.add_argument("--markdown", required=True, help="markdown to write (ours beside the paper)")
        p.add_argument("--dataset", required=True)
        p.set_defaults(run=_table)

    spec_tables = (
        ("table3", "results/table3.csv and .md: the smaller backbone (supplement's Table 3)", "SPEC",
         "one row: label, the experiment's run specification JSON (its backbone), its metrics.json", _table3),
        ("text-encoder-ablation", "results/text_encoder_ablation.csv and .md: text encoders and distances (CLIP "
         "only)", "PRETRAINING_SPEC", "one row: label, the run specification JSON of the language pre-training it "
         "starts from (its anchors and distance), the fine-tuning's metrics.json", _text_encoder_ablation))
    for name, about, spec, row, command in spec_tables:
        p = commands.add_parser(name, help=about)
        p.add_argument("--run", dest="runs", nargs=3, action="append", required=True,
                       metavar=("LABEL", spec, "METRICS"), help=f"{row} (repeat; rows in order)")
        p.add_argument("--out", required=True, help="csv to write")
        p.add_argument("--markdown", required=True, help="markdown to write (ours beside the paper's numbers)")
        p.add_argument("--dataset", required=True)
        p.set_defaults(run=command)

    p = commands.add_parser("limited-annotations",
                            help="results/limited_annotations.csv and .md from the study's metrics.json files")
    p.add_argument("--run", nargs=3, action="append", required=True, dest="study_runs",
                   metavar=("LABEL", "RATIO", "METRICS"),
                   help="one run of the study: method label, annotated fraction, its metrics.json (repeat)")
    p.add_argument("--out", required=True, help="csv to write")
    p.add_argument("--markdown", required=True, help="markdown to write")
    p.add_argument("--dataset", required=True)
    p.set_defaults(run=_limited_annotations)

    p = commands.add_parser("plot-limited-annotations", help="Fig. 5 from results/limited_annotations.csv")
    p.add_argument("--table", required=True, help="csv from limited-annotations")
    p.add_argument("--out", required=True, help="png to write")
    p.add_argument("--title", default="")
    p.set_defaults(run=_plot_limited_annotations)

    p = commands.add_parser("plot-qualitative", help="Figs. 6 / 8: renders of val scenes, ground truth and predictions")
    p.add_argument("--task", required=True, choices=["semantic", "instance"], help="Fig. 6: semantic; Fig. 8: instance")
    p.add_argument("--run", dest="runs", nargs=2, action="append", required=True, metavar=("LABEL", "SPEC"),
                   help="column label and the experiment's run specification JSON (repeat; columns in order)")
    p.add_argument("--scenes", nargs="+", required=True, help="val scene ids, two rows (top, oblique) each")
    p.add_argument("--max-height", type=float, required=True, help="metres above the lowest vertex that are drawn")
    p.add_argument("--panel-width", type=int, required=True, help="pixels per panel side")
    p.add_argument("--out", required=True, help="png to write")
    p.add_argument("--title", default="")
    p.set_defaults(run=_plot_qualitative)

    p = commands.add_parser("plot-tsne", help="Fig. 7: t-SNE of pre-trained features on a class-balanced val sample")
    p.add_argument("--run", dest="runs", nargs=2, action="append", required=True, metavar=("LABEL", "SPEC"),
                   help="panel label and the pre-training's run specification JSON (repeat; panels in order)")
    p.add_argument("--classes", nargs="+", required=True, help="ScanNet200 class names to sample")
    p.add_argument("--points-per-class", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--pca-dims", type=int, required=True)
    p.add_argument("--perplexity", type=float, required=True)
    p.add_argument("--out", required=True, help="png to write")
    p.add_argument("--title", default="")
    p.set_defaults(run=_plot_tsne)

    p = commands.add_parser("instance-bank", help="tail-class instances of the train scenes + sampling weights (.npz)")
    p.add_argument("--processed", required=True, help="processed store root")
    p.add_argument("--train-list", required=True, help="train scene list")
    p.add_argument("--stats", required=True, help="csv from class-stats over the same train list")
    p.add_argument("--groups", nargs="+", default=["tail"], choices=["head", "common", "tail"],
                   help="frequency groups whose instances are sampled (default tail)")
    p.add_argument("--power", type=float, default=1.0,
                   help="class weight = instances ** -power (1: inverse instance count, 0: uniform)")
    p.add_argument("--annotation-masks", help="limited-annotation .npz: other instance points stay unlabelled")
    p.add_argument("--out", required=True, help=".npz to write")
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(run=_instance_bank)

    p = commands.add_parser("plot-instance-sampling", help="top view of one scene before/after instance sampling")
    p.add_argument("--processed", required=True, help="processed store root")
    p.add_argument("--bank", required=True, help=".npz from instance-bank")
    p.add_argument("--scene", required=True, help="scene id")
    p.add_argument("--split", default="train")
    p.add_argument("--count", type=int, default=5, help="instances to place")
    p.add_argument("--max-tries", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--title", default="")
    p.add_argument("--out", required=True, help="png to write")
    p.set_defaults(run=_plot_instance_sampling)

    p = commands.add_parser("plot-class-stats", help="Fig. 4: class distribution (log scale, head/common/tail)")
    p.add_argument("--stats", required=True, help="csv from class-stats")
    p.add_argument("--out", required=True, help="png to write")
    p.add_argument("--title", default="")
    p.set_defaults(run=_plot_class_stats)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args.run(args)
    except (DataError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a full disk outside lgseg.fileio, permissions, ...: name the file, no traceback
        print(f"error: {err.filename or 'a file'}: {err.strerror or err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
