"""Training objectives, one registered class each: what a run optimises and what it needs.

`OBJECTIVES` maps the names used in the config (`pretraining.<name>.method`, `experiments.<name>.loss`) to classes.
Each class declares, as class attributes, the data products it needs (`needs`), the config keys whose values change
its weights (`reads`, part of the run's identity), the network it trains (`model_args`), and whether its outputs
become class scores (`monitor`: the validation metric that picks `best.pt`; None keeps the last checkpoint),
whether it learns from labels (`uses_labels`; a label-free pre-training is not repeated per annotation ratio), and
for fine-tunings the task it is evaluated on (`task`: "semantic" or "instance", whose items carry instance targets,
`instance_targets`) with the config keys that evaluation reads (`evaluation`: not identity). An
instance computes the loss over a batch from the network's outputs (both dicts) as a sum and the number it is
averaged over, so DDP can take the global mean. It may make its own training items from the augmented scenes
(`train_items`, `collate`; CSC's view pairs) and keep running state across steps (`observe`, `state`; SupCon's
confusion matrix), which the resumable checkpoint carries.

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
    task: ClassVar[str] = "semantic"  # what `evaluate` measures (lgseg.evaluate.tasks)
    instance_targets: ClassVar[bool] = False  # items carry instances and offsets (SceneDataset)
    evaluation: ClassVar[tuple[str, ...]] = ()  # dotted config keys the evaluation reads (options, not identity)

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
        """Class scores per voxel [N, 200] for monitoring and evaluation (None: the objective has none)."""
        return outputs["features"]

    def observe(self, outputs: dict, batch: dict, scores) -> dict:
        """After each optimiser step: update running state, return extra train metrics as name -> (sum, count),
        logged per epoch as train/<name>; `scores` are the class scores of the labelled voxels, or None."""
        return {}

    def train_items(self, scenes):
        """The training dataset made from the augmented scenes (a `SceneDataset`); default: the scenes."""
        return scenes

    def collate(self, items: list[dict]) -> dict:
        from lgseg.data.dataset import collate

        return collate(items)

    def state(self) -> dict:
        """Running state for the resumable checkpoint (tensors); restored with `load_state`."""
        return {}

    def load_state(self, state: dict) -> None:
        pass


class _ClassHead(Objective):
    """Fine-tuning: a linear 200-class head on the features of the network it starts from."""

    stage = FINETUNING

    def model_args(self, init_args):
        return {"num_classes": scannet200().num_classes, "feature_dim": (init_args or {}).get("feature_dim")}


class CrossEntropy(_ClassHead):
    """Cross-entropy over the labelled voxels (Scratch, CLIP only, ...)."""

    name = "cross_entropy"

    def semantic_loss(self, logits, labels):
        """Mean over the labelled voxels (0 when there is none)."""
        import torch

        total = torch.nn.functional.cross_entropy(logits.float(), labels, ignore_index=-1, reduction="sum")
        return total / (labels >= 0).sum().clamp(min=1)

    def loss(self, outputs, batch):
        labels = batch["labels"]
        labelled = (labels >= 0).sum()
        return self.semantic_loss(outputs["features"], labels) * labelled, labelled


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

    def semantic_loss(self, logits, labels):
        from lgseg.train import losses

        return losses.focal_loss(logits, labels, self.alpha, gamma=self.gamma)

    def loss(self, outputs, batch):
        labels = batch["labels"]
        labelled = (labels >= 0).sum()
        return self.semantic_loss(outputs["features"], labels) * labelled, labelled


class _InstanceHeads:
    """Instance segmentation (Table 2, docs/method.md §8), mixed into a class-head objective whose `semantic_loss`
    it keeps: a class head and an offset head on the same features; loss = semantic loss + mean L1 + mean negative
    cosine of the offsets, the last two over voxels with an instance. Each process averages its own batch and DDP
    averages the processes, as the authors' trainer. Evaluated by clustering (`instance_clustering`) and AP."""

    task = "instance"
    instance_targets = True
    evaluation = ("instance_clustering",)

    def model_args(self, init_args):
        return {**super().model_args(init_args), "offset_head": True}

    def loss(self, outputs, batch):
        import torch

        from lgseg.train import losses

        instance = batch["instance"].to(self.device)
        l1, direction = losses.offset_losses(outputs["offsets"], batch["offsets"].to(self.device), instance)
        self.offset_terms = (l1.detach(), direction.detach(), (instance >= 0).sum())  # logged by `observe`
        total = self.semantic_loss(outputs["features"], batch["labels"]) + l1 + direction
        return total, torch.ones((), device=total.device)

    def observe(self, outputs, batch, scores):
        l1, direction, count = (float(term) for term in self.offset_terms)
        return {"offset_l1": (l1 * count, count), "offset_direction": (direction * count, count)}


class InstanceSegmentation(_InstanceHeads, CrossEntropy):
    """Instance segmentation with a cross-entropy class head (Scratch, CSC, CLIP only of Table 2)."""

    name = "instance"


class InstanceSegmentationFocal(_InstanceHeads, ClassBalancedFocal):
    """Instance segmentation with the C-Focal class head (Ours of Table 2)."""

    name = "instance_focal"


class LanguageContrastive(Objective):
    """The paper's language-grounded pre-training: features pulled to their class's text anchor, pushed from
    sampled other anchors (docs/method.md §2) under the cosine, L2 or L1 distance (`losses.contrastive.distance`).
    Output width = anchor width; monitored by nearest-anchor mIoU under the same distance."""

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

    @property
    def distance(self) -> str:
        return self.settings["losses.contrastive"]["distance"]

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
            generator=self.generator, reduction="none", distance=c["distance"])
        count = torch.tensor(labels.numel(), device=labels.device) if c["reduction"] == "mean_all" \
            else (labels >= 0).sum()
        return per_point.sum(), count

    def scores(self, outputs):
        from lgseg.train import losses

        return losses.anchor_scores(outputs["features"], self.anchors, self.distance)

    def observe(self, outputs, batch, scores):
        from lgseg.train import losses

        labels = batch["labels"]
        labelled = int((labels >= 0).sum())
        if not labelled:
            return {}
        if self.distance == "cosine":  # the scores are the cosines to the anchors
            cosine = float(scores.gather(1, labels[labels >= 0][:, None]).mean())
        else:
            cosine = float(losses.positive_cosine(outputs["features"], labels, self.anchors))
        return {"positive_cosine": (cosine * labelled, labelled)}


class SupCon(LanguageContrastive):
    """The SupCon baseline as the authors coded it (docs/method.md §7): each labelled feature pulled to sampled
    points of its class and pushed from sampled points of confused classes of the minibatch (hinge on mean cosine
    distances). Negative classes follow the running confusion matrix of nearest-anchor predictions, counted over
    the epoch and refreshed every step (random at the start), as the authors' code; the text anchors serve only
    that and the monitor, and set the output width as in the language pre-training (no projection for 34D + CLIP)."""

    name = "supcon"
    reads = ("losses.supcon",)
    distance = "cosine"  # of the nearest-anchor predictions (the authors' default representation distance)

    def __init__(self, settings, files, device):
        super().__init__(settings, files, device)
        import torch

        classes = self.anchors.shape[0]
        self.epoch_confusion = torch.zeros((classes, classes), dtype=torch.long, device=device)
        self.confusion = None  # drawn at the first epoch (or restored from last.pt)

    def loss(self, outputs, batch):
        import torch

        from lgseg.train import baseline_losses

        c, labels = self.settings["losses.supcon"], batch["labels"]
        labelled = labels >= 0
        positives, negatives = baseline_losses.sample_supcon(
            labels[labelled], self.confusion, c["num_positives"], c["num_negatives"], self.generator,
            weights=c["negative_weights"])
        per_point = baseline_losses.supcon_loss(outputs["features"][labelled], positives, negatives,
                                                pos_threshold=c["pos_threshold"], neg_threshold=c["neg_threshold"],
                                                neg_weight=c["neg_weight"])
        count = torch.tensor(labels.numel(), device=labels.device) if c["reduction"] == "mean_all" \
            else labelled.sum()
        return per_point.sum(), count

    def start_epoch(self, seed, epoch):
        import torch

        super().start_epoch(seed, epoch)
        self.epoch_confusion.zero_()
        if self.confusion is None:
            classes = self.epoch_confusion.shape[0]
            start = torch.Generator().manual_seed(seed)
            self.confusion = torch.randint(0, classes, (classes, classes), generator=start).to(self.device) + 1

    def observe(self, outputs, batch, scores):
        import torch

        from lgseg.train import distributed

        labels, classes = batch["labels"], self.confusion.shape[0]
        labels = labels[labels >= 0]
        step = torch.bincount(labels * classes + scores.argmax(1), minlength=classes * classes) if len(labels) \
            else torch.zeros(classes * classes, dtype=torch.long, device=self.device)
        self.epoch_confusion += distributed.sum_over_ranks(step).view(classes, classes)  # one matrix on every rank
        self.confusion = self.epoch_confusion + 1
        return {}

    def state(self):
        return {"confusion": self.confusion, "epoch_confusion": self.epoch_confusion}

    def load_state(self, state):
        self.confusion = state["confusion"].to(self.device)
        self.epoch_confusion = state["epoch_confusion"].to(self.device)


class ContrastiveSceneContexts(Objective):
    """The CSC baseline (docs/method.md §7): PointInfoNCE between matched voxels of two views of a scene, inside
    shape-context partitions, on an L2-normalised `embedding_dim` head that fine-tuning leaves out. Views are two
    augmented crops of the reconstruction ("CSC (scene views)", lgseg.data.views); no labels are read."""

    name = "csc"
    stage = PRETRAINING
    reads = ("losses.csc",)
    monitor = None
    uses_labels = False

    def __init__(self, settings, files, device):
        super().__init__(settings, files, device)
        import torch

        self.generator = torch.Generator(device=device)

    def model_args(self, init_args):
        return {"num_classes": None, "feature_dim": None, "embedding_dim": self.settings["losses.csc"]["embedding_dim"]}

    def start_epoch(self, seed, epoch):
        from lgseg.train import distributed

        self.generator.manual_seed(seed * 1_000_003 + epoch * 1_009 + distributed.rank())

    def train_items(self, scenes):
        from lgseg.data.views import ViewPairs

        return ViewPairs(scenes, self.settings["losses.csc"]["crop"])

    def collate(self, items):
        from lgseg.data.views import collate_view_pairs

        return collate_view_pairs(items)

    def loss(self, outputs, batch):
        import torch
        import torch.nn.functional as F

        from lgseg.train import baseline_losses

        c = self.settings["losses.csc"]
        embedding = F.normalize(outputs["features"].float(), dim=1)
        total = embedding.new_zeros(())
        for pairs, coord in zip(batch["pairs"], batch["pair_coord"]):
            if not len(pairs):  # views that share no voxel (crop > 0.5 always leaves some)
                continue
            pick = torch.randperm(len(pairs), generator=self.generator, device=self.device)[:c["num_pairs"]]
            pairs, coord = pairs.to(self.device)[pick], coord.to(self.device)[pick]
            partitions = baseline_losses.shape_context_partitions(coord, c["inner_radius"], c["outer_radius"],
                                                                  c["partitions"])
            total = total + baseline_losses.point_info_nce(embedding[pairs[:, 0]], embedding[pairs[:, 1]],
                                                           partitions, c["partitions"], c["temperature"])
        return total + 0.0 * embedding.sum(), torch.tensor(len(batch["pairs"]), device=embedding.device)

    def scores(self, outputs):
        return None


OBJECTIVES: dict[str, type[Objective]] = {cls.name: cls for cls in (CrossEntropy, ClassBalancedFocal,
                                                                     InstanceSegmentation, InstanceSegmentationFocal,
                                                                     LanguageContrastive, SupCon,
                                                                     ContrastiveSceneContexts)}


def objective_class(name: str, stage: str, key: str) -> type[Objective]:
    """The registered objective `name` for `stage`; `key` (the config key that named it) goes into the error."""
    cls = OBJECTIVES.get(name)
    if cls is None or cls.stage != stage:
        choices = ", ".join(n for n, c in OBJECTIVES.items() if c.stage == stage)
        raise ConfigError(f"config key '{key}': {name!r} is not a registered objective here; choose one of {choices}")
    return cls
