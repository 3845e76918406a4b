"""Synthetic scenes: deterministic, well-formed, and the class really is in the local texture."""

from __future__ import annotations

import numpy as np
import pytest

from mlgauge.data import synthetic_segmentation as scenes


@pytest.fixture(scope="module")
def batch() -> tuple[np.ndarray, np.ndarray]:
    return scenes.generate(range(96), "val")


def test_shapes_dtypes_and_value_ranges(batch):
    images, masks = batch
    assert images.shape == (96, 3, 64, 64) and images.dtype == np.float32
    assert masks.shape == (96, 64, 64) and masks.dtype == np.uint8
    assert set(np.unique(masks)) == {0, 1, 2, 3, 4}
    assert abs(float(images.mean())) < 0.1
    assert 0.4 < float(images.std()) < 1.0


def test_background_dominates_but_every_object_class_is_common(batch):
    share = np.bincount(batch[1].ravel(), minlength=5) / batch[1].size
    assert 0.45 < share[0] < 0.8
    assert (share[1:] > 0.05).all()


def test_same_index_same_scene_whatever_the_batch():
    images, masks = scenes.generate(range(10), "train")
    some_images, some_masks = scenes.generate([7, 2], "train")
    np.testing.assert_array_equal(some_images, images[[7, 2]])
    np.testing.assert_array_equal(some_masks, masks[[7, 2]])


def test_splits_differ():
    train, _ = scenes.generate([0], "train")
    val, _ = scenes.generate([0], "val")
    assert not np.allclose(train, val)


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="unknown split 'test'"):
        scenes.generate([0], "test")


def test_empty_request_gives_empty_arrays():
    images, masks = scenes.generate([], "train")
    assert images.shape == (0, 3, 64, 64) and masks.shape == (0, 64, 64)


def test_each_object_class_has_its_stripe_orientation(batch):
    """Without any network: gradients inside class-k pixels point along k's grating normal.

    Classes 1..4 are gratings at 0, 45, 90, 135 degrees, so (d/dx)^2 dominates for class 1,
    (d/dy)^2 for class 3, and the sign of (d/dx)(d/dy) separates 2 from 4; background shows none of it.
    """
    images, masks = batch
    grey = images.mean(axis=1)
    # Central differences share no pixel between gx and gy, so pixel noise adds no gx*gy correlation.
    gx = (grey[:, 1:-1, 2:] - grey[:, 1:-1, :-2]) / 2  # (n, 62, 62)
    gy = (grey[:, 2:, 1:-1] - grey[:, :-2, 1:-1]) / 2
    inner = masks[:, 1:-1, 1:-1]
    stats = {}
    for cls in range(5):
        sel = inner == cls
        xx, yy, xy = (gx[sel] ** 2).mean(), (gy[sel] ** 2).mean(), (gx[sel] * gy[sel]).mean()
        stats[cls] = (xx / yy, xy / np.sqrt(xx * yy))
    assert stats[1][0] > 4 and stats[3][0] < 1 / 4  # measured: 8.7 and 0.12
    assert stats[2][1] > 0.6 and stats[4][1] < -0.6  # measured: 0.84 and -0.85
    assert 0.9 < stats[0][0] < 1.1 and abs(stats[0][1]) < 0.05


def test_sample_source(batch):
    images, masks = batch
    source = scenes.SyntheticScenes(images, masks, performance_count=256)
    assert source.label == "synthetic"
    assert source.total_count == 96 and source.performance_count == 96
    np.testing.assert_array_equal(source.load([5, 1]), images[[5, 1]])
    assert source.ground_truth() is masks
    assert scenes.SyntheticScenes(images, masks, performance_count=10).performance_count == 10
    with pytest.raises(ValueError, match="96 images but 3 masks"):
        scenes.SyntheticScenes(images, masks[:3], performance_count=10)
