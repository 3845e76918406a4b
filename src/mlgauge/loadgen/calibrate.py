"""Measure, before the test, how fast this backend runs this model here.

LoadGen needs expected latency / QPS hints to size its query schedule. The
official harnesses make the user guess them; a short untimed probe of the same
path the SUT uses (gather -> run -> postprocess) gives a sensible default that
any user.conf value or flag overrides.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable

from mlgauge.tensors import Batch, batch_len, batch_repeat_to

# 40% of the measured batch throughput leaves the Server queue room to stay inside
# its latency bound; the cap keeps LoadGen's pre-generated schedule (about 300 B
# per query) small for trivially fast backends.
SERVER_LOAD_FRACTION = 0.4
SERVER_QPS_CAP = 50_000.0
# LoadGen builds the whole Offline query up front (about 400 B per sample in
# Python); this keeps a quick run of a trivially fast backend under ~1 GB.
OFFLINE_QPS_CAP = 1_000_000.0
# LoadGen sizes the Offline query as 1.1 x min_duration x expected QPS; if the
# system beats a short calibration by more than 10% the run ends early and is
# INVALID. Overstating by half costs at most a longer run.
OFFLINE_MARGIN = 1.5


def _timed(fn: Callable[[], object], min_runs: int, budget_s: float) -> list[float]:
    times = []
    end = time.perf_counter() + budget_s
    while len(times) < min_runs or time.perf_counter() < end:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 10_000:
            break
    return times


def parallel_throughput(step: Callable[[Batch], object], batch: Batch, workers: int, budget_s: float) -> float:
    """Samples/s with ``workers`` threads each running batches, as the batching SUTs do."""
    counts = [0] * workers
    size = batch_len(batch)
    end = time.perf_counter() + budget_s

    def loop(slot: int) -> None:
        while time.perf_counter() < end or counts[slot] == 0:
            step(batch)
            counts[slot] += size

    start = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - start)


# What each scenario's LoadGen hint needs; measuring only that keeps a heavy
# model's SingleStream probe from running full batches for nothing.
_NEEDED = {
    "SingleStream": ("latency_1_s",),
    "MultiStream": ("latency_query_s",),
    "Server": ("batch_throughput",),
    "Offline": ("batch_throughput",),
}


def calibrate(
    step: Callable[[Batch], object],
    samples: Batch,
    *,
    max_batch: int,
    samples_per_query: int,
    workers: int = 1,
    budget_s: float = 1.0,
    scenario: str | None = None,
) -> dict[str, float]:
    """``step`` runs one batch end to end; ``samples`` are a few loaded samples.

    With ``scenario`` only that scenario's hint is measured; without, all three.
    """

    needed = _NEEDED.get(scenario, ("latency_1_s", "latency_query_s", "batch_throughput"))
    share = budget_s / len(needed)
    out: dict[str, float] = {"max_batch": max_batch, "workers": workers}
    if "latency_1_s" in needed:
        one = batch_repeat_to(samples, 1)
        for _ in range(3):  # warm-up: first calls allocate, compile and tune
            step(one)
        out["latency_1_s"] = statistics.median(_timed(lambda: step(one), 5, share))
    if "latency_query_s" in needed:
        query = batch_repeat_to(samples, samples_per_query)
        for _ in range(3):
            step(query)
        out["latency_query_s"] = statistics.median(_timed(lambda: step(query), 5, share))
    if "batch_throughput" in needed:
        full = batch_repeat_to(samples, max_batch)
        for _ in range(3):
            step(full)
        out["batch_throughput"] = parallel_throughput(step, full, max(1, workers), share)
    return out


# A Server query can wait for a batch already running, then run in its own:
# about two batch times. A third of the latency bound per batch leaves the
# last third for arrival bursts and scheduling noise.
SERVER_BATCH_SHARE = 1 / 3


def server_batch_cap(
    step: Callable[[Batch], object], samples: Batch, *, bound_s: float, upper: int, budget_s: float = 0.5
) -> tuple[int, dict[int, float]]:
    """The largest power-of-two batch (<= ``upper``) whose latency fits the Server bound's share.

    Returns the cap and the measured median latency per batch size tried.
    """

    sizes = [1 << i for i in range(upper.bit_length()) if 1 << i <= upper]
    if sizes[-1] != upper:
        sizes.append(upper)
    share = budget_s / len(sizes)
    cap, latencies = 1, {}
    for size in sizes:
        batch = batch_repeat_to(samples, size)
        step(batch)  # warm-up for this shape
        latencies[size] = statistics.median(_timed(lambda b=batch: step(b), 3, share))
        if latencies[size] > bound_s * SERVER_BATCH_SHARE:
            break
        cap = size
    return cap, latencies


def conf_hints(measured: dict[str, float]) -> dict[str, dict[str, float]]:
    """user.conf values (ms, QPS) derived from a calibration, for the scenarios it covers."""
    hints: dict[str, dict[str, float]] = {s: {} for s in _NEEDED}
    if "latency_1_s" in measured:
        hints["SingleStream"]["target_latency"] = measured["latency_1_s"] * 1e3
    if "latency_query_s" in measured:
        hints["MultiStream"]["target_latency"] = measured["latency_query_s"] * 1e3
    if "batch_throughput" in measured:
        qps = measured["batch_throughput"]
        hints["Server"]["target_qps"] = min(qps * SERVER_LOAD_FRACTION, SERVER_QPS_CAP)
        hints["Offline"]["target_qps"] = min(qps * OFFLINE_MARGIN, OFFLINE_QPS_CAP)
    return hints
