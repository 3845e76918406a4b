"""Synthetic detection data: deterministic per index, sane boxes, COCO ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from mlgauge.data import synthetic_shapes
from mlgauge.data.synthetic_shapes import (
    CLASS_NAMES,
    IMAGE_SIZE,
    MAX_SHAPES,
    SAMPLE_SHAPE,
    SyntheticShapes,
    generate,
    ground_truth,
    pack,
    unpack,
)
from mlgauge.tasks.base import SampleSource


@pytest.fixture(scope="module")
def val_300():
    return generate(range(300), "val")


def test_shapes_dtypes_and_ranges(val_300):
    images, boxes, labels = val_300
    assert SAMPLE_SHAPE == (3, 96, 96) and CLASS_NAMES == ("rectangle", "ellipse", "triangle")
    assert images.shape == (300, 3, 96, 96) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    assert len(boxes) == len(labels) == 300
    counts = np.array([len(b) for b in boxes])
    assert counts.min() >= 1 and counts.max() <= MAX_SHAPES
    assert 2.0 < counts.mean() < 3.0
    all_labels = np.concatenate(labels)
    assert all_labels.dtype == np.int64
    assert np.bincount(all_labels).tolist() == np.bincount(all_labels, minlength=3).tolist()
    assert np.bincount(all_labels).min() > 0.25 * len(all_labels)  # balanced-ish over 3 classes
    for b, c in zip(boxes, labels, strict=True):
        assert b.dtype == np.float32 and b.shape == (len(c), 4)


def test_boxes_are_inside_the_image_and_apart(val_300):
    _, boxes, _ = val_300
    allb = np.concatenate(boxes)
    assert allb.min() >= 0 and allb.max() <= IMAGE_SIZE
    wh = allb[:, 2:] - allb[:, :2]
    assert wh.min() >= 6 and wh.max() <= 64
    np.testing.assert_array_equal(allb, np.round(allb))  # pixel-edge coordinates
    for b in boxes:
        for i in range(len(b)):
            for j in range(i + 1, len(b)):
                overlap_w = min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0])
                overlap_h = min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1])
                assert overlap_w <= 0 or overlap_h <= 0  # shapes never overlap, so boxes never occlude


def test_boxes_are_tight_around_the_drawn_shape(val_300):
    images, boxes, _ = val_300
    # Shapes differ from the background by >= 0.25 on average per channel; the noise is 0.05.
    # A box's edge rows and columns must contain shape pixels, the ring just outside none.
    for image, image_boxes in zip(images[:50], boxes[:50], strict=True):
        for x1, y1, x2, y2 in image_boxes.astype(int):
            inside = image[:, y1:y2, x1:x2]
            centre = inside[:, (y2 - y1) // 2, (x2 - x1) // 2]
            shape_px = np.abs(inside - centre[:, None, None]).mean(axis=0) < 0.12
            assert shape_px[0].any() and shape_px[-1].any() and shape_px[:, 0].any() and shape_px[:, -1].any()


def test_same_indices_give_identical_samples(val_300):
    images, boxes, labels = generate(range(300), "val")
    np.testing.assert_array_equal(images, val_300[0])
    for a, b in zip(boxes, val_300[1], strict=True):
        np.testing.assert_array_equal(a, b)
    picks = [299, 5, 0, 5]
    x, b, c = generate(picks, "val")
    np.testing.assert_array_equal(x, val_300[0][picks])
    for got, i in zip(b, picks, strict=True):
        np.testing.assert_array_equal(got, val_300[1][i])
    for got, i in zip(c, picks, strict=True):
        np.testing.assert_array_equal(got, val_300[2][i])


def test_splits_differ_and_unknown_split_fails(val_300):
    train = generate(range(8), "train")[0]
    calibration = generate(range(8), "calibration")[0]
    assert not np.array_equal(train, val_300[0][:8])
    assert not np.array_equal(train, calibration)
    with pytest.raises(ValueError, match="unknown split"):
        generate([0], "test")


def test_pack_unpack_round_trip(val_300):
    _, boxes, labels = val_300
    packed = pack(boxes, labels)
    assert packed["counts"].sum() == len(packed["boxes"]) == len(packed["labels"])
    b2, c2 = unpack(packed["counts"], packed["boxes"], packed["labels"])
    for a, b in zip(boxes + labels, b2 + c2, strict=True):
        np.testing.assert_array_equal(a, b)


def test_ground_truth_and_sample_source(val_300):
    images, boxes, labels = val_300
    truth = ground_truth(boxes[:10], labels[:10])
    assert truth.categories == {0: "rectangle", 1: "ellipse", 2: "triangle"}
    assert [(im.id, im.width, im.height) for im in truth.images[:2]] == [(1, 96, 96), (2, 96, 96)]
    np.testing.assert_array_equal(truth.boxes(3)[0], boxes[3])
    np.testing.assert_array_equal(truth.boxes(3)[1], labels[3])
    assert len(truth.dataset["annotations"]) == sum(len(b) for b in boxes[:10])

    source = SyntheticShapes(images[:10], truth, performance_count=64)
    assert isinstance(source, SampleSource)
    assert source.label == "synthetic" and source.total_count == 10 and source.performance_count == 10
    np.testing.assert_array_equal(source.load([4, 1]), images[[4, 1]])
    assert source.ground_truth() is truth
    with pytest.raises(ValueError, match="11 images but ground truth for 10"):
        SyntheticShapes(images[:11], truth, 64)


@pytest.mark.parametrize("kind", [0, 1, 2])
def test_masks_fill_their_box(kind):
    mask = synthetic_shapes._mask(kind, 10.2, 20.7, 40.4, 50.1, apex=0.5, flip=False)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    # Pixel centres inside [10.2, 40.4] x [20.7, 50.1]: columns 10..39, rows 21..49; a triangle's
    # pointed corners may leave the outermost row or column empty.
    assert cols[0] in (10, 11) and cols[-1] in (38, 39) and rows[0] in (21, 22) and rows[-1] == 49
    if kind != 2:
        assert (cols[0], cols[-1], rows[0]) == (10, 39, 21)
    area = mask.sum()
    expected = {0: 30 * 29, 1: np.pi * 15 * 14.7, 2: 30 * 29 / 2}[kind]
    assert area == pytest.approx(expected, rel=0.08)
