"""How much does mlgauge's harness cost? The null backend answers at once, so
everything measured is LoadGen plus mlgauge's SUT path (QSL gather, batching,
post-processing, responses).

Goals (README): Offline >= 300k samples/s and Server >= 100k QPS VALID on 2 cores.
For reference the same run also measures bare LoadGen with a no-op inline SUT.

    python benchmarks/harness_overhead.py [--duration-ms 10000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from mlgauge import plan_inference, run_inference
from mlgauge.loadgen.session import find_peak

BARE_LOADGEN = textwrap.dedent(
    """
    import sys, mlperf_loadgen as lg
    scenario, qps, duration, out = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    def issue(ids, idx):
        lg.QuerySamplesComplete([lg.QuerySampleResponse(i, 0, 0) for i in ids])
    s = lg.TestSettings()
    s.scenario = getattr(lg.TestScenario, scenario)
    s.mode = lg.TestMode.PerformanceOnly
    s.min_duration_ms = duration
    s.min_query_count = 100
    s.server_target_qps = qps
    s.offline_expected_qps = qps
    s.server_target_latency_ns = 15_000_000
    ls = lg.LogSettings(); ls.log_output.outdir = out; ls.enable_trace = False
    sut = lg.ConstructFastSUT(issue, lambda: None)
    qsl = lg.ConstructQSL(1024, 1024, lambda x: None, lambda x: None)
    lg.StartTestWithLogSettings(sut, qsl, s, ls)
    """
)


def bare_loadgen(scenario: str, qps: float, duration_ms: int) -> tuple[float, str]:
    from mlgauge.loadgen.logparse import parse_detail_log, validity

    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "-c", BARE_LOADGEN, scenario, str(qps), str(duration_ms), out], check=True)
        log = parse_detail_log(Path(out) / "mlperf_log_detail.txt")
        key = "result_samples_per_second" if scenario == "Offline" else "result_completed_samples_per_sec"
        return float(log.values[key]), validity(log)[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration-ms", type=int, default=10_000, help="LoadGen min_duration per run (default 10 s)")
    ap.add_argument("--offline-qps", type=float, default=1_000_000, help="expected Offline rate (sizes the query)")
    ap.add_argument("--server-bound", type=float, default=400_000, help="upper bound for the Server search")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as runs:
        common = dict(task="resnet50", backend="null", modes=["performance"], runs_dir=Path(runs))
        flags = {"min_duration": args.duration_ms}
        offline_plan = plan_inference(scenarios=["Offline"], flags={**flags, "target_qps": args.offline_qps}, **common)
        (offline,) = run_inference(offline_plan)
        server_plan = plan_inference(scenarios=["Server"], flags=flags, find_peak=True, **common)
        # Bisect below a fixed bound rather than the Offline rate: that is the question asked.
        spec = server_plan.specs()[0]
        server = find_peak(server_plan, spec, [], lambda *a: None, upper=args.server_bound)

    bare_offline, bare_offline_valid = bare_loadgen("Offline", args.offline_qps, args.duration_ms)
    figures = {
        "mlgauge_null_offline_samples_per_s": offline.metric.value,
        "mlgauge_null_offline_validity": offline.validity,
        "mlgauge_null_server_peak_valid_qps": server.metric.value if server.harness["find_peak"]["found"] else 0.0,
        "server_probes": server.harness["find_peak"]["probes"],
        "bare_loadgen_offline_samples_per_s": bare_offline,
        "bare_loadgen_offline_validity": bare_offline_valid,
        "duration_ms": args.duration_ms,
        "max_batch": offline.harness["max_batch"],
        "workers": offline.harness["workers"],
    }
    print(f"null backend, Offline : {figures['mlgauge_null_offline_samples_per_s']:>12,.0f} samples/s ({offline.validity})")
    print(f"null backend, Server  : {figures['mlgauge_null_server_peak_valid_qps']:>12,.0f} QPS, highest VALID of {len(figures['server_probes'])} probes")
    print(f"bare LoadGen, Offline : {bare_offline:>12,.0f} samples/s ({bare_offline_valid})")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
