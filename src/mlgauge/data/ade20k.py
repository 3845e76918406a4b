"""ADE20K validation data as MLPerf Mobile's segmentation task (MOSAIC) reads it.

Two folder layouts are accepted (``root`` may also be the folder that holds
``ADEChallengeData2016/``):

* the SceneParsing release ``ADEChallengeData2016``: ``images/validation/*.jpg``
  and ``annotations/validation/*.png``, one single-channel PNG of class ids
  (0 = "other", 1..150 = the ADE20K classes) per image, paired by file stem;
* MLPerf Mobile's prepared set (``mobile_app_open datasets/util/ade20k``):
  ``images/*.jpg`` already at 512x512 and ``annotations/*.raw``, 512*512 bytes of
  class ids with 255 where the image was padded.

Preprocessing mirrors the script that builds the app's dataset
(``resize_512_ade20k.py`` calling DeepLab's ``preprocess_image_and_label`` with
crop, min and max size 512): resize keeping the aspect ratio so the *longer*
side is 512 (bilinear with ``align_corners=True`` for the image, nearest for the
mask), pad bottom/right to 512x512 with the mean pixel 127.5 (image) and the
ignore label (mask), then the app's default float normalisation
``(x - 127.5) / 127.5``. Unlike the app's set, the resized image is not re-encoded
as a quality-100 JPEG, so pixels can differ by JPEG rounding.

Class ids go through a remap table. MLPerf Mobile scores MOSAIC on "ADE20K
top-31" (31 classes, the rules say 32 with background), and the exact mapping is
not published with the dataset. The default passes ADE20K's 150 classes through
unchanged; :data:`ADE20K_TOP31` is the reading that the app's evaluator implies
(``flutter/cpp/datasets/ade20k.cc`` compares predictions with the raw ADE20K ids
and scores classes 1..31, which ADE20K orders by pixel frequency, while ids 0 and
32..150 fall out). Every id a table does not list becomes 0, the ignore label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from mlgauge.data.image_files import checked_index, decode_image, load_samples
from mlgauge.data.tf_resize import tf_resize_bilinear, tf_resize_nearest_aligned
from mlgauge.errors import DataError

NUM_ADE20K_CLASSES = 150
IGNORE_LABEL = 0  # ADE20K's "other"; also what padding and unmapped ids become
INPUT_SIZE = 512
MEAN_PIXEL = 127.5  # DeepLab's pad value; 0 after normalisation
# ids 1..31, ADE20K's 31 most frequent classes (see the module docstring for the evidence).
ADE20K_TOP31: dict[int, int] = {i: i for i in range(1, 32)}
_RAW_PAD = 255  # DeepLab's ignore label, which the app's prepared .raw masks carry where padded
_IMAGE_EXTS = (".jpg", ".jpeg")


def class_map_table(mapping: Mapping[int, int] | None = None) -> np.ndarray:
    """A 256-entry uint8 lookup table: raw id -> class id; ``None`` passes 0..150 through.

    Ids the mapping does not list map to :data:`IGNORE_LABEL`.
    """
    table = np.zeros(256, dtype=np.uint8)
    if mapping is None:
        table[: NUM_ADE20K_CLASSES + 1] = np.arange(NUM_ADE20K_CLASSES + 1)
        return table
    for raw, cls in mapping.items():
        if not (0 <= int(raw) <= 255 and 0 <= int(cls) <= 255):
            raise ValueError(f"class map entry {raw} -> {cls} is outside 0..255")
        table[int(raw)] = int(cls)
    return table


def deeplab_resize_size(height: int, width: int, size: int = INPUT_SIZE) -> tuple[int, int]:
    """DeepLab's ``resize_to_range(min_size=size, max_size=size)`` in its float32 arithmetic.

    The shorter side goes to ``size`` unless that makes the longer side exceed it;
    then the longer side goes to ``size``. Sizes are floored, as ``tf.floor`` does.
    """
    h, w, s = np.float32(height), np.float32(width), np.float32(size)
    large = s / min(h, w)
    large_hw = (int(np.floor(h * large)), int(np.floor(w * large)))
    if max(large_hw) <= size:
        return large_hw
    small = s / max(h, w)
    return int(np.floor(h * small)), int(np.floor(w * small))


def preprocess_image(pixels: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """RGB uint8 ``(H, W, 3)`` -> ``(size, size, 3)`` float32 in [-1, 1], letterboxed at the top left."""
    new_h, new_w = deeplab_resize_size(pixels.shape[0], pixels.shape[1], size)
    out = np.full((size, size, 3), MEAN_PIXEL, dtype=np.float32)
    out[:new_h, :new_w] = tf_resize_bilinear(pixels, new_h, new_w, align_corners=True)
    # MLPerf Mobile's AddDefaultNormalizationStep for float32 inputs.
    return (out - np.float32(MEAN_PIXEL)) * np.float32(1.0 / 127.5)


def preprocess_mask(ids: np.ndarray, table: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """Raw class ids ``(H, W)`` -> ``(size, size)`` uint8 class ids, remapped, padded with the ignore label."""
    new_h, new_w = deeplab_resize_size(ids.shape[0], ids.shape[1], size)
    out = np.full((size, size), IGNORE_LABEL, dtype=np.uint8)
    out[:new_h, :new_w] = table[tf_resize_nearest_aligned(ids, new_h, new_w)]
    return out


# -- reading files ---------------------------------------------------------------------


def _read_image(path: Path) -> np.ndarray:
    image = decode_image(
        path, what="ADE20K image", hint="The file is corrupt or not an image; re-extract ADEChallengeData2016.zip", upright=False
    )
    return np.asarray(image)


def _read_annotation(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """Raw class ids ``(H, W)`` uint8 from a class-id PNG or an app-prepared ``.raw``; checked against ``shape``."""
    if path.suffix.lower() == ".raw":
        try:
            data = np.fromfile(path, dtype=np.uint8)
        except OSError as exc:
            raise DataError(
                f"cannot read ADE20K annotation {path}: {exc.strerror or exc}",
                hint="Check that the file is readable",
            ) from None
        if data.size != shape[0] * shape[1]:
            raise DataError(
                f"ADE20K annotation {path} has {data.size} bytes, but its image is {shape[1]}x{shape[0]} "
                f"({shape[0] * shape[1]} pixels)",
                hint="A .raw annotation holds one class-id byte per pixel of the 512x512 prepared image",
            )
        ids = data.reshape(shape)
    else:
        try:
            with Image.open(path) as png:
                mode = png.mode
                if mode not in ("L", "P"):
                    raise DataError(
                        f"ADE20K annotation {path} is a {mode} image, not single-channel class ids",
                        hint="Use the SceneParsing annotations (ADEChallengeData2016/annotations/validation), "
                        "whose PNGs store one class id 0..150 per pixel; the full ADE20K release's "
                        "colour-coded *_seg.png files need converting",
                    )
                ids = np.asarray(png)
        except DataError:
            raise
        except FileNotFoundError:
            raise DataError(
                f"ADE20K annotation {path} has disappeared since the dataset was opened",
                hint="Restore the file or re-run with the complete dataset",
            ) from None
        except Exception as exc:
            raise DataError(
                f"cannot decode ADE20K annotation {path}: {exc}",
                hint="The file is corrupt or not a PNG; re-extract ADEChallengeData2016.zip",
            ) from exc
        if ids.shape != shape:
            raise DataError(
                f"ADE20K annotation {path} is {ids.shape[1]}x{ids.shape[0]}, but its image is {shape[1]}x{shape[0]}",
                hint="Each annotation must be the same size as the image with the same file stem",
            )
    valid = ids <= NUM_ADE20K_CLASSES
    if path.suffix.lower() == ".raw":
        valid |= ids == _RAW_PAD
    if not valid.all():
        raise DataError(
            f"ADE20K annotation {path} has class id {int(ids[~valid][0])}; ADE20K ids are 0..{NUM_ADE20K_CLASSES}",
            hint="Check that the annotation folder holds SceneParsing class-id annotations",
        )
    return ids


def _find_layout(root: Path) -> tuple[Path, Path, str]:
    """(image folder, annotation folder, annotation extension) for either accepted layout."""
    candidates = [root, root / "ADEChallengeData2016"]
    for base in candidates:
        images, annotations = base / "images" / "validation", base / "annotations" / "validation"
        if images.is_dir():
            return images, annotations, ".png"
    if (root / "images").is_dir():
        return root / "images", root / "annotations", ".raw"
    raise DataError(
        f"{root} is not an ADE20K folder: it has neither images/validation/ nor images/",
        hint="Pass the ADEChallengeData2016 folder (images/validation + annotations/validation) or "
        "MLPerf Mobile's prepared ade20k folder (images + annotations with .raw files)",
    )


def _list(folder: Path, exts: tuple[str, ...], what: str) -> dict[str, Path]:
    try:
        entries = sorted(folder.iterdir())
    except FileNotFoundError:
        raise DataError(
            f"ADE20K {what} folder {folder} does not exist",
            hint="Images and annotations must both be present (annotations/validation next to images/validation)",
        ) from None
    except OSError as exc:
        raise DataError(
            f"cannot list ADE20K {what} folder {folder}: {exc.strerror or exc}", hint="Check that the folder is readable"
        ) from None
    return {p.stem: p for p in entries if p.suffix.lower() in exts and p.is_file()}


def pair_files(root: Path) -> list[tuple[Path, Path]]:
    """(image, annotation) pairs sorted by file name, as the app lists them; unmatched files are errors."""
    image_dir, ann_dir, ann_ext = _find_layout(root)
    images = _list(image_dir, _IMAGE_EXTS, "image")
    annotations = _list(ann_dir, (ann_ext,), "annotation")
    if not images:
        raise DataError(
            f"ADE20K image folder {image_dir} holds no .jpg images",
            hint="Extract the validation images (ADE_val_*.jpg) into it",
        )
    lonely_images = sorted(set(images) - set(annotations))
    if lonely_images:
        raise DataError(
            f"{len(lonely_images)} ADE20K images have no annotation in {ann_dir}, "
            f"first: {images[lonely_images[0]].name} (expected {lonely_images[0]}{ann_ext})",
            hint="Every image needs an annotation with the same file stem; restore it or remove the image",
        )
    lonely_annotations = sorted(set(annotations) - set(images))
    if lonely_annotations:
        raise DataError(
            f"{len(lonely_annotations)} ADE20K annotations have no image in {image_dir}, "
            f"first: {annotations[lonely_annotations[0]].name}",
            hint="Every annotation needs an image with the same file stem; restore it or remove the annotation",
        )
    return [(images[stem], annotations[stem]) for stem in sorted(images)]


class ADE20KValidation:
    """The ADE20K validation set, preprocessed for MLPerf Mobile's 512x512 segmenter.

    Satisfies :class:`mlgauge.tasks.base.SampleSource`. ``layout`` is "NCHW" (samples
    ``(3, 512, 512)``) or "NHWC" (``(512, 512, 3)``, what TFLite models take).
    ``ground_truth()`` is a lazy sequence of ``(512, 512)`` uint8 masks (remapped, 0 = ignore),
    so scoring 2000 images never holds every mask at once.
    """

    label = "ade20k"
    sample_dtype = np.dtype(np.float32)

    def __init__(
        self,
        root: Path,
        *,
        class_map: Mapping[int, int] | None = None,
        layout: str = "NCHW",
        count: int | None = None,
        performance_count: int = 256,
        size: int = INPUT_SIZE,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DataError(
                f"ADE20K folder {root} does not exist" if not root.exists() else f"ADE20K path {root} is not a folder",
                hint="Pass the ADEChallengeData2016 folder, or MLPerf Mobile's prepared ade20k folder",
            )
        if layout not in ("NCHW", "NHWC"):
            raise ValueError(f"layout must be NCHW or NHWC, got {layout!r}")
        if count is not None and count < 1:
            raise DataError(f"ADE20K sample count must be at least 1, got {count}", hint="Leave count unset to use all")
        if performance_count < 1:
            raise DataError(
                f"performance_count must be at least 1, got {performance_count}",
                hint="Use the number of samples that fit in memory at once, e.g. 256",
            )
        pairs = pair_files(root)
        self.root = root
        self._pairs = pairs[:count] if count is not None else pairs
        self._table = class_map_table(class_map)
        self.num_classes = int(self._table.max()) + 1  # ids 0..max, 0 being ignore
        self.layout = layout
        self.size = size
        self.sample_shape = (3, size, size) if layout == "NCHW" else (size, size, 3)
        self.mask_shape = (size, size)
        self.total_count = len(self._pairs)
        self.performance_count = min(performance_count, self.total_count)

    @property
    def files(self) -> list[tuple[Path, Path]]:
        return list(self._pairs)

    def _checked(self, index: int) -> int:
        return checked_index(index, self.total_count, what="ADE20K", hint="Sample indices follow the sorted file names; check count= and the query")

    def _sample(self, index: int) -> np.ndarray:
        image = preprocess_image(_read_image(self._pairs[index][0]), self.size)
        return np.ascontiguousarray(image.transpose(2, 0, 1)) if self.layout == "NCHW" else image

    def mask(self, index: int) -> np.ndarray:
        """The preprocessed ``(size, size)`` uint8 mask of sample ``index``."""
        image_path, ann_path = self._pairs[self._checked(index)]
        with_shape = _image_shape(image_path)
        return preprocess_mask(_read_annotation(ann_path, with_shape), self._table, self.size)

    def load(self, indices: Sequence[int]) -> np.ndarray:
        checked = [self._checked(i) for i in indices]
        return load_samples(checked, self.sample_shape, self.sample_dtype, self._sample)

    def ground_truth(self) -> ADE20KMasks:
        return ADE20KMasks(self)


def _image_shape(path: Path) -> tuple[int, int]:
    """(height, width) from the header, without decoding the pixels."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except Exception as exc:
        raise DataError(
            f"cannot read ADE20K image {path}: {exc}", hint="The file is corrupt or not an image; re-extract it"
        ) from exc


class ADE20KMasks(Sequence):
    """The masks of an :class:`ADE20KValidation`, decoded on access."""

    def __init__(self, dataset: ADE20KValidation) -> None:
        self._dataset = dataset

    def __len__(self) -> int:
        return self._dataset.total_count

    def __getitem__(self, index: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self._dataset.mask(index)
