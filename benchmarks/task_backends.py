"""Every task on every installed backend, in one run: SingleStream p90 latency and
Offline samples/s, on each task's synthetic stand-in (or --dataset for one task).

For the MLPerf Mobile tasks it also compares ExecuTorch with ONNX Runtime: the goal
is that each reaches >= 90% of the faster of the two (Offline samples/s, and the
inverse of SingleStream p90).

Runs use mlgauge's quick style with --duration-ms per test, so the figures are
comparable with each other, not MLPerf results. Each test is its own worker process.
With --repeats N every (task, backend) is measured N times, the backends taking turns
within each round so that a machine whose speed drifts favours none; medians are reported.

    python benchmarks/task_backends.py [--tasks resnet50,edsr] [--backends torch,onnxruntime]
                                       [--duration-ms 10000] [--repeats 3] [--json out.json] [--markdown out.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mlgauge import plan_inference, run_inference
from mlgauge.backends import is_installed
from mlgauge.errors import MlgaugeError
from mlgauge.tasks import get_task, task_names

BACKENDS = ("torch", "onnxruntime", "executorch", "litert")
MOBILE_ROUND = "mobile-v6.0"
GOAL = 0.90  # each mobile runtime within 10% of the faster one


def measure(task: str, backend: str, duration_ms: int, runs: Path, dataset: Path | None) -> dict:
    """One task on one backend: SingleStream then Offline, performance mode."""
    row: dict = {"task": task, "backend": backend}
    try:
        plan = plan_inference(
            task=task,
            backend=backend,
            scenarios=["SingleStream", "Offline"],
            modes=["performance"],
            flags={"min_duration": duration_ms},
            dataset=dataset,
            runs_dir=runs,
        )
        records = run_inference(plan)
    except MlgaugeError as exc:
        row["error"] = str(exc).splitlines()[0]
        return row
    for record in records:
        if record.scenario == "SingleStream":
            row["ss_p90_ms"] = record.latency_ns["p90"] / 1e6
            row["ss_validity"] = record.validity
        else:
            row["offline_samples_per_s"] = record.metric.value
            row["offline_validity"] = record.validity
        row["dataset"] = record.dataset
    return row


def median_row(runs: list[dict]) -> dict:
    """One (task, backend)'s repeats -> medians, keeping every value seen."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return runs[0]
    row = {k: ok[0][k] for k in ("task", "backend", "dataset", "rules_round")}
    for key in ("ss_p90_ms", "offline_samples_per_s"):
        row[key] = statistics.median(r[key] for r in ok)
        row[f"{key}_all"] = [r[key] for r in ok]
    for key in ("ss_validity", "offline_validity"):
        seen = sorted({r[key] for r in ok})
        row[key] = seen[0] if len(seen) == 1 else "/".join(seen)
    row["repeats"] = len(ok)
    return row


def mobile_comparison(rows: list[dict]) -> list[dict]:
    """ExecuTorch vs ONNX Runtime per mobile task, as fractions of the faster one."""
    out = []
    for task in sorted({r["task"] for r in rows if r.get("rules_round") == MOBILE_ROUND}):
        pair = {r["backend"]: r for r in rows if r["task"] == task and "error" not in r}
        if not {"executorch", "onnxruntime"} <= set(pair):
            continue
        et, ort = pair["executorch"], pair["onnxruntime"]
        best_off = max(et["offline_samples_per_s"], ort["offline_samples_per_s"])
        best_lat = min(et["ss_p90_ms"], ort["ss_p90_ms"])
        entry = {"task": task}
        for name, r in (("executorch", et), ("onnxruntime", ort)):
            entry[f"{name}_offline_share"] = r["offline_samples_per_s"] / best_off
            entry[f"{name}_ss_share"] = best_lat / r["ss_p90_ms"]
        entry["meets_goal"] = all(v >= GOAL for k, v in entry.items() if k.endswith("_share"))
        out.append(entry)
    return out


def markdown(rows: list[dict], comparison: list[dict]) -> str:
    lines = ["| Task | Backend | SingleStream p90 | Offline samples/s |", "|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['task']} | {r['backend']} | n/a | n/a ({r['error']}) |")
            continue
        ss = f"{r['ss_p90_ms']:.2f} ms" + ("" if r["ss_validity"] == "VALID" else f" ({r['ss_validity']})")
        off = f"{r['offline_samples_per_s']:,.0f}" + ("" if r["offline_validity"] == "VALID" else f" ({r['offline_validity']})")
        lines.append(f"| {r['task']} | {r['backend']} | {ss} | {off} |")
    if comparison:
        lines += ["", "| Mobile task | ExecuTorch (Offline / SS) | ONNX Runtime (Offline / SS) | Both >= 90% |", "|---|---|---|---|"]
        for c in comparison:
            lines.append(
                f"| {c['task']} | {c['executorch_offline_share']:.0%} / {c['executorch_ss_share']:.0%} "
                f"| {c['onnxruntime_offline_share']:.0%} / {c['onnxruntime_ss_share']:.0%} | {'yes' if c['meets_goal'] else 'no'} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", help="comma-separated (default: every task)")
    ap.add_argument("--backends", help="comma-separated (default: every installed one of " + ", ".join(BACKENDS) + ")")
    ap.add_argument("--duration-ms", type=int, default=10_000, help="LoadGen min_duration per test (default 10 s)")
    ap.add_argument("--repeats", type=int, default=1, help="measurements per (task, backend); medians reported")
    ap.add_argument("--dataset", type=Path, help="a real dataset folder (only with one task)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--markdown", type=Path)
    args = ap.parse_args()

    tasks = args.tasks.split(",") if args.tasks else task_names()
    if args.dataset and len(tasks) != 1:
        print("error: --dataset needs exactly one --tasks entry", file=sys.stderr)
        return 2
    wanted = args.backends.split(",") if args.backends else list(BACKENDS)
    backends = [b for b in wanted if is_installed(b)]
    skipped = sorted(set(wanted) - set(backends))
    if skipped:
        print(f"not installed, skipped: {', '.join(skipped)}", flush=True)

    runs: dict[tuple[str, str], list[dict]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for task in tasks:
                rules_round = get_task(task).rules_round
                # Alternate the order each round: neither backend always runs right after the other.
                order = backends if repeat % 2 == 0 else backends[::-1]
                for backend in order:
                    row = measure(task, backend, args.duration_ms, Path(tmp), args.dataset)
                    row["rules_round"] = rules_round
                    runs.setdefault((task, backend), []).append(row)
                    if "error" in row:
                        print(f"{task:14} {backend:12} n/a: {row['error']}", flush=True)
                    else:
                        print(
                            f"[{repeat + 1}/{args.repeats}] {task:14} {backend:12} SS p90 {row['ss_p90_ms']:8.2f} ms "
                            f"({row['ss_validity']})  Offline {row['offline_samples_per_s']:10,.1f}/s ({row['offline_validity']})",
                            flush=True,
                        )
    rows = [median_row(runs[(t, b)]) for t in tasks for b in backends]
    comparison = mobile_comparison(rows)
    table = markdown(rows, comparison)
    print()
    print(table)
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.markdown:
        args.markdown.write_text(table)
    if args.json:
        payload = {"duration_ms": args.duration_ms, "repeats": args.repeats, "rows": rows, "mobile": comparison}
        args.json.write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
