"""Deterministic synthetic scenes for the out-of-the-box segmentation task (MOSAIC stand-in).

Each 64x64 scene is a background (class 0) with 2-4 overlapping shapes (discs,
ellipses, rectangles) of object classes 1..4. An object's class is its texture:
a stripe grating with a class-specific orientation (0, 45, 90, 135 degrees),
while the background is smooth, blotchy shading. Shape kind, size, position,
stripe phase and period, colours and brightness are random per object and
colour carries no class signal, so a network must read local texture
orientation to label pixels; Gaussian noise on top keeps it from being trivial.
Later shapes occlude earlier ones, in the image and in the mask alike.

The same (split, index) always gives the same scene, on any machine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NUM_CLASSES = 5  # background + 4 textures
IMAGE_SIZE = 64
SAMPLE_SHAPE = (3, IMAGE_SIZE, IMAGE_SIZE)
IGNORE_LABEL = 255  # never produced here; the metric drops it (see tasks.segmentation)
_ORIENTATIONS_DEG = (0.0, 45.0, 90.0, 135.0)  # of classes 1..4
_NOISE_STD = 0.35
_SPLIT_SEEDS = {"train": 51_071, "val": 60_493, "calibration": 14_159}


def _scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One image ``(3, 64, 64)`` float64 and its mask ``(64, 64)`` uint8."""
    n = IMAGE_SIZE
    coords = np.arange(n) + 0.5
    yy, xx = np.meshgrid(coords, coords, indexing="ij")

    # Background: a few broad blobs (periods of 40+ px), far coarser than any stripe.
    shade = np.zeros((n, n))
    for _ in range(3):
        angle, period, phase = rng.uniform(0, np.pi), rng.uniform(40, 90), rng.uniform(0, 2 * np.pi)
        shade += np.sin(2 * np.pi * (np.cos(angle) * xx + np.sin(angle) * yy) / period + phase)
    image = (rng.uniform(0.3, 1.0, 3)[:, None, None] * shade[None] / 3.0) + rng.uniform(-0.3, 0.3, (3, 1, 1))
    mask = np.zeros((n, n), dtype=np.uint8)

    for _ in range(rng.integers(2, 5)):
        cls = int(rng.integers(1, NUM_CLASSES))
        cy, cx = rng.uniform(8, n - 8, 2)
        ry, rx = rng.uniform(7, 20, 2)
        kind = rng.integers(0, 3)
        if kind == 0:  # disc
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= ry**2
        elif kind == 1:  # axis-aligned ellipse
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        else:  # rectangle
            inside = (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
        theta = np.deg2rad(_ORIENTATIONS_DEG[cls - 1] + rng.uniform(-8, 8))
        period = rng.uniform(4.5, 7.0)  # pixels
        stripes = np.sin(2 * np.pi * (np.cos(theta) * xx + np.sin(theta) * yy) / period + rng.uniform(0, 2 * np.pi))
        texture = rng.uniform(0.6, 1.2, 3)[:, None, None] * stripes[None] + rng.uniform(-0.4, 0.4, (3, 1, 1))
        image = np.where(inside[None], texture, image)
        mask[inside] = cls

    image = image + _NOISE_STD * rng.standard_normal(image.shape)
    return image, mask


def generate(indices: Sequence[int], split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 3, 64, 64)`` float32 (roughly zero-mean, unit-scale) and masks ``(n, 64, 64)`` uint8."""
    if split not in _SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(sorted(_SPLIT_SEEDS))}")
    idx = np.asarray(indices, dtype=np.int64)
    images = np.empty((idx.size, *SAMPLE_SHAPE), dtype=np.float32)
    masks = np.empty((idx.size, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for row, i in enumerate(idx):
        # One generator per sample, seeded by (split, index): any subset regenerates identically.
        images[row], masks[row] = _scene(np.random.default_rng((_SPLIT_SEEDS[split], int(i))))
    return images, masks


class SyntheticScenes:
    """A split of the synthetic scenes as a sample source (see ``tasks.base.SampleSource``).

    ``ground_truth()`` is the ``(n, 64, 64)`` uint8 mask array.
    """

    label = "synthetic"
    sample_shape = SAMPLE_SHAPE
    sample_dtype = np.dtype(np.float32)
    mask_shape = (IMAGE_SIZE, IMAGE_SIZE)

    def __init__(self, images: np.ndarray, masks: np.ndarray, performance_count: int) -> None:
        if images.shape[0] != masks.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {masks.shape[0]} masks")
        self._images = images
        self._masks = masks
        self.total_count = int(masks.shape[0])
        self.performance_count = min(performance_count, self.total_count)

    def load(self, indices: Sequence[int]) -> np.ndarray:
        return self._images[np.asarray(indices, dtype=np.int64)]

    def ground_truth(self) -> np.ndarray:
        return self._masks
