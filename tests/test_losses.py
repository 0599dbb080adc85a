"""The language-contrastive loss and the class-balanced focal loss against hand-computed values."""

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from lgseg.errors import ConfigError
from lgseg.train.losses import (ALPHA_FORMULAS, FocalLoss, LanguageContrastiveLoss, alpha_from_class_stats,
                                anchor_predictions, anchor_scores, class_alpha, focal_loss, language_contrastive_loss,
                                positive_cosine, sample_negatives)

# 2-D anchors along the axes, deliberately not unit length: t0 = +x, t1 = +y, t2 = -x, t3 = -y
ANCHORS = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [0.0, -0.5]])
# Hand example, per point (cos to the positive; cos to the negatives -> their mean; t_pos 0, t_neg 0.6, λ 1):
#  a: (5,0)  y=0, negs 1,1,2: pos cos 1 -> 0;        neg cos 0,0,-1 -> mean -1/3, 1-m = 4/3 > 0.6 -> 0;    total 0
#  b: (1,1)  y=1, negs 0,0,0: pos cos 1/√2 -> 1-1/√2; neg mean 1/√2 -> 0.6-(1-1/√2);                      total 0.6
#  c: (0,-2) y=2, negs 3,0,1: pos cos 0 -> 1;         neg cos 1,0,-1 -> mean 0, 1-0 > 0.6 -> 0;            total 1
#  d: (3,4)  y=0, negs 1,1,1: pos cos 0.6 -> 0.4;     neg cos 0.8 -> 0.6-(1-0.8) = 0.4;                    total 0.8
FEATURES = torch.tensor([[5.0, 0.0], [1.0, 1.0], [0.0, -2.0], [3.0, 4.0]])
LABELS = torch.tensor([0, 1, 2, 0])
NEGATIVES = torch.tensor([[1, 1, 2], [0, 0, 0], [3, 0, 1], [1, 1, 1]])
PER_POINT = [0.0, 0.6, 1.0, 0.8]


def test_contrastive_hand_example():
    per_point = language_contrastive_loss(FEATURES, LABELS, ANCHORS, negatives=NEGATIVES, reduction="none")
    assert per_point.tolist() == pytest.approx(PER_POINT, abs=1e-6)
    mean = language_contrastive_loss(FEATURES, LABELS, ANCHORS, negatives=NEGATIVES, reduction="mean_labelled")
    assert mean.item() == pytest.approx(2.4 / 4, abs=1e-6)


def test_contrastive_thresholds_and_weight_by_hand():
    # t_pos 0.1: a relu(0-0.1)=0, b (1-1/√2)-0.1, c 0.9, d 0.3; λ 2 doubles the negative hinge: b 2(1/√2-0.4), d 0.8
    r = 1 / math.sqrt(2)
    per_point = language_contrastive_loss(FEATURES, LABELS, ANCHORS, negatives=NEGATIVES, reduction="none",
                                          pos_threshold=0.1, neg_weight=2.0)
    assert per_point.tolist() == pytest.approx([0.0, (1 - r) - 0.1 + 2 * (r - 0.4), 0.9, 0.3 + 0.8], abs=1e-6)
    # t_neg 0.3: hinge active only where the mean negative cos exceeds 0.7: b (0.7071) -> 0.0071, d (0.8) -> 0.1
    per_point = language_contrastive_loss(FEATURES, LABELS, ANCHORS, negatives=NEGATIVES, reduction="none",
                                          neg_threshold=0.3)
    assert per_point.tolist() == pytest.approx([0.0, (1 - r) + (r - 0.7), 1.0, 0.4 + 0.1], abs=1e-6)


# The same points under the distance ablation's L2 / L1 distances to the UNIT anchors t0 = (1,0), t1 = (0,1),
# t2 = (-1,0), t3 = (0,-1); t_neg 6 so that every negative hinge shows:
#  L2: a pos |(4,0)| = 4,  negs √26, √26, 6 -> mean (2√26+6)/3;  b pos |(1,0)| = 1, negs 1, 1, 1 -> 1;
#      c pos |(1,-2)| = √5, negs 1, √5, 3;                        d pos |(2,4)| = √20, negs √18 x3
#  L1: a pos 4, negs 6, 6, 6;  b pos 1, negs 1 x3;  c pos 3, negs 1, 3, 3;  d pos 6, negs 6 x3
L2_POS = [4.0, 1.0, math.sqrt(5), math.sqrt(20)]
L2_NEG = [(2 * math.sqrt(26) + 6) / 3, 1.0, (1 + math.sqrt(5) + 3) / 3, math.sqrt(18)]
L1_POS, L1_NEG = [4.0, 1.0, 3.0, 6.0], [6.0, 1.0, 7 / 3, 6.0]


@pytest.mark.parametrize("distance, pos, neg", [("l2", L2_POS, L2_NEG), ("l1", L1_POS, L1_NEG)])
def test_contrastive_l2_and_l1_distances_by_hand(distance, pos, neg):
    per_point = language_contrastive_loss(FEATURES, LABELS, ANCHORS, negatives=NEGATIVES, reduction="none",
                                          distance=distance, neg_threshold=6.0)
    expected = [p + max(0.0, 6.0 - n) for p, n in zip(pos, neg)]
    assert per_point.tolist() == pytest.approx(expected, abs=1e-5)
    # the default threshold 0.6 is below every mean negative distance here: only the positive terms remain
    per_point = language_contrastive_loss(FEATURES, LABELS, ANCHORS, negatives=NEGATIVES, reduction="none",
                                          distance=distance)
    assert per_point.tolist() == pytest.approx(pos, abs=1e-5)


def test_l2_gradient_stays_finite_at_the_anchor():
    feature = torch.tensor([[1.0, 0.0]], requires_grad=True)  # exactly the unit anchor t0
    language_contrastive_loss(feature, torch.tensor([0]), ANCHORS, negatives=torch.tensor([[1, 1, 1]]),
                              distance="l2").backward()
    assert torch.isfinite(feature.grad).all()


def test_anchor_scores_are_minus_the_distance_to_the_unit_anchors():
    # point a = (5,0): L2 to t0..t3 = 4, √26, 6, √26; L1 = 4, 6, 6, 6. Point d = (3,4): L2 √20, √18, √32, √34
    l2 = anchor_scores(FEATURES, ANCHORS, "l2")
    assert (-l2[0]).tolist() == pytest.approx([4.0, math.sqrt(26), 6.0, math.sqrt(26)], abs=1e-5)
    assert (-l2[3]).tolist() == pytest.approx([math.sqrt(20), math.sqrt(18), math.sqrt(32), math.sqrt(34)], abs=1e-5)
    assert (-anchor_scores(FEATURES, ANCHORS, "l1")[0]).tolist() == pytest.approx([4.0, 6.0, 6.0, 6.0], abs=1e-5)
    assert l2.argmax(1)[[0, 2, 3]].tolist() == [0, 3, 1]  # nearest anchors: t0, t3 (c = (0,-2)), t1
    torch.testing.assert_close(anchor_scores(FEATURES, ANCHORS, "cosine"), F.normalize(FEATURES, dim=1)
                               @ F.normalize(ANCHORS, dim=1).T)
    with pytest.raises(ConfigError, match="distance"):
        anchor_scores(FEATURES, ANCHORS, "l3")


def test_contrastive_negative_hinge_boundary():
    # one point of class 0 at angle θ, negatives all class 1: mean negative cos = sin θ; hinge = relu(sin θ - 0.4)
    negatives = torch.tensor([[1, 1, 1]])
    for sin, hinge in ((0.39, 0.0), (0.41, 0.01)):
        cos = math.sqrt(1 - sin ** 2)
        feature = torch.tensor([[cos, sin]], requires_grad=True)
        loss = language_contrastive_loss(feature, torch.tensor([0]), ANCHORS, negatives=negatives)
        assert loss.item() == pytest.approx((1 - cos) + hinge, abs=1e-6)
        loss.backward()
        # d/df of (1 - cos θ) on the unit circle is tangential: sin θ · (-sin θ, cos θ) = (-sin², sin·cos)
        pos_grad = torch.tensor([[-sin ** 2, sin * cos]])
        # the active hinge adds the gradient of sin θ: cos θ · (-sin θ, cos θ)
        neg_grad = torch.tensor([[-cos * sin, cos ** 2]]) if hinge else torch.zeros(1, 2)
        assert torch.allclose(feature.grad, pos_grad + neg_grad, atol=1e-6)


def test_contrastive_reductions_and_ignored_points():
    features = torch.cat([FEATURES, torch.tensor([[7.0, -1.0], [0.5, 0.5]])]).requires_grad_(True)
    labels = torch.cat([LABELS, torch.tensor([-1, -1])])
    negatives = torch.cat([NEGATIVES, torch.zeros(2, 3, dtype=torch.long)])
    per_point = language_contrastive_loss(features, labels, ANCHORS, negatives=negatives, reduction="none")
    assert per_point.tolist() == pytest.approx(PER_POINT + [0.0, 0.0], abs=1e-6)
    # the authors' reduction divides by all 6 points, ignored ones included
    mean_all = language_contrastive_loss(features, labels, ANCHORS, negatives=negatives)
    assert mean_all.item() == pytest.approx(2.4 / 6, abs=1e-6)
    mean_all.backward()
    assert features.grad[4:].abs().sum() == 0


def test_ignored_points_change_neither_loss_nor_gradient():
    torch.manual_seed(0)
    anchors = torch.randn(10, 16)
    features = torch.randn(50, 16)
    labels = torch.randint(0, 10, (50,))
    extra = torch.randn(30, 16)

    def run(feats, labs):
        feats = feats.clone().requires_grad_(True)
        loss = language_contrastive_loss(feats, labs, anchors, generator=torch.Generator().manual_seed(3),
                                         reduction="mean_labelled")
        loss.backward()
        return loss, feats.grad

    loss, grad = run(features, labels)
    # interleave ignored points; the negatives are drawn for labelled points only, so the draw is unchanged
    mixed = torch.cat([extra[:10], features, extra[10:]])
    mixed_labels = torch.cat([torch.full((10,), -1), labels, torch.full((20,), -1)])
    mixed_loss, mixed_grad = run(mixed, mixed_labels)
    assert mixed_loss.item() == pytest.approx(loss.item(), abs=1e-6)
    assert torch.allclose(mixed_grad[10:60], grad, atol=1e-7)
    assert mixed_grad[:10].abs().sum() == 0 and mixed_grad[60:].abs().sum() == 0
    # a batch without labelled points gives 0, not NaN
    none = language_contrastive_loss(extra, torch.full((30,), -1), anchors, generator=torch.Generator())
    assert none.item() == 0.0


def _cosines(features, anchors):
    return F.normalize(features, dim=1) @ F.normalize(anchors, dim=1).T


def test_gradient_step_pulls_to_positive_and_pushes_from_negatives():
    torch.manual_seed(1)
    anchors = torch.randn(6, 16)
    labels = torch.randint(0, 6, (40,))
    negatives = sample_negatives(labels, 6, 3, torch.Generator().manual_seed(0))
    # features near their negatives' mean so that the negative hinge is active for every point
    features = F.normalize(anchors, dim=1)[negatives].mean(dim=1) + 0.05 * torch.randn(40, 16)
    rows = torch.arange(40)

    def step(**kwargs):
        f = features.clone().requires_grad_(True)
        language_contrastive_loss(f, labels, anchors, negatives=negatives, reduction="none", **kwargs).sum().backward()
        return (f - 0.01 * f.grad).detach()

    before = _cosines(features, anchors)
    assert (before.gather(1, negatives).mean(dim=1) > 0.4).all()
    # positive term alone (λ = 0): the cosine to the own anchor rises for every point
    after = _cosines(step(neg_weight=0.0), anchors)
    assert (after[rows, labels] > before[rows, labels]).all()
    # negative term alone (positive hinge never active with t_pos = 2): the mean negative cosine falls
    after = _cosines(step(pos_threshold=2.0), anchors)
    assert (after.gather(1, negatives).mean(dim=1) < before.gather(1, negatives).mean(dim=1)).all()
    # the full loss, as the pre-training monitor sees it: mean positive cosine rises
    assert positive_cosine(step(), labels, anchors) > positive_cosine(features, labels, anchors)


def test_negatives_never_positive_uniform_and_seeded():
    labels = torch.arange(5).repeat(4000)
    negatives = sample_negatives(labels, 5, 3, torch.Generator().manual_seed(7))
    assert negatives.shape == (20000, 3) and negatives.min() >= 0 and negatives.max() <= 4
    assert not (negatives == labels[:, None]).any()
    # uniform over the 4 other classes: each gets 1/4 of the 3000 draws of a class (binomial sd ≈ 24)
    for y in range(5):
        counts = torch.bincount(negatives[labels == y].flatten(), minlength=5).float()
        others = torch.cat([counts[:y], counts[y + 1:]])
        assert counts[y] == 0 and ((others - 3000).abs() < 150).all()
    again = sample_negatives(labels, 5, 3, torch.Generator().manual_seed(7))
    other = sample_negatives(labels, 5, 3, torch.Generator().manual_seed(8))
    assert torch.equal(negatives, again) and not torch.equal(negatives, other)


def test_contrastive_deterministic_under_seed():
    torch.manual_seed(2)
    anchors, features, labels = torch.randn(8, 4), torch.randn(30, 4), torch.randint(-1, 8, (30,))

    def loss(seed):
        return language_contrastive_loss(features, labels, anchors, generator=torch.Generator().manual_seed(seed),
                                         reduction="none")

    assert torch.equal(loss(5), loss(5))
    assert not torch.equal(loss(5), loss(6))


def test_bad_contrastive_input():
    with pytest.raises(ConfigError, match="own class"):
        language_contrastive_loss(FEATURES, LABELS, ANCHORS, negatives=torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(ConfigError, match="mean_all, mean_labelled, none"):
        language_contrastive_loss(FEATURES, LABELS, ANCHORS, reduction="sum")


def test_anchor_predictions_positive_cosine_and_module():
    # cosines to (+x, +y, -x, -y): a -> +x, b ties +x/+y (first wins), c -> -y, d (3,4) -> +y
    assert anchor_predictions(FEATURES, ANCHORS).tolist() == [0, 0, 3, 1]
    expected = (1 + 1 / math.sqrt(2) + 0 + 0.6) / 4
    assert positive_cosine(FEATURES, LABELS, ANCHORS).item() == pytest.approx(expected, abs=1e-6)
    module = LanguageContrastiveLoss(ANCHORS.double(), reduction="none")
    assert module.anchors.dtype == torch.float32 and torch.allclose(module.anchors.norm(dim=1), torch.ones(4))
    assert module(FEATURES, LABELS, negatives=NEGATIVES).tolist() == pytest.approx(PER_POINT, abs=1e-6)
    assert module.predict(FEATURES).tolist() == [0, 0, 3, 1]
    assert "anchors" in module.state_dict()


def test_losses_run_in_float32_under_autocast():
    torch.manual_seed(3)
    features, labels = torch.randn(20, 8), torch.randint(-1, 5, (20,))
    anchors, logits = torch.randn(5, 8), torch.randn(20, 5)
    reference = language_contrastive_loss(features, labels, anchors, generator=torch.Generator().manual_seed(0))
    reference_focal = focal_loss(logits, labels)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = language_contrastive_loss(features, labels, anchors, generator=torch.Generator().manual_seed(0))
        focal = focal_loss(logits.bfloat16(), labels)
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(reference.item(), abs=1e-6)
    assert focal.dtype == torch.float32 and focal.item() == pytest.approx(reference_focal.item(), rel=2e-2)


# --------------------------------------------------------------------------------------------------------------------
# focal loss
# --------------------------------------------------------------------------------------------------------------------

def test_focal_gamma_zero_uniform_alpha_is_cross_entropy():
    torch.manual_seed(4)
    logits, labels = 3 * torch.randn(64, 7), torch.randint(-1, 7, (64,))
    expected = F.cross_entropy(logits, labels, ignore_index=-1)
    assert focal_loss(logits, labels, gamma=0.0).item() == pytest.approx(expected.item(), abs=1e-6)
    assert focal_loss(logits, labels, torch.ones(7), gamma=0.0).item() == pytest.approx(expected.item(), abs=1e-6)


def test_focal_hand_values():
    # point 1: logits (0, 0), y = 0 -> p = 1/2;   point 2: logits (ln 3, 0), y = 0 -> p = 3/4, or y = 1 -> p = 1/4
    logits = torch.tensor([[0.0, 0.0], [math.log(3), 0.0], [5.0, 1.0]])
    unweighted = (0.5 ** 2 * math.log(2) + 0.25 ** 2 * -math.log(0.75)) / 2
    assert focal_loss(logits, torch.tensor([0, 0, -1])).item() == pytest.approx(unweighted, abs=1e-6)
    # α = (2, 0.5): point 1 weighted 2, point 2 (y = 1, p = 1/4) weighted 0.5; plain mean, not / Σα
    weighted = (2 * 0.5 ** 2 * math.log(2) + 0.5 * 0.75 ** 2 * math.log(4)) / 2
    alpha = torch.tensor([2.0, 0.5])
    assert focal_loss(logits, torch.tensor([0, 1, -1]), alpha).item() == pytest.approx(weighted, abs=1e-6)
    assert FocalLoss(alpha)(logits, torch.tensor([0, 1, -1])).item() == pytest.approx(weighted, abs=1e-6)
    # nothing labelled: 0, not NaN
    assert focal_loss(logits, torch.full((3,), -1)).item() == 0.0


def test_alpha_paper_log_by_hand():
    # counts 0, 10, 100, 1000 -> log n = (0 [count 0 treated as 1], 1, 2, 3)·ln 10 -> / 6 ln 10
    alpha = class_alpha([0, 10, 100, 1000], formula="paper_log")
    assert alpha.dtype == torch.float32
    assert alpha.tolist() == pytest.approx([0, 1 / 6, 2 / 6, 3 / 6], abs=1e-7)
    assert class_alpha([0, 10, 100, 1000], formula="paper_log", normalization="mean").tolist() == pytest.approx(
        [0, 4 / 6, 8 / 6, 12 / 6], abs=1e-6)


def test_alpha_inverse_log_by_hand():
    # counts 0 (-> 1), 3, 15, 63 -> log(1+n) = (1, 2, 4, 6)·ln 2 -> 1/(..) ∝ 12, 6, 3, 2 (sum 23)
    alpha = class_alpha([0, 3, 15, 63], formula="inverse_log")
    assert alpha.tolist() == pytest.approx([12 / 23, 6 / 23, 3 / 23, 2 / 23], abs=1e-7)
    assert class_alpha([0, 3, 15, 63], formula="inverse_log", normalization="mean").tolist() == pytest.approx(
        [48 / 23, 24 / 23, 12 / 23, 8 / 23], abs=1e-6)


def test_alpha_from_class_stats_table():
    table = pd.DataFrame({"class_index": [2, 0, 3, 1], "class_name": ["c", "a", "d", "b"],
                          "num_instances": [5, 5, 5, 5], "num_vertices": [15, 0, 63, 3]})
    assert alpha_from_class_stats(table, formula="inverse_log").tolist() == pytest.approx(
        [12 / 23, 6 / 23, 3 / 23, 2 / 23], abs=1e-7)
    assert alpha_from_class_stats(table, column="num_instances").tolist() == pytest.approx([0.25] * 4)
    with pytest.raises(ConfigError, match="class_index"):
        alpha_from_class_stats(table.assign(class_index=[0, 1, 2, 2]))
    with pytest.raises(ConfigError, match="num_vertices"):
        alpha_from_class_stats(table.drop(columns="num_vertices"))


def test_bad_alpha_input():
    with pytest.raises(ConfigError) as error:
        class_alpha([1, 2], formula="inverse")
    assert all(name in str(error.value) for name in ALPHA_FORMULAS)
    with pytest.raises(ConfigError, match="count"):
        class_alpha([1, -2])
    with pytest.raises(ConfigError, match="paper_log"):
        class_alpha([0, 1, 1], formula="paper_log")
