"""An embedded classification set: shapes and textures drawn from a seed (no files needed).

Each class is a spatial structure, never a colour: a disk, ring, square, triangle, cross,
near-horizontal grating, near-vertical grating, checkerboard, bullseye or a cluster of dots.
Every image draws its own position, scale, rotation, frequency, colours, contrast, smooth
background clutter and pixel noise, so a classifier must learn shape and texture. Classes 10..19
are the same ten structures overlaid with fine diagonal stripes. Generation is vectorized with
numpy, in chunks, and depends only on (seed, split, resolution).
"""

from __future__ import annotations

import numpy as np
import torch

from evaluators.data.arrays import ImageArrays

FAMILIES = ("disk", "ring", "square", "triangle", "cross", "grating_h", "grating_v", "checker",
            "bullseye", "dots")
MAX_CLASSES = 2 * len(FAMILIES)
_CHUNK = 256
_SPLIT_STREAMS = {"train": 0, "test": 1}


def synthetic_arrays(count: int, *, num_classes: int = 10, resolution: int = 32, seed: int = 0,
                     split: str = "train") -> ImageArrays:
    """``count`` RGB images (uint8, balanced classes) of the ``split`` stream of ``seed``."""
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be in 2..{MAX_CLASSES}, got {num_classes}")
    rng = np.random.default_rng([seed, _SPLIT_STREAMS[split], resolution])
    labels = rng.permutation(np.arange(count) % num_classes)
    images = np.empty((count, 3, resolution, resolution), dtype=np.uint8)
    for start in range(0, count, _CHUNK):
        chunk = labels[start:start + _CHUNK]
        images[start:start + len(chunk)] = _render(chunk, resolution, rng)
    return ImageArrays(torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64)))


def _soft(distance: np.ndarray, edge: float | np.ndarray) -> np.ndarray:
    """Anti-aliased inside test: 1 well inside (distance > 0), 0 outside."""
    return 1.0 / (1.0 + np.exp(-np.clip(distance / edge, -30, 30)))


def _smooth_field(n: int, resolution: int, rng: np.random.Generator, cells: int = 4) -> np.ndarray:
    """Low-frequency noise (n, 3, R, R) by bilinear upsampling of a coarse random grid."""
    coarse = rng.normal(size=(n, 3, cells, cells))
    pos = np.linspace(0, cells - 1, resolution)
    lo = np.minimum(pos.astype(int), cells - 2)
    frac = pos - lo
    interp = np.zeros((resolution, cells))
    interp[np.arange(resolution), lo] = 1 - frac
    interp[np.arange(resolution), lo + 1] = frac
    return (interp @ coarse @ interp.T).astype(np.float32)


def _render(labels: np.ndarray, resolution: int, rng: np.random.Generator) -> np.ndarray:
    n = len(labels)
    family = labels % len(FAMILIES)
    striped = labels >= len(FAMILIES)
    grid = ((np.arange(resolution) + 0.5) / resolution * 2 - 1).astype(np.float32)  # pixel centres
    u, v = grid[None, None, :], grid[None, :, None]  # x along width, y along height

    def per_image(values: np.ndarray) -> np.ndarray:
        return values.astype(np.float32)[:, None, None]

    cx, cy = (per_image(rng.uniform(-0.25, 0.25, n)) for _ in range(2))
    scale = per_image(rng.uniform(0.6, 1.0, n))
    theta = rng.uniform(0, np.pi, n)
    # gratings keep their orientation class: near 0 or near 90 degrees (+-20)
    jitter = rng.uniform(-np.pi / 9, np.pi / 9, n)
    theta = np.where(family == FAMILIES.index("grating_h"), jitter, theta)
    theta = np.where(family == FAMILIES.index("grating_v"), np.pi / 2 + jitter, theta)
    cos, sin = per_image(np.cos(theta)), per_image(np.sin(theta))
    x = ((u - cx) * cos + (v - cy) * sin) / scale  # local coordinates, shape ~ unit size
    y = (-(u - cx) * sin + (v - cy) * cos) / scale
    radius = np.sqrt(x**2 + y**2)
    edge = per_image(1.5 / resolution / scale[:, 0, 0])
    freq = per_image(rng.uniform(1.2, 2.0, n))  # cycles per local unit
    phase = per_image(rng.uniform(0, 2 * np.pi, n))
    aperture = _soft(0.95 - radius, edge)

    masks = np.zeros((n, resolution, resolution), dtype=np.float32)

    def fill(name: str, make: object) -> None:
        chosen = family == FAMILIES.index(name)
        if chosen.any():
            masks[chosen] = make(chosen)  # type: ignore[operator]

    fill("disk", lambda m: _soft(0.55 - radius[m], edge[m]))
    fill("ring", lambda m: _soft(0.6 - radius[m], edge[m]) * _soft(radius[m] - 0.35, edge[m]))
    fill("square", lambda m: _soft(0.45 - np.maximum(abs(x[m]), abs(y[m])), edge[m]))
    angles = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
    fill("triangle", lambda m: _soft(
        0.3 - np.max([x[m] * np.cos(a) + y[m] * np.sin(a) for a in angles], axis=0), edge[m]))
    fill("cross", lambda m: np.maximum(
        _soft(0.16 - abs(x[m]), edge[m]) * _soft(0.6 - abs(y[m]), edge[m]),
        _soft(0.16 - abs(y[m]), edge[m]) * _soft(0.6 - abs(x[m]), edge[m])))
    def grating(m: np.ndarray) -> np.ndarray:
        return aperture[m] * (0.5 + 0.5 * np.sin(2 * np.pi * freq[m] * y[m] + phase[m]))

    fill("grating_h", grating)
    fill("grating_v", grating)
    fill("checker", lambda m: aperture[m] * _soft(
        np.sin(2 * np.pi * freq[m] * x[m] * 0.7) * np.sin(2 * np.pi * freq[m] * y[m] * 0.7), 0.15))
    fill("bullseye", lambda m: aperture[m] * (0.5 + 0.5 * np.cos(2 * np.pi * freq[m] * radius[m])))

    def dots(m: np.ndarray) -> np.ndarray:
        k = int(m.sum())
        centres = rng.uniform(-0.6, 0.6, size=(k, 5, 2))
        spots = np.exp(-((x[m][:, None] - centres[:, :, 0, None, None]) ** 2
                         + (y[m][:, None] - centres[:, :, 1, None, None]) ** 2) / (2 * 0.1**2))
        return np.clip(spots.sum(axis=1), 0, 1)

    fill("dots", dots)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * (x + y) / np.sqrt(2))
    masks = np.where(striped[:, None, None], masks * stripes, masks)

    background = rng.uniform(0, 1, (n, 3, 1, 1)).astype(np.float32)
    direction = rng.normal(size=(n, 3, 1, 1))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    contrast = rng.uniform(0.5, 1.0, (n, 1, 1, 1))
    step = contrast * direction * np.sqrt(3) / 2
    # move away from the background in whichever direction leaves more contrast after clipping
    plus, minus = np.clip(background + step, 0, 1), np.clip(background - step, 0, 1)
    plus_wins = np.abs(plus - background).sum(axis=1, keepdims=True) >= \
        np.abs(minus - background).sum(axis=1, keepdims=True)
    foreground = np.where(plus_wins, plus, minus)
    image = (background + (foreground - background) * masks[:, None]).astype(np.float32)
    image += 0.05 * _smooth_field(n, resolution, rng)
    sigma = rng.uniform(0.01, 0.04, (n, 1, 1, 1)).astype(np.float32)
    image += rng.standard_normal(image.shape, dtype=np.float32) * sigma
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
