"""ImageNet validation reader: MLPerf val_map format, pre_process_vgg numbers, errors, cache."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlgauge.data import imagenet
from mlgauge.data.imagenet import (
    MLPERF_MEANS,
    ImageNetValidation,
    preprocess_mlperf_resnet50,
    read_val_map,
)
from mlgauge.errors import DataError
from mlgauge.tasks.base import SampleSource

MEANS = np.asarray(MLPERF_MEANS, dtype=np.float32)
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
SOLID = (200, 100, 50)

NAMES = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 7)]
LABELS = [65, 970, 0, 999, 1, 500]


def _gradient(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    rgb = np.stack(
        [
            np.broadcast_to(x, (height, width)),
            np.broadcast_to(y, (height, width)),
            np.full((height, width), 128, np.float32),
        ],
        axis=-1,
    )
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def _thirds(width: int, height: int, colours=(RED, GREEN, BLUE)) -> Image.Image:
    """Landscape image whose left / middle / right thirds have the given colours."""
    pixels = np.zeros((height, width, 3), np.uint8)
    for k, colour in enumerate(colours):
        pixels[:, k * width // 3 : (k + 1) * width // 3] = colour
    return Image.fromarray(pixels, "RGB")


def _save_jpeg(image: Image.Image, path: Path, **kwargs: object) -> None:
    # No chroma subsampling, so colour edges stay sharp and tolerances can stay tight.
    image.save(path, "JPEG", quality=100, subsampling=0, **kwargs)


def _write_map(root: Path, lines: list[str], name: str = "val_map.txt") -> Path:
    path = root / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "imagenet"
    root.mkdir()
    _save_jpeg(_gradient(500, 375), root / NAMES[0])  # landscape
    _save_jpeg(_gradient(333, 500), root / NAMES[1])  # portrait, odd width
    _save_jpeg(_gradient(400, 300).convert("L"), root / NAMES[2])  # grayscale JPEG
    _save_jpeg(_gradient(320, 240).convert("CMYK"), root / NAMES[3])  # CMYK JPEG
    _save_jpeg(Image.new("RGB", (300, 300), SOLID), root / NAMES[4])
    _save_jpeg(_thirds(600, 300), root / NAMES[5])
    # A blank line in the middle and trailing whitespace, as hand-edited maps have.
    lines = [f"{n} {label}" for n, label in zip(NAMES, LABELS, strict=True)]
    _write_map(root, [*lines[:3], "", f"{lines[3]}   ", *lines[4:], ""])
    return root


# --- val_map parsing -------------------------------------------------------------------


def test_read_val_map_names_and_labels(dataset: Path) -> None:
    names, labels = read_val_map(dataset / "val_map.txt")
    assert names == NAMES
    assert labels.dtype == np.int64
    assert labels.tolist() == LABELS


def test_read_val_map_ignores_blank_lines_and_tabs(tmp_path: Path) -> None:
    path = _write_map(tmp_path, ["", "a.JPEG\t7", "   ", "b.JPEG  0", "", ""])
    names, labels = read_val_map(path)
    assert names == ["a.JPEG", "b.JPEG"]
    assert labels.tolist() == [7, 0]


def test_count_limits_to_first_entries(dataset: Path) -> None:
    source = ImageNetValidation(dataset, count=3)
    assert source.total_count == 3
    assert source.performance_count == 3
    assert source.ground_truth().tolist() == LABELS[:3]
    with pytest.raises(DataError, match=r"index 3 is outside 0\.\.2"):
        source.load([3])


def test_count_larger_than_map_uses_all(dataset: Path) -> None:
    assert ImageNetValidation(dataset, count=100).total_count == 6


def test_performance_count_is_capped(dataset: Path) -> None:
    assert ImageNetValidation(dataset).performance_count == 6
    assert ImageNetValidation(dataset, performance_count=2).performance_count == 2


def test_explicit_val_map_path(dataset: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "maps" / "my_map.txt"
    elsewhere.parent.mkdir()
    elsewhere.write_text(f"{NAMES[5]} 42\n{NAMES[0]} 7\n", encoding="utf-8")
    (dataset / "val_map.txt").unlink()
    source = ImageNetValidation(dataset, val_map=elsewhere)
    assert source.ground_truth().tolist() == [42, 7]
    assert np.array_equal(source.load([1])[0], ImageNetValidation(dataset, val_map=elsewhere).load([1])[0])


def test_ground_truth_matches_val_map(dataset: Path) -> None:
    source = ImageNetValidation(dataset)
    truth = source.ground_truth()
    assert truth.dtype == np.int64
    assert truth.tolist() == LABELS
    truth[0] = 5  # callers get their own copy
    assert source.ground_truth()[0] == 65


def test_satisfies_sample_source_protocol(dataset: Path) -> None:
    source = ImageNetValidation(dataset)
    assert isinstance(source, SampleSource)
    assert source.label == "imagenet"
    assert source.sample_shape == (3, 224, 224)
    assert source.sample_dtype == np.dtype(np.float32)


# --- preprocessing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((600, 300), (512, 256)),
        ((500, 375), (341, 256)),  # int(256 * 500 / 375) = int(341.33)
        ((333, 500), (256, 384)),  # portrait: int(256 * 500 / 333) = int(384.38)
        ((300, 300), (256, 256)),
        ((100, 80), (320, 256)),  # upscaling
    ],
)
def test_scaled_size_matches_reference_truncation(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert imagenet._scaled_size(*size, 224, 0.875) == expected


def test_load_shape_dtype_and_order(dataset: Path) -> None:
    source = ImageNetValidation(dataset)
    batch = source.load([3, 0])
    assert batch.shape == (2, 3, 224, 224)
    assert batch.dtype == np.float32
    assert np.array_equal(batch[0], source.load([3])[0])
    assert np.array_equal(batch[1], source.load([0])[0])
    assert not np.array_equal(batch[0], batch[1])
    everything = source.load(range(6))
    assert everything.shape == (6, 3, 224, 224)
    assert np.array_equal(everything[3], batch[0])
    assert source.load([]).shape == (0, 3, 224, 224)


def test_mean_subtraction_on_solid_colour(dataset: Path) -> None:
    sample = ImageNetValidation(dataset).load([4])[0]
    expected = np.asarray(SOLID, np.float32) - MEANS  # 76.32, -16.78, -53.94
    for channel in range(3):
        plane = sample[channel]
        assert np.allclose(plane, expected[channel], atol=2.0), (channel, plane.min(), plane.max())


def test_mean_subtraction_exact_in_memory() -> None:
    sample = preprocess_mlperf_resnet50(Image.new("RGB", (300, 260), SOLID))
    assert sample.shape == (3, 224, 224)
    assert sample.dtype == np.float32
    assert np.allclose(sample[:, 100, 100], [76.32, -16.78, -53.94], atol=1e-4)
    assert np.allclose(sample, (np.asarray(SOLID, np.float32) - MEANS)[:, None, None])


def _rgb_at(sample: np.ndarray, row: int, col: int) -> np.ndarray:
    return sample[:, row, col] + MEANS


@pytest.mark.parametrize("from_file", [False, True])
def test_aspect_resize_and_centre_crop_landscape(dataset: Path, from_file: bool) -> None:
    # 600x300 -> 512x256; the crop covers x in [144, 368) of the resized image and the
    # thirds boundaries land at 170.7 and 341.3, so all three colours are in the crop.
    if from_file:
        sample = ImageNetValidation(dataset).load([5])[0]
    else:
        sample = preprocess_mlperf_resnet50(_thirds(600, 300))
    tol = 3.0 if from_file else 0.5
    for row in (0, 112, 223):
        assert np.allclose(_rgb_at(sample, row, 0), RED, atol=tol)
        assert np.allclose(_rgb_at(sample, row, 112), GREEN, atol=tol)
        assert np.allclose(_rgb_at(sample, row, 223), BLUE, atol=tol)
    # Boundaries within the crop: resized x 170.7 -> crop column 26.7, 341.3 -> 197.3.
    assert np.allclose(_rgb_at(sample, 112, 25), RED, atol=tol)
    assert np.allclose(_rgb_at(sample, 112, 28), GREEN, atol=tol)
    assert np.allclose(_rgb_at(sample, 112, 196), GREEN, atol=tol)
    assert np.allclose(_rgb_at(sample, 112, 199), BLUE, atol=tol)


def test_aspect_resize_and_centre_crop_portrait() -> None:
    # 300x600 portrait -> 256x512; the crop covers rows [144, 368) and all 256 - 224 columns' centre.
    portrait = _thirds(600, 300).transpose(Image.Transpose.TRANSPOSE)
    sample = preprocess_mlperf_resnet50(portrait)
    assert np.allclose(_rgb_at(sample, 0, 112), RED, atol=0.5)
    assert np.allclose(_rgb_at(sample, 112, 0), GREEN, atol=0.5)
    assert np.allclose(_rgb_at(sample, 112, 223), GREEN, atol=0.5)
    assert np.allclose(_rgb_at(sample, 223, 112), BLUE, atol=0.5)


def test_resize_averages_pixel_areas() -> None:
    # A 1-pixel checkerboard shrunk 3x: area averaging gives 5/9 or 4/9 white per output
    # pixel (141.67 -> 142, 113.33 -> 113). Nearest or bilinear sampling would give other values.
    yy, xx = np.mgrid[0:768, 0:768]
    board = np.where((yy + xx) % 2 == 0, 255, 0).astype(np.uint8)
    sample = preprocess_mlperf_resnet50(Image.fromarray(np.stack([board] * 3, axis=-1), "RGB"))
    # Crop starts at resized (16, 16), i.e. source block (48, 48): an even block, 5 white.
    assert np.allclose(_rgb_at(sample, 0, 0), 142, atol=1.0)
    assert np.allclose(_rgb_at(sample, 0, 1), 113, atol=1.0)
    assert np.allclose(_rgb_at(sample, 1, 1), 142, atol=1.0)


def test_grayscale_and_cmyk_give_three_channels(dataset: Path) -> None:
    source = ImageNetValidation(dataset)
    grey, cmyk = source.load([2, 3])
    assert grey.shape == cmyk.shape == (3, 224, 224)
    # Grayscale is replicated into R, G and B before the (different) means are subtracted.
    restored = grey + MEANS[:, None, None]
    assert np.allclose(restored[0], restored[1], atol=1e-3)
    assert np.allclose(restored[1], restored[2], atol=1e-3)
    # CMYK decodes to the colours it was made from (blue channel was a constant 128).
    assert np.allclose(cmyk[2] + MEANS[2], 128, atol=3.0)
    assert preprocess_mlperf_resnet50(Image.new("L", (256, 256), 77)).shape == (3, 224, 224)
    rgba = preprocess_mlperf_resnet50(Image.new("RGBA", (256, 256), (*SOLID, 10)))
    assert np.allclose(rgba[:, 0, 0] + MEANS, SOLID, atol=1e-4)


def test_exif_orientation_is_applied_like_cv2_imread(tmp_path: Path) -> None:
    root = tmp_path / "rotated"
    root.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, displayed rotated 90 degrees clockwise
    _save_jpeg(_thirds(600, 300), root / NAMES[0], exif=exif.tobytes())
    _write_map(root, [f"{NAMES[0]} 3"])
    sample = ImageNetValidation(root).load([0])[0]
    # Upright it is portrait with the left third on top.
    assert np.allclose(_rgb_at(sample, 0, 112), RED, atol=3.0)
    assert np.allclose(_rgb_at(sample, 112, 112), GREEN, atol=3.0)
    assert np.allclose(_rgb_at(sample, 223, 112), BLUE, atol=3.0)


def test_preprocess_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError, match="crop_fraction"):
        preprocess_mlperf_resnet50(Image.new("RGB", (10, 10)), crop_fraction=0.0)


# --- errors ----------------------------------------------------------------------------


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as info:
        ImageNetValidation(tmp_path / "nowhere")
    assert "nowhere" in str(info.value)
    assert info.value.hint


def test_root_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        ImageNetValidation(tmp_path / "file")


def test_missing_val_map(dataset: Path) -> None:
    (dataset / "val_map.txt").unlink()
    with pytest.raises(DataError, match="val_map.txt does not exist") as info:
        ImageNetValidation(dataset)
    assert "val_map.txt" in info.value.hint


def test_val_map_not_text(dataset: Path) -> None:
    (dataset / "val_map.txt").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError, match="not UTF-8"):
        ImageNetValidation(dataset)


def test_empty_val_map(dataset: Path) -> None:
    _write_map(dataset, ["", "  "])
    with pytest.raises(DataError, match="lists no images"):
        ImageNetValidation(dataset)


@pytest.mark.parametrize(
    ("bad_line", "what"),
    [
        ("ILSVRC2012_val_00000002.JPEG", "malformed"),
        ("ILSVRC2012_val_00000002.JPEG 3 4", "malformed"),
        ("ILSVRC2012_val_00000002.JPEG cat", "non-integer label"),
        ("ILSVRC2012_val_00000002.JPEG 1000", "label 1000 outside 0..999"),
        ("ILSVRC2012_val_00000002.JPEG -1", "label -1 outside 0..999"),
    ],
)
def test_bad_val_map_line_names_line_number_and_text(dataset: Path, bad_line: str, what: str) -> None:
    # Line 3 counts the blank line 2, so the number points at the line in an editor.
    _write_map(dataset, [f"{NAMES[0]} 1", "", bad_line, f"{NAMES[2]} 2"])
    with pytest.raises(DataError) as info:
        ImageNetValidation(dataset)
    message = str(info.value)
    assert "line 3" in message
    assert what in message
    assert repr(bad_line) in message


def test_missing_images_reported_once_with_count(dataset: Path) -> None:
    (dataset / NAMES[1]).unlink()
    (dataset / NAMES[4]).unlink()
    with pytest.raises(DataError) as info:
        ImageNetValidation(dataset)
    message = str(info.value)
    assert "2 of 6 images" in message
    assert f"first: {NAMES[1]}" in message
    # count= that stops before the missing ones is fine.
    assert ImageNetValidation(dataset, count=1).total_count == 1


def test_constructor_does_not_decode(dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("constructor must not open images")

    monkeypatch.setattr(Image, "open", no_decoding)
    assert ImageNetValidation(dataset).total_count == 6


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_undecodable_image_fails_only_at_load_naming_file(dataset: Path, damage: str) -> None:
    victim = dataset / NAMES[1]
    data = victim.read_bytes()
    victim.write_bytes(
        {"garbage": b"not a jpeg at all", "truncated": data[: len(data) // 2], "empty": b""}[damage]
    )
    source = ImageNetValidation(dataset)  # existence is all the constructor checks
    assert source.load([0]).shape == (1, 3, 224, 224)
    with pytest.raises(DataError, match="cannot decode") as info:
        source.load([1])
    assert NAMES[1] in str(info.value)
    # Through the thread pool as well.
    with pytest.raises(DataError, match=re.escape(NAMES[1])):
        source.load([0, 1, 2, 3])


def test_image_deleted_after_opening(dataset: Path) -> None:
    source = ImageNetValidation(dataset)
    (dataset / NAMES[2]).unlink()
    with pytest.raises(DataError, match=re.escape(NAMES[2])):
        source.load([2])


@pytest.mark.parametrize("index", [-1, 6])
def test_out_of_range_index(dataset: Path, index: int) -> None:
    with pytest.raises(DataError, match=rf"index {index} is outside 0\.\.5"):
        ImageNetValidation(dataset).load([index])


def test_invalid_count(dataset: Path) -> None:
    with pytest.raises(DataError, match="at least 1"):
        ImageNetValidation(dataset, count=0)


# --- cache -----------------------------------------------------------------------------


def _cache_files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file())


def test_cache_is_written_and_reused(dataset: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    source = ImageNetValidation(dataset, cache_dir=cache)
    first = source.load([5, 0, 3])
    files = _cache_files(cache)
    assert [p.name for p in files] == ["0.npy", "3.npy", "5.npy"]
    assert len({p.parent for p in files}) == 1
    assert re.fullmatch(r"[0-9a-f]{20}", files[0].parent.name)
    stored = np.load(files[2], allow_pickle=False)
    assert stored.dtype == np.float32 and stored.shape == (3, 224, 224)
    assert np.array_equal(stored, first[0])

    # Without the JPEGs the cache alone must serve the samples.
    for name in NAMES:
        (dataset / name).unlink()
    assert np.array_equal(source.load([5, 0, 3]), first)


def test_cache_is_shared_by_new_instances(dataset: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = ImageNetValidation(dataset, cache_dir=cache).load([4, 1])
    (dataset / NAMES[4]).write_bytes(b"corrupt now")
    reopened = ImageNetValidation(dataset, cache_dir=cache)
    assert np.array_equal(reopened.load([4, 1]), first)
    # Sanity: the file really is undecodable, so the value above came from the cache.
    with pytest.raises(DataError):
        ImageNetValidation(dataset).load([4])


def test_cache_matches_uncached(dataset: Path, tmp_path: Path) -> None:
    cached = ImageNetValidation(dataset, cache_dir=tmp_path / "cache")
    cached.load(range(6))
    assert np.array_equal(cached.load(range(6)), ImageNetValidation(dataset).load(range(6)))


def test_cache_key_depends_on_root(dataset: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    for name in NAMES:
        (other / name).write_bytes((dataset / name).read_bytes())
    (other / "val_map.txt").write_bytes((dataset / "val_map.txt").read_bytes())
    cache = tmp_path / "cache"
    ImageNetValidation(dataset, cache_dir=cache).load([0])
    ImageNetValidation(other, cache_dir=cache).load([0])
    assert len({p.parent for p in _cache_files(cache)}) == 2


def test_damaged_cache_entry_is_recomputed(dataset: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    source = ImageNetValidation(dataset, cache_dir=cache)
    expected = source.load([2])
    (entry,) = _cache_files(cache)
    entry.write_bytes(b"\x93NUMPY broken")
    assert np.array_equal(source.load([2]), expected)
    assert np.array_equal(np.load(entry, allow_pickle=False), expected[0])


def test_failed_cache_write_leaves_no_files(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    source = ImageNetValidation(dataset, cache_dir=cache)

    def half_write(handle, array, allow_pickle=False):  # same call shape as np.save
        handle.write(b"\x93NUMPY partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(imagenet.np, "save", half_write)
    with pytest.raises(DataError, match="No space left on device"):
        source.load([0])
    assert _cache_files(cache) == []


def test_no_temp_files_left_behind(dataset: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    source = ImageNetValidation(dataset, cache_dir=cache)
    source.load([0, 1, 2, 3, 4, 5, 0, 1])  # duplicates race on the same entry
    source.load(range(6))
    names = sorted(p.name for p in _cache_files(cache))
    assert names == [f"{i}.npy" for i in range(6)]
