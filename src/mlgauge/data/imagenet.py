"""ImageNet (ILSVRC2012 validation) as MLPerf Inference reads it for ResNet-50 v1.5.

Mirrors the reference ``vision/classification_and_detection/python/imagenet.py``
(folder of validation JPEGs plus ``val_map.txt``) and ``dataset.py::pre_process_vgg``
(short side to 256, centre crop 224, subtract RGB means, channel-first), so that
accuracy numbers are comparable with submitted results. OpenCV is not a
dependency; Pillow does the decoding and resizing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from mlgauge.data.image_files import SampleCache, check_files_exist, checked_index, decode_image, load_samples
from mlgauge.errors import DataError

MLPERF_MEANS = (123.68, 116.78, 103.94)
NUM_CLASSES = 1000
VAL_MAP_NAME = "val_map.txt"

# Part of the cache key: bump it whenever anything that changes the output
# pixels changes (sizes, resampling, means, decoding), so stale caches are not reused.
PREPROCESS_VERSION = "mlperf-resnet50-vgg/224/0.875/box/rgb-means/chw/exif/v1"


def read_val_map(path: Path) -> tuple[list[str], np.ndarray]:
    """Parse an MLPerf ``val_map.txt``: ``<file name> <label>`` per line, blank lines ignored.

    Returns the file names (relative to the dataset folder) and their labels as int64.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(
            f"ImageNet map file {path} does not exist",
            hint=f"The dataset folder must contain {VAL_MAP_NAME} (lines like "
            "'ILSVRC2012_val_00000001.JPEG 65'), or pass the map file's path explicitly",
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"ImageNet map file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})",
            hint=f"Point at the text {VAL_MAP_NAME} from the MLPerf dataset preparation",
        ) from None
    except OSError as exc:
        raise DataError(
            f"cannot read ImageNet map file {path}: {exc.strerror or exc}",
            hint="Check that the path is a readable file",
        ) from None

    names: list[str] = []
    labels: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise DataError(
                f"{path} line {number} is malformed: {line.strip()!r}",
                hint="Each line must be '<image file name> <label>', e.g. 'ILSVRC2012_val_00000001.JPEG 65'",
            )
        name, label_text = fields
        try:
            label = int(label_text)
        except ValueError:
            raise DataError(
                f"{path} line {number} has a non-integer label: {line.strip()!r}",
                hint="Each line must be '<image file name> <label>' with an integer label 0..999",
            ) from None
        if not 0 <= label < NUM_CLASSES:
            raise DataError(
                f"{path} line {number} has label {label} outside 0..{NUM_CLASSES - 1}: {line.strip()!r}",
                hint="MLPerf's val_map.txt uses 0-based labels of the 1000 ILSVRC2012 classes; "
                "a map with 1-based labels or a background class needs converting",
            )
        names.append(name)
        labels.append(label)
    return names, np.asarray(labels, dtype=np.int64)


def _scaled_size(width: int, height: int, size: int, crop_fraction: float) -> tuple[int, int]:
    """(width, height) after ``resize_with_aspectratio``: shorter side to ``size / crop_fraction``.

    Written with the reference's exact integer truncation so sizes match it pixel for pixel.
    """
    short = int(100.0 * size / (100.0 * crop_fraction))
    if height > width:
        return short, int(short * height / width)
    return int(short * width / height), short


def preprocess_mlperf_resnet50(
    image: Image.Image, size: int = 224, crop_fraction: float = 0.875
) -> np.ndarray:
    """MLPerf's ``pre_process_vgg``: RGB, short side to 256, centre crop 224, minus means, CHW float32."""
    if size < 1 or not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"size must be >= 1 and crop_fraction in (0, 1]; got {size}, {crop_fraction}")
    if image.mode != "RGB":
        # ImageNet has grayscale and CMYK JPEGs; the reference's cv2.imread always yields 3 channels.
        image = image.convert("RGB")
    new_width, new_height = _scaled_size(image.width, image.height, size, crop_fraction)
    # The reference uses cv2.INTER_AREA. Pillow's BOX filter is the same pixel-area
    # average when shrinking, and when enlarging it blends only across source pixel
    # edges, which is also what INTER_AREA does there; both round back to uint8.
    resized = image.resize((new_width, new_height), Image.Resampling.BOX)
    # Floor division matches the reference's int((width - out) / 2) for non-negative sizes.
    left = (new_width - size) // 2
    top = (new_height - size) // 2
    cropped = resized.crop((left, top, left + size, top + size))
    pixels = np.asarray(cropped, dtype=np.float32)
    pixels -= np.asarray(MLPERF_MEANS, dtype=np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def _decode(path: Path) -> Image.Image:
    return decode_image(
        path, what="ImageNet image", hint="The file is corrupt or not an image; re-extract it from ILSVRC2012_img_val.tar"
    )


class ImageNetValidation:
    """The ILSVRC2012 validation set, preprocessed for ResNet-50 v1.5 the MLPerf way.

    Satisfies :class:`mlgauge.tasks.base.SampleSource`. Opening is cheap (parses the
    map and checks the files exist); images are decoded only in :meth:`load`.
    """

    label = "imagenet"
    sample_shape = (3, 224, 224)
    sample_dtype = np.dtype(np.float32)

    def __init__(
        self,
        root: Path,
        *,
        val_map: Path | None = None,
        count: int | None = None,
        performance_count: int = 1024,
        cache_dir: Path | None = None,
    ) -> None:
        root = Path(root)
        if not root.exists():
            raise DataError(
                f"ImageNet folder {root} does not exist",
                hint=f"Pass the folder holding the ILSVRC2012 validation JPEGs and {VAL_MAP_NAME}",
            )
        if not root.is_dir():
            raise DataError(
                f"ImageNet path {root} is not a folder",
                hint=f"Pass the folder holding the ILSVRC2012 validation JPEGs and {VAL_MAP_NAME}",
            )
        if count is not None and count < 1:
            raise DataError(
                f"ImageNet sample count must be at least 1, got {count}",
                hint="Leave count unset to use every image in the map",
            )
        if performance_count < 1:
            raise DataError(
                f"performance_count must be at least 1, got {performance_count}",
                hint="Use the number of samples that fit in memory at once, e.g. 1024",
            )

        self.root = root
        map_path = Path(val_map) if val_map is not None else root / VAL_MAP_NAME
        names, labels = read_val_map(map_path)
        if not names:
            raise DataError(
                f"ImageNet map file {map_path} lists no images",
                hint="Use the val_map.txt produced by MLPerf's dataset preparation",
            )
        # The cache is keyed on the whole map's names so that an index means the
        # same image whatever ``count`` is, and a different map cannot reuse it.
        cache_key = hashlib.sha256(
            "\n".join([str(root.resolve()), PREPROCESS_VERSION, *names]).encode("utf-8")
        ).hexdigest()[:20]
        if count is not None:
            names, labels = names[:count], labels[:count]

        check_files_exist(
            root, names, map_path, what="ImageNet",
            hint="Extract the complete ILSVRC2012 validation set into the folder, or pass count= to use only the first entries",
        )  # fmt: skip
        self._names = names
        self._labels = labels
        self.total_count = len(names)
        self.performance_count = min(performance_count, self.total_count)

        self._cache = SampleCache(
            Path(cache_dir) / cache_key if cache_dir is not None else None, self.sample_shape, self.sample_dtype
        )

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One decoded image -> one model input; subclasses preprocess for other models."""
        return preprocess_mlperf_resnet50(image)

    def _sample(self, index: int) -> np.ndarray:
        return self._cache.get(index, lambda i: self.preprocess(_decode(self.root / self._names[i])))

    def load(self, indices: Sequence[int]) -> np.ndarray:
        """Preprocessed samples in the order given, shape ``(len(indices), *sample_shape)``."""
        checked = [
            checked_index(i, self.total_count, what="ImageNet", hint="Sample indices come from the map order; check count= and the query")
            for i in indices
        ]
        return load_samples(checked, self.sample_shape, self.sample_dtype, self._sample)

    def ground_truth(self) -> np.ndarray:
        """The label of every sample index, int64."""
        return self._labels.copy()
