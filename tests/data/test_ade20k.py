"""ADE20K reading: TF-compatible resizing pinned by hand, both folder layouts, and every broken file named."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlgauge.data.ade20k import (
    ADE20K_TOP31,
    ADE20KValidation,
    class_map_table,
    deeplab_resize_size,
    preprocess_image,
)
from mlgauge.data.tf_resize import tf_resize_bilinear, tf_resize_nearest_aligned
from mlgauge.errors import DataError

# -- class maps --------------------------------------------------------------------------


def test_default_class_map_passes_the_150_classes_through():
    table = class_map_table()
    assert table.dtype == np.uint8 and table.shape == (256,)
    np.testing.assert_array_equal(table[:151], np.arange(151))
    assert (table[151:] == 0).all()  # anything else is "other"/ignore


def test_top31_map_keeps_ids_1_to_31_and_ignores_the_rest():
    table = class_map_table(ADE20K_TOP31)
    np.testing.assert_array_equal(table[1:32], np.arange(1, 32))
    assert table[0] == 0 and (table[32:] == 0).all()


def test_custom_class_map_and_its_bounds():
    table = class_map_table({3: 1, 7: 2, 150: 2})
    assert (table[[3, 7, 150]] == [1, 2, 2]).all()
    assert int(table.sum()) == 5
    with pytest.raises(ValueError, match="outside 0..255"):
        class_map_table({300: 1})


# -- resizing, against values worked out by hand ------------------------------------------------


def test_bilinear_tf1_corner_conventions():
    row = np.array([[0.0, 10.0]], dtype=np.float32)
    # align_corners=False, no half-pixel centres: source x = j * 2/4 -> 0, 0.5, 1, 1.5 (clamped to the edge).
    np.testing.assert_allclose(tf_resize_bilinear(row, 1, 4, align_corners=False), [[0, 5, 10, 10]])
    # align_corners=True: source x = j * (2-1)/(3-1) -> 0, 0.5, 1.
    np.testing.assert_allclose(tf_resize_bilinear(row, 1, 3, align_corners=True), [[0, 5, 10]])
    # Downscaling 4 -> 2 without aligned corners samples x = 0 and 2 (no averaging).
    np.testing.assert_allclose(
        tf_resize_bilinear(np.array([[0, 4, 8, 12]], dtype=np.float32), 1, 2, align_corners=False), [[0, 8]]
    )
    rgb = np.stack([np.full((2, 2), v, dtype=np.uint8) for v in (10, 20, 30)], axis=2)
    out = tf_resize_bilinear(rgb, 3, 5, align_corners=True)
    assert out.shape == (3, 5, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[1, 2], [10, 20, 30])


def test_nearest_aligned_rounds_half_away_from_zero():
    ids = np.array([[1, 2, 3]], dtype=np.uint8)
    # 3 -> 5: source x = j * 0.5 -> 0, 0.5, 1, 1.5, 2 -> rounded 0, 1, 1, 2, 2.
    np.testing.assert_array_equal(tf_resize_nearest_aligned(ids, 1, 5), [[1, 2, 2, 3, 3]])


@pytest.mark.parametrize(
    ("hw", "expected"),
    [
        ((683, 512), (512, 383)),  # short side to 512 would make 683 -> 683: too long, so long side to 512
        ((512, 683), (383, 512)),
        ((300, 400), (384, 512)),
        ((256, 256), (512, 512)),  # small square images are enlarged
        ((512, 512), (512, 512)),
    ],
)
def test_deeplab_resize_puts_the_longer_side_at_512(hw, expected):
    assert deeplab_resize_size(*hw) == expected


def test_preprocess_image_normalises_and_pads_with_the_mean_pixel():
    pixels = np.full((32, 64, 3), 255, dtype=np.uint8)
    out = preprocess_image(pixels)
    assert out.shape == (512, 512, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[:256], 1.0, rtol=1e-6)  # (255 - 127.5) / 127.5, up to float32 lerp rounding
    np.testing.assert_allclose(out[256:], 0.0)  # padding is the mean pixel, 0 once normalised


# -- the reader, on generated files --------------------------------------------------------------


def _write_pair(root: Path, stem: str, size: tuple[int, int], ids: np.ndarray, colour=(255, 255, 255)) -> None:
    (root / "images" / "validation").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "validation").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(root / "images" / "validation" / f"{stem}.jpg", quality=100)
    Image.fromarray(ids.astype(np.uint8), mode="L").save(root / "annotations" / "validation" / f"{stem}.png")


def _halves(height: int, width: int, left: int, right: int) -> np.ndarray:
    ids = np.full((height, width), right, dtype=np.uint8)
    ids[:, : width // 2] = left
    return ids


@pytest.fixture
def ade(tmp_path) -> Path:
    root = tmp_path / "ADEChallengeData2016"
    _write_pair(root, "ADE_val_00000002", (64, 32), _halves(32, 64, 5, 40))
    _write_pair(root, "ADE_val_00000001", (40, 40), np.full((40, 40), 3), colour=(0, 0, 0))
    return root


def test_reader_pairs_sorted_files_and_preprocesses(ade):
    data = ADE20KValidation(ade)
    assert data.label == "ade20k"
    assert data.total_count == 2 and data.performance_count == 2
    assert [img.name for img, _ in data.files] == ["ADE_val_00000001.jpg", "ADE_val_00000002.jpg"]
    assert data.num_classes == 151
    batch = data.load([1, 0])
    assert batch.shape == (2, 3, 512, 512) and batch.dtype == np.float32
    # Sample 1 (64x32, white) is resized to 512x256: rows 0..255 are image, the rest padding.
    np.testing.assert_allclose(batch[0, :, :256], 1.0, atol=2 / 127.5)
    np.testing.assert_allclose(batch[0, :, 256:], 0.0)
    np.testing.assert_allclose(batch[1], -1.0, atol=2 / 127.5)  # black 40x40 fills the whole 512x512

    mask = data.mask(1)
    assert mask.shape == (512, 512) and mask.dtype == np.uint8
    # Nearest, aligned corners: source column round(j * 63/511) is in the left half (< 32) for j <= 255.
    assert (mask[:256, :256] == 5).all() and (mask[:256, 256:] == 40).all()
    assert (mask[256:] == 0).all()  # padding is ignored
    assert (data.mask(0) == 3).all()

    truth = data.ground_truth()
    assert len(truth) == 2
    np.testing.assert_array_equal(truth[1], mask)


def test_reader_applies_the_class_map_and_layout(ade):
    data = ADE20KValidation(ade, class_map=ADE20K_TOP31, layout="NHWC", count=1)
    assert data.total_count == 1 and data.num_classes == 32
    assert data.load([0]).shape == (1, 512, 512, 3)
    top31 = ADE20KValidation(ade, class_map=ADE20K_TOP31)
    mask = top31.mask(1)
    assert (mask[:256, :256] == 5).all() and (mask[:256, 256:] == 0).all()  # 40 is not in the top 31
    with pytest.raises(DataError, match=r"outside 0..0"):
        data.mask(1)


def test_reader_accepts_the_parent_of_ADEChallengeData2016(ade):
    assert ADE20KValidation(ade.parent).total_count == 2


def test_image_without_annotation_is_named(ade):
    Image.new("RGB", (8, 8)).save(ade / "images" / "validation" / "ADE_val_00000003.jpg")
    with pytest.raises(DataError, match="1 ADE20K images have no annotation") as info:
        ADE20KValidation(ade)
    assert "ADE_val_00000003.jpg" in str(info.value)
    assert "ADE_val_00000003.png" in str(info.value)


def test_annotation_without_image_is_named(ade):
    Image.new("L", (8, 8)).save(ade / "annotations" / "validation" / "ADE_val_00000009.png")
    with pytest.raises(DataError, match="have no image") as info:
        ADE20KValidation(ade)
    assert "ADE_val_00000009.png" in str(info.value)


def test_colour_annotation_is_named(ade):
    Image.new("RGB", (40, 40)).save(ade / "annotations" / "validation" / "ADE_val_00000001.png")
    data = ADE20KValidation(ade)
    with pytest.raises(DataError, match="is a RGB image, not single-channel class ids") as info:
        data.mask(0)
    assert "ADE_val_00000001.png" in str(info.value)


def test_annotation_of_the_wrong_size_is_named(ade):
    Image.new("L", (41, 40)).save(ade / "annotations" / "validation" / "ADE_val_00000001.png")
    with pytest.raises(DataError, match="is 41x40, but its image is 40x40") as info:
        ADE20KValidation(ade).mask(0)
    assert "ADE_val_00000001.png" in str(info.value)


def test_class_id_beyond_150_is_named(ade):
    Image.fromarray(np.full((40, 40), 200, dtype=np.uint8), mode="L").save(
        ade / "annotations" / "validation" / "ADE_val_00000001.png"
    )
    with pytest.raises(DataError, match="has class id 200") as info:
        ADE20KValidation(ade).mask(0)
    assert "ADE_val_00000001.png" in str(info.value)


def test_corrupt_image_is_named_when_loaded(ade):
    (ade / "images" / "validation" / "ADE_val_00000001.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    data = ADE20KValidation(ade)  # opening only lists files
    with pytest.raises(DataError, match="cannot decode ADE20K image") as info:
        data.load([0, 1])
    assert "ADE_val_00000001.jpg" in str(info.value)


def test_missing_and_foreign_folders(tmp_path, ade):
    with pytest.raises(DataError, match="does not exist"):
        ADE20KValidation(tmp_path / "nothing")
    (tmp_path / "other").mkdir()
    with pytest.raises(DataError, match="is not an ADE20K folder"):
        ADE20KValidation(tmp_path / "other")
    for png in (ade / "annotations" / "validation").iterdir():
        png.unlink()
    (ade / "annotations" / "validation").rmdir()
    with pytest.raises(DataError, match="annotation folder .* does not exist"):
        ADE20KValidation(ade)


def test_bad_indices_and_counts(ade):
    data = ADE20KValidation(ade)
    with pytest.raises(DataError, match="outside 0..1"):
        data.load([2])
    with pytest.raises(DataError, match="not an integer"):
        data.load(["0"])
    with pytest.raises(DataError, match="at least 1"):
        ADE20KValidation(ade, count=0)


# -- MLPerf Mobile's prepared layout (512x512 JPEGs + .raw masks) ------------------------------------


def test_prepared_raw_layout(tmp_path):
    root = tmp_path / "ade20k"
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    Image.new("RGB", (512, 512), (255, 255, 255)).save(root / "images" / "ADE_val_00000001.jpg", quality=100)
    ids = np.full((512, 512), 255, dtype=np.uint8)  # DeepLab's pad value
    ids[:100] = 7
    ids.tofile(root / "annotations" / "ADE_val_00000001.raw")
    data = ADE20KValidation(root)
    mask = data.mask(0)
    assert (mask[:100] == 7).all() and (mask[100:] == 0).all()  # 255 padding becomes ignore
    np.testing.assert_allclose(data.load([0])[0], 1.0, atol=2 / 127.5)  # 512x512 is not resized

    ids[:1, :1].tofile(root / "annotations" / "ADE_val_00000001.raw")
    with pytest.raises(DataError, match="has 1 bytes, but its image is 512x512") as info:
        data.mask(0)
    assert "ADE_val_00000001.raw" in str(info.value)
