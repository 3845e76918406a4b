"""The SR folder reader: SNUSR-style LR/HR pairs, HR-only folders, sizes, crops and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlgauge.data.sr_pairs import SrPairs, downscale_bicubic, find_pairs, upscale_bicubic
from mlgauge.errors import DataError
from mlgauge.tasks.base import SampleSource


def _png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def _pixels(seed: int, width: int, height: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture
def paired(tmp_path) -> tuple[Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    root = tmp_path / "snusr"
    images = {}
    for seed, name in enumerate(["b.png", "a.png", "c.png"]):
        lr, hr = _pixels(seed, 12, 8), _pixels(seed + 10, 24, 16)
        _png(root / "LR" / name, lr)
        _png(root / "HR" / name, hr)
        images[name] = (lr, hr)
    return root, images


def test_pairs_load_in_name_order(paired):
    root, images = paired
    data = SrPairs(root)
    assert isinstance(data, SampleSource)
    assert data.label == "snusr" and not data.derived_lr
    assert data.names() == ["a.png", "b.png", "c.png"]
    assert data.total_count == 3 and data.performance_count == 3
    assert data.lr_size == (12, 8)
    assert data.sample_shape == (3, 8, 12) and data.hr_shape == (16, 24, 3)
    batch = data.load([2, 0])
    assert batch.shape == (2, 3, 8, 12) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[0], images["c.png"][0].transpose(2, 0, 1))
    np.testing.assert_array_equal(batch[1], images["a.png"][0].transpose(2, 0, 1))
    gt = data.ground_truth()
    assert len(gt) == 3
    np.testing.assert_array_equal(gt[1], images["b.png"][1])


def test_nhwc_layout_count_and_performance_count(paired):
    root, images = paired
    data = SrPairs(root, layout="NHWC", count=2, performance_count=1)
    assert data.total_count == 2 and data.performance_count == 1
    assert data.sample_shape == (8, 12, 3)
    np.testing.assert_array_equal(data.load([1])[0], images["b.png"][0])
    with pytest.raises(DataError, match="outside 0..1"):
        data.load([2])


def test_div2k_style_lr_names_pair_up(tmp_path):
    root = tmp_path / "div2k"
    _png(root / "HR" / "0801.png", _pixels(0, 8, 8))
    _png(root / "LR" / "0801x2.png", _pixels(1, 4, 4))
    pairs = find_pairs(root)
    assert [(p.hr.name, p.lr.name) for p in pairs] == [("0801.png", "0801x2.png")]


def test_lowercase_folders_and_png_suffixes(tmp_path):
    root = tmp_path / "lower"
    _png(root / "hr" / "x.PNG", _pixels(0, 8, 6))
    _png(root / "lr" / "x.PNG", _pixels(1, 4, 3))
    (root / "hr" / "notes.txt").write_text("ignored")
    assert SrPairs(root).names() == ["x.PNG"]


def test_missing_lr_partner_is_named(paired):
    root, _ = paired
    (root / "LR" / "b.png").unlink()
    with pytest.raises(DataError, match="HR images with no LR partner") as info:
        SrPairs(root)
    assert "b.png" in str(info.value)
    assert "a.png" not in str(info.value)
    assert info.value.hint and "LR/<name>.png" in info.value.hint


def test_missing_hr_partner_is_named(paired):
    root, _ = paired
    _png(root / "LR" / "extra.png", _pixels(5, 12, 8))
    with pytest.raises(DataError, match="LR images with no HR partner") as info:
        SrPairs(root)
    assert "extra.png" in str(info.value)


def test_many_unpaired_files_are_summarised(tmp_path):
    root = tmp_path / "many"
    _png(root / "HR" / "keep.png", _pixels(0, 4, 4))
    for i in range(8):
        _png(root / "LR" / f"orphan{i}.png", _pixels(i, 2, 2))
    _png(root / "LR" / "keep.png", _pixels(9, 2, 2))
    with pytest.raises(DataError, match="and 3 more"):
        find_pairs(root)


def test_hr_not_twice_lr_is_named(paired):
    root, _ = paired
    _png(root / "HR" / "b.png", _pixels(3, 25, 16))
    with pytest.raises(DataError, match="not 2x larger") as info:
        SrPairs(root)
    assert "b.png" in str(info.value) and "12x8" in str(info.value) and "25x16" in str(info.value)


def test_mixed_sizes_are_named_and_lr_size_crops(paired):
    root, images = paired
    big_lr, big_hr = _pixels(7, 16, 10), _pixels(8, 32, 20)
    _png(root / "LR" / "d.png", big_lr)
    _png(root / "HR" / "d.png", big_hr)
    with pytest.raises(DataError, match="different size from 12x8") as info:
        SrPairs(root)
    assert "d.png (16x10)" in str(info.value)
    assert "lr_size" in info.value.hint

    data = SrPairs(root, lr_size=(12, 8))
    assert data.total_count == 4 and data.sample_shape == (3, 8, 12)
    # Centre crop: LR offset ((16-12)//2, (10-8)//2) = (2, 1); the HR crop is the same region at 2x.
    np.testing.assert_array_equal(data.lr_image(3), big_lr[1:9, 2:14])
    np.testing.assert_array_equal(data.hr_image(3), big_hr[2:18, 4:28])
    np.testing.assert_array_equal(data.hr_image(0), images["a.png"][1])

    with pytest.raises(DataError, match="smaller than 14x8") as info:
        SrPairs(root, lr_size=(14, 8))
    assert "a.png (12x8)" in str(info.value) and "d.png" not in str(info.value)


def test_hr_only_folder_derives_lr_by_bicubic(tmp_path):
    root = tmp_path / "hr-only"
    hr = _pixels(0, 21, 14)  # odd width: modcrop to 20
    _png(root / "HR" / "only.png", hr)
    data = SrPairs(root)
    assert data.derived_lr and data.label == "snusr-derived-lr"
    assert data.lr_size == (10, 7) and data.hr_shape == (14, 20, 3)
    expected_lr = np.asarray(Image.fromarray(hr[:, :20]).resize((10, 7), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(data.lr_image(0), expected_lr)
    np.testing.assert_array_equal(data.load([0])[0], expected_lr.transpose(2, 0, 1))
    np.testing.assert_array_equal(data.ground_truth()[0], hr[:, :20])


def test_flat_folder_of_pngs_is_hr_only(tmp_path):
    _png(tmp_path / "flat" / "one.png", _pixels(0, 8, 8))
    _png(tmp_path / "flat" / "two.png", _pixels(1, 8, 8))
    data = SrPairs(tmp_path / "flat")
    assert data.derived_lr and data.names() == ["one.png", "two.png"]


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        SrPairs(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no PNG images"):
        SrPairs(tmp_path / "empty")
    _png(tmp_path / "lr-only" / "LR" / "a.png", _pixels(0, 4, 4))
    with pytest.raises(DataError, match="no HR folder"):
        SrPairs(tmp_path / "lr-only")
    with pytest.raises(DataError, match="at least 1"):
        SrPairs(tmp_path / "lr-only", count=0)


def test_corrupt_png_is_named(paired):
    root, _ = paired
    (root / "HR" / "b.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match="cannot read image") as info:
        SrPairs(root)
    assert "b.png" in str(info.value)


def test_bicubic_helpers_round_trip_shapes():
    hr = _pixels(0, 10, 6)
    lr = downscale_bicubic(hr, 2)
    assert lr.shape == (3, 5, 3) and lr.dtype == np.uint8
    assert upscale_bicubic(lr, 2).shape == (6, 10, 3)
    # A flat image stays flat both ways.
    flat = np.full((8, 8, 3), 77, dtype=np.uint8)
    np.testing.assert_array_equal(upscale_bicubic(downscale_bicubic(flat, 2), 2), flat)
