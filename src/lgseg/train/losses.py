"""The paper's losses: the language-contrastive pre-training loss, the class-balanced focal loss and the offset
losses of instance segmentation.

All ignore points labelled `IGNORE_INDEX` (-1) and compute in float32, also under autocast.
Formulas and reductions follow docs/method.md §2 (contrastive, as coded by the authors), §3 (C-Focal) and §8
(offsets).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from lgseg.errors import ConfigError
from lgseg.scannet.labels import IGNORE_INDEX

CONTRASTIVE_REDUCTIONS = ("mean_all", "mean_labelled", "none")
DISTANCES = ("cosine", "l2", "l1")  # of the language pre-training (losses.contrastive.distance)
ALPHA_FORMULAS = ("paper_log", "inverse_log")
ALPHA_NORMALIZATIONS = ("sum", "mean")
COUNT_COLUMN = "num_vertices"


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: unknown value {value!r}; valid: {', '.join(choices)}")


def _float32(device: torch.device) -> torch.autocast:
    """Context that switches autocast off, so the losses run in float32."""
    return torch.autocast(device_type=device.type, enabled=False)


# --------------------------------------------------------------------------------------------------------------------
# Language-contrastive pre-training loss (docs/method.md §2)
# --------------------------------------------------------------------------------------------------------------------

def sample_negatives(labels: torch.Tensor, num_classes: int, num_negatives: int = 3,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """[N, K] class indices drawn uniformly with replacement from the classes other than `labels[i]`, per point.

    A draw r in 0..C-2 maps to r, or r+1 when r >= y, which is uniform over the C-1 classes that are not y.
    `labels` must hold valid classes only (no ignore index); the draw uses `generator` on the labels' device.
    """
    if num_classes < 2 or num_negatives < 1:
        raise ConfigError(f"negatives need num_classes >= 2 and num_negatives >= 1, "
                          f"got {num_classes} and {num_negatives}")
    draw = torch.randint(0, num_classes - 1, (labels.shape[0], num_negatives), generator=generator,
                         device=labels.device)
    return draw + (draw >= labels[:, None]).long()


def _anchor_dots(features: torch.Tensor, anchors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """([N, C] dot products of the features with the unit anchors, [N] inverse feature norms), in float32 (call
    inside `_float32`): their product is the cosine, without a normalised copy of the features (or its backward)."""
    points = features.float()
    return points @ F.normalize(anchors.float(), dim=1).T, 1.0 / points.norm(dim=1).clamp_min(1e-12)  # normalize's eps


def cosine_to_anchors(features: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """[N, C] cosine similarity of every feature to every anchor, in float32."""
    with _float32(features.device):
        dots, inverse_norm = _anchor_dots(features, anchors)
        return dots * inverse_norm[:, None]


def anchor_predictions(features: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """[N] index of the anchor with the highest cosine to each feature (the pre-training accuracy monitor)."""
    return cosine_to_anchors(features, anchors).argmax(dim=1)


def positive_cosine(features: torch.Tensor, labels: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Mean cosine between labelled features and their own class anchor (rises during pre-training); NaN if none."""
    labelled = labels != IGNORE_INDEX
    cosine = cosine_to_anchors(features[labelled], anchors)
    return cosine.gather(1, labels[labelled][:, None]).mean()


def anchor_scores(features: torch.Tensor, anchors: torch.Tensor, distance: str = "cosine") -> torch.Tensor:
    """[N, C] similarity of every feature to every anchor, in float32, under the pre-training's `distance`: the
    cosine, or minus the L2 / L1 distance to the unit anchors (argmax = the nearest anchor either way)."""
    _check_choice("distance", distance, DISTANCES)
    if distance == "cosine":
        return cosine_to_anchors(features, anchors)
    with _float32(features.device):
        return -torch.cdist(features.float(), F.normalize(anchors.float(), dim=1), p=1 if distance == "l1" else 2)


def _distances(points: torch.Tensor, anchors: torch.Tensor, distance: str) -> torch.Tensor:
    """[N, K] distance of each point [N, D] to its K anchors [N, K, D] (unit rows), L2 with the authors' 1e-7 guard
    inside the root (its gradient stays finite at 0)."""
    difference = points[:, None, :] - anchors
    if distance == "l1":
        return difference.abs().sum(dim=2)
    return (difference.pow(2).sum(dim=2) + 1e-7).sqrt()


def language_contrastive_loss(features: torch.Tensor, labels: torch.Tensor, anchors: torch.Tensor, *,
                              pos_threshold: float = 0.0, neg_threshold: float = 0.6, neg_weight: float = 1.0,
                              num_negatives: int = 3, generator: torch.Generator | None = None,
                              negatives: torch.Tensor | None = None, reduction: str = "mean_all",
                              distance: str = "cosine") -> torch.Tensor:
    """Hinge loss pulling each labelled feature to its class anchor and away from K random other anchors.

    Per labelled point i with class y (docs/method.md §2, LGS `ContrastiveLanguageLoss`):

        relu(d(f_i, t_y) - pos_threshold) + neg_weight * relu(neg_threshold - mean_k d(f_i, t_nk))

    with d the cosine distance 1 - cos (the paper's; features and anchors L2-normalised), or the L2 or L1 distance
    between the raw feature and the unit anchor (`distance`: "cosine", "l2", "l1"; the supplement's ablation,
    docs/method.md §9). The negatives n_1..n_K are drawn uniformly with replacement from the other classes,
    independently per point (`sample_negatives` with `generator`), unless `negatives` [N, K] gives them explicitly
    (rows of ignored points are not read). Ignored points (label -1) contribute 0.

    reduction: "mean_all" (the authors': sum over labelled points divided by the number of ALL points, ignored ones
    included, docs/method.md §2), "mean_labelled" (divided by the number of labelled points; 0 if there are none), or
    "none" ([N] per-point values, 0 at ignored points).
    """
    _check_choice("reduction", reduction, CONTRASTIVE_REDUCTIONS)
    _check_choice("distance", distance, DISTANCES)
    labelled = labels != IGNORE_INDEX
    y = labels[labelled]
    if negatives is None:
        negatives = sample_negatives(y, anchors.shape[0], num_negatives, generator)
    else:
        negatives = negatives[labelled]
        if (negatives == y[:, None]).any():
            raise ConfigError("negatives: a negative equals the point's own class")
    with _float32(features.device):
        if distance == "cosine":  # 1 - mean_k cos = mean_k (1 - cos)
            dots, inverse_norm = _anchor_dots(features[labelled], anchors)  # scaled after the gather: [N] not [N, C]
            pos_distance = 1.0 - dots.gather(1, y[:, None]).squeeze(1) * inverse_norm
            neg_distance = 1.0 - dots.gather(1, negatives).mean(dim=1) * inverse_norm
        else:
            points, unit = features[labelled].float(), F.normalize(anchors.float(), dim=1)
            pos_distance = _distances(points, unit[y][:, None, :], distance).squeeze(1)
            neg_distance = _distances(points, unit[negatives], distance).mean(dim=1)
        per_point = F.relu(pos_distance - pos_threshold) + neg_weight * F.relu(neg_threshold - neg_distance)
        if reduction == "mean_all":
            return per_point.sum() / max(labels.numel(), 1)
        if reduction == "mean_labelled":
            return per_point.sum() / max(y.numel(), 1)
        out = per_point.new_zeros(labels.shape)
        out[labelled] = per_point
        return out


class LanguageContrastiveLoss(nn.Module):
    """`language_contrastive_loss` with the text anchors [C, D] held as an L2-normalised float32 buffer."""

    def __init__(self, anchors: torch.Tensor, *, pos_threshold: float = 0.0, neg_threshold: float = 0.6,
                 neg_weight: float = 1.0, num_negatives: int = 3, reduction: str = "mean_all"):
        super().__init__()
        _check_choice("reduction", reduction, CONTRASTIVE_REDUCTIONS)
        if anchors.ndim != 2:
            raise ConfigError(f"anchors: expected a [classes, dim] tensor, got shape {tuple(anchors.shape)}")
        self.register_buffer("anchors", F.normalize(torch.as_tensor(anchors, dtype=torch.float32), dim=1))
        self.pos_threshold = pos_threshold
        self.neg_threshold = neg_threshold
        self.neg_weight = neg_weight
        self.num_negatives = num_negatives
        self.reduction = reduction

    def forward(self, features: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None,
                negatives: torch.Tensor | None = None) -> torch.Tensor:
        return language_contrastive_loss(features, labels, self.anchors, pos_threshold=self.pos_threshold,
                                         neg_threshold=self.neg_threshold, neg_weight=self.neg_weight,
                                         num_negatives=self.num_negatives, generator=generator,
                                         negatives=negatives, reduction=self.reduction)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        return anchor_predictions(features, self.anchors)


# --------------------------------------------------------------------------------------------------------------------
# Class-balanced focal loss, C-Focal (docs/method.md §3)
# --------------------------------------------------------------------------------------------------------------------

def class_alpha(counts, *, formula: str = "paper_log", normalization: str = "sum") -> torch.Tensor:
    """Per-class focal weights α [C] (float32) from train-set counts n [C].

    formula "paper_log" (paper eq. 5 as written):  α_i ∝ log(n_i)        — frequent classes weigh MORE;
    formula "inverse_log" (docs/method.md §3):          α_i ∝ 1 / log(1 + n_i) — rare classes weigh more
                                                                            (the +1 keeps n_i = 1 finite).
    A class with count 0 is treated as seen once (n_i = 1): weight 0 under paper_log, the largest under inverse_log.
    normalization "sum": Σ α = 1 as in eq. 5; "mean": mean α = 1 (the same loss scale as unweighted focal / CE).
    """
    _check_choice("alpha formula", formula, ALPHA_FORMULAS)
    _check_choice("alpha normalization", normalization, ALPHA_NORMALIZATIONS)
    n = np.asarray(counts, dtype=np.float64)
    if n.ndim != 1 or n.size == 0 or (n < 0).any() or not np.isfinite(n).all():
        raise ConfigError("class counts: expected a non-empty 1-D array of finite counts >= 0")
    n = np.maximum(n, 1.0)
    raw = np.log(n) if formula == "paper_log" else 1.0 / np.log1p(n)
    if raw.sum() <= 0:
        raise ConfigError("class counts: every class has count <= 1, so the paper_log weights are all 0")
    alpha = raw / raw.sum()
    if normalization == "mean":
        alpha = alpha * n.size
    return torch.tensor(alpha, dtype=torch.float32)


def alpha_from_class_stats(table: pd.DataFrame, *, formula: str = "paper_log", normalization: str = "sum",
                           column: str = COUNT_COLUMN) -> torch.Tensor:
    """α [C] from the train-split table of `lgseg.data.class_stats` (rows by class_index).

    Counts default to labelled points per class (`num_vertices`): docs/method.md §3: the authors' weights were
    "based on the point frequencies/category"; the paper's n_i is the train-set count of class i.
    """
    missing = {"class_index", column} - set(table.columns)
    if missing:
        raise ConfigError(f"class statistics: missing column(s) {', '.join(sorted(missing))}")
    ordered = table.sort_values("class_index")
    if not np.array_equal(ordered["class_index"].to_numpy(), np.arange(len(ordered))):
        raise ConfigError("class statistics: class_index must be exactly 0..C-1, one row each")
    return class_alpha(ordered[column].to_numpy(), formula=formula, normalization=normalization)


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, alpha: torch.Tensor | None = None, *,
               gamma: float = 2.0) -> torch.Tensor:
    """Mean over labelled points of  -α_y (1 - p_y)^γ log p_y  (docs/method.md §3, LGS `FocalLoss`).

    logits [N, C], labels [N] in 0..C-1 or -1 (ignored). `alpha` [C] or None (all 1). A plain mean over the
    non-ignored points, not divided by the sum of the weights; 0 when no point is labelled.
    """
    labelled = labels != IGNORE_INDEX
    y = labels[labelled]
    with _float32(logits.device):
        log_p = F.log_softmax(logits[labelled].float(), dim=1).gather(1, y[:, None]).squeeze(1)
        loss = -((1.0 - log_p.exp()) ** gamma) * log_p
        if alpha is not None:
            loss = loss * alpha.to(device=loss.device, dtype=torch.float32)[y]
        return loss.sum() / max(y.numel(), 1)


class FocalLoss(nn.Module):
    """`focal_loss` with α held as a float32 buffer (moves with `.to(device)`)."""

    def __init__(self, alpha: torch.Tensor | None = None, *, gamma: float = 2.0):
        super().__init__()
        self.register_buffer("alpha", None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32))
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, labels, self.alpha, gamma=self.gamma)


# --------------------------------------------------------------------------------------------------------------------
# Offset losses of instance segmentation (docs/method.md §8)
# --------------------------------------------------------------------------------------------------------------------


def offset_losses(predicted: torch.Tensor, target: torch.Tensor, instance: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean L1 distance, mean negative cosine) between predicted and true offsets [N, 3], both over the points
    with an instance (`instance` >= 0; 0 when there is none): the authors' `offset_norm_loss` (sum over x, y, z of
    the absolute differences) and `offset_dir_loss` (directions normalised with a 1e-8 guard)."""
    valid = instance >= 0
    count = max(int(valid.sum()), 1)
    with _float32(predicted.device):
        predicted, target = predicted[valid].float(), target[valid].float()
        l1 = (predicted - target).abs().sum(1).sum() / count
        direction = -(F.normalize(predicted, dim=1, eps=1e-8) * F.normalize(target, dim=1, eps=1e-8)).sum(1)
        return l1, direction.sum() / count
