"""COCO-format detection reader: field checks, MLPerf RetinaNet preprocessing, folder layout, cache."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlgauge.data.coco import (
    CocoDetection,
    ground_truth_from_boxes,
    locate_dataset,
    preprocess_mlperf_retinanet,
    read_coco_annotations,
    resize_bilinear,
)
from mlgauge.errors import DataError
from mlgauge.tasks.base import SampleSource

JSON_REL = "annotations/openimages-mlperf.json"
IMAGES_REL = "validation/data"
SIZES = {"a.jpg": (64, 48), "b.jpg": (40, 80), "c.jpg": (30, 30)}  # width, height


def _image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8))


def _coco_dict() -> dict:
    return {
        "info": {"dataset": "openimages_mlperf"},
        "categories": [{"id": 0, "name": "Airplane"}, {"id": 1, "name": "Apple"}, {"id": 7, "name": "Ball"}],
        "images": [
            {"id": 3, "file_name": "b.jpg", "width": 40, "height": 80, "coco_url": None},
            {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
            {"id": 2, "file_name": "c.jpg", "width": 30, "height": 30},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 7, "bbox": [1, 2, 10, 20], "area": 200.0, "iscrowd": 0},
            {"id": 10, "image_id": 3, "category_id": 0, "bbox": [0.5, 4, 20.5, 30], "IsGroupOf": 1, "iscrowd": 1},
            {"image_id": 1, "category_id": 1, "bbox": [30, 10, 5, 5]},
        ],
    }


@pytest.fixture
def dataset_root(tmp_path) -> Path:
    """A tiny copy of MLPerf's OpenImages layout: annotations JSON + validation/data JPEGs."""
    (tmp_path / "annotations").mkdir()
    (tmp_path / IMAGES_REL).mkdir(parents=True)
    for seed, (name, (w, h)) in enumerate(SIZES.items()):
        _image(w, h, seed).save(tmp_path / IMAGES_REL / name, quality=95)
    (tmp_path / JSON_REL).write_text(json.dumps(_coco_dict()))
    return tmp_path


# -- the annotation file -------------------------------------------------------------


def test_reads_images_in_file_order_with_boxes_and_categories(dataset_root):
    truth = read_coco_annotations(dataset_root / JSON_REL)
    assert [im.file_name for im in truth.images] == ["b.jpg", "a.jpg", "c.jpg"]
    assert [(im.id, im.width, im.height) for im in truth.images] == [(3, 40, 80), (1, 64, 48), (2, 30, 30)]
    assert truth.categories == {0: "Airplane", 1: "Apple", 7: "Ball"}
    assert len(truth) == 3
    boxes, cats = truth.boxes(1)  # image id 1: two boxes, xywh -> xyxy
    np.testing.assert_array_equal(boxes, [[1, 2, 11, 22], [30, 10, 35, 15]])
    np.testing.assert_array_equal(cats, [7, 1])
    boxes, cats = truth.boxes(2)
    assert boxes.shape == (0, 4) and cats.shape == (0,)


def test_dataset_dict_is_normalised_for_pycocotools(dataset_root):
    truth = read_coco_annotations(dataset_root / JSON_REL)
    anns = truth.dataset["annotations"]
    assert [a["id"] for a in anns] == [1, 2, 3]  # renumbered: the file repeats id 10
    assert [a["area"] for a in anns] == [200.0, 20.5 * 30, 25.0]  # given, else width * height
    assert [a["iscrowd"] for a in anns] == [0, 1, 0]
    assert set(truth.dataset) == {"images", "annotations", "categories"}
    assert truth.dataset["images"][0] == {"id": 3, "file_name": "b.jpg", "width": 40, "height": 80}

    head = truth.head(2)
    assert [im.id for im in head.images] == [3, 1]
    assert [a["image_id"] for a in head.dataset["annotations"]] == [1, 3, 1]
    only_first = truth.head(1)
    assert [a["image_id"] for a in only_first.dataset["annotations"]] == [3]
    assert truth.head(10) is truth


def _broken(data: dict, change) -> dict:
    change(data)
    return data


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda d: d.pop("images"), r"the top-level object has no 'images'"),
        (lambda d: d.__setitem__("annotations", {}), r"'annotations' is a dict, not a list"),
        (lambda d: d["images"][1].pop("file_name"), r"images\[1\] has no 'file_name'"),
        (lambda d: d["images"][0].__setitem__("width", "wide"), r"images\[0\] has a non-numeric 'width'"),
        (lambda d: d["images"][2].__setitem__("height", 0), r"images\[2\] has 'height' 0, not positive"),
        (lambda d: d["images"][2].__setitem__("id", 1), r"images\[2\] repeats image id 1"),
        (lambda d: d["images"][0].__setitem__("id", "3"), r"images\[0\] has a non-integer 'id'"),
        (lambda d: d["annotations"][2].pop("bbox"), r"annotations\[2\] has no 'bbox'"),
        (lambda d: d["annotations"][0].__setitem__("bbox", [1, 2, 3]), r"annotations\[0\] has a 'bbox' that is not"),
        (lambda d: d["annotations"][0].__setitem__("bbox", [1, 2, -3, 4]), r"annotations\[0\] has a 'bbox' with negative"),
        (lambda d: d["annotations"][1].__setitem__("image_id", 99), r"annotations\[1\] refers to image id 99"),
        (lambda d: d["annotations"][1].__setitem__("category_id", 5), r"annotations\[1\] refers to category id 5"),
        (lambda d: d["categories"].append({"name": "x"}), r"categories\[3\] has no 'id'"),
        (lambda d: d["categories"].__setitem__(0, "Airplane"), r"categories\[0\] is a str, not an object"),
    ],
)
def test_malformed_files_name_the_file_and_the_field(tmp_path, change, expected):
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(_broken(_coco_dict(), change)))
    with pytest.raises(DataError, match=expected) as info:
        read_coco_annotations(path)
    assert str(path) in str(info.value)
    assert "bbox: [x, y, width, height]" in info.value.hint


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "instances.json"
    path.write_text('{\n  "images": [\n    {"id": 1,, "file_name": "a.jpg"}\n  ]\n}')
    with pytest.raises(DataError, match=r"is not valid JSON: .* at line 3 column 14") as info:
        read_coco_annotations(path)
    assert str(path) in str(info.value)
    path.write_text("[1, 2]")
    with pytest.raises(DataError, match="the top level is a list, not an object"):
        read_coco_annotations(path)


def test_missing_and_undecodable_files(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_coco_annotations(tmp_path / "nope.json")
    path = tmp_path / "latin1.json"
    path.write_bytes(b'{"images": "\xe9"}')
    with pytest.raises(DataError, match="is not UTF-8 text"):
        read_coco_annotations(path)


def test_locate_dataset_explains_the_layout(dataset_root, tmp_path):
    json_path, images = locate_dataset(dataset_root, JSON_REL, IMAGES_REL, "OpenImages")
    assert json_path == dataset_root / JSON_REL and images == dataset_root / IMAGES_REL
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="annotation file .*openimages-mlperf.json does not exist") as info:
        locate_dataset(empty, JSON_REL, IMAGES_REL, "OpenImages")
    assert "validation/data" in info.value.hint
    (empty / "annotations").mkdir()
    (empty / JSON_REL).write_text("{}")
    with pytest.raises(DataError, match="image folder .*validation/data does not exist"):
        locate_dataset(empty, JSON_REL, IMAGES_REL, "OpenImages")
    with pytest.raises(DataError, match="does not exist or is not a folder"):
        locate_dataset(tmp_path / "missing", JSON_REL, IMAGES_REL, "OpenImages")


def test_ground_truth_from_boxes():
    truth = ground_truth_from_boxes(
        [(96, 96), (96, 96)],
        [np.array([[1, 2, 11, 22]], np.float32), np.zeros((0, 4), np.float32)],
        [np.array([2]), np.zeros(0, np.int64)],
        ("rectangle", "ellipse", "triangle"),
    )
    assert [im.id for im in truth.images] == [1, 2]
    assert truth.categories == {0: "rectangle", 1: "ellipse", 2: "triangle"}
    assert truth.dataset["annotations"] == [
        {"id": 1, "image_id": 1, "category_id": 2, "bbox": [1.0, 2.0, 10.0, 20.0], "area": 200.0, "iscrowd": 0}
    ]
    np.testing.assert_array_equal(truth.boxes(0)[0], [[1, 2, 11, 22]])


# -- preprocessing ------------------------------------------------------------------------------


def test_resize_bilinear_hand_computed():
    image = np.array([[0, 4], [8, 12]], dtype=np.float32)[:, :, None]
    # OpenCV INTER_LINEAR, 2 -> 4: sources at -0.25 (edge), 0.25, 0.75, 1.25 (edge).
    expected = [[0, 1, 3, 4], [2, 3, 5, 6], [6, 7, 9, 10], [8, 9, 11, 12]]
    np.testing.assert_allclose(resize_bilinear(image, 4, 4)[:, :, 0], expected)


@pytest.mark.parametrize("out_hw", [(800, 800), (13, 7), (33, 90)])
def test_resize_bilinear_matches_an_independent_implementation(out_hw):
    # torch's bilinear with align_corners=False and no antialias uses OpenCV's INTER_LINEAR coordinates.
    image = np.random.default_rng(1).uniform(0, 255, size=(37, 61, 3)).astype(np.float32)
    ours = resize_bilinear(image, *out_hw)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(image).permute(2, 0, 1)[None], size=out_hw, mode="bilinear", align_corners=False
    )[0].permute(1, 2, 0).numpy()
    assert ours.shape == (*out_hw, 3) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-3)


def test_preprocess_is_rgb_over_255_channel_first():
    image = Image.new("RGB", (120, 90), (255, 0, 51))
    out = preprocess_mlperf_retinanet(image)
    assert out.shape == (3, 800, 800) and out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(out[:, 400, 400], [1.0, 0.0, 0.2], atol=1e-6)
    np.testing.assert_allclose(out.reshape(3, -1).std(axis=1), 0, atol=1e-6)
    gray = preprocess_mlperf_retinanet(Image.new("L", (10, 10), 51), size=(4, 6))
    assert gray.shape == (3, 4, 6)
    np.testing.assert_allclose(gray, 0.2, atol=1e-6)


# -- the sample source --------------------------------------------------------------------------


def _source(root: Path, **kwargs) -> CocoDetection:
    return CocoDetection(
        read_coco_annotations(root / JSON_REL),
        root / IMAGES_REL,
        label="openimages-mlperf",
        preprocess=functools.partial(preprocess_mlperf_retinanet, size=(32, 48)),
        sample_shape=(3, 32, 48),
        preprocess_version="test/32x48",
        **kwargs,
    )


def test_loads_preprocessed_images_in_json_order(dataset_root):
    source = _source(dataset_root, performance_count=2)
    assert isinstance(source, SampleSource)
    assert source.label == "openimages-mlperf"
    assert source.total_count == 3 and source.performance_count == 2
    batch = source.load([2, 0, 0])
    assert batch.shape == (3, 3, 32, 48) and batch.dtype == np.float32
    with Image.open(dataset_root / IMAGES_REL / "b.jpg") as b:
        expected = preprocess_mlperf_retinanet(b, size=(32, 48))
    np.testing.assert_array_equal(batch[1], expected)
    np.testing.assert_array_equal(batch[1], batch[2])
    assert batch.min() >= 0.0 and batch.max() <= 1.0
    assert [im.file_name for im in source.ground_truth().images] == ["b.jpg", "a.jpg", "c.jpg"]


def test_count_keeps_the_first_images_and_their_truth(dataset_root):
    source = _source(dataset_root, count=1)
    assert source.total_count == 1 and source.performance_count == 1
    assert [a["image_id"] for a in source.ground_truth().dataset["annotations"]] == [3]
    with pytest.raises(DataError, match=r"sample index 1 is outside 0\.\.0"):
        source.load([1])
    with pytest.raises(DataError, match="at least 1"):
        _source(dataset_root, count=0)


def test_missing_image_is_named(dataset_root):
    (dataset_root / IMAGES_REL / "a.jpg").unlink()
    with pytest.raises(DataError, match=r"1 of 3 images listed in .*openimages-mlperf.json are missing .* first: a.jpg"):
        _source(dataset_root)
    assert _source(dataset_root, count=1).total_count == 1  # b.jpg is still there


def test_corrupt_image_is_named(dataset_root):
    (dataset_root / IMAGES_REL / "c.jpg").write_bytes(b"not a jpeg")
    source = _source(dataset_root)
    with pytest.raises(DataError, match=r"cannot decode image .*c\.jpg"):
        source.load([2])


def test_exif_orientation_is_applied(dataset_root):
    from PIL import ExifTags

    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # stored landscape, shown rotated 90 degrees
    _image(64, 48, 0).save(dataset_root / IMAGES_REL / "a.jpg", exif=exif)
    source = CocoDetection(
        read_coco_annotations(dataset_root / JSON_REL), dataset_root / IMAGES_REL, label="x",
        preprocess=lambda im: np.asarray(im.size, dtype=np.float32), sample_shape=(2,), preprocess_version="size",
    )  # fmt: skip
    np.testing.assert_array_equal(source.load([1])[0], [48, 64])


def test_cache_is_used_on_the_second_load(dataset_root, tmp_path):
    cache = tmp_path / "cache"
    first = _source(dataset_root, cache_dir=cache).load([0, 1])
    files = sorted(cache.glob("*/*.npy"))
    assert [f.name for f in files] == ["0.npy", "1.npy"]
    np.testing.assert_array_equal(np.load(files[0]), first[0])
    # A marker array in the cache proves the next load reads it instead of decoding.
    np.save(files[0], np.full((3, 32, 48), 0.5, dtype=np.float32))
    again = _source(dataset_root, cache_dir=cache).load([0])
    np.testing.assert_array_equal(again[0], 0.5)
    # A cache entry of the wrong shape is recomputed.
    np.save(files[0], np.zeros((2, 2), dtype=np.float32))
    np.testing.assert_array_equal(_source(dataset_root, cache_dir=cache).load([0])[0], first[0])
