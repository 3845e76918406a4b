"""The inference benchmark as a library call: validate a request into a plan,
prepare what it needs, run it, store the records.

The CLI and Python users go through the same two functions, so a request is
checked the same way whichever door it came through.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from mlgauge import paths
from mlgauge.backends import best_backend, get_backend_class
from mlgauge.config.run_spec import AUDITS, MODES, PRECISIONS, RunSpec
from mlgauge.config.userconf import parse_file
from mlgauge.errors import DataError, ModelError, UsageError, choice_error
from mlgauge.loadgen.session import Listener, Plan, execute
from mlgauge.loadgen.settings import STYLES
from mlgauge.results.record import ResultRecord
from mlgauge.results.store import ResultStore
from mlgauge.rules import SCENARIOS, inference_rules
from mlgauge.tasks import DEFAULT_TASK, get_task


def plan_inference(
    *,
    task: str = DEFAULT_TASK,
    scenarios: Sequence[str] | None = None,
    modes: Sequence[str] = MODES,
    backend: str | None = None,
    style: str = "quick",
    dataset: Path | None = None,
    weights: Path | None = None,
    count: int | None = None,
    conf: Path | None = None,
    flags: dict[str, float] | None = None,
    threads: int = 0,
    workers: int = 0,
    max_batch: int = 0,
    max_wait_ms: float = 1.0,
    device: str = "cpu",
    compile: bool = False,
    find_peak: bool = False,
    calibration_s: float = 1.0,
    rules_round: str | None = None,
    runs_dir: Path | None = None,
    precision: str = "fp32",
    audits: Sequence[str] = (),
    repeats: int = 1,
    model_options: dict | None = None,
    run_id: str | None = None,
) -> Plan:
    """Check every input that can be checked without running anything; raise on the first problem.

    The rules round defaults to the task's own (mobile tasks follow MLPerf Mobile's);
    the scenarios default to every scenario that round defines.
    """
    model_options = {k: v for k, v in (model_options or {}).items() if v is not None}
    task_obj = get_task(task, model_options)
    rules_round = rules_round or task_obj.rules_round
    rules = inference_rules(rules_round)
    if scenarios is None:
        scenarios = list(rules.scenarios)
    for s in scenarios:
        if s not in SCENARIOS:
            raise choice_error("scenario", s, SCENARIOS)
        rules.scenario(s)  # a scenario the round does not run (mobile has two) is refused here
    if precision not in PRECISIONS:
        raise choice_error("precision", precision, PRECISIONS)
    for test in audits:
        if test not in AUDITS:
            raise choice_error("compliance test", test, AUDITS)
    if audits and "performance" not in modes:
        raise UsageError("compliance tests audit performance runs; include --mode performance")
    if "TEST01" in audits and "accuracy" not in modes:
        raise UsageError("TEST01 compares responses with an accuracy run; include --mode accuracy (or both)")
    for m in modes:
        if m not in MODES:
            raise choice_error("mode", m, MODES)
    if style not in STYLES:
        raise choice_error("run style", style, STYLES)
    backend = backend or best_backend()
    get_backend_class(backend)
    if device not in ("cpu", "cuda", "auto"):
        raise choice_error("device", device, ("cpu", "cuda", "auto"))
    for name, value in (("threads", threads), ("workers", workers), ("max-batch", max_batch)):
        if value < 0:
            raise UsageError(f"--{name} must be 0 (automatic) or a positive number, not {value}")
    if count is not None and count < 1:
        raise UsageError(f"--count must be at least 1, not {count}")
    if calibration_s <= 0:
        raise UsageError(f"--calibration-s must be positive, not {calibration_s}")
    if repeats < 1:
        raise UsageError(f"--repeats must be at least 1, not {repeats}")
    if repeats > 1 and find_peak:
        raise UsageError("--find-peak already runs Server many times; use it without --repeats")
    if max_wait_ms < 0:
        raise UsageError(f"--max-wait-ms must not be negative, not {max_wait_ms}")
    if conf is not None:
        parse_file(Path(conf))  # every line checked now, not halfway through a suite
    if dataset is not None and not Path(dataset).is_dir():
        raise DataError(f"dataset folder {dataset} does not exist", hint="Check the --dataset path")
    if weights is not None and not Path(weights).is_file():
        raise ModelError(f"weights file {weights} does not exist", hint="Check the --weights path")
    if find_peak and "Server" not in scenarios:
        raise UsageError("--find-peak searches the Server scenario, which is not selected")

    runs_root = paths.ensure_writable_dir(Path(runs_dir) if runs_dir else paths.default_runs_dir(), "run logs")
    base = RunSpec(
        task=task,
        scenario="",
        mode="",
        backend=backend,
        out_dir="",
        style=style,
        rules_round=rules_round,
        dataset_path=str(Path(dataset).resolve()) if dataset else None,
        weights_path=str(Path(weights).resolve()) if weights else None,
        count=count,
        conf_path=str(Path(conf).resolve()) if conf else None,
        flags=dict(flags or {}),
        threads=threads,
        device=device,
        compile=compile,
        max_batch=max_batch,
        workers=workers,
        max_wait_ms=max_wait_ms,
        calibration_s=calibration_s,
        precision=precision,
        model_options=model_options,
    )
    plan = Plan(
        base=base,
        runs_root=runs_root,
        scenarios=list(scenarios),
        modes=list(modes),
        find_peak=find_peak,
        audits=list(audits),
        repeats=repeats,
    )
    if run_id:
        plan.run_id = run_id
    return plan


def needs_prepare(plan: Plan) -> bool:
    return plan.base.dataset_path is None and not get_task(plan.base.task, plan.base.model_options).is_prepared()


def prepare(task: str, progress: Callable[[str, float], None] | None = None, model_options: dict | None = None) -> dict:
    return get_task(task, model_options).prepare(progress)


def check_workload(plan: Plan) -> None:
    """Open the dataset and weights once here, so a bad path fails before any worker starts."""
    b = plan.base
    get_task(b.task, b.model_options).workload(dataset_path=b.dataset_path, weights_path=b.weights_path, count=b.count, round=b.rules_round)


def run_inference(plan: Plan, store: ResultStore | None = None, listener: Listener | None = None) -> list[ResultRecord]:
    """Run the plan (preparing the synthetic stand-in first if needed); store its
    records together, only if every run succeeded."""
    if needs_prepare(plan):
        prepare(plan.base.task, model_options=plan.base.model_options)
    records = execute(plan, listener) if listener else execute(plan)
    if store is not None:
        store.add_many(records)
    return records
