"""Calibration with a deterministic sleeping step, and the hint arithmetic."""

from __future__ import annotations

import threading
import time
from collections import Counter

import numpy as np
import pytest

from mlgauge.loadgen.calibrate import (
    OFFLINE_MARGIN,
    OFFLINE_QPS_CAP,
    SERVER_BATCH_SHARE,
    SERVER_LOAD_FRACTION,
    SERVER_QPS_CAP,
    calibrate,
    conf_hints,
    server_batch_cap,
)


class SleepStep:
    """Costs ``per_batch + per_sample * len(batch)`` seconds; sleeping releases the GIL
    the way a framework's kernels do. Records every batch it sees."""

    def __init__(self, per_batch: float, per_sample: float = 0.0) -> None:
        self.per_batch = per_batch
        self.per_sample = per_sample
        self.batches: list[np.ndarray] = []
        self.threads: set[int] = set()
        self._lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            self.batches.append(batch.copy())
            self.threads.add(threading.get_ident())
        time.sleep(self.per_batch + self.per_sample * len(batch))
        return batch * 2

    @property
    def sizes(self) -> Counter:
        return Counter(len(b) for b in self.batches)


def samples(n: int) -> np.ndarray:
    return np.arange(n * 6, dtype=np.float32).reshape(n, 2, 3)


def test_latency_and_throughput_of_a_fixed_cost_step() -> None:
    step = SleepStep(0.004)
    m = calibrate(step, samples(3), max_batch=8, samples_per_query=4, workers=1, budget_s=0.4)
    assert m["max_batch"] == 8 and m["workers"] == 1
    # A sleep never returns early; a busy host may make it late.
    assert 0.004 <= m["latency_1_s"] < 0.012
    assert 0.004 <= m["latency_query_s"] < 0.012
    # 8 samples per 4 ms batch = 2000 samples/s at most.
    assert 1000 < m["batch_throughput"] <= 2000 * 1.001
    assert set(step.sizes) == {1, 4, 8}


def test_query_latency_uses_samples_per_query() -> None:
    step = SleepStep(0.001, per_sample=0.001)
    m = calibrate(step, samples(3), max_batch=16, samples_per_query=8, workers=1, budget_s=0.4)
    # ~2 ms for one sample, ~9 ms for a query of eight.
    assert 0.002 <= m["latency_1_s"] < 0.006
    assert 0.009 <= m["latency_query_s"] < 0.016
    assert m["latency_query_s"] > m["latency_1_s"] + 0.006
    # 16 samples per ~17 ms batch.
    assert 500 < m["batch_throughput"] <= 16 / 0.017 * 1.001


def test_parallel_workers_multiply_throughput() -> None:
    # One worker can never beat 4 samples / 10 ms = 400 samples/s; N workers at most N times that.
    ceiling = 4 / 0.010
    results = {}
    for workers in (1, 2, 4):
        step = SleepStep(0.010)
        m = calibrate(step, samples(4), max_batch=4, samples_per_query=2, workers=workers, budget_s=0.3)
        assert m["workers"] == workers
        assert len(step.threads) >= workers  # the throughput loop ran on its own threads
        # Latencies are measured one at a time, whatever the worker count.
        assert 0.010 <= m["latency_1_s"] < 0.02
        results[workers] = m["batch_throughput"]
    assert 0.6 * ceiling < results[1] <= ceiling * 1.001
    # More than one worker could ever do alone, and about N times one worker.
    assert 1.5 * ceiling < results[2] <= 2 * ceiling * 1.001
    assert 3.0 * ceiling < results[4] <= 4 * ceiling * 1.001
    assert 1.5 < results[2] / results[1] < 2.5


def test_batches_cycle_through_few_samples() -> None:
    step = SleepStep(0.0)
    src = samples(3)
    calibrate(step, src, max_batch=8, samples_per_query=4, workers=1, budget_s=0.01)
    by_size = {len(b): b for b in step.batches}
    np.testing.assert_array_equal(by_size[1], src[[0]])
    np.testing.assert_array_equal(by_size[4], src[[0, 1, 2, 0]])
    np.testing.assert_array_equal(by_size[8], src[[0, 1, 2, 0, 1, 2, 0, 1]])
    assert all(b.shape[1:] == (2, 3) and b.dtype == np.float32 for b in step.batches)


def test_more_samples_than_a_batch_takes_the_first_ones() -> None:
    step = SleepStep(0.0)
    src = samples(10)
    calibrate(step, src, max_batch=4, samples_per_query=2, workers=1, budget_s=0.01)
    by_size = {len(b): b for b in step.batches}
    assert set(by_size) == {1, 2, 4}
    np.testing.assert_array_equal(by_size[4], src[:4])
    np.testing.assert_array_equal(by_size[2], src[:2])


def test_zero_budget_still_measures_every_quantity() -> None:
    step = SleepStep(0.0)
    t0 = time.perf_counter()
    m = calibrate(step, samples(2), max_batch=6, samples_per_query=3, workers=3, budget_s=0.0)
    assert time.perf_counter() - t0 < 1.0
    sizes = step.sizes
    assert sizes[3] >= 5  # query latency: at least five timed runs
    assert sizes[1] >= 5  # single-sample latency, after warm-up
    assert sizes[6] >= 3  # warm-up plus at least one batch per worker
    assert m["latency_1_s"] > 0 and m["latency_query_s"] > 0 and m["batch_throughput"] > 0


# --- conf_hints -------------------------------------------------------------------


def test_constants() -> None:
    assert SERVER_LOAD_FRACTION == 0.4
    assert SERVER_QPS_CAP == 50_000.0
    assert OFFLINE_QPS_CAP == 1_000_000.0
    assert OFFLINE_MARGIN == 1.5


def test_conf_hints_units_and_server_fraction() -> None:
    hints = conf_hints({"latency_1_s": 0.002, "latency_query_s": 0.0125, "batch_throughput": 1000.0})
    assert hints == {
        "SingleStream": {"target_latency": pytest.approx(2.0)},
        "MultiStream": {"target_latency": pytest.approx(12.5)},
        "Server": {"target_qps": pytest.approx(400.0)},
        "Offline": {"target_qps": pytest.approx(1500.0)},  # 1.5x margin
    }


@pytest.mark.parametrize(
    ("throughput", "server", "offline"),
    [
        (124_999.0, 49_999.6, 187_498.5),
        (125_000.0, 50_000.0, 187_500.0),  # the Server cap is reached exactly here
        (200_000.0, 50_000.0, 300_000.0),
        (666_000.0, 50_000.0, 999_000.0),
        (1_000_000.0, 50_000.0, 1_000_000.0),  # the Offline cap
        (5_000_000.0, 50_000.0, 1_000_000.0),  # both caps
    ],
)
def test_conf_hints_caps(throughput: float, server: float, offline: float) -> None:
    hints = conf_hints({"latency_1_s": 1e-5, "latency_query_s": 8e-5, "batch_throughput": throughput})
    assert hints["Server"]["target_qps"] == pytest.approx(server)
    assert hints["Offline"]["target_qps"] == pytest.approx(offline)
    assert hints["SingleStream"]["target_latency"] == pytest.approx(0.01)
    assert hints["MultiStream"]["target_latency"] == pytest.approx(0.08)


def test_conf_hints_from_a_real_calibration() -> None:
    m = calibrate(SleepStep(0.002), samples(2), max_batch=4, samples_per_query=2, workers=2, budget_s=0.2)
    hints = conf_hints(m)
    assert hints["SingleStream"]["target_latency"] == pytest.approx(m["latency_1_s"] * 1000)
    assert hints["Server"]["target_qps"] == pytest.approx(0.4 * m["batch_throughput"])
    assert hints["Offline"]["target_qps"] == pytest.approx(1.5 * m["batch_throughput"])
    # 2 workers x 4 samples / 2 ms = 4000 samples/s at most.
    assert 2000 < m["batch_throughput"] <= 4000 * 1.001


def test_server_batch_cap_fits_a_third_of_the_bound() -> None:
    # 1 ms per sample: batches of 1, 2, 4 take 1, 2, 4 ms; with a 9 ms bound the share is 3 ms.
    step = SleepStep(0.0, per_sample=0.001)
    cap, latencies = server_batch_cap(step, samples(4), bound_s=0.009, upper=32, budget_s=0.2)
    assert pytest.approx(1 / 3) == SERVER_BATCH_SHARE
    assert cap == 2
    assert list(latencies) == [1, 2, 4]  # stops at the first size over the share
    assert latencies[4] > 0.003


def test_server_batch_cap_reaches_the_upper_limit_and_never_drops_below_one() -> None:
    fast = SleepStep(0.0, per_sample=1e-5)
    cap, latencies = server_batch_cap(fast, samples(3), bound_s=0.015, upper=24, budget_s=0.1)
    assert cap == 24 and list(latencies) == [1, 2, 4, 8, 16, 24]
    slow = SleepStep(0.02)
    cap, _ = server_batch_cap(slow, samples(3), bound_s=0.015, upper=32, budget_s=0.05)
    assert cap == 1
