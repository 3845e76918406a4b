"""Image resizing that matches TensorFlow 1's kernels bit for bit (in float32).

MLPerf Mobile's reference models were trained and evaluated with TF's
``resize_bilinear``/``resize_nearest_neighbor`` (no half-pixel centres); Pillow's
resampling differs by up to a few grey levels, enough to move accuracy.
"""

from __future__ import annotations

import numpy as np


def tf_resize_bilinear(pixels: np.ndarray, height: int, width: int, *, align_corners: bool) -> np.ndarray:
    """``(H, W, C)`` -> ``(height, width, C)`` float32, as TF1's ``resize_bilinear`` (no half-pixel centres).

    ``align_corners=True`` is DeepLab's image resize; ``False`` is TFLite's evaluation
    preprocessing (``image_preprocessing_stage.cc``), which MLPerf Mobile's ImageNet task uses.
    """
    src = np.asarray(pixels, dtype=np.float32)
    if src.ndim == 2:
        return tf_resize_bilinear(src[:, :, None], height, width, align_corners=align_corners)[:, :, 0]

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if align_corners and n_out > 1:
            scale = np.float32((n_in - 1) / (n_out - 1))
        else:
            scale = np.float32(n_in / n_out)
        pos = np.arange(n_out, dtype=np.float32) * scale
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(np.ceil(pos).astype(np.int64), n_in - 1)
        lo = np.minimum(lo, n_in - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    y0, y1, wy = axis(src.shape[0], height)
    x0, x1, wx = axis(src.shape[1], width)
    top = src[y0][:, x0] * (1 - wx)[None, :, None] + src[y0][:, x1] * wx[None, :, None]
    bottom = src[y1][:, x0] * (1 - wx)[None, :, None] + src[y1][:, x1] * wx[None, :, None]
    return (top * (1 - wy)[:, None, None] + bottom * wy[:, None, None]).astype(np.float32)


def tf_resize_nearest_aligned(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """TF1 ``resize_nearest_neighbor(align_corners=True)``: source index ``round(i * (n_in-1)/(n_out-1))``."""

    def axis(n_in: int, n_out: int) -> np.ndarray:
        scale = np.float32((n_in - 1) / (n_out - 1)) if n_out > 1 else np.float32(0)
        # C's roundf rounds halves away from zero; positions are non-negative, so floor(x + 0.5).
        return np.minimum(np.floor(np.arange(n_out, dtype=np.float32) * scale + 0.5).astype(np.int64), n_in - 1)

    return mask[axis(mask.shape[0], height)][:, axis(mask.shape[1], width)]
