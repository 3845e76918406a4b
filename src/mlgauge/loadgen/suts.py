"""Systems under test, one shape per scenario, all on LoadGen's ``ConstructFastSUT``.

* SingleStream: inline. LoadGen sends the next query only after the previous
  completes, so a thread hand-off would add latency and buy nothing.
* MultiStream, Offline: batching workers. Queries are cut into batches of at most
  ``max_batch`` and run by ``workers`` threads (frameworks release the GIL). The batches of
  a query are as many as a multiple of the workers, and of equal size: an Offline test is one
  query, and a lone last batch would leave every other worker idle while it runs.
* Server: a dynamic-batching server. Arrivals queue up; a worker takes whatever
  is queued, up to ``max_batch``. Only when it found the queue empty does it wait
  (at most ``max_wait``) for a batch to fill, so under load batches grow and
  throughput rises, while a lone query is never held longer than ``max_wait``.

Responses point into one contiguous array per batch; LoadGen copies the bytes
only when it logs accuracy, and the array outlives ``QuerySamplesComplete``.
A task's post-processing returns either one ``(B, ...)`` array (fixed-size
responses, e.g. a class index) or a list of B arrays (variable-size, e.g. a
detector's boxes); both become one buffer plus per-sample offsets.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat

import numpy as np

from mlgauge.loadgen.qsl import SampleStore
from mlgauge.tensors import Batch, batch_len


@dataclass(frozen=True)
class SutOptions:
    max_batch: int = 32
    workers: int = 1
    max_wait_ms: float = 1.0  # Server only


def default_shape(scenario: str, cores: int) -> tuple[int, int]:
    """(workers, intra-op threads per worker) when the user sets neither.

    Latency scenarios give one query all cores. Throughput scenarios run one
    single-threaded model instance per core: measured here (2 cores, ONNX
    Runtime), that beat one two-threaded instance by ~20% in Offline because
    instances never wait on each other's thread pools.
    """
    if scenario in ("SingleStream", "MultiStream"):
        return 1, cores
    return cores, 1


class BatchRunner:
    """gather -> backend -> postprocess -> complete, for one batch of samples."""

    def __init__(self, lg, store: SampleStore, run: Callable, postprocess: Callable, response_dtype: np.dtype) -> None:
        self._lg = lg
        self._store = store
        self._run = run
        self._post = postprocess
        self._dtype = np.dtype(response_dtype)
        self.batches = 0
        self.samples = 0
        self.backend_s = 0.0  # time inside backend.run, to separate model cost from harness cost
        self.failure: BaseException | None = None
        self._count_lock = threading.Lock()  # workers update the counters concurrently
        # One input buffer per worker thread, reused batch after batch: a fresh
        # multi-hundred-KB array each time costs an mmap and its page faults.
        self._local = threading.local()

    def _buffer(self, n: int) -> Batch:
        buf = getattr(self._local, "buf", None)
        if buf is None or batch_len(buf) < n:
            buf = self._store.new_buffer(n)
            self._local.buf = buf
        return buf

    def _responses(self, outputs, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray | None]:
        """One contiguous response buffer, and for variable-size responses each
        sample's byte offset in it (n + 1 of them); None when all sizes are equal."""
        post = self._post(outputs, indices)
        if isinstance(post, list):  # variable-size responses
            parts = [np.ascontiguousarray(p, dtype=self._dtype).reshape(-1) for p in post]
            sizes = np.fromiter((p.nbytes for p in parts), dtype=np.int64, count=len(parts))
            flat = np.concatenate(parts) if parts else np.zeros(0, dtype=self._dtype)
            return flat, np.concatenate([[0], np.cumsum(sizes)])
        return np.ascontiguousarray(post, dtype=self._dtype), None

    def __call__(self, ids: Sequence[int], indices: Sequence[int]) -> None:
        if not ids:
            return
        try:
            batch = self._store.gather(indices, out=self._buffer(len(indices)))
            t0 = time.perf_counter()
            outputs = self._run(batch)
            spent = time.perf_counter() - t0
            responses, offsets = self._responses(outputs, indices)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the worker after the test
            # Answer anyway so LoadGen finishes; the run is then reported as failed.
            self.failure = self.failure or exc
            responses, offsets = np.zeros(len(ids), dtype=self._dtype), None
            spent = 0.0
        n = len(ids)
        base = responses.__array_interface__["data"][0]
        QSR = self._lg.QuerySampleResponse
        if offsets is None:  # equal sizes: no per-sample arithmetic
            size = responses.nbytes // n
            addresses, sizes = range(base, base + n * size, size), repeat(size, n)
        else:
            addresses, sizes = (base + offsets[:-1]).tolist(), np.diff(offsets).tolist()
        self._lg.QuerySamplesComplete(list(map(QSR, ids, addresses, sizes)))
        with self._count_lock:
            self.backend_s += spent
            self.batches += 1
            self.samples += n


class InlineSUT:
    """SingleStream: run each query on LoadGen's issue thread."""

    def __init__(self, runner: BatchRunner, options: SutOptions) -> None:
        self._runner = runner

    def issue(self, ids: list[int], indices: list[int]) -> None:
        self._runner(ids, indices)

    def flush(self) -> None:
        pass

    def stop(self) -> None:
        pass


def balanced_batches(n: int, max_batch: int, workers: int) -> list[tuple[int, int]]:
    """(start, end) of contiguous batches covering n samples: at most ``max_batch`` each, sizes
    differing by at most one, and (when n allows) a multiple of ``workers`` of them."""
    if n <= 0:
        return []
    count = -(-n // max_batch)
    count = min(n, -(-count // workers) * workers)
    size, extra = divmod(n, count)
    bounds, start = [], 0
    for b in range(count):
        end = start + size + (1 if b < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


class BatchingSUT:
    """MultiStream and Offline: split queries into batches for a pool of worker threads."""

    def __init__(self, runner: BatchRunner, options: SutOptions) -> None:
        self._runner = runner
        self._max_batch = max(1, options.max_batch)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"mlgauge-batch-{i}", daemon=True) for i in range(max(1, options.workers))
        ]
        for t in self._threads:
            t.start()

    def issue(self, ids: list[int], indices: list[int]) -> None:
        for start, end in balanced_batches(len(ids), self._max_batch, len(self._threads)):
            self._queue.put((ids[start:end], indices[start:end]))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            self._runner(*item)

    def flush(self) -> None:
        pass

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join()


class DynamicBatchingSUT:
    """Server: queue arrivals; workers take up to ``max_batch`` at a time."""

    def __init__(self, runner: BatchRunner, options: SutOptions) -> None:
        self._runner = runner
        self._max_batch = max(1, options.max_batch)
        self._max_wait = max(0.0, options.max_wait_ms) / 1000.0
        self._ids: list[int] = []
        self._indices: list[int] = []
        self._cv = threading.Condition(threading.Lock())
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._work, name=f"mlgauge-server-{i}", daemon=True) for i in range(max(1, options.workers))
        ]
        for t in self._threads:
            t.start()

    def issue(self, ids: list[int], indices: list[int]) -> None:
        with self._cv:
            was_empty = not self._ids
            self._ids += ids
            self._indices += indices
            # Wake a worker only when there is news: work after idleness, or a full batch.
            # Waking one per arrival costs a GIL hand-off per query on the issue thread.
            if was_empty or len(self._ids) >= self._max_batch:
                self._cv.notify()

    def _take(self) -> tuple[list[int], list[int]] | None:
        with self._cv:
            waited = False
            while True:
                while not self._ids:
                    if self._stopping:
                        return None
                    self._cv.wait()
                    waited = True
                if waited and self._max_wait > 0 and len(self._ids) < self._max_batch:
                    # The system was idle: give a batch a short chance to form.
                    deadline = time.monotonic() + self._max_wait
                    while len(self._ids) < self._max_batch and not self._stopping:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._cv.wait(remaining)
                # Another worker may have taken everything while this one waited.
                if self._ids:
                    break
            k = self._max_batch
            ids, indices = self._ids[:k], self._indices[:k]
            del self._ids[:k], self._indices[:k]
            if self._ids:
                self._cv.notify()  # more queued than one batch: let another worker start
            return ids, indices

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            self._runner(*batch)

    def flush(self) -> None:
        pass

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        for t in self._threads:
            t.join()


SUT_FOR_SCENARIO = {
    "SingleStream": InlineSUT,
    "MultiStream": BatchingSUT,
    "Server": DynamicBatchingSUT,
    "Offline": BatchingSUT,
}
