"""The pre-training baselines' losses (docs/method.md §7): SupCon as the authors coded it (a hinge on mean cosine
distances to sampled points of the minibatch) and CSC's PointInfoNCE inside shape-context partitions.

Sampling is vectorised in torch: no loop over classes or points. Everything computes in float32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lgseg.errors import ConfigError

PARTITION_FORMS = (4, 8)
NEGATIVE_WEIGHTS = ("points", "classes")


# --------------------------------------------------------------------------------------------------------------------
# SupCon (LGS PointSupConLoss)
# --------------------------------------------------------------------------------------------------------------------

def _uniform_member(order: torch.Tensor, starts: torch.Tensor, counts: torch.Tensor, classes: torch.Tensor,
                    generator: torch.Generator | None) -> torch.Tensor:
    """For every entry of `classes` one point of that class, uniformly with replacement (rows of the sort `order`)."""
    draw = torch.rand(classes.shape, generator=generator, device=classes.device)
    slot = torch.minimum((draw * counts[classes]).long(), counts[classes] - 1)
    return order[starts[classes] + slot]


def sample_supcon(labels: torch.Tensor, confusion: torch.Tensor, num_positives: int, num_negatives: int,
                  generator: torch.Generator | None = None,
                  weights: str = "points") -> tuple[torch.Tensor, torch.Tensor]:
    """(positives [M, P], negatives [M, N]): indices into `labels` (M valid classes) of sampled points.

    Positives: points of the same class, uniformly with replacement (the point itself included). Negatives: a
    point of another class present in the batch; with weights "classes" the class k is drawn with probability
    proportional to confusion[y, k], then a point of it uniformly; with "points" (the authors' code: every point of
    class k weighs confusion[y, k]) proportional to confusion[y, k] times the number of points of class k. A point
    whose class is the only one in the batch has no negatives: its row is -1.
    """
    if weights not in NEGATIVE_WEIGHTS:
        raise ConfigError(f"losses.supcon.negative_weights: {weights!r}; valid: {', '.join(NEGATIVE_WEIGHTS)}")
    num_classes, device = confusion.shape[0], labels.device
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    positives = _uniform_member(order, starts, counts, labels[:, None].expand(-1, num_positives), generator)

    classes = torch.unique(labels)  # rows of the confusion matrix that are needed
    rows = confusion[classes].double() * (counts > 0)
    rows[torch.arange(len(classes), device=device), classes] = 0.0
    if weights == "points":
        rows = rows * counts
    total = rows.sum(1)
    cdf = torch.cumsum(rows, 1) / total.clamp(min=1e-300)[:, None]
    cdf[:, -1] = 1.0
    row = torch.searchsorted(classes, labels)
    # one search over the rows laid end to end: row r's cumulative weights shifted into [r, r + 1]
    shifted = (cdf + torch.arange(len(classes), device=device, dtype=torch.float64)[:, None]).reshape(-1)
    draw = torch.rand((len(labels), num_negatives), generator=generator, device=device, dtype=torch.float64)
    flat = torch.searchsorted(shifted, draw + row[:, None], right=True)
    negative_classes = (flat - row[:, None] * num_classes).clamp_(0, num_classes - 1)
    has_negatives = (total > 0)[row]
    negatives = _uniform_member(order, starts, counts, negative_classes, generator)
    negatives[~has_negatives] = -1
    return positives, negatives


def _mean_cosine(features: torch.Tensor, targets: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """mean_k cos(features[i], targets[samples[i, k]]), with `features` and `targets` L2-normalised (and `targets`
    detached). The sum of the sampled targets is one product with a 0/1 CSR matrix of K entries a row: one pass
    over the features instead of K gathered copies."""
    rows, k = samples.shape
    picks = torch.sparse_csr_tensor(torch.arange(0, rows * k + 1, k, device=samples.device),
                                    samples.clamp(min=0).reshape(-1), torch.ones(rows * k, device=samples.device,
                                                                                 dtype=targets.dtype),
                                    size=(rows, targets.shape[0]))
    return (features * (picks @ targets)).sum(1) / k


def supcon_loss(features: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor, *,
                pos_threshold: float = 0.0, neg_threshold: float = 0.6, neg_weight: float = 1.0) -> torch.Tensor:
    """Per point [M]: relu(d_pos - pos_threshold) + neg_weight * relu(neg_threshold - d_neg), where d = 1 - the mean
    cosine to the sampled points (`sample_supcon`); the sampled features are detached, so only each point's own
    feature gets a gradient. Rows without negatives (-1) have no negative term."""
    with torch.autocast(device_type=features.device.type, enabled=False):
        f = F.normalize(features.float(), dim=1)
        targets = f.detach()
        pos_distance = 1.0 - _mean_cosine(f, targets, positives)
        neg_distance = 1.0 - _mean_cosine(f, targets, negatives)
        neg_term = F.relu(neg_threshold - neg_distance) * (negatives[:, 0] >= 0)
        return F.relu(pos_distance - pos_threshold) + neg_weight * neg_term


# --------------------------------------------------------------------------------------------------------------------
# CSC: PointInfoNCE inside shape-context partitions
# --------------------------------------------------------------------------------------------------------------------

def shape_context_partitions(coord: torch.Tensor, inner: float, outer: float, form: int = 4) -> torch.Tensor:
    """[n, n] partition of key j around query i (from coord_j - coord_i, metres), -1 where j is in none.

    form 4 (CSC's released script): inner < d <= outer -> 0 above / 1 below, d > outer -> 2 above / 3 below (a key
    at the same height is in none). form 8 (CSC's 8-partition code): distance bin (inner <= d < outer: 0,
    d >= outer: 1) x 2 azimuth bins of atan2(dy, dx) in [0, 2pi) x 2 bins of atan2(dy, dz) mod pi; partition
    = 4 * distance bin + 2 * azimuth bin + elevation bin. Keys closer than `inner` (the query itself included)
    are in no partition."""
    if form not in PARTITION_FORMS:
        raise ConfigError(f"losses.csc.partitions: {form}; valid: {', '.join(map(str, PARTITION_FORMS))}")
    distance = torch.cdist(coord, coord, compute_mode="donot_use_mm_for_euclid_dist")
    part = torch.full(distance.shape, -1, dtype=torch.long, device=coord.device)
    if form == 4:
        rise = coord[None, :, 2] - coord[:, None, 2]
        up, down = rise > 0, rise < 0
        middle, far = (distance > inner) & (distance <= outer), distance > outer
        for index, mask in enumerate((middle & up, middle & down, far & up, far & down)):
            part[mask] = index
        return part
    delta = coord[None, :, :] - coord[:, None, :]
    azimuth = torch.remainder(torch.atan2(delta[..., 1], delta[..., 0]), 2 * math.pi)
    elevation = torch.remainder(torch.atan2(delta[..., 1], delta[..., 2]), math.pi)
    angle = (azimuth // math.pi).long().clamp(max=1) * 2 + (elevation // (math.pi / 2)).long().clamp(max=1)
    bin_ = torch.where(distance >= outer, 1, 0)
    inside = distance >= inner
    part[inside] = (bin_ * 4 + angle)[inside]
    return part


def point_info_nce(query: torch.Tensor, key: torch.Tensor, partitions: torch.Tensor, num_partitions: int,
                   temperature: float) -> torch.Tensor:
    """Mean over partitions of the mean over queries of the cross-entropy of query i against the keys of its
    partition and its own matched key (row i of `key`, the target), logits = query . key / temperature.

    Computed in one pass: the softmax denominators of all partitions are summed by one scatter over partitions
    (a query whose partition holds no other key has loss 0, as in CSC's masked cross-entropy)."""
    with torch.autocast(device_type=query.device.type, enabled=False):
        logits = query.float() @ key.float().T / temperature
        shift = logits.detach().amax(1, keepdim=True)
        positive = (logits.diagonal()[:, None] - shift)
        bucket = torch.where(partitions >= 0, partitions, num_partitions)
        bucket.fill_diagonal_(num_partitions)  # the positive is added to every partition below
        sums = logits.new_zeros(len(query), num_partitions + 1).scatter_add_(1, bucket, (logits - shift).exp())
        per_partition = torch.log(sums[:, :num_partitions] + positive.exp()) - positive
        return per_partition.mean(0).sum() / num_partitions
