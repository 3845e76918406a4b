"""What every folder-of-images dataset reader needs: decoding, file checks, index
checks, an on-disk cache of preprocessed samples and parallel loading.

The readers (ImageNet, COCO, ADE20K ...) differ in their annotation formats and
their preprocessing; these parts are the same for all of them.
"""

from __future__ import annotations

import operator
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps

from mlgauge.errors import DataError

# Pillow releases the GIL while decoding and resizing, so a few threads give a
# real speed-up; more mostly add memory pressure next to the benchmark itself.
MAX_LOAD_WORKERS = 4


def decode_image(
    path: Path, *, what: str = "image", hint: str = "The file is corrupt or not an image; replace it", upright: bool = True
) -> Image.Image:
    """Open one image fully into memory as RGB.

    ``upright`` applies the EXIF orientation as ``cv2.imread`` does (the MLPerf
    Inference references load with OpenCV); TensorFlow's decoders, which the
    mobile references use, ignore it.
    """
    try:
        with Image.open(path) as image:
            image.load()
            if upright and image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
                image = ImageOps.exif_transpose(image)
            return image.convert("RGB")
    except FileNotFoundError:
        raise DataError(
            f"{what} {path} has disappeared since the dataset was opened",
            hint="Restore the file or re-run with the complete dataset",
        ) from None
    except Exception as exc:
        # Pillow's format plugins raise many exception types on corrupt input
        # (OSError, SyntaxError, ValueError, struct.error, ...); all mean the same here.
        raise DataError(f"cannot decode {what} {path}: {exc}", hint=hint) from exc


def check_files_exist(folder: Path, names: Sequence[str], listed_in: object, *, what: str, hint: str) -> None:
    """Fail once, up front, naming the first missing file, rather than mid-benchmark."""
    # One directory listing answers 50,000 lookups far faster than 50,000 stats
    # (which matters on network file systems); stat only what the listing lacks.
    try:
        listing = set(os.listdir(folder))
    except OSError as exc:
        raise DataError(f"cannot list {what} folder {folder}: {exc.strerror or exc}", hint="Check that the folder is readable") from None
    missing = [name for name in names if name not in listing and not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(names)} images listed in {listed_in} are missing from {folder}, first: {missing[0]}",
            hint=hint,
        )


def checked_index(index: object, total: int, *, what: str, hint: str = "Check count= and the query") -> int:
    try:
        value = operator.index(index)
    except TypeError:
        raise DataError(f"{what} sample index {index!r} is not an integer", hint="Sample indices are integers") from None
    if not 0 <= value < total:
        raise DataError(f"{what} sample index {value} is outside 0..{total - 1}", hint=hint)
    return value


class SampleCache:
    """Preprocessed samples as ``<index>.npy`` files in one folder (None: no cache).

    A damaged or stale entry (wrong shape/dtype) is recomputed and overwritten.
    """

    def __init__(self, folder: Path | None, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.folder = folder
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        if folder is not None:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DataError(
                    f"cannot create the preprocessed-image cache {folder}: {exc.strerror or exc}",
                    hint="Pass a writable cache folder, or none to preprocess on every load",
                ) from None

    def get(self, index: int, compute: Callable[[int], np.ndarray]) -> np.ndarray:
        if self.folder is None:
            return compute(index)
        cached = self.folder / f"{index}.npy"
        try:
            sample = np.load(cached, allow_pickle=False)
            if sample.shape == self.shape and sample.dtype == self.dtype:
                return sample
        except (OSError, ValueError, EOFError):
            pass  # not cached yet, or an unreadable entry (e.g. damaged disk): recompute and overwrite
        sample = compute(index)
        self._write(cached, sample)
        return sample

    @staticmethod
    def _write(target: Path, sample: np.ndarray) -> None:
        # Unique temp name + os.replace: concurrent writers (threads or worker
        # processes) and interrupted runs never leave a half-written .npy behind.
        fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, sample, allow_pickle=False)
            os.replace(temp_name, target)
        except OSError as exc:
            Path(temp_name).unlink(missing_ok=True)
            raise DataError(
                f"cannot write preprocessed image {target}: {exc.strerror or exc}",
                hint="Free disk space or pass a different cache folder (or none)",
            ) from None
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise


def load_samples(indices: Sequence[int], shape: tuple[int, ...], dtype: np.dtype, sample: Callable[[int], np.ndarray]) -> np.ndarray:
    """``sample(i)`` for each (already checked) index, decoded on a few threads, in order."""
    out = np.empty((len(indices), *shape), dtype=dtype)
    if len(indices) <= 1:
        for pos, index in enumerate(indices):
            out[pos] = sample(index)
        return out
    pool = ThreadPoolExecutor(max_workers=min(MAX_LOAD_WORKERS, len(indices)))
    try:
        for pos, value in enumerate(pool.map(sample, indices)):
            out[pos] = value
    finally:
        # On the first bad image, drop the queued rest instead of decoding them all.
        pool.shutdown(wait=True, cancel_futures=True)
    return out
