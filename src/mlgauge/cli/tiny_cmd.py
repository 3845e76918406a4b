"""``mlgauge tiny``: the MLPerf Tiny benchmarks on a board over its serial port, or on this host."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from mlgauge import paths
from mlgauge.cli.output import console, err_console, print_json
from mlgauge.errors import UsageError
from mlgauge.results.store import open_store
from mlgauge.results.tiny_record import TinyRecord
from mlgauge.rules.tiny import tiny_rules

ALL = "all"


def register(sub) -> None:
    p = sub.add_parser("tiny", help="MLPerf Tiny: accuracy, throughput and energy of kws01, vww01, ic01, ad01")
    p.add_argument("benchmarks", nargs="*", metavar="BENCHMARK",
                   help="kws01, vww01, ic01, ad01 or all (default: all four)")
    p.add_argument("--dataset", action="append", default=[], metavar="[BENCH=]DIR",
                   help="a real dataset folder (Speech Commands v2, vw_coco2014_96, cifar-10-batches-bin, "
                        "ToyCar); BENCH=DIR when running several; default: the synthetic stand-ins")
    p.add_argument("--port", metavar="URL",
                   help="measure a board running the MLPerf Tiny firmware on this serial port (e.g. /dev/ttyACM0); "
                        "default: mlgauge's host device serving --backend")
    p.add_argument("--backend", default="onnxruntime", help="what the host device runs the model with (default onnxruntime)")
    p.add_argument("--precision", default="int8", choices=("int8", "fp32"),
                   help="int8: post-training quantization on the calibration samples (default); fp32")
    p.add_argument("--transport", default="tcp", choices=("tcp", "pty"),
                   help="how the runner reaches the host device: a TCP socket on 127.0.0.1 or a pseudo-terminal")
    p.add_argument("--quick", action="store_true",
                   help="0.2 s windows instead of the rules' 10 s: a first look, never a valid result")
    p.add_argument("--meter", default="auto", choices=("auto", "rapl", "nvml", "none"),
                   help="energy meter (default: the first readable of RAPL, NVML)")
    p.add_argument("--energy-trace", type=Path, metavar="CSV",
                   help="an external power monitor's trace (time_s,watts) covering the run")
    p.add_argument("--weights", type=Path, metavar="FILE", help="trained weights (state dict) instead of training")
    p.add_argument("--retrain", action="store_true", help="train again even when a cached model matches")
    p.add_argument("--epochs", type=int, help="override the recipe's epochs")
    p.add_argument("--train-samples", type=int, help="override the recipe's training set size")
    p.add_argument("--accuracy-samples", type=int, help="fewer accuracy samples than the rule's (not a valid result)")
    p.add_argument("--accuracy-over-protocol", action="store_true",
                   help="on the host device too, send every accuracy sample over the protocol")
    p.add_argument("--input-quantization", metavar="SCALE:ZERO_POINT",
                   help="kws01: the int8 input quantization of the board's model (default: from the calibration range)")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for a reply to a command")
    p.add_argument("--infer-timeout", type=float, default=120.0, help="seconds to wait for an 'infer' reply")
    p.add_argument("--output-dir", type=Path, help="where each result's JSON goes (default: the mlgauge data directory)")
    p.add_argument("--db", help="results database: a file path or a postgresql:// URL")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=execute)


def _benchmarks(names: list[str]) -> list[str]:
    known = list(tiny_rules().benchmarks)
    if not names or names == [ALL]:
        return known
    for name in names:
        tiny_rules().benchmark(name)  # an unknown name gets the list of known ones
    return list(dict.fromkeys(names))


def _datasets(specs: list[str], benchmarks: list[str]) -> dict[str, Path]:
    roots: dict[str, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        if not sep:
            if len(benchmarks) != 1:
                raise UsageError(
                    f"--dataset {spec} does not say which benchmark it is for",
                    hint="Write --dataset BENCH=DIR, e.g. --dataset ic01=~/data/cifar-10-batches-bin",
                )
            name, folder = benchmarks[0], spec
        if name not in benchmarks:
            raise UsageError(f"--dataset names {name}, which is not being run", hint=f"Run {name} too, or drop it")
        path = Path(folder).expanduser()
        if not path.exists():
            raise UsageError(f"no dataset folder at {path}", hint="Check the path")
        roots[name] = path
    return roots


def _quantization(text: str | None) -> tuple[float, int] | None:
    if text is None:
        return None
    scale, _, zero_point = text.partition(":")
    try:
        return float(scale), int(zero_point)
    except ValueError:
        raise UsageError(
            f"--input-quantization {text} is not SCALE:ZERO_POINT", hint="For example --input-quantization 0.5847:83"
        ) from None


def execute(args: argparse.Namespace) -> int:
    from mlgauge.loadgen.session import new_run_id
    from mlgauge.tiny.suite import TinyOptions, run_benchmark

    benchmarks = _benchmarks(args.benchmarks)
    if args.port is not None and len(benchmarks) != 1:
        raise UsageError("a board runs one benchmark's firmware", hint="Name the benchmark it runs, e.g. 'mlgauge tiny kws01 --port ...'")
    roots = _datasets(args.dataset, benchmarks)
    options = TinyOptions(
        backend=args.backend, precision=args.precision, port=args.port, transport=args.transport,
        style="quick" if args.quick else "valid", meter=args.meter, trace=args.energy_trace,
        epochs=args.epochs, train_samples=args.train_samples, accuracy_samples=args.accuracy_samples,
        weights=args.weights, retrain=args.retrain, seed=args.seed, accuracy_over_protocol=args.accuracy_over_protocol,
        input_quantization=_quantization(args.input_quantization),
        timeout_s=args.timeout, infer_timeout_s=args.infer_timeout,
    )  # fmt: skip
    options.check()
    if args.weights is not None and len(benchmarks) != 1:
        raise UsageError("--weights holds one model's weights", hint="Name the one benchmark they are for")
    run_id = new_run_id()
    out_dir = paths.ensure_writable_dir(args.output_dir or paths.default_runs_dir() / f"tiny-{run_id}", "output")
    records: list[TinyRecord] = []
    started = time.perf_counter()
    with open_store(args.db) as store:
        location = store.location
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                      console=err_console, disable=args.json or not err_console.is_terminal, transient=True) as bar:  # fmt: skip
            listener = _Listener(bar)
            for name in benchmarks:
                record = run_benchmark(name, roots.get(name), options, run_id=run_id, on_stage=listener)
                record.save(out_dir)
                store.add_tiny(record)  # stored as soon as it is measured: a later failure loses nothing
                records.append(record)
    failed = [r for r in records if not r.accuracy["passed"] or (r.style == "valid" and not r.valid)]
    if args.json:
        print_json({"run_id": run_id, "database": location, "output_dir": str(out_dir),
                    "records": [r.to_dict() for r in records]})  # fmt: skip
        return 1 if failed else 0
    console.print(_table(records))
    for r in records:
        if r.invalid_reasons:
            console.print(f"{r.benchmark} not valid: {escape('; '.join(r.invalid_reasons))}")
    notes = {r.energy_note for r in records if r.energy is None}
    for note in sorted(notes):  # one machine's meters: usually one reason for every benchmark
        console.print(f"Energy {escape(note)}")
    if options.style == "quick":
        console.print("[yellow]Quick style: windows of 0.2 s, not the rules' 10 s; these are not valid MLPerf Tiny results.[/yellow]")
    console.print(f"Run {run_id} took {time.perf_counter() - started:.0f} s. Results: {out_dir}")
    console.print(f"Results database: {location}; HTML report: mlgauge report {run_id}")
    return 1 if failed else 0


class _Listener:
    """Turns the suite's stages into one progress line per benchmark."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.tasks: dict[str, int] = {}

    def __call__(self, benchmark: str, stage: str, details: dict) -> None:
        if benchmark not in self.tasks:
            self.tasks[benchmark] = self.bar.add_task(benchmark, total=None)
        task = self.tasks[benchmark]
        if stage == "epoch":
            self.bar.update(task, description=f"{benchmark}: training, epoch {details['epoch']}/{details['of']} "
                            f"(loss {details['loss']:.4f})", completed=details["epoch"], total=details["of"])  # fmt: skip
        elif stage == "done":
            r = details["record"]
            self.bar.update(task, description=f"{benchmark}: {r.accuracy['metric']} {r.accuracy['value']:.4f}, "
                            f"{r.inferences_per_s:,.1f} inferences/s", completed=1, total=1)  # fmt: skip
            self.bar.stop_task(task)
        else:
            self.bar.update(task, description=f"{benchmark}: {_STAGES.get(stage, stage)}{_detail(stage, details)}",
                            completed=0, total=None)  # fmt: skip


_STAGES = {
    "data": "preparing data", "train": "training", "trained": "trained", "weights": "loading weights",
    "accuracy": "accuracy", "accuracy-progress": "accuracy over the protocol", "load": "loading the model",
    "performance": "timing windows",
}  # fmt: skip


def _detail(stage: str, details: dict) -> str:
    if stage == "trained":
        return " (from the cache)" if details.get("cached") else f" in {details.get('seconds', 0):.0f} s"
    if stage == "accuracy":
        return f" ({details.get('precision')})"
    if stage == "accuracy-progress":
        return f" ({details['done']} samples)"
    if stage == "load":
        return f" ({details['backend']}, {details['precision']})"
    if stage == "performance":
        return f" ({details['windows']} windows of at least {details['min_s']:g} s)"
    return ""


def _table(records: list[TinyRecord]) -> Table:
    table = Table(title="mlgauge tiny", title_justify="left")
    for col in ("Benchmark", "Data", "Model", "Accuracy", "fp32", "Inferences/s", "Latency", "Energy", "Valid"):
        table.add_column(col, justify="right" if col in ("Accuracy", "fp32", "Inferences/s", "Latency", "Energy") else "left")
    for r in records:
        acc = r.accuracy
        fp32 = r.model.get("fp32_accuracy")
        colour = "green" if acc["passed"] else "red"
        table.add_row(
            r.benchmark, escape(r.dataset), escape(f"{r.precision} · {r.backend} · {r.device.get('transport', '')}"),
            f"[{colour}]{acc['value']:.4f}[/{colour}] {acc['metric']} ≥ {acc['target']}",
            f"{fp32:.4f}" if fp32 is not None else "-",
            f"{r.inferences_per_s:,.1f}", f"{r.performance['latency_ms']:.3f} ms",
            f"{r.energy_uj:,.1f} µJ" if r.energy_uj is not None else "not measured",
            "[green]yes[/green]" if r.valid else "[red]no[/red]",
        )  # fmt: skip
    return table
