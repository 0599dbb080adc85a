"""The pre-training baselines: SupCon as the authors coded it, CSC's PointInfoNCE in shape-context partitions on
scene views, the exponential schedule, and the positives-only ablation as a config entry."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from conftest import REPO, processed_demo_store
from lgseg.config import SCHEMA_PATH, load_config, validate_config
from lgseg.data.dataset import SceneDataset
from lgseg.data.views import ViewPairs, collate_view_pairs, crop, view_pairs
from lgseg.errors import ConfigError
from lgseg.paths import split_list
from lgseg.runs import identity_changes, resolve_run
from lgseg.scannet.demo import DemoSettings
from lgseg.scannet.splits import read_scene_list
from lgseg.train import baseline_losses
from lgseg.train.engine import build_model
from lgseg.train.objectives import OBJECTIVES
from lgseg.train.schedules import SCHEDULES

SETTINGS = DemoSettings(seed=2, num_train=4, num_val=1, num_test=0, vertex_spacing=0.08, objects_per_room=(6, 9))


# ------------------------------------------------------------------------------------------------------ SupCon


def test_supcon_loss_equals_a_hand_computation():
    s = 1 / math.sqrt(2)
    features = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [-1.0, 0.0]])  # unit: e1, e2, (e1+e2)/√2, -e1
    positives = torch.tensor([[0, 2], [1, 1], [2, 0], [3, 3]])
    negatives = torch.tensor([[1, 3], [0, 0], [3, 3], [-1, -1]])  # point 3: no other class in the batch
    loss = baseline_losses.supcon_loss(features, positives, negatives, pos_threshold=0.0, neg_threshold=0.6,
                                       neg_weight=1.0)
    # point 0: positives cos 1 and s -> d = 1 - (1 + s)/2; negatives cos 0 and -1 -> d = 1.5 -> no negative term
    # point 1: d_pos 0; negatives cos 0 -> d = 1 -> 0.  point 2: d_pos = 1 - (1 + s)/2; negative cos -s -> 0
    # point 3: d_pos 0, no negatives
    expected = [1 - (1 + s) / 2, 0.0, 1 - (1 + s) / 2, 0.0]
    np.testing.assert_allclose(loss.numpy(), expected, atol=1e-6)
    close = baseline_losses.supcon_loss(features, positives, torch.tensor([[2, 2], [2, 2], [0, 0], [-1, -1]]),
                                        pos_threshold=0.1, neg_threshold=0.6, neg_weight=0.5)
    # point 0: negative cos s -> d = 1 - s = 0.293 -> 0.5 * (0.6 - 0.293); positive term relu(d_pos - 0.1)
    np.testing.assert_allclose(close[0].item(), max(0, 1 - (1 + s) / 2 - 0.1) + 0.5 * (0.6 - (1 - s)), atol=1e-6)
    np.testing.assert_allclose(close[1].item(), 0.5 * (0.6 - (1 - s)), atol=1e-6)


def test_supcon_targets_carry_no_gradient():
    features = torch.randn(6, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    positives = torch.tensor([[1, 2]] * 6)
    negatives = torch.tensor([[3, 4]] * 6)
    loss = baseline_losses.supcon_loss(features, positives, negatives, neg_threshold=2.0)  # both terms active
    loss[0].backward()
    assert features.grad[0].abs().sum() > 0
    assert features.grad[1:].abs().sum() == 0  # the sampled points are detached


def _draws(labels, confusion, weights, repeats=40):
    generator = torch.Generator().manual_seed(1)
    samples = [baseline_losses.sample_supcon(labels, confusion, 3, 5, generator, weights=weights)
               for _ in range(repeats)]
    return torch.cat([p for p, _ in samples]), torch.cat([n for _, n in samples])


@pytest.mark.parametrize("weights", ["classes", "points"])
def test_supcon_negatives_follow_the_confusion_row(weights):
    counts = {0: 300, 2: 40, 5: 160, 7: 100}  # classes 1, 3, 4, 6 absent from the batch
    labels = torch.cat([torch.full((n,), c) for c, n in counts.items()])[torch.randperm(600)]
    confusion = torch.ones(8, 8, dtype=torch.long)
    confusion[0] = torch.tensor([50, 9, 1, 9, 9, 3, 9, 6])  # row of class 0 (absent classes weigh 9: never drawn)
    positives, negatives = _draws(labels, confusion, weights)
    repeated = labels.repeat(40)
    assert (labels[positives] == repeated[:, None]).all()  # positives only from the point's own class
    assert (labels[negatives] != repeated[:, None]).all()  # negatives never from it
    drawn = labels[negatives[repeated == 0]].flatten()
    assert set(drawn.unique().tolist()) == {2, 5, 7}  # only classes present in the batch
    weight = {k: confusion[0, k].item() * (counts[k] if weights == "points" else 1) for k in (2, 5, 7)}
    observed = [(drawn == k).sum().item() for k in (2, 5, 7)]
    expected = [len(drawn) * weight[k] / sum(weight.values()) for k in (2, 5, 7)]
    assert stats.chisquare(observed, expected).pvalue > 1e-3  # 60,000 draws: a wrong law fails by far


def test_supcon_negatives_within_a_class_are_uniform_and_a_lone_class_has_none():
    labels = torch.tensor([0] * 10 + [1] * 4)
    _, negatives = _draws(labels, torch.ones(2, 2, dtype=torch.long), "classes", repeats=500)
    picked = negatives[labels.repeat(500) == 0].flatten()
    assert stats.chisquare(torch.bincount(picked, minlength=14)[10:].numpy()).pvalue > 1e-3
    _, none = baseline_losses.sample_supcon(torch.zeros(5, dtype=torch.long), torch.ones(3, 3, dtype=torch.long),
                                            2, 2)
    assert (none == -1).all()


def test_supcon_confusion_is_counted_from_nearest_anchor_predictions(tmp_path):
    from lgseg.text.anchors import build_text_anchors
    from lgseg.text.encoders import make_encoder

    anchors = tmp_path / "anchors.npz"
    build_text_anchors(make_encoder("tiny-clip-random"), anchors)
    config = validate_config({"text": {"encoder": "tiny-clip-random"}}, SCHEMA_PATH)
    spec = resolve_run(config, "pretraining", "supcon")
    objective = OBJECTIVES["supcon"](spec.settings, {"anchors": anchors}, torch.device("cpu"))
    objective.start_epoch(0, 0)
    start = objective.confusion.clone()
    assert start.min() >= 1 and len(start.unique()) > 100  # random at the start, as the authors'
    labels = torch.tensor([3, 3, 7, -1])
    scores = torch.zeros(3, 200)
    scores[0, 3], scores[1, 9], scores[2, 7] = 1, 1, 1  # predictions of the labelled voxels: 3, 9, 7
    objective.observe({}, {"labels": labels}, scores)
    objective.observe({}, {"labels": labels}, scores)
    expected = torch.ones(200, 200, dtype=torch.long)
    expected[3, 3] += 2
    expected[3, 9] += 2
    expected[7, 7] += 2
    assert torch.equal(objective.confusion, expected)  # counts of the epoch + 1
    restored = OBJECTIVES["supcon"](spec.settings, {"anchors": anchors}, torch.device("cpu"))
    restored.load_state(objective.state())
    assert torch.equal(restored.confusion, expected)


# ------------------------------------------------------------------------------------------------------- CSC


def test_four_partitions_on_hand_placed_points():
    points = torch.tensor([[0, 0, 0], [0, 0, 0.03], [0, 0, 0.2], [0, 0, -0.2], [0.3, 0, 0], [0, 0, 1.0],
                           [0, 0, -1.0], [0.5, 0, 0.0001]], dtype=torch.float64)
    part = baseline_losses.shape_context_partitions(points, 0.05, 0.5, 4)
    # from the query at the origin: itself and 3 cm (inside the inner radius) none; above/below near; level none;
    # far above/below; 0.50001 m slightly above: far
    assert part[0].tolist() == [-1, -1, 0, 1, -1, 2, 3, 2]
    assert part[2, 0] == 1  # the origin seen from 20 cm above is below, near


def test_eight_partitions_on_hand_placed_points():
    points = torch.tensor([[0, 0, 0], [0.2, 0.1, 0.05], [-0.2, -0.1, 0.05], [0.6, 0.3, -0.3], [0.01, 0, 0],
                           [-0.1, 0.3, 0.2]], dtype=torch.float64)
    part = baseline_losses.shape_context_partitions(points, 0.05, 0.5, 8)
    # (0.2, 0.1, 0.05): azimuth 26.6° (bin 0), atan2(dy, dz) = 63.4° (bin 0), near -> 0
    # (-0.2, -0.1, 0.05): azimuth 206.6° (bin 1), atan2(-0.1, 0.05) = -63.4° -> 116.6° (bin 1), near -> 3
    # (0.6, 0.3, -0.3): 0.73 m far, azimuth 26.6° (0), atan2(0.3, -0.3) = 135° (1) -> 4 + 1 = 5
    # (0.01, 0, 0): inside the inner radius -> none; (-0.1, 0.3, 0.2): azimuth 108° (0), 56.3° (0), near -> 0
    assert part[0].tolist() == [-1, 0, 3, 5, -1, 0]


def test_point_info_nce_equals_a_hand_computation():
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    key = torch.tensor([[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]])
    partitions = torch.tensor([[-1, 0, 1], [0, -1, 0], [1, 1, -1]])
    t = 0.5
    logits = (query @ key.T / t).numpy()

    def ce(row, members):  # -log softmax of the positive over itself and the partition's keys
        values = logits[row, [row] + members]
        return -values[0] + math.log(np.exp(values).sum())

    partition0 = [ce(0, [1]), ce(1, [0, 2]), ce(2, [])]  # query 2 has no key in partition 0: loss 0
    partition1 = [ce(0, [2]), ce(1, []), ce(2, [0, 1])]
    expected = (np.mean(partition0) + np.mean(partition1)) / 2
    assert baseline_losses.point_info_nce(query, key, partitions, 2, t).item() == pytest.approx(expected, rel=1e-6)
    assert partition0[2] == 0.0


@pytest.mark.parametrize("form", [4, 8])
def test_point_info_nce_equals_csc_masked_cross_entropies(form):
    """A second method, CSC's own: one cross-entropy per partition with every other key masked out."""
    generator = torch.Generator().manual_seed(form)
    query, key = (torch.nn.functional.normalize(torch.randn(200, 16, generator=generator), dim=1) for _ in range(2))
    partitions = baseline_losses.shape_context_partitions(torch.rand(200, 3, generator=generator) * 2, 0.05, 0.5, form)
    logits = query @ key.T / 0.4
    masked = sum(torch.nn.functional.cross_entropy(
        logits.masked_fill(~((partitions == p) | torch.eye(200, dtype=torch.bool)), -1e9), torch.arange(200))
        for p in range(form)) / form
    assert baseline_losses.point_info_nce(query, key, partitions, form, 0.4).item() == pytest.approx(masked.item(),
                                                                                                     rel=1e-5)


def test_view_pairs_by_hand():
    # scene of 6 vertices; view 0 keeps 0 1 2 4, view 1 keeps 1 2 3 4 5
    kept = (np.array([0, 1, 2, 4]), np.array([1, 2, 3, 4, 5]))
    first = (np.array([0, 2, 3]), np.array([0, 2, 4]))  # view 0 voxels keep vertices 0, 2, 4
    inverse = (np.array([0, 0, 1, 2]), np.array([0, 0, 1, 2, 2]))  # view 1: {1, 2} {3} {4, 5}
    pairs, vertex = view_pairs(kept, first, inverse, 6)
    # vertex 0 is not in view 1; vertex 2 is in view 1's voxel 0, vertex 4 in its voxel 2
    assert pairs.tolist() == [[1, 0], [2, 2]] and vertex.tolist() == [2, 4]
    # view 0 voxels keeping vertices 1 and 2, which share view 1's voxel 0: only the first pair is kept
    pairs, vertex = view_pairs(kept, (np.array([1, 2, 3]), first[1]), inverse, 6)
    assert pairs.tolist() == [[0, 0], [2, 2]] and vertex.tolist() == [1, 4]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("baselines")
    return processed_demo_store(root, SETTINGS)


def _scenes(store, augmentations=None, split="train"):
    return SceneDataset(store, split, read_scene_list(split_list(store, split)), 0.1, augmentations=augmentations)


def test_the_two_views_overlap_partly_and_their_correspondences_are_exact(store):
    views = ViewPairs(_scenes(store), 0.6)  # no augmentation: voxel coordinates are floor(x / 0.1) - their minimum
    for index in range(len(views)):
        scene_id, coord, _, _, _, rng = views.scenes.scene(index)
        item = views[index]
        pairs, where = item["pairs"].numpy(), item["pair_coord"].numpy()
        fraction = [len(v["inverse"]) / len(coord) for v in item["views"]]
        assert fraction == pytest.approx([0.6, 0.6], abs=1e-3)
        assert 0 < len(pairs) < len(item["views"][0]["coords"])  # partly overlapping
        rows = [crop(coord, 0.6, rng) for _ in range(2)]  # the same draws as the item's views
        for view, (side, kept) in enumerate(zip(pairs.T, rows)):
            cells = np.floor(coord[kept] / 0.1).astype(np.int64)
            voxel = np.floor(where / 0.1).astype(np.int64) - cells.min(0)
            np.testing.assert_array_equal(item["views"][view]["coords"].numpy()[side], voxel)
        assert len(np.unique(pairs[:, 0])) == len(np.unique(pairs[:, 1])) == len(pairs)  # one-to-one


def test_csc_loss_falls_over_a_few_steps_on_the_demo(store):
    config = load_config([REPO / "config.yaml"])
    spec = resolve_run(config, "pretraining", "csc")
    objective = OBJECTIVES["csc"](spec.settings, {}, torch.device("cpu"))
    assert objective.uses_labels is False and objective.monitor is None
    net = build_model("torch", "Res16UNet14Tiny", 0, **objective.model_args(None))
    assert net.embedding.kernel.shape == (net.feature_dim, 32)  # the 32-d head on the backbone's last plane
    items = objective.train_items(_scenes(store, augmentations=spec.settings["train"]["augmentations"]))
    batch = collate_view_pairs([items[i] for i in range(len(items))])
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.8)
    losses = []
    for step in range(6):
        objective.start_epoch(0, 0)  # the same pairs every step
        coords = batch["coords"]
        out = net.backend.output_features(net(net.backend.input_tensor(coords, batch["features"])), coords)
        total, count = objective.loss({"features": out}, batch)
        loss = total / count
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


def test_a_fine_tuning_from_csc_leaves_its_head_out():
    config = load_config([REPO / "config.yaml"])
    args = OBJECTIVES["cross_entropy"](resolve_run(config, "experiment", "csc").settings, {}, "cpu").model_args(
        {"num_classes": None, "feature_dim": None, "embedding_dim": 32})
    net = build_model("torch", "Res16UNet14Tiny", 0, **args)
    assert net.embedding is None and net.final is not None


# --------------------------------------------------------------------------------------- schedule, ablation


def test_exponential_schedule_decays_per_optimiser_step():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    scheduler = SCHEDULES["exponential"].build(optimizer, {"gamma": 0.99, "decay_steps": 1000}, 250)
    for _ in range(8):  # 8 epochs of 250 steps = 2000 steps
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.99 ** 2)


def test_only_the_schedules_own_keys_are_identity():
    config = load_config([REPO / "config.yaml"])
    csc, clip = (resolve_run(config, "pretraining", name).settings["train"] for name in ("csc", "clip"))
    assert set(csc) - set(clip) == {"decay_steps"} and set(clip) - set(csc) == {"milestones"}
    assert csc["scheduler"] == "exponential" and csc["lr"] == 0.1 and csc["momentum"] == 0.8


def test_a_loss_override_the_objective_does_not_read_is_an_error():
    with pytest.raises(ConfigError, match=r"'experiments.ours.losses.contrastive'.*pre-training"):
        validate_config({"experiments": {"ours": {"pretraining": "clip", "losses": {"contrastive": {"neg_weight": 0}}}},
                         "reports": {"table1": ["ours"], "limited_annotations": [], "table2": [], "table3": [], "text_encoder_ablation": [], "fig6": [], "fig8": []}}, SCHEMA_PATH)


def test_positives_only_is_the_language_pretraining_without_negatives():
    config = load_config([REPO / "config.yaml"])
    ablation, full = (resolve_run(config, "pretraining", name) for name in ("clip_positives", "clip"))
    assert ablation.objective == full.objective == "language"
    assert ablation.settings["losses.contrastive"] == {**full.settings["losses.contrastive"], "neg_weight": 0}
    assert identity_changes({"settings": full.settings}, {"settings": ablation.settings}) == \
        ["settings.losses.contrastive.neg_weight"]
