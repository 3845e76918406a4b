"""Deterministic synthetic image pairs for the out-of-the-box super-resolution task.

Each 64x64 RGB high-resolution image is drawn from the things 2x SR models learn
to restore on photos: a smooth colour gradient, a patch of oriented texture (a
grating, fine enough that bicubic blurs it), flat shapes with sharp anti-aliased
edges, and thin dark or light strokes grouped like handwriting. The 32x32
low-resolution input is the HR image downscaled 2x bicubically (Pillow, like the
real-data reader's derived LR), rounded to uint8 as a PNG would be. The same
(split, index) always gives the same pair, on any machine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mlgauge.data.sr_pairs import downscale_bicubic

HR_SIZE = 64
SCALE = 2
LR_SIZE = HR_SIZE // SCALE
LR_SHAPE = (3, LR_SIZE, LR_SIZE)  # model input, NCHW per sample, 0..255 float32
HR_SHAPE = (HR_SIZE, HR_SIZE, 3)  # ground truth, HWC uint8
_SPLIT_SEEDS = {"train": 40_961, "val": 52_711}

# Pixel-centre coordinates in HR pixels, shared by every drawing primitive.
_YY, _XX = np.meshgrid(np.arange(HR_SIZE) + 0.5, np.arange(HR_SIZE) + 0.5, indexing="ij")


def _coverage(distance: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance in pixels (negative inside): a 1-px ramp."""
    return np.clip(0.5 - distance, 0.0, 1.0)[..., None]


def _paint(image: np.ndarray, distance: np.ndarray, colour: np.ndarray) -> None:
    cover = _coverage(distance)
    image *= 1.0 - cover
    image += cover * colour


def _gradient(rng: np.random.Generator) -> np.ndarray:
    start, end = rng.uniform(30, 225, 3), rng.uniform(30, 225, 3)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * _XX + np.sin(angle) * _YY) / HR_SIZE
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    return start + (end - start) * t[..., None]


def _shape_distance(rng: np.random.Generator) -> np.ndarray:
    """Signed distance to a random disc, rotated rectangle or half-plane."""
    cx, cy = rng.uniform(8, HR_SIZE - 8, 2)
    kind = rng.integers(3)
    if kind == 0:
        return np.hypot(_XX - cx, _YY - cy) - rng.uniform(5, 18)
    angle = rng.uniform(0, np.pi)
    u = np.cos(angle) * (_XX - cx) + np.sin(angle) * (_YY - cy)
    v = -np.sin(angle) * (_XX - cx) + np.cos(angle) * (_YY - cy)
    if kind == 1:
        half_w, half_h = rng.uniform(4, 16, 2)
        return np.maximum(np.abs(u) - half_w, np.abs(v) - half_h)
    return u


def _texture(rng: np.random.Generator, image: np.ndarray) -> None:
    # 7..14 cycles per 64 px: a period of 4.6..9 HR px (2.3..4.6 LR px), under the LR Nyquist
    # limit of 2 px, so the LR image still holds it but bicubic upscaling visibly flattens it.
    cycles = rng.uniform(7, 14)
    angle = rng.uniform(0, np.pi)
    proj = (np.cos(angle) * _XX + np.sin(angle) * _YY) / HR_SIZE
    wave = np.sin(2 * np.pi * cycles * proj + rng.uniform(0, 2 * np.pi))
    base, amplitude = rng.uniform(60, 200, 3), rng.uniform(25, 60)
    texture = base + amplitude * wave[..., None]
    cover = _coverage(_shape_distance(rng))
    image *= 1.0 - cover
    image += cover * texture


def _segment_distance(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((_XX - x0) * dx + (_YY - y0) * dy) / max(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
    return np.hypot(_XX - (x0 + t * dx), _YY - (y0 + t * dy))


def _strokes(rng: np.random.Generator, image: np.ndarray) -> None:
    """A line of 3-5 'glyphs', each 2-3 connected strokes 1-2.2 px wide, like text."""
    dark = rng.random() < 0.5
    colour = rng.uniform(0, 50, 3) if dark else rng.uniform(205, 255, 3)
    x, y = rng.uniform(4, 20), rng.uniform(10, HR_SIZE - 10)
    width = rng.uniform(1.0, 2.2)
    for _ in range(rng.integers(3, 6)):
        px, py = x + rng.uniform(0, 3), y + rng.uniform(-6, 6)
        distance = np.full(_XX.shape, np.inf)
        for _ in range(rng.integers(2, 4)):
            qx, qy = px + rng.uniform(-6, 8), py + rng.uniform(-8, 8)
            distance = np.minimum(distance, _segment_distance(px, py, qx, qy))
            px, py = qx, qy
        _paint(image, distance - width / 2, colour)
        x += rng.uniform(9, 15)


def hr_image(split: str, index: int) -> np.ndarray:
    """One HR image ``(64, 64, 3)`` uint8, a pure function of (split, index)."""
    if split not in _SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(_SPLIT_SEEDS)}")
    rng = np.random.default_rng((_SPLIT_SEEDS[split], int(index)))
    image = _gradient(rng)
    _texture(rng, image)
    for _ in range(rng.integers(1, 4)):
        _paint(image, _shape_distance(rng), rng.uniform(0, 255, 3))
    for _ in range(2):
        _strokes(rng, image)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def generate(indices: Sequence[int], split: str) -> tuple[np.ndarray, np.ndarray]:
    """LR inputs ``(n, 3, 32, 32)`` float32 in 0..255 and HR targets ``(n, 64, 64, 3)`` uint8."""
    hr = np.zeros((len(indices), *HR_SHAPE), dtype=np.uint8)
    lr = np.zeros((len(indices), LR_SIZE, LR_SIZE, 3), dtype=np.uint8)
    for row, index in enumerate(indices):
        hr[row] = hr_image(split, index)
        lr[row] = downscale_bicubic(hr[row], SCALE)
    return np.ascontiguousarray(lr.transpose(0, 3, 1, 2), dtype=np.float32), hr


class SyntheticSR:
    """A split of synthetic SR pairs as a sample source (see ``tasks.base.SampleSource``).

    ``layout`` "NCHW" (torch, ONNX) or "NHWC" (TFLite) decides how ``load`` lays out the LR inputs.
    """

    label = "synthetic"
    scale = SCALE

    def __init__(self, lr: np.ndarray, hr: np.ndarray, performance_count: int, layout: str = "NCHW") -> None:
        if layout not in ("NCHW", "NHWC"):
            raise ValueError(f"layout must be NCHW or NHWC, not {layout!r}")
        self._lr = lr if layout == "NCHW" else np.ascontiguousarray(lr.transpose(0, 2, 3, 1))
        self._hr = hr
        self.layout = layout
        self.sample_shape = tuple(self._lr.shape[1:])
        self.hr_shape = tuple(hr.shape[1:])
        self.total_count = int(hr.shape[0])
        self.performance_count = min(performance_count, self.total_count)

    def load(self, indices: Sequence[int]) -> np.ndarray:
        return self._lr[np.asarray(indices, dtype=np.int64)]

    def ground_truth(self) -> np.ndarray:
        """HR images ``(n, 64, 64, 3)`` uint8, indexable by sample index."""
        return self._hr
