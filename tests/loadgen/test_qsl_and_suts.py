"""The sample store and the systems under test, driven by fakes (no LoadGen):
a numpy sample source, a recording runner, and an ``lg`` stand-in that reads
every response's bytes while they are still valid."""

from __future__ import annotations

import ctypes
import gc
import threading
import time
import tracemalloc

import numpy as np
import pytest

from mlgauge.loadgen.qsl import SampleStore, construct_qsl
from mlgauge.loadgen.suts import (
    SUT_FOR_SCENARIO,
    BatchingSUT,
    BatchRunner,
    DynamicBatchingSUT,
    InlineSUT,
    SutOptions,
    balanced_batches,
    default_shape,
)
from mlgauge.tasks.base import SampleSource


class FakeSource:
    """Sample ``i`` is ``i * 100 + arange`` in the sample shape, so every value says where it came from."""

    label = "fake"

    def __init__(self, total: int = 10, perf: int = 8, shape: tuple[int, ...] = (2, 3)) -> None:
        self.total_count = total
        self.performance_count = perf
        self.sample_shape = shape
        self.sample_dtype = np.dtype(np.float32)
        self.calls: list[list[int]] = []

    def sample(self, i: int) -> np.ndarray:
        n = int(np.prod(self.sample_shape))
        return (i * 100 + np.arange(n, dtype=np.float32)).reshape(self.sample_shape)

    def load(self, indices) -> np.ndarray:
        self.calls.append(list(indices))
        return np.stack([self.sample(i) for i in indices])

    def ground_truth(self) -> np.ndarray:
        return np.arange(self.total_count)


def expected(source: FakeSource, indices) -> np.ndarray:
    return np.stack([source.sample(i) for i in indices])


# --- SampleStore --------------------------------------------------------------------


def test_fake_source_is_a_sample_source() -> None:
    assert isinstance(FakeSource(), SampleSource)


def test_load_once_per_unique_index_and_gather_in_request_order() -> None:
    src = FakeSource()
    store = SampleStore(src)
    assert store.loaded == 0
    store.load([5, 1, 5, 3])
    assert src.calls == [[1, 3, 5]]
    assert store.loaded == 3
    batch = store.gather([3, 5, 1, 5])
    assert batch.shape == (4, 2, 3) and batch.dtype == np.float32
    assert batch.flags.c_contiguous
    np.testing.assert_array_equal(batch, expected(src, [3, 5, 1, 5]))
    # A fresh array: the caller may scribble on it.
    batch[:] = -1
    np.testing.assert_array_equal(store.gather(np.array([1])), expected(src, [1]))


def test_repeated_loads_only_fetch_new_indices() -> None:
    src = FakeSource()
    store = SampleStore(src)
    store.load([1, 3])
    store.load([3, 7, 1, 9])
    store.load([9, 9, 1])
    assert src.calls == [[1, 3], [7, 9]]
    assert store.loaded == 4
    order = [9, 1, 7, 3, 3]
    np.testing.assert_array_equal(store.gather(order), expected(src, order))


def test_partial_unload_keeps_the_rest_and_reload_fetches_again() -> None:
    src = FakeSource()
    store = SampleStore(src)
    store.load(range(6))
    store.unload([2, 4])
    assert store.loaded == 4
    np.testing.assert_array_equal(store.gather([0, 1, 3, 5]), expected(src, [0, 1, 3, 5]))
    store.load([2, 0])
    assert src.calls == [[0, 1, 2, 3, 4, 5], [2]]
    np.testing.assert_array_equal(store.gather([2, 5, 0]), expected(src, [2, 5, 0]))


def test_accuracy_style_chunks() -> None:
    """LoadGen's accuracy mode loads, runs and unloads one chunk at a time."""
    src = FakeSource(total=10, perf=4)
    store = SampleStore(src)
    for chunk in ([0, 1, 2, 3], [4, 5, 6, 7], [8, 9]):
        store.load(chunk)
        assert store.loaded == len(chunk)
        np.testing.assert_array_equal(store.gather(chunk[::-1]), expected(src, chunk[::-1]))
        store.unload(chunk)
        assert store.loaded == 0
    assert src.calls == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_unload_all_frees_the_memory() -> None:
    src = FakeSource(total=512, perf=512, shape=(64, 64))  # 16 KiB per sample, 4 MiB loaded
    store = SampleStore(src)
    gc.collect()
    tracemalloc.start()
    try:
        store.load(range(256))
        src.calls.clear()
        gc.collect()
        loaded = tracemalloc.get_traced_memory()[0]
        store.unload(range(256))
        gc.collect()
        freed = loaded - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert freed >= 0.95 * 256 * 64 * 64 * 4
    assert store.loaded == 0
    # Still usable afterwards.
    store.load([3, 500])
    np.testing.assert_array_equal(store.gather([500, 3]), expected(src, [500, 3]))


def test_construct_qsl_hands_loadgen_the_store() -> None:
    seen = {}

    class LG:
        def ConstructQSL(self, total, perf, load, unload):
            seen.update(total=total, perf=perf, load=load, unload=unload)
            return "handle"

    store = SampleStore(FakeSource(total=10, perf=8))
    assert construct_qsl(LG(), store) == "handle"
    assert (seen["total"], seen["perf"]) == (10, 8)
    seen["load"]([4, 2])
    assert store.loaded == 2
    seen["unload"]([4, 2])
    assert store.loaded == 0


# --- SUTs with a recording runner ----------------------------------------------------


class Recorder:
    """A fake BatchRunner: records each batch, optionally taking ``delay`` seconds."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.batches: list[tuple[list[int], list[int]]] = []
        self.times: list[float] = []
        self.threads: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def __call__(self, ids, indices) -> None:
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            self.batches.append((list(ids), list(indices)))
            self.times.append(time.monotonic())
            self.threads.add(threading.current_thread())

    @property
    def ids(self) -> list[int]:
        with self._lock:
            return [i for ids, _ in self.batches for i in ids]

    def wait_for(self, n: int, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while len(self.ids) < n:
            assert time.monotonic() < end, f"only {len(self.ids)} of {n} samples completed"
            time.sleep(0.001)

    def check_pairs(self, index_of) -> None:
        for ids, indices in self.batches:
            assert len(ids) == len(indices)
            assert indices == [index_of(i) for i in ids]


def test_inline_sut_runs_on_the_issuing_thread() -> None:
    rec = Recorder()
    sut = InlineSUT(rec, SutOptions())
    sut.issue([7], [3])
    assert rec.batches == [([7], [3])]  # done before issue returned
    assert rec.threads == {threading.current_thread()}
    sut.issue([8, 9], [1, 2])
    assert rec.batches[-1] == ([8, 9], [1, 2])
    sut.flush()
    sut.stop()


def test_batching_sut_splits_across_workers() -> None:
    rec = Recorder(delay=0.005)
    sut = BatchingSUT(rec, SutOptions(max_batch=8, workers=3))
    ids = list(range(1000, 1100))
    t0 = time.monotonic()
    sut.issue(ids, [i - 1000 for i in ids])
    assert time.monotonic() - t0 < 0.03  # issue only queues (running them takes >= 25 ms)
    rec.wait_for(100)
    sut.stop()
    assert sorted(rec.ids) == ids  # every id exactly once
    assert sorted(len(b) for b, _ in rec.batches) == [6] * 5 + [7] * 10  # 15 batches: 5 per worker
    rec.check_pairs(lambda i: i - 1000)
    # Each batch is a contiguous slice of the query.
    for batch, _ in rec.batches:
        assert batch == list(range(batch[0], batch[0] + len(batch)))
    assert len(rec.threads) == 3
    assert all(t.name.startswith("mlgauge-batch-") for t in rec.threads)
    assert not any(t.is_alive() for t in rec.threads)


@pytest.mark.parametrize(("n", "max_batch", "workers"), [(660, 32, 2), (100, 8, 3), (7, 32, 2), (1, 8, 4), (64, 8, 1),
                                                     (5, 2, 4), (1000, 1, 3)])  # fmt: skip
def test_balanced_batches_leave_no_worker_a_lone_last_batch(n, max_batch, workers) -> None:
    bounds = balanced_batches(n, max_batch, workers)
    assert [s for s, _ in bounds] == [0] + [e for _, e in bounds[:-1]] and bounds[-1][1] == n  # contiguous, all
    sizes = [e - s for s, e in bounds]
    assert max(sizes) <= max_batch and max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    assert len(bounds) % workers == 0 or len(bounds) == n  # fewer samples than workers: one each
    assert len(bounds) < -(-n // max_batch) + workers  # never more batches than the rounding needs
    assert balanced_batches(0, max_batch, workers) == []


def test_batching_sut_stop_drains_queued_work() -> None:
    rec = Recorder(delay=0.002)
    sut = BatchingSUT(rec, SutOptions(max_batch=4, workers=2))
    sut.issue(list(range(64)), list(range(64)))
    sut.stop()  # returns only once every queued batch ran
    assert sorted(rec.ids) == list(range(64))
    assert not any(t.is_alive() for t in rec.threads)


def test_batching_sut_clamps_zero_options() -> None:
    rec = Recorder()
    sut = BatchingSUT(rec, SutOptions(max_batch=0, workers=0))
    sut.issue([1, 2, 3], [0, 1, 2])
    sut.stop()
    assert sorted(rec.batches) == [([1], [0]), ([2], [1]), ([3], [2])]


def test_dynamic_batching_under_concurrent_load() -> None:
    rec = Recorder(delay=0.002)
    sut = DynamicBatchingSUT(rec, SutOptions(max_batch=16, workers=4, max_wait_ms=1.0))
    per_thread, issuers = 250, 4

    def issue_many(base: int) -> None:
        i = 0
        while i < per_thread:
            n = 3 if i % 50 == 0 and i + 3 <= per_thread else 1  # now and then a multi-sample query
            ids = [base + i + k for k in range(n)]
            sut.issue(ids, [x + 7 for x in ids])
            i += n
            if i % 25 == 0:
                time.sleep(0.0005)

    threads = [threading.Thread(target=issue_many, args=(t * 10_000,)) for t in range(issuers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rec.wait_for(per_thread * issuers)
    t0 = time.monotonic()
    sut.stop()
    assert time.monotonic() - t0 < 0.5
    want = sorted(t * 10_000 + i for t in range(issuers) for i in range(per_thread))
    assert sorted(rec.ids) == want  # every id exactly once
    rec.check_pairs(lambda i: i + 7)
    sizes = [len(b) for b, _ in rec.batches]
    assert min(sizes) >= 1 and max(sizes) <= 16
    # 1000 arrivals, each batch costs 2 ms, four workers: batches must have grown.
    assert sum(sizes) / len(sizes) > 2, sizes
    assert not any(t.is_alive() for t in rec.threads)


def test_dynamic_batch_takes_everything_queued_up_to_max_batch() -> None:
    rec = Recorder(delay=0.05)
    sut = DynamicBatchingSUT(rec, SutOptions(max_batch=16, workers=1, max_wait_ms=0.0))
    sut.issue([0], [0])
    time.sleep(0.01)  # the worker is now busy with the first batch
    for i in range(1, 11):
        sut.issue([i], [i])
    rec.wait_for(11)
    time.sleep(0.01)
    for i in range(100, 140):
        sut.issue([i], [i])
    rec.wait_for(51)
    sut.stop()
    sizes = [len(b) for b, _ in rec.batches]
    assert sizes[:2] == [1, 10]
    # The idle worker wakes on the first of the 40 and takes whatever has arrived by then
    # (k); while it runs, the rest queue up and go out in full batches of 16.
    k = sizes[2]
    assert 1 <= k <= 16
    assert sizes[3:] == [16] * ((40 - k) // 16) + ([(40 - k) % 16] if (40 - k) % 16 else [])
    assert sorted(rec.ids) == list(range(11)) + list(range(100, 140))


def test_more_than_one_batch_queued_wakes_another_worker() -> None:
    rec = Recorder(delay=0.1)
    sut = DynamicBatchingSUT(rec, SutOptions(max_batch=16, workers=2, max_wait_ms=0.0))
    time.sleep(0.02)  # both workers idle
    t0 = time.monotonic()
    sut.issue(list(range(32)), list(range(32)))  # one wake-up call for two full batches
    rec.wait_for(32)
    sut.stop()
    assert sorted(len(b) for b, _ in rec.batches) == [16, 16]
    assert len(rec.threads) == 2
    # Both batches ran side by side, not one after the other.
    assert abs(rec.times[1] - rec.times[0]) < 0.05
    assert rec.times[1] - t0 < 0.18


def test_lone_query_waits_at_most_max_wait() -> None:
    rec = Recorder()
    sut = DynamicBatchingSUT(rec, SutOptions(max_batch=16, workers=2, max_wait_ms=200.0))
    time.sleep(0.05)  # workers are idle and waiting
    t0 = time.monotonic()
    sut.issue([1], [1])
    rec.wait_for(1)
    waited = rec.times[0] - t0
    # Held back for the batch-forming window, and no longer.
    assert 0.18 <= waited < 0.35, waited
    # A full batch does not wait for the window.
    time.sleep(0.05)
    t0 = time.monotonic()
    sut.issue(list(range(10, 26)), list(range(16)))
    rec.wait_for(17)
    assert rec.times[-1] - t0 < 0.1
    assert [len(b) for b, _ in rec.batches] == [1, 16]
    sut.stop()


def test_dynamic_stop_is_prompt_when_idle_and_during_the_wait_window() -> None:
    rec = Recorder()
    sut = DynamicBatchingSUT(rec, SutOptions(max_batch=8, workers=4, max_wait_ms=5000.0))
    time.sleep(0.02)
    t0 = time.monotonic()
    sut.stop()
    assert time.monotonic() - t0 < 0.2
    assert rec.batches == []

    rec = Recorder()
    sut = DynamicBatchingSUT(rec, SutOptions(max_batch=8, workers=2, max_wait_ms=5000.0))
    time.sleep(0.02)
    sut.issue([42], [4])
    time.sleep(0.02)  # a worker is inside its 5 s window now
    t0 = time.monotonic()
    sut.stop()
    assert time.monotonic() - t0 < 0.5
    assert rec.batches == [([42], [4])]  # nothing pending is dropped


# --- BatchRunner with a fake lg -----------------------------------------------------


class FakeLG:
    """Records QuerySamplesComplete, copying each response's bytes while they are valid."""

    class QuerySampleResponse:
        def __init__(self, id: int, data: int, size: int) -> None:
            self.id, self.data, self.size = id, data, size

    def __init__(self) -> None:
        self.calls: list[list[tuple[int, bytes]]] = []
        self.sizes: list[list[int]] = []

    def QuerySamplesComplete(self, responses) -> None:
        self.calls.append([(r.id, ctypes.string_at(r.data, r.size)) for r in responses])
        self.sizes.append([r.size for r in responses])


def loaded_store(n: int = 10) -> tuple[FakeSource, SampleStore]:
    src = FakeSource(total=n, perf=n)
    store = SampleStore(src)
    store.load(range(n))
    return src, store


def test_runner_responses_point_at_the_postprocessed_bytes() -> None:
    _, store = loaded_store()
    lg = FakeLG()

    def run(batch: np.ndarray) -> np.ndarray:
        time.sleep(0.001)
        return batch.reshape(len(batch), -1).sum(axis=1)  # sample i sums to 600 i + 15

    runner = BatchRunner(lg, store, run, lambda out, idx: out * 2, np.int32)
    runner([101, 102, 103], [7, 2, 7])
    want = [(qid, np.int32(2 * (600 * i + 15)).tobytes()) for qid, i in ((101, 7), (102, 2), (103, 7))]
    assert lg.calls == [want]
    assert lg.sizes == [[4, 4, 4]]
    assert (runner.batches, runner.samples) == (1, 3)
    assert runner.backend_s >= 0.001
    assert runner.failure is None
    runner([5], [0])
    assert lg.calls[-1] == [(5, np.int32(30).tobytes())]
    assert (runner.batches, runner.samples) == (2, 4)


def test_runner_hands_the_batch_qsl_indices_to_postprocess() -> None:
    _, store = loaded_store()
    lg = FakeLG()
    seen = []

    def post(out, idx):
        seen.append(list(idx))
        return np.asarray(idx, dtype=np.int32)  # a response that is the QSL index itself

    runner = BatchRunner(lg, store, lambda b: b, post, np.int32)
    runner([7, 8], [4, 1])
    assert seen == [[4, 1]]
    assert lg.calls == [[(7, np.int32(4).tobytes()), (8, np.int32(1).tobytes())]]


def test_runner_multi_value_and_non_contiguous_responses() -> None:
    src, store = loaded_store()
    lg = FakeLG()
    # Per sample: the first column of each row, as float32 -> 2 values, 8 bytes, from a strided view.
    runner = BatchRunner(lg, store, lambda b: b, lambda out, idx: out[:, :, 0], np.float32)
    runner([1, 2], [3, 9])
    assert lg.sizes == [[8, 8]]
    assert lg.calls == [
        [
            (1, src.sample(3)[:, 0].astype(np.float32).tobytes()),
            (2, src.sample(9)[:, 0].astype(np.float32).tobytes()),
        ]
    ]


def test_runner_backend_failure_still_completes() -> None:
    _, store = loaded_store()
    lg = FakeLG()
    calls = {"n": 0}

    def run(batch: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        if calls["n"] == 2:
            raise ValueError("second")
        return np.full(len(batch), 5)

    runner = BatchRunner(lg, store, run, lambda out, idx: out, np.int64)
    runner([1, 2, 3], [0, 1, 2])
    assert isinstance(runner.failure, RuntimeError) and str(runner.failure) == "boom"
    assert lg.calls == [[(1, bytes(8)), (2, bytes(8)), (3, bytes(8))]]  # answered, with zeros
    runner([4], [3])
    assert isinstance(runner.failure, RuntimeError)  # the first failure is kept
    assert lg.calls[-1] == [(4, bytes(8))]
    runner([5], [4])  # a later good batch answers normally
    assert lg.calls[-1] == [(5, np.int64(5).tobytes())]
    assert (runner.batches, runner.samples) == (3, 5)


def test_runner_postprocess_failure_is_captured() -> None:
    _, store = loaded_store()
    lg = FakeLG()

    def post(out, idx):
        raise KeyError("bad label")

    runner = BatchRunner(lg, store, lambda b: b, post, np.int32)
    runner([9, 8], [1, 2])
    assert isinstance(runner.failure, KeyError)
    assert lg.calls == [[(9, bytes(4)), (8, bytes(4))]]


def test_runner_empty_ids_do_nothing() -> None:
    _, store = loaded_store()
    lg = FakeLG()
    runner = BatchRunner(lg, store, lambda b: 1 / 0, lambda out, idx: out, np.int32)
    runner([], [])
    assert lg.calls == []
    assert (runner.batches, runner.samples, runner.failure) == (0, 0, None)


def test_runner_behind_a_dynamic_sut_completes_every_sample_once() -> None:
    src, store = loaded_store(32)
    lg = FakeLG()
    runner = BatchRunner(lg, store, lambda b: b[:, 0, 0], lambda out, idx: out, np.float32)
    sut = DynamicBatchingSUT(runner, SutOptions(max_batch=8, workers=3, max_wait_ms=0.5))
    for qid in range(500):
        sut.issue([qid], [qid % 32])
    end = time.monotonic() + 10
    while sum(len(c) for c in lg.calls) < 500:
        assert time.monotonic() < end
        time.sleep(0.001)
    sut.stop()
    done = [pair for call in lg.calls for pair in call]
    assert sorted(q for q, _ in done) == list(range(500))
    for qid, data in done:
        assert data == np.float32(src.sample(qid % 32)[0, 0]).tobytes()
    assert all(1 <= len(c) <= 8 for c in lg.calls)


# --- shapes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "cores", "shape"),
    [
        ("SingleStream", 8, (1, 8)),
        ("MultiStream", 8, (1, 8)),
        ("Server", 8, (8, 1)),
        ("Offline", 8, (8, 1)),
        ("SingleStream", 1, (1, 1)),
        ("Offline", 2, (2, 1)),
    ],
)
def test_default_shape(scenario: str, cores: int, shape: tuple[int, int]) -> None:
    assert default_shape(scenario, cores) == shape


def test_sut_for_scenario_and_options() -> None:
    expected_suts = {
        "SingleStream": InlineSUT,
        "MultiStream": BatchingSUT,
        "Server": DynamicBatchingSUT,
        "Offline": BatchingSUT,
    }
    assert expected_suts == SUT_FOR_SCENARIO
    assert SutOptions() == SutOptions(max_batch=32, workers=1, max_wait_ms=1.0)


def test_gather_into_a_reused_buffer() -> None:
    store = SampleStore(FakeSource(total=10, perf=10))
    store.load(range(10))
    buf = np.full((8, 2, 3), -1.0, dtype=np.float32)
    batch = store.gather([7, 2, 5], out=buf)
    assert batch.shape == (3, 2, 3)
    assert np.shares_memory(batch, buf)
    np.testing.assert_array_equal(batch, store.gather([7, 2, 5]))
    assert (buf[3:] == -1).all()  # rows past the batch are untouched
