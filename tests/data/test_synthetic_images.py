"""The synthetic stand-in images: deterministic, balanced, learnable only from shape."""

from __future__ import annotations

import numpy as np
import pytest

from mlgauge.data import synthetic_images
from mlgauge.data.synthetic_images import NUM_CLASSES, SAMPLE_SHAPE, SyntheticImages, generate, labels_for
from mlgauge.tasks.base import SampleSource


@pytest.fixture(scope="module")
def val_2048():
    return generate(range(2048), "val")


def test_shape_dtype_and_label_range(val_2048):
    images, labels = val_2048
    assert SAMPLE_SHAPE == (3, 32, 32)
    assert images.shape == (2048, 3, 32, 32)
    assert images.dtype == np.float32
    assert labels.shape == (2048,)
    assert labels.dtype == np.int64
    assert labels.min() == 0 and labels.max() == NUM_CLASSES - 1


def test_value_scale(val_2048):
    images, _ = val_2048
    assert np.isfinite(images).all()
    # Roughly zero-mean; the noise (std 2.4) dominates the spread.
    assert abs(float(images.mean())) < 0.05
    assert 2.3 < float(images.std()) < 2.6
    assert float(np.abs(images).max()) < 20


def test_same_indices_give_identical_arrays(val_2048):
    again_x, again_y = generate(range(2048), "val")
    np.testing.assert_array_equal(again_x, val_2048[0])
    np.testing.assert_array_equal(again_y, val_2048[1])


def test_subset_equals_rows_of_a_bigger_generation(val_2048):
    picks = [2047, 5, 0, 1000, 5]
    x, y = generate(picks, "val")
    np.testing.assert_array_equal(x, val_2048[0][picks])
    np.testing.assert_array_equal(y, val_2048[1][picks])
    np.testing.assert_array_equal(labels_for(np.asarray(picks), "val"), val_2048[1][picks])


def test_splits_differ(val_2048):
    train_x, train_y = generate(range(64), "train")
    calib_x, _ = generate(range(64), "calibration")
    val_x, val_y = val_2048[0][:64], val_2048[1][:64]
    assert not np.array_equal(train_x, val_x)
    assert not np.array_equal(calib_x, val_x)
    assert not np.array_equal(train_x, calib_x)
    assert not np.array_equal(train_y, val_y)


def test_labels_are_balanced(val_2048):
    counts = np.bincount(val_2048[1], minlength=NUM_CLASSES)
    assert counts.sum() == 2048
    fractions = counts / 2048
    assert fractions.min() > 0.08 and fractions.max() < 0.12, counts
    # Over the label period (65536 = 6553 * 10 + 6) the classes are as equal as possible.
    period = labels_for(np.arange(1 << 16), "train")
    assert set(np.bincount(period, minlength=NUM_CLASSES)) == {6553, 6554}


def test_empty_generation():
    x, y = generate([], "val")
    assert x.shape == (0, 3, 32, 32) and y.shape == (0,)


def test_unknown_split_raises():
    with pytest.raises(ValueError, match="unknown split 'test'"):
        generate(range(4), "test")


def _log_power(images: np.ndarray) -> np.ndarray:
    grey = images.mean(axis=1)  # colour is random per sample, so drop it
    power = np.abs(np.fft.fft2(grey)) ** 2  # phase-invariant
    return np.log(power.reshape(len(images), -1) + 1e-6)


def _nearest_centroid_accuracy(train_f, train_y, test_f, test_y) -> float:
    centroids = np.stack([train_f[train_y == k].mean(0) for k in range(NUM_CLASSES)])
    mu, sd = train_f.mean(0), train_f.std(0) + 1e-6
    z_test, z_cent = (test_f - mu) / sd, (centroids - mu) / sd
    dist = ((z_test[:, None, :] - z_cent[None]) ** 2).sum(-1)
    return float((dist.argmin(1) == test_y).mean())


def test_class_is_learnable_from_shape_not_from_pixels_or_colour(val_2048):
    train_x, train_y = generate(range(2000), "train")
    val_x, val_y = val_2048[0][:1000], val_2048[1][:1000]
    # Orientation and frequency show up in the power spectrum: a nearest-centroid
    # classifier on it generalises from train to val far above chance (10%).
    spectral = _nearest_centroid_accuracy(_log_power(train_x), train_y, _log_power(val_x), val_y)
    assert spectral > 0.5, spectral
    # Random phase: mean images carry no class signal; random colour: neither do channel means.
    pixels = _nearest_centroid_accuracy(train_x.reshape(2000, -1), train_y, val_x.reshape(1000, -1), val_y)
    colour = _nearest_centroid_accuracy(train_x.mean((2, 3)), train_y, val_x.mean((2, 3)), val_y)
    assert pixels < 0.2, pixels
    assert colour < 0.2, colour


def test_class_peak_sits_at_the_class_frequency_and_orientation():
    x, y = generate(range(1000), "train")
    power = (np.abs(np.fft.fft2(x.mean(axis=1))) ** 2).astype(np.float64)
    fy = np.fft.fftfreq(32, d=1 / 32)  # cycles per image
    for k in range(NUM_CLASSES):
        mean_power = power[y == k].mean(0)
        mean_power[0, 0] = 0  # drop DC
        iy, ix = np.unravel_index(mean_power.argmax(), mean_power.shape)
        freq = float(np.hypot(fy[iy], fy[ix]))
        angle = float(np.degrees(np.arctan2(fy[iy], fy[ix]))) % 180
        want_freq = synthetic_images._FREQUENCIES[k // 5]
        want_angle = synthetic_images._ORIENTATIONS_DEG[k % 5]
        assert abs(freq - want_freq) < 1.5, (k, freq, want_freq)
        assert min(abs(angle - want_angle), 180 - abs(angle - want_angle)) < 30, (k, angle, want_angle)


def test_sample_source():
    images, labels = generate(range(20), "val")
    source = SyntheticImages(images, labels, performance_count=1024)
    assert isinstance(source, SampleSource)
    assert source.label == "synthetic"
    assert source.total_count == 20
    assert source.performance_count == 20  # capped at the data size
    assert SyntheticImages(images, labels, performance_count=8).performance_count == 8
    assert source.sample_shape == (3, 32, 32) and source.sample_dtype == np.float32
    np.testing.assert_array_equal(source.load([3, 0, 3]), images[[3, 0, 3]])
    np.testing.assert_array_equal(source.ground_truth(), labels)
