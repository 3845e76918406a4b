"""Criteo readers (raw TSV, MLPerf multi-hot arrays) and the synthetic generator with its planted model."""

from __future__ import annotations

import gzip
import math

import numpy as np
import pytest

from mlgauge.data.criteo import (
    DENSE_FILE,
    LABELS_FILE,
    SPARSE_FILE,
    CriteoSamples,
    MultiHotCriteo,
    PlantedClickModel,
    _npz_member,
    dense_transform,
    iter_tsv,
    read_tsv,
    write_multihot,
)
from mlgauge.errors import DataError

# -- raw TSV ---------------------------------------------------------------------------------------


def _line(label: str, dense: list[str], cats: list[str]) -> str:
    assert len(dense) == 13 and len(cats) == 26
    return "\t".join([label, *dense, *cats]) + "\n"


CATS = ["68fd1e64", "", "ffffffff", "0000000a", *(["1"] * 22)]
LINES = [
    _line("0", ["1", "", "-2", "3", *(["0"] * 9)], CATS),
    _line("1", ["0", "7", "", "", *(["15"] * 9)], ["0"] * 26),
]


def test_tsv_fields_are_parsed_like_the_dlrm_reference(tmp_path):
    path = tmp_path / "day_0"
    path.write_text("".join(LINES))
    data = read_tsv(path)
    np.testing.assert_array_equal(data.labels, [0, 1])
    assert data.dense.dtype == np.float32 and data.dense.shape == (2, 13)
    # 1 -> log 2; missing -> 0; -2 clamps to 0; 3 -> log 4; 15 -> log 16
    np.testing.assert_allclose(data.dense[0, :4], [math.log(2), 0.0, 0.0, math.log(4)], rtol=1e-6)
    np.testing.assert_allclose(data.dense[1, :4], [0.0, math.log(8), 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(data.dense[1, 4:], math.log(16), rtol=1e-6)
    assert data.sparse.dtype == np.int64 and data.sparse.shape == (2, 26)
    np.testing.assert_array_equal(data.sparse[0, :4], [0x68FD1E64, 0, 4_294_967_295, 10])
    np.testing.assert_array_equal(data.sparse[1], 0)


def test_tsv_categories_are_hashed_mod_max_ind_range(tmp_path):
    path = tmp_path / "day_0"
    path.write_text("".join(LINES))
    data = read_tsv(path, max_ind_range=40_000_000)
    # 0x68fd1e64 = 1,761,418,852 = 44 * 40M + 1,418,852; 2**32 - 1 = 107 * 40M + 14,967,295
    np.testing.assert_array_equal(data.sparse[0, :4], [1_418_852, 0, 14_967_295, 10])


def test_tsv_streams_in_chunks_and_reports_line_numbers(tmp_path):
    path = tmp_path / "day_1"
    path.write_text(LINES[0] + LINES[1] + "\n" + LINES[0] + LINES[1] + LINES[0])
    chunks = list(iter_tsv(path, chunk_rows=2))
    assert [len(c.labels) for c in chunks] == [2, 2, 1]
    assert [c.first_line for c in chunks] == [1, 4, 6]  # line 3 is blank
    np.testing.assert_array_equal(np.concatenate([c.labels for c in chunks]), [0, 1, 0, 1, 0])


def test_gzipped_tsv_reads_the_same(tmp_path):
    plain, packed = tmp_path / "day_2", tmp_path / "day_2.gz"
    plain.write_text("".join(LINES))
    with gzip.open(packed, "wt") as fh:
        fh.write("".join(LINES))
    a, b = read_tsv(plain), read_tsv(packed)
    np.testing.assert_array_equal(a.sparse, b.sparse)
    np.testing.assert_array_equal(a.dense, b.dense)


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        (_line("1", ["1", "2", "3", "4", "x5", *(["0"] * 8)], CATS), r"day_3:2: field 6 \(I5\) is not an integer: 'x5'"),
        (_line("0", ["0"] * 13, ["1", "2", "zz", *(["1"] * 23)]), r"day_3:2: field 17 \(C3\) is not hexadecimal: 'zz'"),
        (_line("2", ["0"] * 13, CATS), r"day_3:2: field 1 \(label\) is not 0 or 1: '2'"),
        ("0\t1\t2\n", r"day_3:2: 3 tab-separated fields, expected 40"),
    ],
    ids=["dense", "categorical", "label", "field-count"],
)
def test_a_malformed_line_names_file_line_and_field(tmp_path, bad_line, expected):
    path = tmp_path / "day_3"
    path.write_text(LINES[0] + bad_line + LINES[1])
    with pytest.raises(DataError, match=expected) as info:
        read_tsv(path)
    assert info.value.hint


def test_missing_tsv_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_tsv(tmp_path / "nope.txt")


def test_dense_transform():
    np.testing.assert_allclose(dense_transform(np.array([[-3, 0, 1, 99]])), [[0, 0, math.log(2), math.log(100)]], rtol=1e-6)


# -- MLPerf multi-hot arrays ----------------------------------------------------------------------

WIDTHS = (3, 2, 1, 2, 6, 1, 1, 1, 1, 7, 3, 8, 1, 6, 9, 5, 1, 1, 1, 12, 100, 27, 10, 3, 1, 1)


def _arrays(n: int, rows: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    dense = rng.random((n, 13), dtype=np.float32) * 5
    sparse = [rng.integers(0, rows, (n, k), dtype=np.int32) for k in WIDTHS]
    labels = rng.integers(0, 2, n)
    return dense, sparse, labels


def test_multihot_folder_is_read_like_the_reference(tmp_path):
    dense, sparse, labels = _arrays(7)
    folder = write_multihot(tmp_path / "criteo", dense, sparse, labels)
    assert np.load(folder / LABELS_FILE).shape == (7, 1)
    data = MultiHotCriteo(folder, performance_count=100)
    assert data.label == "criteo-1tb-multihot"
    assert data.total_count == 4  # the first ceil(7/2) rows: the reference's validation half
    assert data.performance_count == 4
    assert data.multi_hot_sizes == WIDTHS and data.sparse_width == 214
    batch = data.load([3, 0])
    assert batch["dense"].dtype == np.float32 and batch["sparse"].dtype == np.int64
    np.testing.assert_array_equal(batch["dense"], dense[[3, 0]])
    np.testing.assert_array_equal(batch["sparse"], np.concatenate([s[[3, 0]] for s in sparse], axis=1))
    np.testing.assert_array_equal(batch["sparse"][:, 3:5], sparse[1][[3, 0]])  # feature 1's slots
    np.testing.assert_array_equal(data.ground_truth(), labels[:4])
    assert MultiHotCriteo(folder, performance_count=2, count=3).total_count == 3


def test_npz_members_are_memory_mapped_when_stored_and_read_when_compressed(tmp_path):
    dense, sparse, labels = _arrays(6)
    stored = write_multihot(tmp_path / "stored", dense, sparse, labels)
    assert isinstance(_npz_member(stored / SPARSE_FILE, 20), np.memmap)
    packed = tmp_path / "packed"
    packed.mkdir()
    np.save(packed / DENSE_FILE, dense)
    np.save(packed / LABELS_FILE, labels)
    np.savez_compressed(packed / SPARSE_FILE, **{str(i): a for i, a in enumerate(sparse)})
    member = _npz_member(packed / SPARSE_FILE, 20)
    assert not isinstance(member, np.memmap)
    np.testing.assert_array_equal(member, sparse[20])
    a, b = MultiHotCriteo(stored, performance_count=3), MultiHotCriteo(packed, performance_count=3)
    np.testing.assert_array_equal(a.load([0, 1, 2])["sparse"], b.load([0, 1, 2])["sparse"])


def test_multihot_format_errors_name_the_file(tmp_path):
    dense, sparse, labels = _arrays(6)
    with pytest.raises(DataError, match="does not exist"):
        MultiHotCriteo(tmp_path / "missing", performance_count=1)

    short = write_multihot(tmp_path / "short", dense, sparse[:25], labels)
    with pytest.raises(DataError, match=r"no member 25\.npy") as info:
        MultiHotCriteo(short, performance_count=1)
    assert SPARSE_FILE in str(info.value)

    rows = write_multihot(tmp_path / "rows", dense, [*sparse[:3], sparse[3][:5], *sparse[4:]], labels)
    with pytest.raises(DataError, match=r"member 3\.npy \(sparse feature 3\) holds int32 \(5, 2\)"):
        MultiHotCriteo(rows, performance_count=1)

    flat = write_multihot(tmp_path / "flat", dense[:, :12], sparse, labels)
    with pytest.raises(DataError, match=r"float32 \(6, 12\)"):
        MultiHotCriteo(flat, performance_count=1)

    objects = write_multihot(tmp_path / "objects", dense, sparse, labels)
    payload = {str(i): a for i, a in enumerate(sparse)}
    payload["4"] = np.array([{"x": 1}] * 6, dtype=object)
    np.savez(objects / SPARSE_FILE, **payload)
    with pytest.raises(DataError, match=r"4\.npy.*Python objects"):
        MultiHotCriteo(objects, performance_count=1)

    (objects / DENSE_FILE).write_bytes(b"not numpy")
    with pytest.raises(DataError, match="not a readable .npy"):
        MultiHotCriteo(objects, performance_count=1)


def test_ids_outside_the_tables_fail_at_load(tmp_path):
    dense, sparse, labels = _arrays(6, rows=40)
    folder = write_multihot(tmp_path / "ids", dense, sparse, labels)
    tables = [40] * 26
    tables[7] = 10
    sparse[7][:] = 12
    write_multihot(folder, dense, sparse, labels)
    data = MultiHotCriteo(folder, performance_count=3, num_embeddings=tables)
    with pytest.raises(DataError, match=r"member 7\.npy has ids in \[12, 12\], outside the model's table of 10 rows"):
        data.load([0])
    sparse[7][:] = -1
    write_multihot(folder, dense, sparse, labels)
    with pytest.raises(DataError, match="ids in"):
        MultiHotCriteo(folder, performance_count=3).load([1])


def test_bad_labels_fail_when_scored(tmp_path):
    dense, sparse, _ = _arrays(4)
    folder = write_multihot(tmp_path / "labels", dense, sparse, np.array([0, 3, 1, 0]))  # row 1 is scored
    with pytest.raises(DataError, match="labels outside 0..1"):
        MultiHotCriteo(folder, performance_count=1).ground_truth()


# -- synthetic impressions -----------------------------------------------------------------------

TABLES = (300, 40, 1000, 80, 500, 3, 200, 60, 20, 2000, 700, 90, 10, 150, 400, 30, 4, 100, 14, 900, 800, 600, 250, 120, 50, 36)


@pytest.fixture(scope="module")
def planted() -> PlantedClickModel:
    return PlantedClickModel(TABLES, WIDTHS)


@pytest.fixture(scope="module")
def val(planted):
    return planted.generate(9_000, "val")


def test_generator_is_deterministic_and_prefix_stable(planted, val):
    again = PlantedClickModel(TABLES, WIDTHS).generate(9_000, "val")
    for name in ("dense", "sparse", "labels", "probability"):
        np.testing.assert_array_equal(getattr(again, name), getattr(val, name))
    head = planted.generate(100, "val")  # fewer than one block of 8192
    np.testing.assert_array_equal(head.sparse, val.sparse[:100])
    np.testing.assert_array_equal(head.labels, val.labels[:100])
    assert not np.array_equal(planted.generate(100, "train").sparse, head.sparse)
    other = PlantedClickModel(TABLES, WIDTHS, seed=7).generate(100, "val")
    assert not np.array_equal(other.labels, head.labels) or not np.array_equal(other.sparse, head.sparse)
    assert len(planted.generate(0)) == 0


def test_generator_layout_and_ranges(val):
    assert val.dense.shape == (9_000, 13) and val.dense.dtype == np.float32
    assert val.sparse.shape == (9_000, 214) and val.sparse.dtype == np.int64
    assert (val.dense >= 0).all()  # log(max(x,0)+1), like the readers
    start = 0
    for rows, k in zip(TABLES, WIDTHS, strict=True):
        ids = val.sparse[:, start : start + k]
        assert ids.min() >= 0 and ids.max() < rows
        start += k
    assert 0.15 < val.labels.mean() < 0.35  # Criteo-like click rate


def test_categories_follow_a_power_law(val):
    start = sum(WIDTHS[:9])
    ids = val.sparse[:, start : start + WIDTHS[9]]  # feature 9: 2000 rows, 7-hot
    counts = np.sort(np.bincount(ids.reshape(-1), minlength=2000))[::-1]
    assert counts[0] > 0.1 * ids.size  # the top category alone takes a large share
    assert counts[0] > 50 * counts[100]  # and frequency falls steeply with rank
    assert (counts[:1000] > 0).sum() > 100  # yet a long tail is seen


def test_labels_come_from_the_planted_probabilities(val):
    assert abs(val.labels.mean() - val.probability.mean()) < 0.015
    high, low = val.probability > 0.5, val.probability < 0.1
    assert val.labels[high].mean() > 0.6 and val.labels[low].mean() < 0.1


def test_oracle_auc_is_informative(val):
    from sklearn.metrics import roc_auc_score

    oracle = val.oracle_auc()
    assert oracle > 0.7
    assert oracle == pytest.approx(roc_auc_score(val.labels, val.probability))
    # The dense features alone carry part of the signal, far from all of it.
    assert 0.5 < roc_auc_score(val.labels, val.dense[:, 0]) < oracle


def test_sample_source_over_arrays(val):
    source = CriteoSamples(val.dense, val.sparse, val.labels, performance_count=20_000)
    assert source.label == "synthetic" and source.total_count == 9_000 and source.performance_count == 9_000
    batch = source.load([5, 2])
    np.testing.assert_array_equal(batch["sparse"], val.sparse[[5, 2]])
    assert batch["dense"].dtype == np.float32 and batch["sparse"].dtype == np.int64
    np.testing.assert_array_equal(source.ground_truth(), val.labels)
