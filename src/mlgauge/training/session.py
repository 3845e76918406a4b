"""Run an N-run set of one training benchmark: each run logged, stored as soon as it ends,
then scored the MLPerf way and written in MLPerf's results layout.

A run that crashes is stored as "failed" and the set goes on (one non-converging run
is allowed by olympic scoring); Ctrl-C stores the interrupted run as aborted and stops
the set. Either way, every run already stored keeps its result.
"""

from __future__ import annotations

import inspect
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mlgauge import paths
from mlgauge.errors import MlgaugeError, UsageError
from mlgauge.interrupts import Terminated, terminate_as_interrupt
from mlgauge.results.system import describe_system
from mlgauge.results.training_record import TrainingRecord
from mlgauge.training.device import describe as describe_device
from mlgauge.training.loop import Parallel, TrainResult, run_training
from mlgauge.training.mllog_writer import Submission
from mlgauge.training.result_files import system_description, write_result_set
from mlgauge.training.scoring import RunOutcome, SetScore, score_set

# Events for whoever shows progress: ("start", index, seed, None) and ("done", index, seed, record).
Listener = Callable[[str, int, int, TrainingRecord | None], None]


@dataclass
class TrainingPlan:
    bench: object  # a TrainingBenchmark, built and checked up front
    seeds: list[int]
    run_dir: Path
    run_id: str
    org: str = "mlgauge"
    system: str = "mlgauge-host"
    nproc: int = 1  # data-parallel processes per node, through torchrun
    torchrun_args: list[str] = field(default_factory=list)  # multi-node options passed through
    spec: dict = field(default_factory=dict)  # what a torchrun worker needs to rebuild the benchmark
    device: str = "cpu"  # this process's (torchrun workers pick theirs from the same request)

    @property
    def runs(self) -> int:
        return len(self.seeds)


@dataclass
class SetResult:
    records: list[TrainingRecord]
    score: SetScore
    results_dir: Path | None = None  # the MLPerf layout, when every run left a log
    notes: list[str] = field(default_factory=list)


def plan_training(
    benchmark: str = "resnet",
    *,
    dataset: Path | None = None,
    variant: str = "default",
    runs: int | None = None,
    seed: int | None = None,
    runs_dir: Path | None = None,
    org: str = "mlgauge",
    system: str = "mlgauge-host",
    nproc: int = 1,
    torchrun_args: list[str] | None = None,
    device: str = "auto",
    **options,
) -> TrainingPlan:
    """Check everything that can be checked before training; ``options`` go to the benchmark."""
    from mlgauge.loadgen.session import new_run_id
    from mlgauge.training.benchmarks import benchmark_class
    from mlgauge.training.device import pick_device

    if dataset is not None and not Path(dataset).is_dir():
        raise UsageError(f"dataset folder {dataset} does not exist", hint="Check the --dataset path")
    bench_class = benchmark_class(benchmark)
    check_options(bench_class, benchmark, options)
    bench = bench_class(dataset, variant=variant, **options)
    count = bench.rule.runs_per_set if runs is None else runs
    if count < 1:
        raise UsageError(f"--runs must be at least 1, not {count}")
    if nproc < 1:
        raise UsageError(f"--nproc must be at least 1, not {nproc}")
    Parallel(0, nproc).local_batch_size(bench.global_batch_size)  # the batch must split over the ranks
    # Closed rules want seeds from entropy, logged and distinct per run; --seed makes a set repeatable.
    base = secrets.randbelow(2**31 - count) if seed is None else seed
    run_id = new_run_id()
    root = paths.ensure_writable_dir(Path(runs_dir) if runs_dir else paths.default_runs_dir(), "run logs")
    spec = {"benchmark": benchmark, "dataset": str(dataset) if dataset else None, "variant": variant,
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in options.items()},
            "org": org, "system": system, "device": device}  # fmt: skip
    return TrainingPlan(
        bench, [base + i for i in range(count)], root / run_id, run_id, org, system, nproc,
        list(torchrun_args or []), spec, pick_device(device),
    )  # fmt: skip


def check_options(bench_class: type, benchmark: str, options: dict) -> None:
    accepted = inspect.signature(bench_class).parameters
    for name in options:
        if name not in accepted:
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} does not apply to {benchmark}", hint=f"Leave {flag} out for {benchmark}")


def _record(plan: TrainingPlan, index: int, seed: int, result: TrainResult | None, failure: str, host: dict) -> TrainingRecord:
    bench, rule = plan.bench, plan.bench.rule
    log = plan.run_dir / f"run_{index}" / "mlperf_log.txt"
    curve = [
        {"epoch": e["epoch"], "samples": e["samples"], "seconds": e["seconds_since_run_start"], "value": e["value"]}
        for e in (result.eval_curve if result else [])
    ]
    return TrainingRecord(
        benchmark=bench.name,
        dataset=bench.dataset_name,
        division=rule.division,
        status=result.status if result else ("aborted" if failure.startswith("interrupted") else "failed"),
        reason=result.reason if result else failure,
        time_to_train_s=result.time_to_train_s if result else None,
        epochs=result.epochs if result else None,
        samples=result.samples if result else None,
        seed=seed,
        quality={
            "metric": rule.metric,
            "target": rule.target,
            "value": curve[-1]["value"] if curve else None,
            "higher_is_better": rule.higher_is_better,
        },
        evals=curve,
        config={"global_batch_size": bench.global_batch_size, "world_size": plan.nproc, "variant": rule.variant,
                "device": describe_device(plan.device),
                "ruleset": rule.ruleset, "options": plan.spec.get("options", {}),
                **bench.hyperparameters(Parallel())},
        log_path=str(log),
        system=host,
        run_id=plan.run_id,
        run_index=index,
    )  # fmt: skip


def run_set(plan: TrainingPlan, store=None, listener: Listener = lambda *a: None) -> SetResult:
    """Train every run of the set in order; store each record the moment its run ends."""
    with terminate_as_interrupt():
        return _run_set(plan, store, listener)


def _run_set(plan: TrainingPlan, store, listener: Listener) -> SetResult:
    host = describe_system()
    records: list[TrainingRecord] = []
    for index, seed in enumerate(plan.seeds):
        listener("start", index, seed, None)
        folder = plan.run_dir / f"run_{index}"
        folder.mkdir(parents=True, exist_ok=True)
        result, failure = None, ""
        try:
            if plan.nproc > 1:
                result = _run_distributed(plan, seed, folder)
            else:
                result = run_training(plan.bench, seed=seed, log_path=folder / "mlperf_log.txt",
                                      submission=Submission(plan.bench.name, plan.bench.rule.division,
                                                            org=plan.org, platform=plan.system),
                                      parallel=Parallel(device=plan.device))  # fmt: skip
        except KeyboardInterrupt as exc:
            why = "interrupted (SIGTERM)" if isinstance(exc, Terminated) else "interrupted (Ctrl-C)"
            _keep(plan, store, records, _record(plan, index, seed, None, why, host))
            raise
        except MlgaugeError:
            raise  # the user's to fix (bad data, bad option): the same for every run
        except Exception as exc:  # a crash of this run: recorded, and the set goes on
            failure = f"failed: {type(exc).__name__}: {exc}".splitlines()[0]
        record = _record(plan, index, seed, result, failure, host)
        _keep(plan, store, records, record)
        listener("done", index, seed, record)
    return _finish(plan, records)


def _run_distributed(plan: TrainingPlan, seed: int, folder: Path) -> TrainResult:
    """One run as ``nproc`` torchrun processes; rank 0 leaves the log and the result."""
    import json
    import os
    import subprocess
    import sys

    spec_path, result_path = folder / "spec.json", folder / "result.json"
    threads = max(1, (os.cpu_count() or 1) // plan.nproc)
    spec_path.write_text(json.dumps({**plan.spec, "seed": seed, "log_path": str(folder / "mlperf_log.txt"),
                                     "result_path": str(result_path), "threads_per_rank": threads}))  # fmt: skip
    rendezvous = [] if any(a.startswith(("--nnodes", "--rdzv", "--master")) for a in plan.torchrun_args) else ["--standalone"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(plan.nproc), *rendezvous,
               *plan.torchrun_args, "-m", "mlgauge.training.worker", str(spec_path)]  # fmt: skip
    with open(folder / "torchrun.log", "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            code = proc.wait()
        except BaseException:
            # SIGTERM, not SIGKILL: torchrun passes it on to every rank, and rank 0 logs run_stop.
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    if code != 0 or not result_path.is_file():
        raise RuntimeError(f"torchrun exited with code {code}; its output is in {folder / 'torchrun.log'}")
    data = json.loads(result_path.read_text())
    data["log_path"] = Path(data["log_path"]) if data.get("log_path") else None
    return TrainResult(**data)


def _keep(plan: TrainingPlan, store, records: list[TrainingRecord], record: TrainingRecord) -> None:
    record.save(plan.run_dir / f"run_{record.run_index}")
    if store is not None:
        store.add_training(record)
    records.append(record)


def _finish(plan: TrainingPlan, records: list[TrainingRecord]) -> SetResult:
    rule = plan.bench.rule
    outcomes = [
        RunOutcome(
            "success" if r.converged else "aborted",
            r.time_to_train_s if r.converged else None,
            r.seed,
            r.epochs if r.converged else None,
        )
        for r in records
    ]
    score = score_set(outcomes, rule.runs_per_set)
    logs = [Path(r.log_path) for r in records]
    results_dir, notes = None, []
    if all(log.is_file() for log in logs):
        description = system_description(plan.org, plan.system, rule.division)
        written = write_result_set(plan.run_dir / "mlperf", org=plan.org, system=plan.system,
                                   benchmark=rule.benchmark, logs=logs, description=description)  # fmt: skip
        results_dir = written.results_dir
    else:
        notes.append("a run left no MLPerf log, so the results layout was not written")
    return SetResult(records, score, results_dir, notes)
