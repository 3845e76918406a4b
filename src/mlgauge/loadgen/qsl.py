"""The one query sample library: a task's dataset, loaded into memory by index.

LoadGen calls ``load``/``unload`` outside the timed region. Loaded samples live
in one contiguous array plus an index -> slot table, so building a batch is a
single ``np.take`` on the hot path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mlgauge.tasks.base import SampleSource


class SampleStore:
    def __init__(self, source: SampleSource) -> None:
        self.source = source
        self._slot = np.full(source.total_count, -1, dtype=np.int64)
        self._data = np.empty((0, *source.sample_shape), dtype=source.sample_dtype)

    def load(self, indices: Sequence[int]) -> None:
        idx = np.asarray(indices, dtype=np.int64)
        fresh = np.unique(idx[self._slot[idx] < 0])
        if fresh.size:
            samples = self.source.load(fresh.tolist())
            self._slot[fresh] = np.arange(len(self._data), len(self._data) + fresh.size)
            self._data = np.concatenate([self._data, samples]) if len(self._data) else samples

    def unload(self, indices: Sequence[int]) -> None:
        self._slot[np.asarray(indices, dtype=np.int64)] = -1
        if not (self._slot >= 0).any():
            self._data = np.empty((0, *self.source.sample_shape), dtype=self.source.sample_dtype)

    def gather(self, indices: Sequence[int], out: np.ndarray | None = None) -> np.ndarray:
        """``(len(indices), *sample_shape)`` as one contiguous batch, written into
        ``out[:n]`` when given (a reused buffer spares an allocation per batch)."""
        slots = self._slot[indices]
        if out is None:
            return self._data.take(slots, axis=0)
        batch = out[: len(slots)]
        # mode="raise" (the default) makes numpy copy through a temporary buffer when
        # ``out`` is given; the slots are always valid, so "wrap" costs nothing and copies once.
        return self._data.take(slots, axis=0, out=batch, mode="wrap")

    @property
    def loaded(self) -> int:
        return int((self._slot >= 0).sum())


def construct_qsl(lg, store: SampleStore):
    """LoadGen's handle for the store; destroy with ``lg.DestroyQSL``."""
    return lg.ConstructQSL(
        store.source.total_count, store.source.performance_count, store.load, store.unload
    )
