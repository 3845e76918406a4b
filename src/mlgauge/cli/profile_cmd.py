"""``mlgauge profile TASK`` / ``mlgauge profile -- python script.py ...``: where steps spend their time."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from mlgauge import paths
from mlgauge.cli.output import console, err_console, print_json
from mlgauge.cli.profile_output import print_profile
from mlgauge.errors import UsageError


def register(sub) -> None:
    p = sub.add_parser(
        "profile",
        help="profile a task's or a script's steps: ops, modules, oneDNN primitives, rooflines; "
        "'profile diff A B' compares two",
        description="mlgauge profile TASK [--train|--infer] | mlgauge profile -- python script.py [args] | "
        "mlgauge profile diff BEFORE AFTER",
    )
    p.add_argument("--warmup", type=int, default=2, help="optimizer steps to skip first (default 2)")
    p.add_argument("--steps", type=int, default=5,
                   help="optimizer steps to record (default 5); 0 records the whole script")  # fmt: skip
    p.add_argument("--out", type=Path, help="where the trace, the oneDNN log and the summary go")
    p.add_argument("--top", type=int, default=15, help="ops to list (default 15)")
    p.add_argument("--timeout", type=float, help="stop the script after this many seconds")
    p.add_argument("--summary-only", action="store_true",
                   help="op times only: the lightest capture (no shapes, FLOPs, rooflines or oneDNN log)")
    p.add_argument("--replay-budget", type=float, default=15.0, metavar="SECONDS",
                   help="time for replaying the heaviest ops alone, for the ideal step time (default 15; 0: no replay)")
    p.add_argument("--label", default="", help="a name for this profile in the results (e.g. baseline)")
    p.add_argument("--db", help="results database: a file path or a postgresql:// URL")
    p.add_argument("--json", action="store_true")
    p.add_argument("command", nargs=argparse.REMAINDER,
                   help="TASK [--train|--infer], or -- python script.py [args], or diff BEFORE AFTER")  # fmt: skip
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
        raise UsageError("what should be profiled?",
                         hint="mlgauge profile ssd --train, or mlgauge profile -- python train.py --your-args")  # fmt: skip
    run_id = new_run_id()
    out = args.out or paths.default_runs_dir() / f"profile-{run_id}"
    if args.command[0] != "--" and _is_task(command[0]):
        capture = _capture_task(command, args, out)
    else:
        if not args.json:
            err_console.print(f"Profiling {escape(' '.join(command))} ({args.warmup} warm-up + {args.steps} steps) ...")
        capture = capture_script(command, out, warmup=args.warmup, steps=args.steps, timeout_s=args.timeout,
                                 summary_only=args.summary_only)  # fmt: skip
    if args.replay_budget < 0:
        raise UsageError("--replay-budget must be 0 or more seconds", hint="Use 0 to skip the replay")
    if args.replay_budget and not args.summary_only and not args.json:
        err_console.print(f"Replaying the heaviest ops alone (up to {args.replay_budget:g} s) ...")
    summary = analyze_capture(capture, replay_budget_s=args.replay_budget)
    paths.write_text_atomic(capture.folder / "summary.json", json.dumps(summary.to_dict(), indent=2, default=str))
    warnings = capture.warnings + summary.warnings
    found = hints(summary)
    location = _store(capture, summary, found, warnings, run_id, args)
    if args.json:
        print_json({"run_id": run_id, "folder": str(capture.folder), "database": location,
                    "exit_code": capture.exit_code, "warnings": warnings,
                    "bottlenecks": [asdict(h) for h in found], "summary": summary.to_dict()})  # fmt: skip
        return 0 if capture.exit_code == 0 else 1
    print_profile(summary, capture, warnings, args.top)
    for h in found[:3]:
        console.print(f"[bold]Bottleneck:[/bold] {escape(h.title)}. [dim]Try:[/dim] {escape(h.advice)}")
    console.print(f"Stored as {run_id} in {location}: mlgauge report {run_id}")
    return 0 if capture.exit_code == 0 else 1


def _store(capture, summary, found, warnings: list[str], run_id: str, args: argparse.Namespace) -> str:
    """The profile as a record in the results database (and profile_record.json in its folder)."""
    from mlgauge.profiler.peaks import machine_peaks
    from mlgauge.results.profile_record import ProfileRecord
    from mlgauge.results.store import open_store

    record = ProfileRecord.from_summary(
        summary.to_dict(), target=capture.target, folder=capture.folder,
        peaks=None if capture.summary_only else machine_peaks().to_dict(),
        bottlenecks=[asdict(h) for h in found], run_id=run_id, label=args.label, warnings=warnings,
    )  # fmt: skip
    record.save(capture.folder)
    with open_store(args.db) as store:
        store.add_profile(record)
        return store.location


def _is_task(word: str) -> bool:
    return not (word.endswith(".py") or Path(word).name.startswith("python") or word.startswith("-"))


def _capture_task(words: list[str], args: argparse.Namespace, out: Path):
    """``TASK [--train|--infer] [task options]``; the common options may follow the task too."""
    from mlgauge.profiler.capture import capture_task
    from mlgauge.profiler.targets import resolve_target

    parser = argparse.ArgumentParser(prog="mlgauge profile TASK", add_help=False)
    parser.add_argument("task")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--train", dest="mode", action="store_const", const="train")
    mode.add_argument("--infer", dest="mode", action="store_const", const="infer")
    parser.add_argument("--variant", help="training stand-in variant: default or tiny")
    parser.add_argument("--global-batch-size", type=int)
    parser.add_argument("--fused-focal-loss", action="store_true", default=None)
    parser.add_argument("--batch", type=int, help="inference batch size (default 32)")
    parser.add_argument("--threads", type=int, help="inference threads (default: one per core)")
    common = (("--warmup", int), ("--steps", int), ("--out", Path), ("--top", int), ("--timeout", float),
              ("--replay-budget", float), ("--label", str), ("--db", str))  # fmt: skip
    for flag, kind in common:
        parser.add_argument(flag, type=kind, default=getattr(args, flag[2:].replace("-", "_")))
    parser.add_argument("--summary-only", action="store_true", default=args.summary_only)
    parser.add_argument("--json", action="store_true", default=args.json)
    own, unknown = parser.parse_known_args(words)
    if unknown:
        raise UsageError(f"profile {own.task} does not take {' '.join(unknown)}",
                         hint="See mlgauge profile --help; script arguments go after --: "
                              "mlgauge profile -- python x.py ARGS")  # fmt: skip
    for key in ("warmup", "steps", "out", "top", "timeout", "replay_budget", "label", "db", "summary_only", "json"):
        setattr(args, key, getattr(own, key))
    target = resolve_target(own.task, own.mode)
    options = {"variant": own.variant, "global_batch_size": own.global_batch_size,
               "fused_focal_loss": own.fused_focal_loss} if target.mode == "train" else \
              {"batch": own.batch, "threads": own.threads}  # fmt: skip
    given = [k for k, v in vars(own).items() if v is not None and k not in options
             and k in ("variant", "global_batch_size", "fused_focal_loss", "batch", "threads")]  # fmt: skip
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise UsageError(f"{flag} does not apply to a {target.mode} profile", hint=f"Leave {flag} out")
    _check_target(target, options, args.json)
    if not args.json:
        err_console.print(f"Profiling {escape(target.label)} ({args.warmup} warm-up + {args.steps} steps) ...")
    return capture_task(target, args.out or out, warmup=args.warmup, steps=args.steps, timeout_s=args.timeout,
                        summary_only=args.summary_only, options=options)  # fmt: skip


def _check_target(target, options: dict, quiet: bool) -> None:
    """What can fail before the child starts: options the benchmark does not take, an unprepared task."""
    from mlgauge.cli.output import prepare_with_progress

    if target.mode == "train":
        from mlgauge.training.benchmarks import benchmark_class
        from mlgauge.training.session import check_options

        given = {k: v for k, v in options.items() if v is not None and k != "variant"}
        check_options(benchmark_class(target.name), target.name, given)
        benchmark_class(target.name)(None, variant=options["variant"] or "default", **given)
    else:
        from mlgauge.tasks import get_task

        if not get_task(target.name).is_prepared():
            prepare_with_progress(target.name, quiet)


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
