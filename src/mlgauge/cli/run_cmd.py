"""``mlgauge run``: the inference benchmark on the official LoadGen."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from mlgauge import inference
from mlgauge.cli.output import console, err_console, prepare_with_progress, print_json, results_table, verdict
from mlgauge.config.run_spec import MODES, PRECISIONS
from mlgauge.errors import UsageError
from mlgauge.results.store import open_store
from mlgauge.rules import DEFAULT_ROUND
from mlgauge.tasks import DEFAULT_TASK

# CLI flag -> LoadGen user.conf key, for the non-compliant quick overrides.
CONF_FLAGS = {
    "min_duration": "min_duration",
    "max_duration": "max_duration",
    "min_query_count": "min_query_count",
    "target_qps": "target_qps",
    "target_latency": "target_latency",
}


def _scenarios(values: list[str] | None) -> list[str] | None:
    """None: every scenario of the task's rules round."""
    if not values:
        return None
    out = []
    for v in values:
        out += [s.strip() for s in v.split(",") if s.strip()]
    return None if out == ["all"] else out


def _names(values: list[str] | None) -> list[str]:
    return [n.strip() for v in values or [] for n in v.split(",") if n.strip()]


def _one_path(values: list[str] | None, flag: str) -> Path | None:
    if not values:
        return None
    if len(values) > 1:
        raise UsageError(f"{flag} was given {len(values)} times; one task takes one", hint=f"Per-task {flag} TASK=PATH entries go with --suite")
    return Path(values[0])


def _per_task_paths(values: list[str] | None, flag: str) -> dict[str, Path]:
    """``TASK=PATH`` entries of a suite run."""
    out: dict[str, Path] = {}
    for value in values or []:
        task, sep, path = value.partition("=")
        if not sep or not task.strip() or not path.strip():
            raise UsageError(f"{flag} {value!r} with --suite needs the form TASK=PATH", hint=f"e.g. {flag} resnet50=/data/imagenet")
        if task.strip() in out:
            raise UsageError(f"{flag} names {task.strip()} twice")
        out[task.strip()] = Path(path.strip())
    return out


def _at_least_one(text: str) -> int:
    value = int(text) if text.strip().lstrip("-").isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, not {text!r}")
    return value


def register(sub) -> None:
    p = sub.add_parser("run", help="run an inference benchmark through LoadGen (the default command)")
    p.add_argument("--task", default=DEFAULT_TASK, help=f"task to run (default {DEFAULT_TASK}; see 'mlgauge list')")
    p.add_argument("--suite", help="run a whole suite instead: edge, datacenter or mobile (see 'mlgauge list')")
    p.add_argument("--audits", action="store_true", help="with --suite: also run each benchmark's required compliance tests")
    p.add_argument("--cooldown", type=float, metavar="S", help="with --suite: pause between tasks' performance runs (default: the suite's rule in --valid, none in --quick)")
    p.add_argument("--scenario", action="append", metavar="NAME", help="SingleStream, MultiStream, Server, Offline or all; repeat or comma-separate (default all)")
    p.add_argument("--mode", choices=[*MODES, "both"], default="both", help="performance, accuracy or both (default)")
    p.add_argument("--backend", help="inference backend (default: the best installed)")
    style = p.add_mutually_exclusive_group()
    style.add_argument("--quick", dest="style", action="store_const", const="quick", help="short runs for a first look (default)")
    style.add_argument("--valid", dest="style", action="store_const", const="valid", help="official MLPerf durations and counts")
    p.set_defaults(style="quick")
    p.add_argument("--find-peak", action="store_true", help="bisect Server target_qps to the highest VALID value")
    p.add_argument("--repeats", type=_at_least_one, default=1, metavar="N", help="run each performance test N times (for 'mlgauge compare' statistics)")
    p.add_argument("--audit", action="append", metavar="TEST", help="compliance tests after the runs: TEST01, TEST04 (repeat or comma-separate)")
    p.add_argument("--conf", type=Path, help="LoadGen user.conf with overrides (model.scenario.key = value)")
    p.add_argument("--dataset", action="append", metavar="PATH", help="real dataset folder (default: the synthetic stand-in); with --suite: TASK=PATH, repeatable")
    p.add_argument("--weights", action="append", metavar="PATH", help="model weights: .onnx, .pte, .tflite or a PyTorch state dict; with --suite: TASK=PATH, repeatable")
    p.add_argument("--count", type=int, help="use only the first N samples of the dataset")
    g = p.add_argument_group("system under test")
    g.add_argument("--threads", type=int, default=0, help="intra-op threads per worker (default: per scenario)")
    g.add_argument("--workers", type=int, default=0, help="model instances for batching scenarios (default: one per core)")
    g.add_argument("--max-batch", type=int, default=0, help="largest batch (default: 32; 8 = one query in MultiStream)")
    g.add_argument("--max-wait-ms", type=float, default=1.0, help="Server: longest wait for a batch to fill when idle")
    g.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    g.add_argument("--compile", action="store_true", help="torch backend: use torch.compile")
    g.add_argument("--calibration-s", type=float, default=1.0, help="untimed probe of the backend before each test (seconds)")
    o = p.add_argument_group("LoadGen overrides (not valid for submission)")
    o.add_argument("--min-duration", type=float, metavar="MS")
    o.add_argument("--max-duration", type=float, metavar="MS")
    o.add_argument("--min-query-count", type=int, metavar="N")
    o.add_argument("--target-qps", type=float, metavar="QPS")
    o.add_argument("--target-latency", type=float, metavar="MS")
    p.add_argument("--rules", help=f"MLPerf rules round (default: the task's own; {DEFAULT_ROUND} or mobile-v6.0)")
    g.add_argument("--precision", choices=PRECISIONS, default="fp32", help="int8: post-training quantization (onnxruntime, executorch)")
    m = p.add_argument_group("model (dlrm-v2 on its stand-in)")
    m.add_argument("--embedding", choices=("full", "robe", "hashing", "qr"),
                   help="the embedding layer (default full tables); its stand-in model is trained once and cached")
    m.add_argument("--robe-size", metavar="SIZE", help="--embedding robe: the shared array, e.g. 1MB")
    m.add_argument("--compression", type=float, help="--embedding hashing|qr: how many times fewer rows")
    p.add_argument("--output-dir", type=Path, help="where run logs go (default: the mlgauge data directory)")
    p.add_argument("--db", type=str, help="results database: a file, or postgresql://user:password@host:port/dbname (default: the mlgauge data directory)")
    p.add_argument("--json", action="store_true", help="print the records as JSON instead of a table")
    p.set_defaults(handler=execute)


def _progress_listener(bar: Progress, with_task: bool):
    ids = {}

    def listener(event, spec, record):
        label = f"{spec.task + ' ' if with_task else ''}{spec.scenario:<12} {spec.audit or spec.mode}"
        if event == "start":
            ids[spec.out_dir] = bar.add_task(label, total=1)
        else:
            if spec.out_dir not in ids:  # failed before it started
                ids[spec.out_dir] = bar.add_task(label, total=1)
            bar.update(ids[spec.out_dir], completed=1, description=f"{label}: {verdict(record)}")

    return listener


def execute(args: argparse.Namespace) -> int:
    if args.suite:
        return execute_suite(args)
    if args.audits or args.cooldown is not None:
        raise UsageError("--audits and --cooldown go with --suite; for one task use --audit TEST01,TEST04")
    flags = {key: getattr(args, name) for name, key in CONF_FLAGS.items() if getattr(args, name) is not None}
    plan = inference.plan_inference(
        task=args.task,
        scenarios=_scenarios(args.scenario),
        modes=list(MODES) if args.mode == "both" else [args.mode],
        backend=args.backend,
        style=args.style,
        dataset=_one_path(args.dataset, "--dataset"),
        weights=_one_path(args.weights, "--weights"),
        count=args.count,
        conf=args.conf,
        flags=flags,
        threads=args.threads,
        workers=args.workers,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        device=args.device,
        compile=args.compile,
        find_peak=args.find_peak,
        calibration_s=args.calibration_s,
        rules_round=args.rules,
        runs_dir=args.output_dir,
        precision=args.precision,
        audits=_names(args.audit),
        repeats=args.repeats,
        model_options=_model_options(args),
    )
    store = open_store(args.db)
    if inference.needs_prepare(plan):
        prepare_with_progress(args.task, args.json, plan.base.model_options)
    inference.check_workload(plan)

    started = time.perf_counter()
    if args.json:
        records = inference.run_inference(plan, store)
    else:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console) as bar:
            records = inference.run_inference(plan, store, _progress_listener(bar, with_task=False))
    elapsed = time.perf_counter() - started
    if args.json:
        print_json({"run_id": plan.run_id, "logs": str(plan.run_dir), "database": store.location, "records": [r.to_dict() for r in records]})
        return 0
    title = "mlgauge run"
    console.print(results_table(records, title=title))
    if plan.base.style == "quick":
        console.print("[yellow]Quick run: shortened durations, not an official MLPerf result (use --valid).[/yellow]")
    console.print(f"Run {plan.run_id} took {elapsed:.0f} s. Logs: {plan.run_dir}")
    console.print(f"Results database: {store.location}")
    return 0


def _model_options(args: argparse.Namespace) -> dict:
    return {"embedding": args.embedding, "robe_size": args.robe_size, "compression": args.compression}


def execute_suite(args: argparse.Namespace) -> int:
    from mlgauge.results.score import suite_score
    from mlgauge.suite import plan_suite, run_suite

    given = [k for k, v in _model_options(args).items() if v is not None]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise UsageError(f"{flag} changes one task's model, not a suite's",
                         hint=f"Run the task alone: mlgauge run dlrm-v2-99 {flag} ...")  # fmt: skip

    flags = {key: getattr(args, name) for name, key in CONF_FLAGS.items() if getattr(args, name) is not None}
    splan = plan_suite(
        args.suite,
        audits=args.audits,
        cooldown_s=args.cooldown,
        modes=list(MODES) if args.mode == "both" else [args.mode],
        datasets=_per_task_paths(args.dataset, "--dataset"),
        weights=_per_task_paths(args.weights, "--weights"),
        count=args.count,
        backend=args.backend,
        style=args.style,
        conf=args.conf,
        flags=flags,
        threads=args.threads,
        workers=args.workers,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        device=args.device,
        compile=args.compile,
        calibration_s=args.calibration_s,
        runs_dir=args.output_dir,
        precision=args.precision,
        repeats=args.repeats,
    )
    store = open_store(args.db)
    started = time.perf_counter()
    if args.json:
        records = run_suite(splan, store, prepare=lambda task: prepare_with_progress(task, True))
    else:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console) as bar:

            def on_event(event, value):
                if event == "cooldown":
                    bar.console.print(f"cooling down for {value:.0f} s between tasks")
                elif event == "prepare":
                    bar.console.print(f"preparing the synthetic stand-in for {value}")

            records = run_suite(splan, store, _progress_listener(bar, with_task=True), on_event=on_event)
    score = suite_score(splan.suite.score, records)
    failures = {r.task: r.invalid_reasons[0] for r in records if r.validity == "FAILED" and r.invalid_reasons}
    failed = sorted(failures)
    if args.json:
        print_json({
            "suite": splan.suite.name,
            "run_id": splan.run_id,
            "database": store.location,
            "score": score,
            "failed_tasks": failed,
            "records": [r.to_dict() for r in records],
        })
        return 1 if failed else 0
    console.print(results_table(records, title=splan.suite.title))
    if score is not None:
        value = f"{score['score']:,.2f} {score['unit']}" if score["score"] is not None else "-"
        console.print(f"Suite score ({score['method']} of per-task throughput): [bold]{value}[/bold] ({score['validity']})")
    for task in failed:
        console.print(f"[red]{task} failed:[/red] {escape(failures[task])}")
    if args.style == "quick":
        console.print("[yellow]Quick run: shortened durations, not an official MLPerf result (use --valid).[/yellow]")
    console.print(f"Suite run {splan.run_id} took {time.perf_counter() - started:.0f} s. Results database: {store.location}")
    return 1 if failed else 0
