"""Produce one set of real LoadGen logs with a trivial inline SUT.

Usage: python lg_fixture.py OUTDIR SCENARIO MODE [--invalid]

SCENARIO is SingleStream|MultiStream|Server|Offline, MODE is performance|accuracy.
One LoadGen test per process: LoadGen keeps process-wide state between tests
(the one-config-per-process pitfall), so the test suite runs this as a script.
Every sample completes with a 4-byte int32 equal to ``index * 3`` so accuracy
logs can be decoded and checked exactly.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import mlperf_loadgen as lg
import numpy as np

QSL_SIZE = 64

SCENARIOS = {
    "SingleStream": lg.TestScenario.SingleStream,
    "MultiStream": lg.TestScenario.MultiStream,
    "Server": lg.TestScenario.Server,
    "Offline": lg.TestScenario.Offline,
}
MODES = {
    "performance": lg.TestMode.PerformanceOnly,
    "accuracy": lg.TestMode.AccuracyOnly,
}


def build_settings(scenario: str, mode: str, invalid: bool) -> lg.TestSettings:
    settings = lg.TestSettings()
    settings.scenario = SCENARIOS[scenario]
    settings.mode = MODES[mode]
    settings.min_duration_ms = 300
    # Early stopping needs >= 64 queries to estimate p90 (SingleStream) and
    # >= 662 for p99 (MultiStream; fewer makes the run INVALID). SingleStream
    # also logs a p99 estimate (early_stopping_latency_ms) only past 662
    # queries, which a slow or busy host would not reach in 300 ms.
    settings.min_query_count = 700 if scenario in ("SingleStream", "MultiStream") else 100
    # Small expected latencies make LoadGen pre-generate enough queries to
    # fill min_duration; the defaults (1 ms / 8 ms) would run out early.
    settings.single_stream_expected_latency_ns = 20000
    settings.multi_stream_expected_latency_ns = 20000
    settings.server_target_qps = 2000
    # --invalid: no SUT answers within 1 ns, so p99 misses the bound (and
    # early stopping fails) deterministically. The valid bound is loose (1 s):
    # with ~600 queries, early stopping at p99 tolerates no query over it, and
    # a busy CI host can stall for 100+ ms.
    settings.server_target_latency_ns = 1 if invalid else 1_000_000_000
    settings.offline_expected_qps = 2000
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path)
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("mode", choices=sorted(MODES))
    parser.add_argument(
        "--invalid", action="store_true", help="Server only: a 1 ns latency bound makes the run INVALID"
    )
    args = parser.parse_args()
    args.outdir.mkdir(parents=True, exist_ok=True)

    # A zero-cost SUT finishes SingleStream/MultiStream queries in a few
    # microseconds, so LoadGen's pre-generated schedule runs out before
    # min_duration (INVALID), and an Offline query ends in under a millisecond.
    # Fixed sleeps make every run last min_duration regardless of host speed.
    if args.scenario in ("SingleStream", "MultiStream"):
        per_query_s, per_sample_s = 0.0001, 0.0
    elif args.scenario == "Offline" and args.mode == "performance":
        # ~1800 samples/s: the 660-sample query takes ~0.37 s > min_duration.
        per_query_s, per_sample_s = 0.0, 1 / 1800
    else:
        per_query_s, per_sample_s = 0.0, 0.0

    def issue(ids: list[int], indices: list[int]) -> None:
        delay = per_query_s + per_sample_s * len(ids)
        if delay:
            time.sleep(delay)
        payload = np.asarray(indices, dtype=np.int32) * 3
        base = payload.ctypes.data
        responses = [lg.QuerySampleResponse(qid, base + 4 * i, 4) for i, qid in enumerate(ids)]
        # `payload` stays referenced until this call returns; LoadGen copies
        # the bytes only while logging accuracy inside it.
        lg.QuerySamplesComplete(responses)

    def flush() -> None:
        pass

    def load(indices: list[int]) -> None:
        pass

    def unload(indices: list[int]) -> None:
        pass

    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = str(args.outdir)
    log_settings.log_output.copy_summary_to_stdout = False
    log_settings.enable_trace = False

    sut = lg.ConstructFastSUT(issue, flush)
    qsl = lg.ConstructQSL(QSL_SIZE, QSL_SIZE, load, unload)
    try:
        lg.StartTestWithLogSettings(
            sut, qsl, build_settings(args.scenario, args.mode, args.invalid), log_settings
        )
    finally:
        lg.DestroyQSL(qsl)
        lg.DestroyFastSUT(sut)


if __name__ == "__main__":
    main()
