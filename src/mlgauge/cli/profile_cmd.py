"""``mlgauge profile -- python script.py ...``: where a script's steps spend their time, op by op."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from mlgauge import paths
from mlgauge.cli.output import console, err_console, print_json
from mlgauge.errors import UsageError


def register(sub) -> None:
    p = sub.add_parser(
        "profile",
        help="profile a script's training steps: ops, oneDNN primitives, rooflines; 'profile diff A B' compares two",
    )
    p.add_argument("--warmup", type=int, default=2, help="optimizer steps to skip first (default 2)")
    p.add_argument("--steps", type=int, default=5,
                   help="optimizer steps to record (default 5); 0 records the whole script")  # fmt: skip
    p.add_argument("--out", type=Path, help="where the trace, the oneDNN log and the summary go")
    p.add_argument("--top", type=int, default=15, help="ops to list (default 15)")
    p.add_argument("--timeout", type=float, help="stop the script after this many seconds")
    p.add_argument("--summary-only", action="store_true",
                   help="op times only: the lightest capture (no shapes, FLOPs, rooflines or oneDNN log)")
    p.add_argument("--json", action="store_true")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- python script.py [args]")
    p.set_defaults(handler=execute)


def execute(args: argparse.Namespace) -> int:
    from mlgauge.loadgen.session import new_run_id
    from mlgauge.profiler.capture import capture_script
    from mlgauge.profiler.hints import hints
    from mlgauge.profiler.report import analyze_capture

    if args.command[:1] == ["diff"]:
        return _diff(args)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise UsageError("what should be profiled?", hint="mlgauge profile -- python train.py --your-args")
    out = args.out or paths.default_runs_dir() / f"profile-{new_run_id()}"
    if not args.json:
        err_console.print(f"Profiling {escape(' '.join(command))} ({args.warmup} warm-up + {args.steps} steps) ...")
    capture = capture_script(
        command, out, warmup=args.warmup, steps=args.steps, timeout_s=args.timeout, summary_only=args.summary_only
    )
    summary = analyze_capture(capture)
    (capture.folder / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2, default=str))
    warnings = capture.warnings + summary.warnings
    found = hints(summary)
    if args.json:
        print_json({"folder": str(capture.folder), "exit_code": capture.exit_code, "warnings": warnings,
                    "bottlenecks": [asdict(h) for h in found], "summary": summary.to_dict()})  # fmt: skip
        return 0 if capture.exit_code == 0 else 1
    _print(summary, capture, warnings, args.top)
    for h in found[:3]:
        console.print(f"[bold]Bottleneck:[/bold] {escape(h.title)}. [dim]Try:[/dim] {escape(h.advice)}")
    return 0 if capture.exit_code == 0 else 1


def _diff(args: argparse.Namespace) -> int:
    from mlgauge.profiler.diff import diff_profiles

    # options may follow the folders: `profile diff A B --top 5 --json`
    parser = argparse.ArgumentParser(prog="mlgauge profile diff", add_help=False)
    parser.add_argument("folders", nargs="*", type=Path)
    parser.add_argument("--top", type=int, default=args.top)
    parser.add_argument("--json", action="store_true", default=args.json)
    own, unknown = parser.parse_known_args(args.command[1:])
    if len(own.folders) != 2 or unknown:
        raise UsageError("profile diff takes two profile folders", hint="mlgauge profile diff BEFORE AFTER [--top N]")
    args.top, args.json = own.top, own.json
    diff = diff_profiles(own.folders[0], own.folders[1])
    if args.json:
        print_json(diff.to_dict())
        return 0
    before, after = diff.before_step_ms, diff.after_step_ms
    if before and after:
        console.print(f"Step time {before:.1f} ms -> {after:.1f} ms ({diff.speedup:.2f}x)")
    for region in diff.regions[:5]:
        console.print(f"Region {escape(region.name)}: {region.before_ms:.2f} -> {region.after_ms:.2f} ms per step")
    table = Table(title="Self time per step, largest changes first", title_justify="left")
    for col in ("Op", "Before ms", "After ms", "Change ms"):
        table.add_column(col, justify="left" if col == "Op" else "right")
    for op in diff.ops[: args.top]:
        colour = "green" if op.change_ms < 0 else "red"
        table.add_row(escape(op.name), f"{op.before_ms:.2f}", f"{op.after_ms:.2f}",
                      f"[{colour}]{op.change_ms:+.2f}[/{colour}]")  # fmt: skip
    console.print(table)
    return 0


def _print(summary, capture, warnings: list[str], top: int) -> None:
    steps = f"{summary.steps} steps of {summary.step_ms:.1f} ms" if summary.steps else "the whole script"
    console.print(f"Profiled {steps}; {summary.coverage:.1%} of that time inside named PyTorch ops.")
    table = Table(title="Top ops by self time", title_justify="left")
    for col in ("Op", "Calls", "Self ms", "Share", "Bound", "GFLOP/s", "GB/s", "Efficiency"):
        table.add_column(col, justify="left" if col in ("Op", "Bound") else "right")
    for r in summary.ops[:top]:
        table.add_row(
            escape(r.name), str(r.calls), f"{r.self_ms:.2f}", f"{r.share:.1%}", r.bound or "-",
            f"{r.achieved_gflops:.1f}" if r.achieved_gflops is not None else "-",
            f"{r.achieved_gbs:.1f}" if r.achieved_gbs is not None else "-",
            f"{r.efficiency:.0%}" if r.efficiency is not None else "-",
        )  # fmt: skip
    console.print(table)
    if summary.regions:
        profiled = summary.profiled_ms or 1.0
        parts = ", ".join(f"{escape(name)} {v['ms']:.2f} ms ({v['ms'] / profiled:.1%})" for name, v in list(summary.regions.items())[:8])
        console.print(f"Named regions (record_function): {parts}")
    dnn = summary.onednn
    if dnn:
        kinds = ", ".join(f"{k} {v['ms']:.2f} ms" for k, v in list(dnn["by_kind"].items())[:6])
        dirs = ", ".join(f"{k} {v['ms']:.2f} ms" for k, v in dnn["by_direction"].items())
        console.print(f"oneDNN {escape(str(dnn['version']))}: {dnn['total_ms']:.2f} ms in primitives: {escape(kinds)}")
        console.print(f"  by direction: {escape(dirs)}")
        reorder_ms = dnn["reorder_ms"]
        if reorder_ms:
            console.print(f"  reorders (memory-format conversions): {reorder_ms:.2f} ms, "
                          f"{reorder_ms / dnn['total_ms']:.0%} of oneDNN time")  # fmt: skip
        if "attributed_fraction" in dnn:
            console.print(f"  {dnn['attributed_fraction']:.0%} of primitive time attributed to the ops that issued it")
    for warning in warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    console.print(f"Trace (Chrome/Perfetto): {capture.trace_path}; oneDNN log: {capture.onednn_path}")
