"""Train-time augmentations of the paper (LGS defaults), declared as data: a list of named steps with parameters.

Each step takes and returns (coord float N x 3 in metres, color float N x 3 in 0..255) and draws from the
numpy Generator it is given, so a scene's augmentation is reproducible from (seed, epoch, scene).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates

DEFAULT_STEPS = [
    {"name": "elastic_distortion", "p": 0.95, "params": [[0.2, 0.4], [0.8, 1.6]]},
    {"name": "rotate", "max_xy": float(np.pi / 64), "max_z": float(np.pi)},
    {"name": "scale", "low": 0.9, "high": 1.1},
    {"name": "flip", "p": 0.95},
    {"name": "chromatic_auto_contrast", "p": 0.2},
    {"name": "chromatic_translation", "p": 0.95, "ratio": 0.1},
    {"name": "chromatic_jitter", "p": 0.95, "std": 0.05},
]


def _box_blur(grid: np.ndarray) -> np.ndarray:
    """3-tap mean filter along each of the three axes (edges replicated)."""
    for axis in range(3):
        padded = np.pad(grid, [(1, 1) if a == axis else (0, 0) for a in range(3)] + [(0, 0)], mode="edge")
        n = grid.shape[axis]
        grid = sum(np.take(padded, np.arange(k, k + n), axis=axis) for k in range(3)) / 3.0
    return grid


def _trilinear(grid: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Sample grid[X, Y, Z, C] at fractional cell positions (N x 3), trilinearly; outside the grid the border."""
    return np.stack([map_coordinates(grid[..., c], position.T, order=1, mode="nearest")
                     for c in range(grid.shape[3])], axis=1)


def elastic_distortion(coord, color, rng, p, params):
    """Smooth random displacement fields (granularity, magnitude in metres), applied with probability p."""
    if rng.random() >= p:
        return coord, color
    for granularity, magnitude in params:
        low = coord.min(0)
        shape = np.floor((coord.max(0) - low) / granularity).astype(int) + 3
        noise = rng.standard_normal((*shape, 3))
        for _ in range(2):
            noise = _box_blur(noise)
        coord = coord + _trilinear(noise, (coord - low) / granularity + 1) * magnitude
    return coord, color


def rotate(coord, color, rng, max_xy, max_z):
    """Small random tilts about x and y, any angle about z; the three rotations composed in random order."""
    angles = [rng.uniform(-max_xy, max_xy), rng.uniform(-max_xy, max_xy), rng.uniform(-max_z, max_z)]
    matrices = []
    for axis, angle in enumerate(angles):
        c, s = np.cos(angle), np.sin(angle)
        m = np.eye(3)
        i, j = [a for a in range(3) if a != axis]
        m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
        matrices.append(m)
    rotation = np.eye(3)
    for k in rng.permutation(3):
        rotation = rotation @ matrices[k]
    return coord @ rotation.T, color


def scale(coord, color, rng, low, high):
    return coord * rng.uniform(low, high), color


def flip(coord, color, rng, p):
    """With probability p, mirror x and y each with probability 0.5 (about the maximum coordinate)."""
    if rng.random() < p:
        coord = coord.copy()
        for axis in (0, 1):
            if rng.random() < 0.5:
                coord[:, axis] = coord[:, axis].max() - coord[:, axis]
    return coord, color


def chromatic_auto_contrast(coord, color, rng, p):
    """Stretch each channel to 0..255 and blend with the original by a random factor."""
    if rng.random() < p:
        low, high = color.min(0), color.max(0)
        stretched = (color - low) * (255.0 / np.maximum(high - low, 1e-6))
        blend = rng.random()
        color = (1 - blend) * color + blend * stretched
    return coord, color


def chromatic_translation(coord, color, rng, p, ratio):
    if rng.random() < p:
        color = np.clip(color + (rng.random(3) - 0.5) * 2 * 255 * ratio, 0, 255)
    return coord, color


def chromatic_jitter(coord, color, rng, p, std):
    if rng.random() < p:
        color = np.clip(color + rng.standard_normal(color.shape) * std * 255, 0, 255)
    return coord, color


STEPS = {f.__name__: f for f in (elastic_distortion, rotate, scale, flip, chromatic_auto_contrast,
                                 chromatic_translation, chromatic_jitter)}


PAPER_PARAMETERS = {step["name"]: {k: v for k, v in step.items() if k != "name"} for step in DEFAULT_STEPS}


def augment(coord: np.ndarray, color: np.ndarray, steps: list[dict], rng: np.random.Generator):
    """Apply the configured steps in order; a parameter a step leaves out takes the paper's value."""
    coord, color = coord.astype(np.float64), color.astype(np.float64)
    for step in steps:
        params = {**PAPER_PARAMETERS[step["name"]], **{k: v for k, v in step.items() if k != "name"}}
        coord, color = STEPS[step["name"]](coord, color, rng, **params)
    return coord, color
