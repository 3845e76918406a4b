"""Does LoadGen traffic cost the backend anything? On the default task:

* Offline samples/s through LoadGen vs the same backend's raw batched throughput,
  measured in the same worker process just before and just after the test (same
  model instances, threads and batch size; --raw-s each) and averaged, so that
  the machine drifting during the test is not charged to the harness.
  Goal: >= 95%.
* Server: the highest VALID target_qps found by bisection vs that Offline rate.
  Goal: >= 80%.

Each repeat is a fresh set of worker processes; the medians are reported.

    python benchmarks/backend_efficiency.py [--backend onnxruntime] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from mlgauge import plan_inference, run_inference
from mlgauge.loadgen.session import find_peak


def one_repeat(backend: str, duration_ms: int, raw_s: float, runs: Path, server: bool = True) -> dict:
    common = dict(task="resnet50", backend=backend, modes=["performance"], runs_dir=runs)
    flags = {"min_duration": duration_ms}
    plan = plan_inference(scenarios=["Offline"], flags=flags, calibration_s=raw_s, **common)
    plan.base = plan.base.with_(raw_after_s=raw_s)
    (offline,) = run_inference(plan)
    cal = offline.harness["calibration"]
    raw = (cal["batch_throughput"] + cal["raw_throughput_after"]) / 2
    peak, probes = 0.0, []
    if server:
        server_plan = plan_inference(scenarios=["Server"], flags=flags, find_peak=True, **common)
        found = find_peak(server_plan, server_plan.specs()[0], [offline], lambda *a: None)
        probes = found.harness["find_peak"]["probes"]
        peak = found.metric.value if found.harness["find_peak"]["found"] else 0.0
    return {
        "raw_batched_samples_per_s": raw,
        "raw_before": cal["batch_throughput"],
        "raw_after": cal["raw_throughput_after"],
        "offline_samples_per_s": offline.metric.value,
        "offline_validity": offline.validity,
        "offline_vs_raw": offline.metric.value / raw,
        "server_peak_valid_qps": peak,
        "server_vs_offline": peak / offline.metric.value,
        "server_probes": probes,
        "shape": {k: offline.harness[k] for k in ("workers", "threads_per_worker", "max_batch")},
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration-ms", type=int, default=10_000, help="LoadGen min_duration per run (default 10 s)")
    ap.add_argument("--raw-s", type=float, default=3.0, help="length of the raw-throughput measurement")
    ap.add_argument("--offline-only", action="store_true", help="skip the Server search")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as runs:
        for i in range(args.repeats):
            row = one_repeat(args.backend, args.duration_ms, args.raw_s, Path(runs), server=not args.offline_only)
            rows.append(row)
            print(
                f"repeat {i + 1}: raw {row['raw_batched_samples_per_s']:,.0f}/s, Offline {row['offline_samples_per_s']:,.0f}/s "
                f"({row['offline_vs_raw']:.1%}, {row['offline_validity']}), Server peak VALID {row['server_peak_valid_qps']:,.0f} QPS "
                f"({row['server_vs_offline']:.1%} of Offline)",
                flush=True,
            )
    med = {k: statistics.median(r[k] for r in rows) for k in ("offline_vs_raw", "server_vs_offline", "offline_samples_per_s", "server_peak_valid_qps", "raw_batched_samples_per_s")}
    print(
        f"median over {len(rows)}: Offline/raw {med['offline_vs_raw']:.1%} (goal >= 95%), "
        f"Server peak/Offline {med['server_vs_offline']:.1%} (goal >= 80%)"
    )
    if args.json:
        args.json.write_text(json.dumps({"backend": args.backend, "median": med, "repeats": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
