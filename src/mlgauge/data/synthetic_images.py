"""Deterministic synthetic images for the out-of-the-box image-classification task.

Each of the 10 classes is a sinusoidal grating with its own orientation and
spatial frequency (5 orientations x 2 frequency bands). Every sample jitters the
orientation, frequency, phase, contrast and colour and adds Gaussian noise, so
the class is learnable from shape alone (colour carries no signal) but a
classifier must generalise, and an untrained network stays at chance (~10%).
The same (seed, index) always gives the same image, on any machine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NUM_CLASSES = 10
IMAGE_SIZE = 32
SAMPLE_SHAPE = (3, IMAGE_SIZE, IMAGE_SIZE)
_ORIENTATIONS_DEG = (0.0, 36.0, 72.0, 108.0, 144.0)
_FREQUENCIES = (2.5, 5.0)  # cycles per image
_SPLIT_SEEDS = {"train": 20_251, "val": 77_017, "calibration": 31_337}


def labels_for(indices: np.ndarray, split: str) -> np.ndarray:
    """Class of each sample: balanced, shuffled with the split's seed."""
    rng = np.random.default_rng(_SPLIT_SEEDS[split])
    # A fixed permutation of a repeating 0..9 pattern, long enough for any index used.
    period = 1 << 16
    base = rng.permutation(np.arange(period) % NUM_CLASSES)
    return base[np.asarray(indices) % period].astype(np.int64)


def generate(indices: Sequence[int], split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 3, 32, 32)`` float32 (roughly zero-mean, unit-scale) and labels ``(n,)``."""
    if split not in _SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}")
    idx = np.asarray(indices, dtype=np.int64)
    labels = labels_for(idx, split)
    n = idx.size
    # One generator per sample, seeded by (split, index): any subset regenerates identically.
    params = np.empty((n, 9), dtype=np.float64)
    for row, i in enumerate(idx):
        params[row] = np.random.default_rng((_SPLIT_SEEDS[split], int(i))).random(9)
    noise = np.stack(
        [np.random.default_rng((_SPLIT_SEEDS[split], int(i), 1)).standard_normal(SAMPLE_SHAPE) for i in idx]
    ) if n else np.zeros((0, *SAMPLE_SHAPE))

    orient = np.deg2rad(np.take(_ORIENTATIONS_DEG, labels % 5) + (params[:, 0] - 0.5) * 28.0)
    freq = np.take(_FREQUENCIES, labels // 5) * (0.9 + 0.2 * params[:, 1])
    phase = params[:, 2] * 2 * np.pi
    contrast = 0.3 + 0.7 * params[:, 3]
    colour = 0.4 + 0.8 * params[:, 4:7]  # (n, 3): random per sample, so colour is not a cue
    offset = (params[:, 7:8] - 0.5) * 0.6

    coords = (np.arange(IMAGE_SIZE) + 0.5) / IMAGE_SIZE  # (W,)
    yy, xx = np.meshgrid(coords, coords, indexing="ij")  # (H, W)
    proj = (
        np.cos(orient)[:, None, None] * xx[None] + np.sin(orient)[:, None, None] * yy[None]
    )  # (n, H, W)
    grating = np.sin(2 * np.pi * freq[:, None, None] * proj + phase[:, None, None])
    images = contrast[:, None, None, None] * colour[:, :, None, None] * grating[:, None]  # (n, 3, H, W)
    images = images + offset[:, :, None, None] + 2.4 * noise
    return images.astype(np.float32), labels


class SyntheticImages:
    """A split of the synthetic images as a sample source (see ``tasks.base.SampleSource``)."""

    label = "synthetic"
    sample_shape = SAMPLE_SHAPE
    sample_dtype = np.dtype(np.float32)

    def __init__(self, images: np.ndarray, labels: np.ndarray, performance_count: int) -> None:
        self._images = images
        self._labels = labels
        self.total_count = int(labels.shape[0])
        self.performance_count = min(performance_count, self.total_count)

    def load(self, indices: Sequence[int]) -> np.ndarray:
        return self._images[np.asarray(indices, dtype=np.int64)]

    def ground_truth(self) -> np.ndarray:
        return self._labels
