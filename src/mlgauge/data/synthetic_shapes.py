"""Deterministic synthetic detection data for the out-of-the-box object-detection task.

Each image is a noisy, shaded background with 1-4 filled shapes of three
classes (rectangle, ellipse, triangle) in random colours, sizes and aspect
ratios, placed without overlapping, so the class is only in the outline and a
detector must localise and classify. Ground-truth boxes are the tight pixel
extent of each drawn shape. The same (split, index) always gives the same
image and boxes, on any machine. Pixels are RGB in 0..1 (MLPerf's RetinaNet
input scale), channel-first float32.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from mlgauge.data.coco import CocoGroundTruth, ground_truth_from_boxes

CLASS_NAMES = ("rectangle", "ellipse", "triangle")
NUM_CLASSES = len(CLASS_NAMES)
IMAGE_SIZE = 96
SAMPLE_SHAPE = (3, IMAGE_SIZE, IMAGE_SIZE)
MAX_SHAPES = 4
_SIZE_RANGE = (14.0, 44.0)  # shape extent in pixels (geometric mean of width and height)
_MAX_ASPECT = 2.0
_SPLIT_SEEDS = {"train": 5_113, "val": 90_001, "calibration": 4_242}

_CENTRES = np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5  # pixel centres


def _mask(kind: int, x1: float, y1: float, x2: float, y2: float, apex: float, flip: bool) -> np.ndarray:
    xx = _CENTRES[None, :]
    yy = _CENTRES[:, None]
    inside_box = (xx >= x1) & (xx <= x2) & (yy >= y1) & (yy <= y2)
    if kind == 0:  # rectangle
        return inside_box
    w, h = x2 - x1, y2 - y1
    if kind == 1:  # axis-aligned ellipse inscribed in the box
        return ((xx - (x1 + x2) / 2) / (w / 2)) ** 2 + ((yy - (y1 + y2) / 2) / (h / 2)) ** 2 <= 1.0
    # Triangle: base on one horizontal edge, apex on the other at fraction ``apex`` of the width.
    t = (yy - y1) / h if not flip else (y2 - yy) / h  # 0 at the apex row, 1 at the base
    ax = x1 + apex * w
    left = ax + (x1 - ax) * t
    right = ax + (x2 - ax) * t
    return inside_box & (xx >= left) & (xx <= right)


def _overlaps(box: tuple[float, float, float, float], placed: list[tuple[float, ...]], margin: float = 2.0) -> bool:
    return any(
        box[0] < p[2] + margin and p[0] < box[2] + margin and box[1] < p[3] + margin and p[1] < box[3] + margin
        for p in placed
    )


def _one(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = IMAGE_SIZE
    bg = rng.uniform(0.15, 0.85, size=3).astype(np.float32)
    # A gentle linear shading so the background is not flat, then the shapes, then noise.
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * (_CENTRES[None, :] / s - 0.5) + np.sin(angle) * (_CENTRES[:, None] / s - 0.5)).astype(np.float32)
    image = bg[:, None, None] + rng.uniform(0.0, 0.25) * ramp[None]
    boxes, labels, placed = [], [], []
    for _ in range(int(rng.integers(1, MAX_SHAPES + 1))):
        kind = int(rng.integers(NUM_CLASSES))
        for _attempt in range(20):
            extent = float(np.exp(rng.uniform(np.log(_SIZE_RANGE[0]), np.log(_SIZE_RANGE[1]))))
            aspect = float(np.exp(rng.uniform(-np.log(_MAX_ASPECT), np.log(_MAX_ASPECT))))
            w, h = extent * np.sqrt(aspect), extent / np.sqrt(aspect)
            x1, y1 = rng.uniform(1, s - 1 - w), rng.uniform(1, s - 1 - h)
            box = (x1, y1, x1 + w, y1 + h)
            if not _overlaps(box, placed):
                break
        else:
            continue  # no free spot: this image gets fewer shapes
        apex, flip = float(rng.uniform(0.2, 0.8)), bool(rng.integers(2))
        colour = rng.uniform(0, 1, size=3).astype(np.float32)
        while float(np.abs(colour - bg).mean()) < 0.25:  # keep every shape visible against its background
            colour = rng.uniform(0, 1, size=3).astype(np.float32)
        mask = _mask(kind, *box, apex, flip)
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            continue
        image = np.where(mask[None], colour[:, None, None], image)
        placed.append(box)
        # Tight extent of the drawn pixels, in xyxy pixel-edge coordinates.
        boxes.append((cols[0], rows[0], cols[-1] + 1, rows[-1] + 1))
        labels.append(kind)
    image = image + np.float32(0.05) * rng.standard_normal(image.shape, dtype=np.float32)
    return (
        np.clip(image, 0, 1).astype(np.float32),
        np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        np.asarray(labels, dtype=np.int64),
    )


def generate(indices: Iterable[int], split: str) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Images ``(n, 3, 96, 96)`` float32 in 0..1, and per image xyxy boxes ``(k, 4)`` and labels ``(k,)``."""
    if split not in _SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; use one of {sorted(_SPLIT_SEEDS)}")
    indices = [int(i) for i in indices]
    images = np.empty((len(indices), *SAMPLE_SHAPE), dtype=np.float32)
    boxes, labels = [], []
    for pos, index in enumerate(indices):
        # One generator per (split, index): any subset reproduces the same samples.
        image, b, c = _one(np.random.default_rng([_SPLIT_SEEDS[split], index]))
        images[pos] = image
        boxes.append(b)
        labels.append(c)
    return images, boxes, labels


def pack(boxes: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Per-image boxes and labels as three flat arrays, for ``np.save``."""
    return {
        "counts": np.asarray([len(b) for b in boxes], dtype=np.int64),
        "boxes": np.concatenate([np.asarray(b, np.float32).reshape(-1, 4) for b in boxes]) if boxes else np.zeros((0, 4), np.float32),
        "labels": np.concatenate([np.asarray(c, np.int64) for c in labels]) if labels else np.zeros(0, np.int64),
    }


def unpack(counts: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Inverse of :func:`pack`."""
    ends = np.cumsum(counts)
    starts = ends - counts
    return [boxes[a:b] for a, b in zip(starts, ends, strict=True)], [labels[a:b] for a, b in zip(starts, ends, strict=True)]


def ground_truth(boxes: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> CocoGroundTruth:
    """COCO ground truth for these samples (image id = index + 1, category id = class)."""
    return ground_truth_from_boxes([(IMAGE_SIZE, IMAGE_SIZE)] * len(boxes), boxes, labels, CLASS_NAMES, "synthetic")


class SyntheticShapes:
    """A split of the synthetic shapes as a sample source (see ``tasks.base.SampleSource``)."""

    label = "synthetic"
    sample_shape = SAMPLE_SHAPE
    sample_dtype = np.dtype(np.float32)

    def __init__(self, images: np.ndarray, truth: CocoGroundTruth, performance_count: int) -> None:
        if len(images) != len(truth):
            raise ValueError(f"{len(images)} images but ground truth for {len(truth)}")
        self._images = images
        self._truth = truth
        self.total_count = int(images.shape[0])
        self.performance_count = min(performance_count, self.total_count)

    def load(self, indices: Sequence[int]) -> np.ndarray:
        return self._images[np.asarray(indices, dtype=np.int64)]

    def ground_truth(self) -> CocoGroundTruth:
        return self._truth
