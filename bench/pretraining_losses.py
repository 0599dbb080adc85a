"""Pre-training loss speed of this tree against an earlier commit's, side by side in one run.

Times forward + backward of the language-contrastive loss and of SupCon (draws included) on the labels of real demo
train batches (the configured experiment 'scratch', all augmentations, as bench/training_step.py collates them) and
features of the anchors' width drawn at random (the network before the loss is the same code in both versions, timed
by bench/training_step.py). Each code version runs in its own process (1 compute thread by default, as the workflow's
training jobs), and the versions take turns over several rounds; the ratio is taken batch by batch. The earlier
version's `src/` comes from git (`git archive`). Needs a processed store (run the demo workflow first).

    python bench/pretraining_losses.py --baseline a5ba55c [--rounds 3] [--batches 6] [--threads 1]
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from datetime import datetime
from pathlib import Path

from training_step import comparison_arguments, take_turns

ANCHOR_WIDTH = 384  # MiniLM's, the demo's text encoder
LOSSES = ("language", "supcon")


def worker(batches_file: str) -> None:
    """Time both losses on every batch with whatever `lgseg` is on the path; prints one JSON line."""
    import torch

    from lgseg.train import baseline_losses, losses

    batches = torch.load(batches_file)["batches"]
    generator = torch.Generator().manual_seed(0)
    anchors = torch.randn(200, ANCHOR_WIDTH, generator=generator)
    confusion = torch.randint(1, 50, (200, 200), generator=generator)

    def language(features, labels):
        return losses.language_contrastive_loss(features, labels, anchors, generator=generator, reduction="none")

    def supcon(features, labels):
        labelled = labels >= 0
        positives, negatives = baseline_losses.sample_supcon(labels[labelled], confusion, 5, 5, generator)
        return baseline_losses.supcon_loss(features[labelled], positives, negatives)

    times = {name: [] for name in LOSSES}
    for batch in batches[:1] + batches:  # the first batch once more before, as a warm-up not counted
        labels = batch["labels"]
        for name, loss in zip(LOSSES, (language, supcon)):
            features = torch.randn(len(labels), ANCHOR_WIDTH, generator=generator, requires_grad=True)
            start = time.perf_counter()
            loss(features, labels).sum().backward()
            times[name].append(time.perf_counter() - start)
    print(json.dumps({name: values[1:] for name, values in times.items()}))


def main() -> None:
    args = comparison_arguments(__doc__, "a5ba55c", 6, "pretraining_losses.md")
    if args.worker:
        worker(args.worker)
        return
    baseline, voxels, rounds = take_turns(args, lambda result: "median " + ", ".join(
        f"{loss} {statistics.median(result[loss]):.3f} s" for loss in LOSSES))
    base_name = f"{baseline} (baseline)"
    rows, summary = [], []
    for loss in LOSSES:
        # per batch the median over rounds; the ratio batch by batch, so that batch sizes and busier rounds weigh alike
        per_batch = {name: [statistics.median(times) for times in zip(*(run[loss] for run in runs))]
                     for name, runs in rounds.items()}
        ratios = [ours / base for ours, base in zip(per_batch["this tree"], per_batch[base_name])]
        ratio = statistics.median(ratios)
        rows += [f"| {loss} | {name} | {statistics.median(times):.3f} | {min(times):.3f} – {max(times):.3f} |"
                 for name, times in per_batch.items()]
        summary.append(f"- {loss}: this tree / baseline time, batch by batch: median **{ratio:.2f}** "
                       f"(range {min(ratios):.2f} – {max(ratios):.2f}); {1 / ratio:.2f}x as fast")
    command = (f"python bench/pretraining_losses.py --baseline {args.baseline} --rounds {args.rounds} "
               f"--batches {args.batches} --threads {args.threads}")
    newline = "\n"
    text = f"""# Pre-training losses: this tree against {baseline}

Date: {datetime.now().isoformat(timespec="seconds")}  
Machine: {platform.machine()}, {os.cpu_count()} cores, {args.threads} compute thread(s)  
Command: `{command}`

The labels of {args.batches} demo train batches ({voxels / args.batches:,.0f} voxels each on average), random
{ANCHOR_WIDTH}-d features and 200 random anchors; forward + backward of the language-contrastive loss (3 negatives)
and of SupCon (5 positives, 5 confusion-weighted negatives, draws included); each version in its own process,
taking turns over {args.rounds} rounds. Per batch the median over the rounds:

| loss | code | s / batch (median over batches) | fastest – slowest batch |
|---|---|---|---|
{newline.join(rows)}

{newline.join(summary)}
"""
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
