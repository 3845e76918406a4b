"""Criteo click logs: the raw TSV, MLPerf DLRM-v2's multi-hot arrays, and a synthetic stand-in.

1. Raw TSV (Criteo Kaggle ``train.txt``, Terabyte ``day_0 .. day_23``, optionally ``.gz``): one
   impression per line, ``label \\t I1..I13 \\t C1..C26``. Read in chunks as facebookresearch/dlrm's
   ``data_utils.py`` does: an empty field is 0; dense integers have negatives clamped to 0 and then
   ``log(x + 1)``; categoricals are 32-bit hex, ``int(x, 16)`` then ``mod max_ind_range`` when
   ``max_ind_range > 0``. (The reference's later per-day dictionary re-indexing is not done here.)
2. MLPerf DLRM-v2 inference data, a folder with ``day_23_dense.npy`` (N, 13) float32 (TorchRec's
   preprocessing stores ``log(x + 3)``), ``day_23_sparse_multi_hot.npz`` with members ``0.npy`` ..
   ``25.npy``, each (N, k_f) int32 ids of one feature, and ``day_23_labels.npy`` (N,) or (N, 1).
   Like the reference (``multihot_criteo.py``, stage "val"), only the first ceil(N/2) rows are used.
   Training days 0 .. 22 use the same layout under ``day_<d>_`` names (``read_multihot_day``).
3. A deterministic synthetic generator: Criteo-like dense counts, Zipf-distributed categories per
   feature, and labels drawn from a planted logistic click model, so AUC has a known ceiling.

Everything is read with ``allow_pickle=False``.
"""

from __future__ import annotations

import gzip
import math
import struct
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlgauge.errors import DataError

NUM_DENSE = 13
NUM_SPARSE = 26
NUM_FIELDS = 1 + NUM_DENSE + NUM_SPARSE
FIELD_NAMES = ("label", *(f"I{i}" for i in range(1, NUM_DENSE + 1)), *(f"C{i}" for i in range(1, NUM_SPARSE + 1)))

DENSE_FILE = "day_23_dense.npy"
SPARSE_FILE = "day_23_sparse_multi_hot.npz"
LABELS_FILE = "day_23_labels.npy"


def multihot_file_names(day: int) -> tuple[str, str, str]:
    """Dense, sparse and labels file names of one day in MLPerf DLRM-v2's multi-hot layout."""
    return f"day_{day}_dense.npy", f"day_{day}_sparse_multi_hot.npz", f"day_{day}_labels.npy"


def dense_transform(raw: np.ndarray) -> np.ndarray:
    """DLRM's dense preprocessing: negatives to 0, then ``log(x + 1)``, as float32."""
    return np.log1p(np.maximum(np.asarray(raw, dtype=np.float64), 0.0)).astype(np.float32)


# -- 1. raw TSV -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CriteoChunk:
    labels: np.ndarray  # (n,) int32, 0 or 1
    dense: np.ndarray  # (n, 13) float32, log(max(x, 0) + 1)
    sparse: np.ndarray  # (n, 26) int64, int(hex) [mod max_ind_range]
    first_line: int  # 1-based line number of the chunk's first row


def _open_text(path: Path):
    try:
        if path.suffix == ".gz":
            return gzip.open(path, "rt", encoding="ascii", newline="")
        return open(path, encoding="ascii", newline="")
    except FileNotFoundError:
        raise DataError(f"Criteo file {path} does not exist", hint="Check the dataset path") from None
    except OSError as exc:
        raise DataError(f"cannot read Criteo file {path}: {exc.strerror or exc}") from None


def _bad_field(path: Path, line_no: int, column: int, value: str, why: str) -> DataError:
    return DataError(
        f"{path}:{line_no}: field {column + 1} ({FIELD_NAMES[column]}) {why}: {value!r}",
        hint="Criteo lines are 'label<TAB>13 integers<TAB>26 hex categories'; empty fields are allowed",
    )


def _parse_line(line: str, path: Path, line_no: int, max_ind_range: int) -> tuple[int, list[int], list[int]]:
    fields = line.rstrip("\r\n").split("\t")
    if len(fields) != NUM_FIELDS:
        raise DataError(
            f"{path}:{line_no}: {len(fields)} tab-separated fields, expected {NUM_FIELDS}",
            hint="Criteo lines are 'label<TAB>13 integers<TAB>26 hex categories' "
            "(Kaggle's test.txt has no label column and cannot be scored)",
        )
    label_text = fields[0]
    if label_text not in ("0", "1"):
        raise _bad_field(path, line_no, 0, label_text, "is not 0 or 1")
    dense = []
    for j in range(1, 1 + NUM_DENSE):
        text = fields[j]
        try:
            dense.append(int(text) if text else 0)
        except ValueError:
            raise _bad_field(path, line_no, j, text, "is not an integer") from None
    sparse = []
    for j in range(1 + NUM_DENSE, NUM_FIELDS):
        text = fields[j]
        try:
            value = int(text, 16) if text else 0
        except ValueError:
            raise _bad_field(path, line_no, j, text, "is not hexadecimal") from None
        if value < 0:
            raise _bad_field(path, line_no, j, text, "is negative")
        sparse.append(value % max_ind_range if max_ind_range > 0 else value)
    return int(label_text), dense, sparse


def _chunk(rows: list, first_line: int) -> CriteoChunk:
    labels = np.fromiter((r[0] for r in rows), dtype=np.int32, count=len(rows))
    dense = dense_transform(np.array([r[1] for r in rows], dtype=np.float64).reshape(-1, NUM_DENSE))
    sparse = np.array([r[2] for r in rows], dtype=np.int64).reshape(-1, NUM_SPARSE)
    return CriteoChunk(labels, dense, sparse, first_line)


def iter_tsv(path: Path, *, max_ind_range: int = -1, chunk_rows: int = 65_536) -> Iterator[CriteoChunk]:
    """Stream a Criteo TSV (plain or ``.gz``) in chunks of at most ``chunk_rows`` impressions.

    A malformed line raises ``DataError`` naming ``file:line`` and the field. Blank lines are skipped.
    """
    path = Path(path)
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be >= 1")
    rows: list = []
    first = 1
    with _open_text(path) as fh:
        try:
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                if not rows:
                    first = line_no
                rows.append(_parse_line(line, path, line_no, max_ind_range))
                if len(rows) == chunk_rows:
                    yield _chunk(rows, first)
                    rows = []
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path}: not ASCII text ({exc.reason} at byte {exc.start} of a line)",
                hint="Give the uncompressed or .gz Criteo TSV, not another format",
            ) from None
        except (EOFError, gzip.BadGzipFile) as exc:
            raise DataError(f"{path}: the gzip stream is damaged ({exc})", hint="Download the file again") from None
    if rows:
        yield _chunk(rows, first)


def read_tsv(path: Path, *, max_ind_range: int = -1) -> CriteoChunk:
    """A whole (small) Criteo TSV in memory; use ``iter_tsv`` for real days."""
    chunks = list(iter_tsv(path, max_ind_range=max_ind_range))
    if not chunks:
        return CriteoChunk(
            np.zeros(0, np.int32), np.zeros((0, NUM_DENSE), np.float32), np.zeros((0, NUM_SPARSE), np.int64), 1
        )
    return CriteoChunk(
        np.concatenate([c.labels for c in chunks]),
        np.concatenate([c.dense for c in chunks]),
        np.concatenate([c.sparse for c in chunks]),
        chunks[0].first_line,
    )


# -- 2. MLPerf DLRM-v2 multi-hot arrays ----------------------------------------------------------


def _npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise DataError(
            f"{path} does not exist",
            hint=f"The dataset folder must hold MLPerf DLRM-v2's {DENSE_FILE}, {SPARSE_FILE} and {LABELS_FILE}",
        ) from None
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npy array: {exc}", hint="Re-create it with numpy.save") from None


_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # zip local file header, 30 bytes


def _npz_member(path: Path, index: int) -> np.ndarray:
    """Member ``{index}.npy`` of an .npz: memory-mapped when stored uncompressed (day_23 is ~150 GB),
    else read into memory; never unpickled."""
    name = f"{index}.npy"
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(name)
        if info.compress_type == zipfile.ZIP_STORED:
            with open(path, "rb") as fh:
                fh.seek(info.header_offset)
                header = _LOCAL_HEADER.unpack(fh.read(_LOCAL_HEADER.size))
                fh.seek(info.header_offset + _LOCAL_HEADER.size + header[-2] + header[-1])
                start = fh.tell()
                version = np.lib.format.read_magic(fh)
                if version in ((1, 0), (2, 0)):
                    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    shape, fortran, dtype = read(fh)
                    if dtype.hasobject:
                        raise ValueError("it holds Python objects")
                    offset = fh.tell()
                    if offset - start + math.prod(shape) * dtype.itemsize > info.file_size:
                        raise ValueError("it is truncated")
                    return np.memmap(path, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=offset)
        with np.load(path, allow_pickle=False) as npz:
            return npz[str(index)]
    except FileNotFoundError:
        raise DataError(
            f"{path} does not exist", hint=f"The dataset folder must hold MLPerf DLRM-v2's {SPARSE_FILE}"
        ) from None
    except KeyError:
        raise DataError(
            f"{path} has no member {name} (sparse feature {index})",
            hint=f"It must hold one array per sparse feature, named 0 .. {NUM_SPARSE - 1} (numpy.savez keywords)",
        ) from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, struct.error) as exc:
        raise DataError(
            f"{path}: member {name} (sparse feature {index}) cannot be read: {exc}",
            hint="Re-create the file with numpy.savez from integer arrays",
        ) from None


def write_multihot(
    folder: Path, dense: np.ndarray, sparse: Sequence[np.ndarray], labels: np.ndarray, *, day: int = 23
) -> Path:
    """Write arrays in MLPerf DLRM-v2's layout (uncompressed .npz, int32 ids, (N, 1) labels) as day ``day``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dense_file, sparse_file, labels_file = multihot_file_names(day)
    np.save(folder / dense_file, np.asarray(dense, dtype=np.float32))
    np.savez(folder / sparse_file, **{str(i): np.asarray(a, dtype=np.int32) for i, a in enumerate(sparse)})
    np.save(folder / labels_file, np.asarray(labels, dtype=np.int32).reshape(-1, 1))
    return folder


def _check_multihot(folder: Path, names: Sequence[str], dense: np.ndarray, labels: np.ndarray,
                    sparse: list[np.ndarray]) -> int:  # fmt: skip
    """The number of rows of one day's arrays, after checking their shapes and types agree."""
    dense_path, sparse_path, labels_path = (folder / f for f in names)
    if dense.ndim != 2 or dense.shape[1] != NUM_DENSE or dense.dtype.kind != "f":
        raise DataError(
            f"{dense_path} holds {dense.dtype} {dense.shape}; expected float (N, {NUM_DENSE})",
            hint="The dense features are the 13 preprocessed (log) integer columns, one row per impression",
        )
    n = dense.shape[0]
    if labels.shape not in ((n,), (n, 1)) or labels.dtype.kind not in "iuf":
        raise DataError(
            f"{labels_path} holds {labels.dtype} {labels.shape}; expected ({n},) or ({n}, 1) numbers",
            hint="One 0/1 label per row of the dense array",
        )
    for i, a in enumerate(sparse):
        if a.ndim != 2 or a.shape[0] != n or a.dtype.kind not in "iu" or a.shape[1] < 1:
            raise DataError(
                f"{sparse_path} member {i}.npy (sparse feature {i}) holds {a.dtype} {a.shape}; "
                f"expected integer ({n}, k)",
                hint="Each sparse feature is an (N, multi-hot size) array of integer ids",
            )
    return n


@dataclass(frozen=True)
class MultiHotDay:
    """One day of MLPerf DLRM-v2's multi-hot arrays, memory-mapped (a training day is ~170 GB)."""

    dense: np.ndarray  # (n, 13) float
    sparse: list[np.ndarray]  # 26 arrays (n, k_f) of integer ids
    labels: np.ndarray  # (n,)

    def __len__(self) -> int:
        return int(self.dense.shape[0])


def read_multihot_day(folder: Path, day: int) -> MultiHotDay:
    """Day ``day`` of a multi-hot folder (all rows; training days 0 .. 22 are used whole)."""
    folder = Path(folder)
    names = multihot_file_names(day)
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise DataError(
            f"day {day} of {folder} lacks {', '.join(missing)}",
            hint=f"Each day needs its {', '.join(names)} (MLPerf DLRM-v2's multi-hot layout)",
        )
    dense = _npy(folder / names[0])
    sparse = [_npz_member(folder / names[1], i) for i in range(NUM_SPARSE)]
    labels = _npy(folder / names[2])
    _check_multihot(folder, names, dense, labels, sparse)
    return MultiHotDay(dense, sparse, labels.reshape(-1))


class CriteoSamples:
    """Impressions in memory as a sample source: ``load`` gives ``{"dense", "sparse"}`` model inputs."""

    def __init__(self, dense: np.ndarray, sparse: np.ndarray, labels: np.ndarray, performance_count: int,
                 label: str = "synthetic") -> None:  # fmt: skip
        self.label = label
        self._dense = np.ascontiguousarray(dense, dtype=np.float32)
        self._sparse = np.ascontiguousarray(sparse, dtype=np.int64)
        self._labels = np.asarray(labels, dtype=np.int32).reshape(-1)
        self.total_count = int(self._labels.shape[0])
        self.performance_count = min(int(performance_count), self.total_count)

    @property
    def sparse_width(self) -> int:
        return int(self._sparse.shape[1])

    def load(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        idx = np.asarray(indices, dtype=np.int64)
        return {"dense": self._dense[idx], "sparse": self._sparse[idx]}

    def ground_truth(self) -> np.ndarray:
        return self._labels


class MultiHotCriteo:
    """MLPerf DLRM-v2's multi-hot Criteo 1TB day 23 (validation half) as a sample source.

    Arrays stay memory-mapped; ``load`` copies the asked rows and checks their ids against
    ``num_embeddings`` (the model's table sizes) so a bad id fails here, not inside a backend.
    """

    label = "criteo-1tb-multihot"

    def __init__(self, folder: Path, *, performance_count: int, count: int | None = None,
                 num_embeddings: Sequence[int] | None = None) -> None:  # fmt: skip
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DataError(
                f"Criteo multi-hot folder {self.folder} does not exist",
                hint=f"Give the folder with MLPerf DLRM-v2's {DENSE_FILE}, {SPARSE_FILE} and {LABELS_FILE}",
            )
        dense = _npy(self.folder / DENSE_FILE)
        labels = _npy(self.folder / LABELS_FILE)
        sparse = [_npz_member(self.folder / SPARSE_FILE, i) for i in range(NUM_SPARSE)]
        n = self._check(dense, labels, sparse)
        # The reference's "val" stage of multihot-criteo: the first ceil(N/2) rows of day 23.
        keep = (n + 1) // 2
        if count is not None:
            keep = min(keep, max(int(count), 0))
        self._dense = dense[:keep]
        self._labels = labels.reshape(-1)[:keep]
        self._sparse = [a[:keep] for a in sparse]
        self.multi_hot_sizes = tuple(int(a.shape[1]) for a in sparse)
        self.num_embeddings = tuple(num_embeddings) if num_embeddings is not None else None
        if self.num_embeddings is not None and len(self.num_embeddings) != NUM_SPARSE:
            raise ValueError(f"num_embeddings needs {NUM_SPARSE} table sizes")
        self.total_count = int(keep)
        self.performance_count = min(int(performance_count), self.total_count)

    def _check(self, dense: np.ndarray, labels: np.ndarray, sparse: list[np.ndarray]) -> int:
        return _check_multihot(self.folder, (DENSE_FILE, SPARSE_FILE, LABELS_FILE), dense, labels, sparse)

    @property
    def sparse_width(self) -> int:
        return sum(self.multi_hot_sizes)

    def load(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        idx = np.asarray(indices, dtype=np.int64)
        parts = []
        for f, feature in enumerate(self._sparse):
            ids = np.asarray(feature[idx], dtype=np.int64)
            if ids.size:
                low, high = int(ids.min()), int(ids.max())
                limit = self.num_embeddings[f] if self.num_embeddings is not None else None
                if low < 0 or (limit is not None and high >= limit):
                    raise DataError(
                        f"{self.folder / SPARSE_FILE} member {f}.npy has ids in [{low}, {high}], "
                        f"outside the model's table of {limit if limit is not None else 'any'} rows",
                        hint="Ids must be already reduced modulo the table size (MLPerf's preprocessing does this)",
                    )
            parts.append(ids)
        return {"dense": np.asarray(self._dense[idx], dtype=np.float32), "sparse": np.concatenate(parts, axis=1)}

    def ground_truth(self) -> np.ndarray:
        labels = np.asarray(self._labels)
        if labels.size and (labels.min() < 0 or labels.max() > 1):
            raise DataError(
                f"{self.folder / LABELS_FILE} has labels outside 0..1",
                hint="Labels are clicks: 0 or 1",
            )
        return labels.astype(np.int32)


# -- 3. synthetic Criteo-like data with a planted click model ---------------------------------------


@dataclass(frozen=True)
class SyntheticCriteo:
    dense: np.ndarray  # (n, 13) float32, already log(x + 1) like the readers' output
    sparse: np.ndarray  # (n, sum(multi_hot_sizes)) int64, fixed slots per feature
    labels: np.ndarray  # (n,) int32 clicks drawn from ``probability``
    probability: np.ndarray  # (n,) float64, the planted model's click probability (the oracle)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def oracle_auc(self) -> float:
        """ROC AUC (0..1) of the planted probabilities: what a perfect model would score on these labels."""
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score(self.labels, self.probability))


_SPLITS = {"train": 1, "val": 2, "calibration": 3, "test": 4}
_CHUNK = 8_192  # samples per independently seeded block: any prefix regenerates identically
_MAX_SUPPORT = 1 << 20  # Zipf ranks drawn per feature; rarer ids of huge tables never occur


class PlantedClickModel:
    """A generator of Criteo-like impressions whose click probability is known.

    Dense feature j is a count ``floor(exp(mu_j + s_j·ε)) - shift_j`` (feature 2 reaches -3 like
    Criteo's I2), missing (0) with probability ``p_j``. Sparse feature f draws each of its ``k_f`` ids
    from a Zipf law of exponent ``a_f`` over a seeded shuffle of its table. The click logit is

        z = bias + Σ_j w_j·std(d_j) + Σ_f mean_m(e_f[id_fm]) + c·std(d_0)·e_g[id_g0]

    over a few dense features ``j`` (``d = log(max(x,0)+1)``, standardized), a few sparse features
    ``f`` with per-category effects ``e_f ~ N(0, σ_f²)``, and one dense × sparse cross term; the label is
    Bernoulli(sigmoid(z)). The parameters depend only on ``seed`` and the table layout.
    """

    DENSE_WEIGHTS = {0: 0.45, 2: -0.35, 5: 0.3, 9: 0.25}  # feature -> weight on its standardized log
    SPARSE_EFFECTS = {1: 0.9, 2: 0.8, 3: 0.7, 4: 0.6, 6: 0.8, 10: 0.9, 13: 0.7, 22: 0.6}  # feature -> σ_f
    CROSS = (0, 14, 0.5)  # dense feature, sparse feature, strength
    BIAS = -1.75  # about 25% clicks, like Criteo Kaggle

    def __init__(self, num_embeddings: Sequence[int], multi_hot_sizes: Sequence[int], seed: int = 20_240_601) -> None:
        if len(num_embeddings) != NUM_SPARSE or len(multi_hot_sizes) != NUM_SPARSE:
            raise ValueError(f"the planted model needs {NUM_SPARSE} tables and multi-hot sizes")
        self.num_embeddings = tuple(int(n) for n in num_embeddings)
        self.multi_hot_sizes = tuple(int(k) for k in multi_hot_sizes)
        self.seed = int(seed)
        rng = np.random.default_rng(self.seed)
        self._mu = rng.uniform(0.5, 3.0, NUM_DENSE)
        self._sigma = rng.uniform(0.6, 1.4, NUM_DENSE)
        self._missing = rng.uniform(0.0, 0.35, NUM_DENSE)
        self._shift = np.zeros(NUM_DENSE, dtype=np.int64)
        self._shift[1] = 3
        self._exponent = rng.uniform(1.05, 1.35, NUM_SPARSE)
        self._cdf, self._stride, self._offset, self._effect = [], [], [], []
        for f, n in enumerate(self.num_embeddings):
            support = min(n, _MAX_SUPPORT)
            weights = 1.0 / np.arange(1, support + 1, dtype=np.float64) ** self._exponent[f]
            cdf = np.cumsum(weights)
            self._cdf.append(cdf / cdf[-1])
            # rank -> id through an affine bijection of 0..n-1 (stride coprime with n): no n-sized table.
            stride = int(rng.integers(1, max(n, 2)))
            while math.gcd(stride, n) != 1:
                stride += 1
            self._stride.append(stride)
            self._offset.append(int(rng.integers(0, n)))
            sigma = self.SPARSE_EFFECTS.get(f, 0.0) if f != self.CROSS[1] else 1.0
            self._effect.append(rng.normal(0.0, sigma, support) if sigma else None)
        # Standardization of log(max(x,0)+1) from a fixed pilot draw: part of the planted model's definition.
        pilot = self._dense_raw(np.random.default_rng((self.seed, 0)), 20_000)
        logs = dense_transform(pilot).astype(np.float64)
        self._dense_mean = logs.mean(axis=0)
        self._dense_std = logs.std(axis=0) + 1e-6

    def _dense_raw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        counts = np.floor(np.exp(self._mu + self._sigma * rng.standard_normal((n, NUM_DENSE)))).astype(np.int64)
        counts -= self._shift
        counts[rng.random((n, NUM_DENSE)) < self._missing] = 0  # a missing field reads as 0
        return counts

    def _block(self, split_id: int, block: int) -> SyntheticCriteo:
        """Always a whole block, so that a sample never depends on how many were asked for."""
        n = _CHUNK
        rng = np.random.default_rng((self.seed, split_id, block))
        dense = dense_transform(self._dense_raw(rng, n))
        z = np.full(n, self.BIAS)
        std = (dense.astype(np.float64) - self._dense_mean) / self._dense_std
        for j, w in self.DENSE_WEIGHTS.items():
            z += w * std[:, j]
        columns = []
        first_effect = {}
        for f, (n_rows, k) in enumerate(zip(self.num_embeddings, self.multi_hot_sizes, strict=True)):
            cdf = self._cdf[f]
            ranks = np.minimum(np.searchsorted(cdf, rng.random((n, k)), side="right"), cdf.size - 1)
            columns.append((ranks * self._stride[f] + self._offset[f]) % n_rows)
            effect = self._effect[f]
            if effect is not None:
                if f in self.SPARSE_EFFECTS:
                    z += effect[ranks].mean(axis=1)
                first_effect[f] = effect[ranks[:, 0]]
        d, g, strength = self.CROSS
        z += strength * std[:, d] * first_effect[g]
        probability = 1.0 / (1.0 + np.exp(-z))
        labels = (rng.random(n) < probability).astype(np.int32)
        return SyntheticCriteo(dense, np.concatenate(columns, axis=1).astype(np.int64), labels, probability)

    def generate(self, n: int, split: str = "train") -> SyntheticCriteo:
        """The first ``n`` impressions of ``split``; the same on every machine and for every ``n``."""
        if split not in _SPLITS:
            raise ValueError(f"unknown split {split!r}; one of {sorted(_SPLITS)}")
        blocks = [self._block(_SPLITS[split], b) for b in range(-(-n // _CHUNK))]
        if not blocks:
            width = sum(self.multi_hot_sizes)
            return SyntheticCriteo(np.zeros((0, NUM_DENSE), np.float32), np.zeros((0, width), np.int64),
                                   np.zeros(0, np.int32), np.zeros(0))  # fmt: skip
        return SyntheticCriteo(*(np.concatenate([getattr(b, k) for b in blocks])[:n] for k in
                                 ("dense", "sparse", "labels", "probability")))  # fmt: skip
