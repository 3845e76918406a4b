"""The synthetic SR pairs: deterministic, LR = bicubic(HR), structured beyond what bicubic restores."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mlgauge.data.sr_pairs import upscale_bicubic
from mlgauge.data.synthetic_sr import HR_SHAPE, LR_SHAPE, SyntheticSR, generate, hr_image
from mlgauge.tasks.base import SampleSource


@pytest.fixture(scope="module")
def val_16():
    return generate(range(16), "val")


def test_shapes_dtypes_and_range(val_16):
    lr, hr = val_16
    assert LR_SHAPE == (3, 32, 32) and HR_SHAPE == (64, 64, 3)
    assert lr.shape == (16, 3, 32, 32) and lr.dtype == np.float32
    assert hr.shape == (16, 64, 64, 3) and hr.dtype == np.uint8
    # LR holds whole grey levels in 0..255: a PNG's values, as float.
    assert lr.min() >= 0 and lr.max() <= 255
    np.testing.assert_array_equal(lr, np.rint(lr))


def test_lr_is_pillow_bicubic_of_hr(val_16):
    lr, hr = val_16
    for i in (0, 7):
        expected = np.asarray(Image.fromarray(hr[i]).resize((32, 32), Image.Resampling.BICUBIC))
        np.testing.assert_array_equal(lr[i].transpose(1, 2, 0), expected)


def test_deterministic_and_index_addressable(val_16):
    lr, hr = val_16
    again_lr, again_hr = generate([15, 3, 3], "val")
    np.testing.assert_array_equal(again_hr, hr[[15, 3, 3]])
    np.testing.assert_array_equal(again_lr, lr[[15, 3, 3]])
    np.testing.assert_array_equal(hr_image("val", 5), hr[5])


def test_splits_and_indices_differ(val_16):
    _, hr = val_16
    _, train_hr = generate(range(16), "train")
    assert not np.array_equal(train_hr, hr)
    assert len({hr[i].tobytes() for i in range(16)}) == 16
    with pytest.raises(ValueError, match="unknown split"):
        hr_image("test", 0)


def test_images_have_structure_bicubic_does_not_restore(val_16):
    lr, hr = val_16
    # Colourful, not flat: a real spread of values in every image.
    assert all(float(h.std()) > 20 for h in hr)
    # Edges: many large neighbour differences (shape borders, strokes).
    steps = np.abs(np.diff(hr.astype(np.int16), axis=2)).max(axis=-1)
    assert (steps > 60).mean() > 0.01
    # Bicubic upscaling loses detail: PSNR well below a near-perfect reconstruction.
    up = np.stack([upscale_bicubic(x.transpose(1, 2, 0).astype(np.uint8), 2) for x in lr])
    mse = np.mean((up.astype(np.float64) - hr) ** 2)
    assert 20 < 10 * np.log10(255**2 / mse) < 32


def test_empty_generation():
    lr, hr = generate([], "val")
    assert lr.shape == (0, 3, 32, 32) and hr.shape == (0, 64, 64, 3)


def test_sample_source_layouts(val_16):
    lr, hr = val_16
    nchw = SyntheticSR(lr, hr, performance_count=100)
    assert isinstance(nchw, SampleSource)
    assert nchw.label == "synthetic"
    assert nchw.total_count == 16 and nchw.performance_count == 16
    assert nchw.sample_shape == (3, 32, 32) and nchw.hr_shape == (64, 64, 3)
    np.testing.assert_array_equal(nchw.load([2, 0]), lr[[2, 0]])
    assert nchw.ground_truth() is hr

    nhwc = SyntheticSR(lr, hr, performance_count=8, layout="NHWC")
    assert nhwc.sample_shape == (32, 32, 3) and nhwc.performance_count == 8
    np.testing.assert_array_equal(nhwc.load([2]), lr[[2]].transpose(0, 2, 3, 1))
    with pytest.raises(ValueError, match="layout"):
        SyntheticSR(lr, hr, 8, layout="CHW")
