"""The one query sample library: a task's dataset, loaded into memory by index.

LoadGen calls ``load``/``unload`` outside the timed region. Loaded samples live
in one contiguous array (or one per named model input) plus an index -> slot
table, so building a batch is a single ``take`` per input on the hot path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mlgauge.tasks.base import SampleSource
from mlgauge.tensors import Batch, batch_concat, batch_empty_like, batch_len, batch_take


class SampleStore:
    def __init__(self, source: SampleSource) -> None:
        self.source = source
        self._slot = np.full(source.total_count, -1, dtype=np.int64)
        self._data: Batch | None = None

    def load(self, indices: Sequence[int]) -> None:
        idx = np.asarray(indices, dtype=np.int64)
        fresh = np.unique(idx[self._slot[idx] < 0])
        if fresh.size:
            samples = self.source.load(fresh.tolist())
            have = 0 if self._data is None else batch_len(self._data)
            self._slot[fresh] = np.arange(have, have + fresh.size)
            self._data = samples if self._data is None else batch_concat([self._data, samples])

    def unload(self, indices: Sequence[int]) -> None:
        self._slot[np.asarray(indices, dtype=np.int64)] = -1
        if not (self._slot >= 0).any():
            self._data = None

    def gather(self, indices: Sequence[int], out: Batch | None = None) -> Batch:
        """The samples at ``indices`` as one contiguous batch, written into
        ``out`` when given (a reused buffer spares an allocation per batch)."""
        return batch_take(self._data, self._slot[indices], out)

    def new_buffer(self, n: int) -> Batch:
        """A batch buffer of ``n`` rows for ``gather(out=...)``; needs loaded samples."""
        return batch_empty_like(self._data, max(n, 1))

    @property
    def loaded(self) -> int:
        return int((self._slot >= 0).sum())


def construct_qsl(lg, store: SampleStore):
    """LoadGen's handle for the store; destroy with ``lg.DestroyQSL``."""
    return lg.ConstructQSL(
        store.source.total_count, store.source.performance_count, store.load, store.unload
    )
