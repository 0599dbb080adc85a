"""Training objectives, one registered class each: what a run optimises and what it needs.

`OBJECTIVES` maps the names used in the config (`pretraining.<name>.method`, `experiments.<name>.loss`) to classes.
Each class declares, as class attributes, the data products it needs (`needs`), the config keys whose values change
its weights (`reads`, part of the run's identity), the network it trains (`model_args`), and whether its outputs
become class scores (`monitor`: the validation metric that picks `best.pt`; None keeps the last checkpoint), and
whether it learns from labels (`uses_labels`; a label-free pre-training is not repeated per annotation ratio). An
instance computes the loss over a batch from the network's outputs (both dicts) as a sum and the number it is
averaged over, so DDP can take the global mean.

The run specification reads the declarations when the workflow builds its DAG, without torch: torch and the loss
functions are imported inside the methods. Adding an objective = one class here and its loss module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from lgseg.errors import ConfigError
from lgseg.scannet.labels import scannet200

PRETRAINING, FINETUNING = "pretraining", "experiment"


class Objective(ABC):
    """Base class. `settings` maps each key of `reads` to its value; `files` maps each need to its file."""

    name: ClassVar[str]
    stage: ClassVar[str]  # PRETRAINING (a `pretraining.<name>.method`) or FINETUNING (an `experiments.<name>.loss`)
    needs: ClassVar[tuple[str, ...]] = ()  # data products: "anchors" (text anchors), "class_stats"
    reads: ClassVar[tuple[str, ...]] = ()  # dotted config keys
    monitor: ClassVar[str | None] = "val/miou"
    uses_labels: ClassVar[bool] = True  # False: the limited-annotation study shares one run across ratios

    def __init__(self, settings: dict, files: dict[str, Path], device):
        self.settings, self.files, self.device = settings, files, device

    @abstractmethod
    def model_args(self, init_args: dict | None) -> dict:
        """Arguments of the network (`num_classes`, `feature_dim`); `init_args` are those of the checkpoint it
        starts from (None: from scratch)."""

    def start_epoch(self, seed: int, epoch: int) -> None:
        """Called before each epoch (objectives that sample draw from a generator seeded here)."""

    @abstractmethod
    def loss(self, outputs: dict, batch: dict):
        """(sum of the per-point losses, the number it is averaged over), both tensors."""

    def scores(self, outputs: dict):
        """Class scores per voxel [N, 200] for monitoring and evaluation."""
        return outputs["features"]

    def batch_metrics(self, outputs: dict, batch: dict, scores) -> dict:
        """Extra train metrics as name -> (sum, count), logged per epoch as train/<name>; `scores` are the class
        scores of the labelled voxels (`scores` of their outputs), or None."""
        return {}


class _ClassHead(Objective):
    """Fine-tuning: a linear 200-class head on the features of the network it starts from."""

    stage = FINETUNING

    def model_args(self, init_args):
        return {"num_classes": scannet200().num_classes, "feature_dim": (init_args or {}).get("feature_dim")}


class CrossEntropy(_ClassHead):
    """Cross-entropy over the labelled voxels (Scratch, CLIP only, ...)."""

    name = "cross_entropy"

    def loss(self, outputs, batch):
        import torch

        labels = batch["labels"]
        total = torch.nn.functional.cross_entropy(outputs["features"].float(), labels, ignore_index=-1,
                                                  reduction="sum")
        return total, (labels >= 0).sum()


class ClassBalancedFocal(_ClassHead):
    """C-Focal: class-balanced focal loss, α from the train split's class statistics (docs/method.md §3)."""

    name = "focal"
    needs = ("class_stats",)
    reads = ("losses.focal",)

    def __init__(self, settings, files, device):
        super().__init__(settings, files, device)
        import pandas as pd

        from lgseg.train import losses

        focal = settings["losses.focal"]
        self.gamma = focal["gamma"]
        self.alpha = losses.alpha_from_class_stats(pd.read_csv(files["class_stats"]), formula=focal["alpha"],
                                                   normalization=focal["alpha_normalization"]).to(device)

    def loss(self, outputs, batch):
        from lgseg.train import losses

        labels = batch["labels"]
        labelled = (labels >= 0).sum()
        return losses.focal_loss(outputs["features"], labels, self.alpha, gamma=self.gamma) * labelled, labelled


class LanguageContrastive(Objective):
    """The paper's language-grounded pre-training: features pulled to their class's text anchor, pushed from
    sampled other anchors (docs/method.md §2). Output width = anchor width; monitored by nearest-anchor mIoU."""

    name = "language"
    stage = PRETRAINING
    needs = ("anchors",)
    reads = ("losses.contrastive",)

    def __init__(self, settings, files, device):
        super().__init__(settings, files, device)
        import torch

        from lgseg.text.anchors import load_text_anchors

        self.anchors = torch.from_numpy(load_text_anchors(files["anchors"]).embeddings).to(device)
        self.generator = torch.Generator(device=device)

    def model_args(self, init_args):
        return {"num_classes": None, "feature_dim": int(self.anchors.shape[1])}

    def start_epoch(self, seed, epoch):
        """Negatives come from a generator seeded per (seed, epoch, rank): a resumed run draws the same ones."""
        from lgseg.train import distributed

        self.generator.manual_seed(seed * 1_000_003 + epoch * 1_009 + distributed.rank())

    def loss(self, outputs, batch):
        import torch

        from lgseg.train import losses

        c, labels = self.settings["losses.contrastive"], batch["labels"]
        per_point = losses.language_contrastive_loss(
            outputs["features"], labels, self.anchors, pos_threshold=c["pos_threshold"],
            neg_threshold=c["neg_threshold"], neg_weight=c["neg_weight"], num_negatives=c["num_negatives"],
            generator=self.generator, reduction="none")
        count = torch.tensor(labels.numel(), device=labels.device) if c["reduction"] == "mean_all" \
            else (labels >= 0).sum()
        return per_point.sum(), count

    def scores(self, outputs):
        from lgseg.train import losses

        return losses.cosine_to_anchors(outputs["features"], self.anchors)

    def batch_metrics(self, outputs, batch, scores):
        labels = batch["labels"]
        labelled = int((labels >= 0).sum())
        if not labelled:
            return {}
        cosine = float(scores.gather(1, labels[labels >= 0][:, None]).mean())  # scores are cosines to the anchors
        return {"positive_cosine": (cosine * labelled, labelled)}


OBJECTIVES: dict[str, type[Objective]] = {cls.name: cls for cls in (CrossEntropy, ClassBalancedFocal,
                                                                     LanguageContrastive)}


def objective_class(name: str, stage: str, key: str) -> type[Objective]:
    """The registered objective `name` for `stage`; `key` (the config key that named it) goes into the error."""
    cls = OBJECTIVES.get(name)
    if cls is None or cls.stage != stage:
        choices = ", ".join(n for n, c in OBJECTIVES.items() if c.stage == stage)
        raise ConfigError(f"config key '{key}': {name!r} is not a registered objective here; choose one of {choices}")
    return cls
