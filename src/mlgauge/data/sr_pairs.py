"""Super-resolution datasets on disk: LR/HR PNG pairs as MLPerf Mobile's SNUSR lays them out.

Accepted layouts (folder names ``LR``/``HR`` match case-insensitively; image files
are ``*.png``, any case, and are read as RGB)::

    root/LR/<name>.png   low-resolution inputs (SNUSR: 960x540)
    root/HR/<name>.png   ground truth, exactly ``scale`` times larger (SNUSR: 1920x1080)

An LR file pairs with the HR file of the same name, or, DIV2K style, ``<stem>x2.png``
with ``<stem>.png``. Every file must have a partner; the error names those that do not.

HR-only folders (``root/HR/*.png`` with no ``LR`` folder, or PNGs directly in
``root``) are accepted too: each HR image is cropped at the top-left to a multiple
of ``scale`` (the SR toolkits' "modcrop") and its LR input is derived by Pillow's
bicubic downscaling. Pillow's bicubic (a = -0.5, kernel widened when shrinking)
is close to, but not bit-identical with, MATLAB's ``imresize`` that produced
DIV2K's and SNUSR's LR images, so PSNR on derived pairs is comparable only with
other derived-pair numbers.

Sizes: a model with a fixed input (the official EDSR F32B5: 960x540 -> 1920x1080)
needs every sample the same size. With ``lr_size=(width, height)`` each pair is
centre-cropped to it (the HR crop is the same region, ``scale`` times larger);
without it every LR image must already share the first one's size. The model
input is RGB float32 in 0..255 (what MLPerf Mobile feeds float models), NCHW or
NHWC; the ground truth stays uint8 HWC.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mlgauge.data.image_files import decode_image
from mlgauge.errors import DataError

LAYOUTS = ("NCHW", "NHWC")
_MAX_NAMED = 5  # how many offending files an error lists


def downscale_bicubic(hr: np.ndarray, scale: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(H//scale, W//scale, 3)`` uint8 by Pillow's bicubic filter."""
    height, width = hr.shape[:2]
    image = Image.fromarray(np.ascontiguousarray(hr[: height - height % scale, : width - width % scale]))
    return np.asarray(image.resize((width // scale, height // scale), Image.Resampling.BICUBIC))


def upscale_bicubic(lr: np.ndarray, scale: int) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(scale*H, scale*W, 3)`` uint8: the no-model SR baseline."""
    height, width = lr.shape[:2]
    image = Image.fromarray(np.ascontiguousarray(lr))
    return np.asarray(image.resize((width * scale, height * scale), Image.Resampling.BICUBIC))


@dataclass(frozen=True)
class SrPair:
    hr: Path
    lr: Path | None  # None: derived from ``hr`` by bicubic downscaling


def _subdir(root: Path, name: str) -> Path | None:
    matches = [p for p in root.iterdir() if p.is_dir() and p.name.lower() == name.lower()]
    return matches[0] if matches else None


def _pngs(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() == ".png"}


def _lr_partner(hr_name: str, lr_files: dict[str, Path], scale: int) -> str | None:
    stem, suffix = hr_name.rsplit(".", 1)
    for candidate in (hr_name, f"{stem}x{scale}.{suffix}"):
        if candidate in lr_files:
            return candidate
    return None


def _too_many(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_NAMED])
    return shown + (f" and {len(names) - _MAX_NAMED} more" if len(names) > _MAX_NAMED else "")


def find_pairs(root: Path, scale: int = 2) -> list[SrPair]:
    """The dataset's (HR, LR) files in HR file-name order (the MLPerf app sorts names too)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"super-resolution dataset folder {root} does not exist or is not a folder",
            hint="Pass a folder with LR/ and HR/ subfolders of PNG images (MLPerf Mobile's SNUSR layout)",
        )
    hr_dir, lr_dir = _subdir(root, "HR"), _subdir(root, "LR")
    if lr_dir is not None and hr_dir is None:
        raise DataError(
            f"{root} has an LR folder but no HR folder",
            hint="Accuracy needs the HR ground truth: add HR/<name>.png for every LR/<name>.png",
        )
    hr_files = _pngs(hr_dir or root)
    if not hr_files:
        raise DataError(
            f"no PNG images in {hr_dir or root}",
            hint="Put the HR ground-truth images in HR/ (and their LR inputs in LR/) as .png files",
        )
    if lr_dir is None:
        return [SrPair(hr=path, lr=None) for path in hr_files.values()]

    lr_files = _pngs(lr_dir)
    pairs, unpaired_hr = [], []
    for name, path in hr_files.items():
        partner = _lr_partner(name, lr_files, scale)
        if partner is None:
            unpaired_hr.append(name)
        else:
            pairs.append(SrPair(hr=path, lr=lr_files.pop(partner)))
    if unpaired_hr or lr_files:
        problems = []
        if unpaired_hr:
            problems.append(f"HR images with no LR partner in {lr_dir}: {_too_many(unpaired_hr)}")
        if lr_files:
            problems.append(f"LR images with no HR partner in {hr_dir}: {_too_many(sorted(lr_files))}")
        raise DataError(
            "; ".join(problems),
            hint=f"Every LR/<name>.png needs HR/<name>.png (or LR/<stem>x{scale}.png with HR/<stem>.png); "
            "remove or complete the unpaired files",
        )
    return pairs


def _image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the header alone."""
    try:
        with Image.open(path) as image:
            return image.size
    except Exception as exc:  # Pillow raises many types for corrupt files
        raise DataError(f"cannot read image {path}: {exc}", hint="Replace the file with a valid PNG") from None


def _decode(path: Path) -> np.ndarray:
    return np.asarray(decode_image(path, hint="Replace the file with a valid PNG", upright=False))


class SrPairs:
    """An SR dataset folder as a sample source (``tasks.base.SampleSource``): LR in, HR to score.

    Opening reads only image headers to check pairing and sizes; pixels are
    decoded in :meth:`load` and when ground-truth images are indexed.
    """

    def __init__(
        self,
        root: Path,
        *,
        scale: int = 2,
        lr_size: tuple[int, int] | None = None,
        count: int | None = None,
        performance_count: int = 25,
        layout: str = "NCHW",
    ) -> None:
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, not {layout!r}")
        if count is not None and count < 1:
            raise DataError(f"sample count must be at least 1, got {count}", hint="Leave count unset to use every image")
        self.root = Path(root)
        self.scale = scale
        self.layout = layout
        pairs = find_pairs(self.root, scale)
        self.derived_lr = pairs[0].lr is None
        self.label = "snusr-derived-lr" if self.derived_lr else "snusr"
        self._pairs = pairs[:count] if count is not None else pairs
        # (left, top) of each pair's LR crop; the HR crop is the same region times ``scale``.
        self._origins = self._check_sizes(lr_size)
        width, height = self.lr_size
        self.sample_shape = (3, height, width) if layout == "NCHW" else (height, width, 3)
        self.hr_shape = (height * scale, width * scale, 3)
        self.total_count = len(self._pairs)
        self.performance_count = min(performance_count, self.total_count)

    def _lr_size_of(self, pair: SrPair) -> tuple[int, int]:
        hr_w, hr_h = _image_size(pair.hr)
        if pair.lr is None:
            return hr_w // self.scale, hr_h // self.scale
        lr_w, lr_h = _image_size(pair.lr)
        if (lr_w * self.scale, lr_h * self.scale) != (hr_w, hr_h):
            raise DataError(
                f"{pair.lr} is {lr_w}x{lr_h} but its HR partner {pair.hr} is {hr_w}x{hr_h}, "
                f"not {self.scale}x larger",
                hint=f"An HR image must be exactly {self.scale} times its LR image in width and height",
            )
        return lr_w, lr_h

    def _check_sizes(self, lr_size: tuple[int, int] | None) -> list[tuple[int, int]]:
        sizes = [self._lr_size_of(pair) for pair in self._pairs]
        want = tuple(lr_size) if lr_size is not None else sizes[0]
        origins, wrong = [], []
        for pair, (w, h) in zip(self._pairs, sizes, strict=True):
            fits = w >= want[0] and h >= want[1] if lr_size is not None else (w, h) == want
            if not fits:
                wrong.append(f"{(pair.lr or pair.hr).name} ({w}x{h})")
            origins.append(((w - want[0]) // 2, (h - want[1]) // 2))
        if wrong:
            what = "smaller than" if lr_size is not None else "a different size from"
            raise DataError(
                f"LR images {what} {want[0]}x{want[1]} in {self.root}: {_too_many(wrong)}",
                hint="A fixed-size model needs equal-size samples: pass lr_size=(width, height) to centre-crop "
                "larger images (MLPerf's EDSR takes 960x540), or remove the odd images",
            )
        self.lr_size = want
        return origins

    def _checked(self, index: int) -> int:
        value = operator.index(index)
        if not 0 <= value < len(self._pairs):
            raise DataError(f"SR sample index {value} is outside 0..{len(self._pairs) - 1}")
        return value

    def _hr(self, index: int) -> np.ndarray:
        (left, top), (w, h), s = self._origins[index], self.lr_size, self.scale
        return _decode(self._pairs[index].hr)[top * s : (top + h) * s, left * s : (left + w) * s]

    def lr_image(self, index: int) -> np.ndarray:
        """The LR input ``(h, w, 3)`` uint8, cropped."""
        index = self._checked(index)
        pair = self._pairs[index]
        if pair.lr is None:
            return downscale_bicubic(self._hr(index), self.scale)
        (left, top), (w, h) = self._origins[index], self.lr_size
        return _decode(pair.lr)[top : top + h, left : left + w]

    def hr_image(self, index: int) -> np.ndarray:
        """The HR ground truth ``(scale*h, scale*w, 3)`` uint8, cropped like the LR input."""
        return self._hr(self._checked(index))

    def load(self, indices: Sequence[int]) -> np.ndarray:
        """LR inputs as float32 0..255 in ``layout``, shape ``(len(indices), *sample_shape)``."""
        out = np.empty((len(indices), *self.sample_shape), dtype=np.float32)
        for row, index in enumerate(indices):
            lr = self.lr_image(index)
            out[row] = lr.transpose(2, 0, 1) if self.layout == "NCHW" else lr
        return out

    def ground_truth(self) -> HrImages:
        return HrImages(self)

    def names(self) -> list[str]:
        return [pair.hr.name for pair in self._pairs]


class HrImages:
    """The HR ground truth as a lazy sequence: ``gt[i]`` decodes image ``i``."""

    def __init__(self, dataset: SrPairs) -> None:
        self._dataset = dataset

    def __len__(self) -> int:
        return self._dataset.total_count

    def __getitem__(self, index: int) -> np.ndarray:
        return self._dataset.hr_image(index)
