"""Headless renders of coloured scene vertices (Figs. 6 and 8): an orthographic view and a z-buffer of our own.

A view turns the scene about the vertical axis by `azimuth` and looks down at `elevation` degrees above the
horizon (90: from straight above). Each vertex is drawn as a square of the scene's vertex spacing (at least one
pixel); where several cover a pixel the one nearest the viewer wins. Pixels no vertex covers keep the background.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BACKGROUND = (255, 255, 255)


@dataclass(frozen=True)
class View:
    name: str
    elevation: float  # degrees above the horizon
    azimuth: float  # degrees about the vertical axis

    def rotation(self) -> np.ndarray:
        """World -> camera axes (right, up, towards the viewer)."""
        a, e = np.radians(self.azimuth), np.radians(self.elevation)
        about_z = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
        tilt = np.array([[1.0, 0.0, 0.0], [0.0, np.sin(e), np.cos(e)], [0.0, -np.cos(e), np.sin(e)]])
        return tilt @ about_z


TOP = View("top", 90.0, 0.0)
OBLIQUE = View("oblique", 50.0, 35.0)


def render(coord: np.ndarray, colors: np.ndarray, view: View, width: int, height: int, point_size: float,
           margin: float = 0.03, background: tuple[int, int, int] = BACKGROUND) -> np.ndarray:
    """[height, width, 3] uint8 image of the vertices (`coord` N x 3 in metres, `colors` N x 3 uint8), the scene
    fitted into the image with `margin` (a fraction of each side) free; `point_size` in metres."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = background
    if len(coord) == 0:
        return image
    camera = np.asarray(coord, np.float64) @ view.rotation().T
    low, high = camera[:, :2].min(0), camera[:, :2].max(0)
    span = np.maximum(high - low, 1e-9)
    scale = min((width - 1) * (1 - 2 * margin) / span[0], (height - 1) * (1 - 2 * margin) / span[1])
    centre = (low + high) / 2
    u = np.rint((camera[:, 0] - centre[0]) * scale + (width - 1) / 2).astype(np.int64)
    v = np.rint((height - 1) / 2 - (camera[:, 1] - centre[1]) * scale).astype(np.int64)
    radius = max(0, int(round(point_size * scale / 2)))
    offsets = np.arange(-radius, radius + 1)
    du, dv = (grid.ravel() for grid in np.meshgrid(offsets, offsets))
    uu, vv = (u[:, None] + du[None]).ravel(), (v[:, None] + dv[None]).ravel()
    point = np.repeat(np.arange(len(coord)), len(du))
    inside = (uu >= 0) & (uu < width) & (vv >= 0) & (vv < height)
    pixel, point = vv[inside] * width + uu[inside], point[inside]
    order = np.lexsort((camera[point, 2], pixel))  # by pixel, the nearest vertex last
    pixel, point = pixel[order], point[order]
    nearest = np.r_[pixel[1:] != pixel[:-1], True]
    image.reshape(-1, 3)[pixel[nearest]] = np.asarray(colors, np.uint8)[point[nearest]]
    return image
