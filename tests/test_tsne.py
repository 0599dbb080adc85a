"""Fig. 7's protocol: the class-balanced val sample, features gathered at the sampled vertices, PCA, kNN accuracy."""

import numpy as np
import torch
from torch.utils.data import DataLoader

from conftest import processed_demo_store
from lgseg.data.dataset import SceneDataset, collate
from lgseg.data.store import read_scene
from lgseg.report.tsne import balanced_sample, knn_accuracy, pca, sample_features
from lgseg.scannet.demo import DemoSettings, demo_scene_ids


def _segments():
    rng = np.random.default_rng(3)
    s1 = rng.permutation(np.r_[np.zeros(30), np.ones(5), np.full(40, 2), np.full(10, -1)]).astype(np.int16)
    s0 = rng.permutation(np.r_[np.zeros(20), np.full(3, 2)]).astype(np.int16)
    return {"scene_b": s1, "scene_a": s0}


def test_sample_holds_at_most_k_vertices_of_each_class_all_of_a_rare_one():
    segments = _segments()
    sample = balanced_sample(segments, [0, 1, 2, 7], per_class=10, seed=0)
    assert sample.scene_ids == ("scene_a", "scene_b")
    assert np.bincount(sample.label, minlength=8).tolist() == [10, 5, 10, 0, 0, 0, 0, 0]
    labels = [segments[sample.scene_ids[s]][v] for s, v in zip(sample.scene, sample.vertex)]
    np.testing.assert_array_equal(labels, sample.label)  # every sampled vertex is of its class
    pairs = list(zip(sample.scene.tolist(), sample.vertex.tolist()))
    assert len(set(pairs)) == len(pairs) and pairs == sorted(pairs)  # without replacement, scene then vertex order
    ones = sorted(v for s, v, c in zip(sample.scene, sample.vertex, sample.label) if c == 1)
    assert ones == sorted(np.flatnonzero(segments["scene_b"] == 1).tolist())


def test_sample_is_seeded_and_uniform_over_all_scenes():
    segments = _segments()
    first = balanced_sample(segments, [0, 2], per_class=10, seed=5)
    again = balanced_sample(segments, [0, 2], per_class=10, seed=5)
    other = balanced_sample(segments, [0, 2], per_class=10, seed=6)
    np.testing.assert_array_equal(first.vertex, again.vertex)
    assert not np.array_equal(first.vertex, other.vertex)
    # each of class 0's 50 vertices (20 in one scene, 30 in the other) is drawn with probability 10 / 50
    hits = {}
    for seed in range(2000):
        sample = balanced_sample(segments, [0], per_class=10, seed=seed)
        for s, v in zip(sample.scene.tolist(), sample.vertex.tolist()):
            hits[(s, v)] = hits.get((s, v), 0) + 1
    frequency = np.array(list(hits.values())) / 2000
    assert len(hits) == 50 and np.all(np.abs(frequency - 0.2) < 0.04)


def test_features_come_from_each_sampled_vertex_voxel_the_same_points_for_every_model(tmp_path):
    settings = DemoSettings(seed=4, num_train=1, num_val=2, num_test=0, vertex_spacing=0.15, objects_per_room=(4, 6))
    processed = processed_demo_store(tmp_path, settings)
    scenes = sorted(demo_scene_ids(settings)["val"])
    arrays = {s: read_scene(processed / "val" / s) for s in scenes}
    sample = balanced_sample({s: a["segment"] for s, a in arrays.items()}, [0, 1, 2], per_class=40, seed=1)
    dataset = SceneDataset(processed, "val", scenes, 0.2)

    def outputs(model):  # "networks" whose feature at a voxel is a function of its coordinates
        for batch in DataLoader(dataset, batch_size=1, collate_fn=collate):
            yield batch, {"features": model(batch["coords"][:, 1:].float())}

    first = sample_features(outputs(lambda c: c), sample)
    second = sample_features(outputs(lambda c: torch.cat([2 * c + 1, c[:, :1]], 1)), sample)
    expected = np.concatenate([
        (lambda cells: cells - cells.min(0))(np.floor(np.asarray(arrays[s]["coord"]) / 0.2))[
            sample.vertex[sample.scene == k]] for k, s in enumerate(sample.scene_ids)])
    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(second, np.c_[2 * expected + 1, expected[:, :1]])


def test_pca_matches_sklearn_up_to_sign():
    from sklearn.decomposition import PCA

    x = np.random.default_rng(0).normal(size=(200, 12)) @ np.diag(np.linspace(3, 0.1, 12))
    ours, theirs = pca(x, 5), PCA(n_components=5, svd_solver="full").fit_transform(x)
    np.testing.assert_allclose(np.abs(ours), np.abs(theirs), atol=1e-9)
    assert pca(x, 50).shape == (200, 12)  # fewer axes than asked: all of them


def test_knn_accuracy_leaves_each_point_out():
    points = np.array([[0.0], [1.0], [10.0], [11.5], [12.0]])
    labels = np.array([0, 0, 1, 1, 0])
    # nearest other point: 1, 0, 11.5, 12, 11.5 -> labels 0, 0, 1, 0, 1 -> right for the first three
    assert knn_accuracy(points, labels, k=1) == 0.6
    assert knn_accuracy(np.r_[np.zeros((5, 2)), np.full((5, 2), 9.0)], np.r_[np.zeros(5), np.ones(5)].astype(int),
                        k=3) == 1.0
