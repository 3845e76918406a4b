"""COCO-format detection datasets: an instances JSON plus a folder of images.

MLPerf ships its OpenImages subset for RetinaNet in this format
(``annotations/openimages-mlperf.json``, images in ``validation/data/``), and
COCO 2017 (``annotations/instances_val2017.json``, ``val2017/``) is the same
format; :func:`read_coco_annotations` checks the file field by field, and
:class:`CocoDetection` serves preprocessed images by index. The sample index
is the position in the JSON's ``images`` list: MLPerf's accuracy scripts map
LoadGen's ``qsl_idx`` to ``images[qsl_idx]`` the same way.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from mlgauge.data.image_files import SampleCache, check_files_exist, checked_index, decode_image, load_samples
from mlgauge.errors import DataError

# Pillow and numpy release the GIL while decoding and resizing; a few threads help.
_FORMAT_HINT = (
    "A COCO instances file is a JSON object with 'images' ({id, file_name, width, height}), "
    "'annotations' ({image_id, category_id, bbox: [x, y, width, height]}) and 'categories' ({id, name})"
)


@dataclass(frozen=True)
class CocoImage:
    id: int
    file_name: str
    width: int
    height: int


@dataclass(frozen=True)
class CocoGroundTruth:
    """Checked COCO annotations. ``images`` keep the file's order (sample index = position).

    ``dataset`` is the normalised COCO dict (every annotation has ``id``, ``area``,
    ``iscrowd``) that pycocotools' ``COCO``/``COCOeval`` can use directly.
    """

    source: str
    images: tuple[CocoImage, ...]
    categories: dict[int, str]
    dataset: dict = field(repr=False)

    def __post_init__(self) -> None:
        by_image: dict[int, list[dict]] = {im.id: [] for im in self.images}
        for ann in self.dataset["annotations"]:
            by_image[ann["image_id"]].append(ann)
        object.__setattr__(self, "_by_image", by_image)

    def __len__(self) -> int:
        return len(self.images)

    def boxes(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image ``index``'s boxes as xyxy pixels ``(k, 4)`` float32 and their category ids ``(k,)`` int64."""
        anns = self._by_image[self.images[index].id]
        xywh = np.asarray([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        return xyxy, np.asarray([a["category_id"] for a in anns], dtype=np.int64)

    def head(self, count: int) -> CocoGroundTruth:
        """The first ``count`` images and only their annotations."""
        if count >= len(self.images):
            return self
        images = self.images[:count]
        keep = {im.id for im in images}
        dataset = {
            "images": [im for im in self.dataset["images"] if im["id"] in keep],
            "annotations": [a for a in self.dataset["annotations"] if a["image_id"] in keep],
            "categories": self.dataset["categories"],
        }
        return CocoGroundTruth(self.source, images, self.categories, dataset)


def _fail(path: Path | str, where: str, problem: str) -> DataError:
    return DataError(f"COCO annotation file {path}: {where} {problem}", hint=_FORMAT_HINT)


def _require(obj: dict, key: str, path: Path | str, where: str):
    if key not in obj:
        raise _fail(path, where, f"has no '{key}'")
    return obj[key]


def _int(value, path, where: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, where, f"has a non-integer '{key}': {value!r}")
    return value


def _number(value, path, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(path, where, f"has a non-numeric '{key}': {value!r}")
    return float(value)


def _list_of_objects(data: dict, key: str, path) -> list[dict]:
    value = _require(data, key, path, "the top-level object")
    if not isinstance(value, list):
        raise _fail(path, f"'{key}'", f"is a {type(value).__name__}, not a list")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _fail(path, f"{key}[{i}]", f"is a {type(item).__name__}, not an object")
    return value


def read_coco_annotations(path: Path) -> CocoGroundTruth:
    """Read and check a COCO instances JSON; errors name the file and the offending entry and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"COCO annotation file {path} does not exist", hint=_FORMAT_HINT) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"COCO annotation file {path} is not UTF-8 text ({exc.reason} at byte {exc.start})", hint=_FORMAT_HINT) from None
    except OSError as exc:
        raise DataError(f"cannot read COCO annotation file {path}: {exc.strerror or exc}", hint="Check that the path is a readable file") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"COCO annotation file {path} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            hint="The file is truncated or corrupt; re-create it with the dataset's preparation script",
        ) from None
    if not isinstance(data, dict):
        raise _fail(path, "the top level", f"is a {type(data).__name__}, not an object")

    categories: dict[int, str] = {}
    norm_categories = []
    for i, cat in enumerate(_list_of_objects(data, "categories", path)):
        where = f"categories[{i}]"
        cid = _int(_require(cat, "id", path, where), path, where, "id")
        if cid in categories:
            raise _fail(path, where, f"repeats category id {cid}")
        categories[cid] = str(cat.get("name", cid))
        norm_categories.append({"id": cid, "name": categories[cid]})

    images: list[CocoImage] = []
    seen: set[int] = set()
    for i, im in enumerate(_list_of_objects(data, "images", path)):
        where = f"images[{i}]"
        iid = _int(_require(im, "id", path, where), path, where, "id")
        if iid in seen:
            raise _fail(path, where, f"repeats image id {iid}")
        seen.add(iid)
        name = _require(im, "file_name", path, where)
        if not isinstance(name, str) or not name:
            raise _fail(path, where, f"has an invalid 'file_name': {name!r}")
        size = {}
        for key in ("width", "height"):
            value = _number(_require(im, key, path, where), path, where, key)
            if value <= 0:
                raise _fail(path, where, f"has '{key}' {value:g}, not positive")
            size[key] = int(value)
        images.append(CocoImage(iid, name, size["width"], size["height"]))

    annotations = []
    for i, ann in enumerate(_list_of_objects(data, "annotations", path)):
        where = f"annotations[{i}]"
        image_id = _int(_require(ann, "image_id", path, where), path, where, "image_id")
        if image_id not in seen:
            raise _fail(path, where, f"refers to image id {image_id}, which 'images' does not list")
        category_id = _int(_require(ann, "category_id", path, where), path, where, "category_id")
        if category_id not in categories:
            raise _fail(path, where, f"refers to category id {category_id}, which 'categories' does not list")
        bbox = _require(ann, "bbox", path, where)
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise _fail(path, where, f"has a 'bbox' that is not [x, y, width, height]: {bbox!r}")
        bbox = [_number(v, path, where, "bbox") for v in bbox]
        if bbox[2] < 0 or bbox[3] < 0:
            raise _fail(path, where, f"has a 'bbox' with negative width or height: {bbox}")
        area = ann.get("area", bbox[2] * bbox[3])
        annotations.append(
            {
                # pycocotools indexes annotations by a unique id and filters by area and iscrowd:
                # renumber and fill them in (the ids carry no meaning for scoring).
                "id": i + 1,
                "image_id": image_id,
                "category_id": category_id,
                "bbox": bbox,
                "area": _number(area, path, where, "area"),
                "iscrowd": int(bool(ann.get("iscrowd", 0))),
            }
        )
    dataset = {
        "images": [{"id": im.id, "file_name": im.file_name, "width": im.width, "height": im.height} for im in images],
        "annotations": annotations,
        "categories": norm_categories,
    }
    return CocoGroundTruth(str(path), tuple(images), categories, dataset)


def ground_truth_from_boxes(
    sizes: Sequence[tuple[int, int]],
    boxes: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    category_names: Sequence[str],
    source: str = "in-memory",
) -> CocoGroundTruth:
    """COCO ground truth from per-image ``(width, height)``, xyxy boxes and 0-based labels.

    Image ids are ``index + 1`` and category ids the labels themselves, so a
    detector's labels score without a label map.
    """
    images = tuple(CocoImage(i + 1, f"{i:06d}", int(w), int(h)) for i, (w, h) in enumerate(sizes))
    annotations = []
    for i, (image_boxes, image_labels) in enumerate(zip(boxes, labels, strict=True)):
        for box, label in zip(np.asarray(image_boxes, dtype=np.float64).reshape(-1, 4), image_labels, strict=True):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": int(label),
                    "bbox": [float(box[0]), float(box[1]), w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    categories = {i: name for i, name in enumerate(category_names)}
    dataset = {
        "images": [{"id": im.id, "file_name": im.file_name, "width": im.width, "height": im.height} for im in images],
        "annotations": annotations,
        "categories": [{"id": i, "name": n} for i, n in categories.items()],
    }
    return CocoGroundTruth(source, images, categories, dataset)


def locate_dataset(root: Path, annotation_file: str, images_folder: str, dataset: str) -> tuple[Path, Path]:
    """``root/annotation_file`` and ``root/images_folder``, or a DataError describing the expected layout."""
    root = Path(root)
    layout = f"{root}/{annotation_file} and the images in {root}/{images_folder}/"
    if not root.is_dir():
        raise DataError(f"{dataset} folder {root} does not exist or is not a folder", hint=f"Expected {layout}")
    json_path, images = root / annotation_file, root / images_folder
    if not json_path.is_file():
        raise DataError(f"{dataset} annotation file {json_path} does not exist", hint=f"Expected {layout}")
    if not images.is_dir():
        raise DataError(f"{dataset} image folder {images} does not exist", hint=f"Expected {layout}")
    return json_path, images


# -- preprocessing ---------------------------------------------------------------


def _linear_taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # OpenCV's INTER_LINEAR coordinates: half-pixel centres, no anti-aliasing,
    # edge pixels repeated (its clamping of sx < 0 and sx >= n - 1 is the same as clamping both taps).
    pos = ((np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5).astype(np.float32)
    left = np.floor(pos)
    frac = (pos - left).astype(np.float32)
    left = left.astype(np.int64)
    return np.clip(left, 0, src - 1), np.clip(left + 1, 0, src - 1), frac


def resize_bilinear(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)`` for float32 HWC images."""
    image = np.asarray(image, dtype=np.float32)
    x0, x1, fx = _linear_taps(image.shape[1], width)
    y0, y1, fy = _linear_taps(image.shape[0], height)
    # Horizontal pass first, as OpenCV does; in-place products keep it to two temporaries per pass.
    fx = fx[None, :, None]
    rows = np.take(image, x0, axis=1)
    rows *= 1 - fx
    right = np.take(image, x1, axis=1)
    right *= fx
    rows += right
    fy = fy[:, None, None]
    out = np.take(rows, y0, axis=0)
    out *= 1 - fy
    below = np.take(rows, y1, axis=0)
    below *= fy
    out += below
    return out


def preprocess_mlperf_retinanet(image: Image.Image, size: tuple[int, int] = (800, 800)) -> np.ndarray:
    """MLPerf's ``pre_process_openimages_retinanet``: RGB float, bilinear resize to ``size`` (h, w), /255, CHW."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    resized = resize_bilinear(pixels, size[0], size[1])
    resized /= np.float32(255.0)
    return np.ascontiguousarray(resized.transpose(2, 0, 1))


# -- the sample source -----------------------------------------------------------


class CocoDetection:
    """Images of a COCO-format dataset, preprocessed by ``preprocess`` (see ``tasks.base.SampleSource``).

    ``preprocess_version`` is part of the cache key: change it whenever the
    output pixels would change. A cached RetinaNet sample is 7.7 MB (800x800x3
    float32), as in MLPerf's reference, which caches the same arrays.
    """

    sample_dtype = np.dtype(np.float32)

    def __init__(
        self,
        annotations: CocoGroundTruth,
        images_dir: Path,
        *,
        label: str,
        preprocess: Callable[[Image.Image], np.ndarray],
        sample_shape: tuple[int, ...],
        preprocess_version: str,
        count: int | None = None,
        performance_count: int = 64,
        cache_dir: Path | None = None,
        upright: bool = True,
    ) -> None:
        if count is not None and count < 1:
            raise DataError(f"{label} sample count must be at least 1, got {count}", hint="Leave count unset to use every image")
        if performance_count < 1:
            raise DataError(f"performance_count must be at least 1, got {performance_count}", hint="Use e.g. 64")
        if not annotations.images:
            raise DataError(f"COCO annotation file {annotations.source} lists no images", hint=_FORMAT_HINT)
        self.label = label
        self.images_dir = Path(images_dir)
        self.sample_shape = tuple(sample_shape)
        self._preprocess = preprocess
        self._upright = upright  # EXIF orientation: OpenCV (MLPerf Inference) applies it, TF (MLPerf Mobile) does not
        names = [im.file_name for im in annotations.images]
        # Keyed on the whole list so an index means the same image whatever ``count`` is.
        cache_key = hashlib.sha256(
            "\n".join([str(self.images_dir.resolve()), preprocess_version, *names]).encode("utf-8")
        ).hexdigest()[:20]
        self._annotations = annotations if count is None else annotations.head(count)
        self._names = [im.file_name for im in self._annotations.images]
        check_files_exist(
            self.images_dir, self._names, annotations.source, what=label,
            hint="Download the complete image set into the folder, or pass count= to use only the first images",
        )  # fmt: skip
        self.total_count = len(self._names)
        self.performance_count = min(performance_count, self.total_count)
        self._cache = SampleCache(Path(cache_dir) / cache_key if cache_dir is not None else None, self.sample_shape, self.sample_dtype)

    def _sample(self, index: int) -> np.ndarray:
        return self._cache.get(index, lambda i: self._preprocess(decode_image(self.images_dir / self._names[i], upright=self._upright)))

    def load(self, indices: Sequence[int]) -> np.ndarray:
        """Preprocessed samples in the order given, shape ``(len(indices), *sample_shape)``."""
        checked = [checked_index(i, self.total_count, what=self.label) for i in indices]
        return load_samples(checked, self.sample_shape, self.sample_dtype, self._sample)

    def ground_truth(self) -> CocoGroundTruth:
        return self._annotations
