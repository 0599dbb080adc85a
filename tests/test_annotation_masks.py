"""Limited-annotation masks: exact counts, determinism, uniqueness, FPS spread and the FPS definition."""

import numpy as np
import pytest

from lgseg.data.annotation_masks import farthest_point_sampling, num_annotated, scene_annotation_mask


@pytest.mark.parametrize("n, ratio, expected", [
    (200, 0.05, 10), (3, 0.05, 3), (50, 0.1, 5), (30, 0.5, 15), (5, 0.5, 5), (100, 0.05, 5), (1000, 0.1, 100),
    (45, 0.1, 5), (25, 0.5, 12),  # round(12.5) = 12: Python rounds half to even, like the original code
])
def test_num_annotated(n, ratio, expected):
    assert num_annotated(n, ratio) == expected


def _brute_force_fps(points, k, start):
    chosen = [start]
    for _ in range(k - 1):
        d = np.min(((points[:, None, :] - points[chosen][None, :, :]) ** 2).sum(-1), axis=1)
        d[chosen] = -1
        chosen.append(int(np.argmax(d)))
    return chosen


def test_fps_matches_the_definition():
    points = np.random.default_rng(0).random((300, 3))
    assert farthest_point_sampling(points, 40, start=7).tolist() == _brute_force_fps(points, 40, 7)


def test_fps_with_duplicate_points_never_repeats():
    points = np.zeros((10, 3))
    points[5] = 1.0
    assert farthest_point_sampling(points, 10).tolist() == [0, 5, 1, 2, 3, 4, 6, 7, 8, 9]


def test_fps_spreads_better_than_random_subsets():
    rng = np.random.default_rng(1)
    sphere = rng.normal(size=(2000, 3))
    sphere /= np.linalg.norm(sphere, axis=1, keepdims=True)

    def min_pairwise(idx):
        d = np.linalg.norm(sphere[idx][:, None] - sphere[idx][None], axis=-1)
        return d[np.triu_indices(len(idx), 1)].min()

    fps = min_pairwise(farthest_point_sampling(sphere, 50))
    random_best = max(min_pairwise(rng.choice(2000, 50, replace=False)) for _ in range(20))
    assert fps >= random_best
    assert fps > 2 * random_best  # FPS on a sphere is far more even than chance


def _scene():
    rng = np.random.default_rng(2)
    sizes = [200, 3, 50, 120]
    instance = np.concatenate([np.full(n, k) for k, n in enumerate(sizes)] + [np.full(30, -1)]).astype(np.int32)
    segment = np.where(instance >= 0, instance + 10, -1).astype(np.int16)
    segment[5:15] = -1  # unlabelled vertices of instance 0 are not candidates
    order = rng.permutation(len(instance))
    return rng.random((len(instance), 3)).astype(np.float32), segment[order], instance[order]


@pytest.mark.parametrize("ratio, expected_counts", [
    (0.05, [10, 3, 5, 6]),  # 190 * 0.05 = 9.5 -> 10 (half to even); 3 < 5 -> all 3; 50 * 0.05 = 2.5 -> min 5
    (0.1, [19, 3, 5, 12]),
    (0.5, [95, 3, 25, 60]),
])
def test_scene_mask_counts_membership_and_determinism(ratio, expected_counts):
    coord, segment, instance = _scene()
    kept = scene_annotation_mask(coord, segment, instance, ratio)
    assert kept.dtype == np.int32 and np.all(np.diff(kept) > 0)  # sorted, unique
    assert np.all(segment[kept] >= 0) and np.all(instance[kept] >= 0)
    labelled = {k: int(((instance == k) & (segment >= 0)).sum()) for k in range(4)}
    assert labelled == {0: 190, 1: 3, 2: 50, 3: 120}
    for k, n in labelled.items():
        assert int((instance[kept] == k).sum()) == expected_counts[k]
        first = np.flatnonzero((instance == k) & (segment >= 0))[0]
        assert first in kept  # FPS starts at the instance's first labelled vertex
    np.testing.assert_array_equal(kept, scene_annotation_mask(coord, segment, instance, ratio))
