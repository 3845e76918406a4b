"""Batches as the harness moves them: one array, or a dict of named arrays.

Single-input models (image classifiers) take one ``(B, ...)`` array; models with
several inputs (BERT's ids/mask/segments, DLRM's dense and sparse features) take
a dict of them, keyed by the model's input names, every array sharing the batch
dimension. These helpers treat both alike so the sample store, the SUTs and the
backends never branch on the task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Batch = np.ndarray | dict[str, np.ndarray]


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output, per sample (no batch dimension)."""

    name: str
    shape: tuple[int, ...]
    dtype: str = "float32"

    def empty(self, n: int) -> np.ndarray:
        return np.zeros((n, *self.shape), dtype=self.dtype)


def batch_len(batch: Batch) -> int:
    if isinstance(batch, dict):
        return len(next(iter(batch.values())))
    return len(batch)


def batch_slice(batch: Batch, start: int, stop: int) -> Batch:
    if isinstance(batch, dict):
        return {k: v[start:stop] for k, v in batch.items()}
    return batch[start:stop]


def batch_concat(parts: Sequence[Batch]) -> Batch:
    if isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)


def batch_take(data: Batch, rows: np.ndarray, out: Batch | None = None) -> Batch:
    """Rows ``rows`` of ``data``; written into ``out[:len(rows)]`` when given.

    ``mode="wrap"``: with ``out`` set, numpy's default ``mode="raise"`` copies
    through a temporary buffer; the rows are always valid, so wrap copies once.
    """
    n = len(rows)
    if isinstance(data, dict):
        if out is None:
            return {k: v.take(rows, axis=0) for k, v in data.items()}
        return {k: v.take(rows, axis=0, out=out[k][:n], mode="wrap") for k, v in data.items()}
    if out is None:
        return data.take(rows, axis=0)
    return data.take(rows, axis=0, out=out[:n], mode="wrap")


def batch_empty_like(data: Batch, n: int) -> Batch:
    """An uninitialised batch of ``n`` rows shaped like ``data``'s rows."""
    if isinstance(data, dict):
        return {k: np.empty((n, *v.shape[1:]), dtype=v.dtype) for k, v in data.items()}
    return np.empty((n, *data.shape[1:]), dtype=data.dtype)


def batch_repeat_to(samples: Batch, n: int) -> Batch:
    """``n`` rows, repeating ``samples`` as often as needed."""
    have = batch_len(samples)
    reps = -(-n // have)
    if reps > 1:
        samples = batch_concat([samples] * reps)
    return batch_slice(samples, 0, n)


def pad_to(batch: Batch, n: int) -> Batch:
    """Pad to ``n`` rows by repeating the last row (for fixed-batch models)."""
    have = batch_len(batch)
    if have >= n:
        return batch
    def pad(a: np.ndarray) -> np.ndarray:
        return np.concatenate([a, np.repeat(a[-1:], n - have, axis=0)])

    return {k: pad(v) for k, v in batch.items()} if isinstance(batch, dict) else pad(batch)
