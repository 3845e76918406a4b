"""A whole suite (edge, datacenter, mobile): every required (task, scenario), one process each.

A suite is data (``[suites.*]`` in the rule files). Running it follows MLPerf
Mobile's ordering, which is also sound for the others: every performance run of
every task first (with an optional cooldown between tasks, so heat from one
task does not slow the next), then every accuracy run, then the compliance
audits. One failing task does not stop the suite: its runs are recorded as
FAILED with the reason, and the rest go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mlgauge import inference
from mlgauge.config.run_spec import RunSpec
from mlgauge.errors import DataError, MlgaugeError, ModelError, UsageError
from mlgauge.loadgen.record import failed_record
from mlgauge.loadgen.session import Listener, Plan, new_run_id, run_one
from mlgauge.results.record import ResultRecord
from mlgauge.results.store import ResultStore
from mlgauge.rules import Suite, inference_rules, suite


@dataclass
class SuitePlan:
    suite: Suite
    run_id: str
    plans: dict[str, Plan]  # task -> its plan
    unplannable: dict[str, MlgaugeError] = field(default_factory=dict)  # task -> why it cannot run here
    cooldown_s: float = 0.0
    backend: str = ""
    style: str = "quick"


def plan_suite(
    name: str,
    *,
    audits: bool = False,
    cooldown_s: float | None = None,
    modes: Sequence[str] = ("performance", "accuracy"),
    datasets: Mapping[str, Path] | None = None,
    weights: Mapping[str, Path] | None = None,
    **options,
) -> SuitePlan:
    """One plan per required task; ``options`` go to ``plan_inference`` (backend, style ...).

    ``audits`` adds the compliance tests the rules require of each benchmark.
    ``cooldown_s`` defaults to the suite's rule in the valid style and to none in the
    quick style (a first look should be quick). ``datasets`` and ``weights`` give
    some tasks real files (task -> path); the others run their synthetic stand-ins.
    """
    chosen = suite(name)
    datasets, weights = dict(datasets or {}), dict(weights or {})
    for flag, given in (("--dataset", datasets), ("--weights", weights)):
        unknown = sorted(set(given) - set(chosen.required))
        if unknown:
            raise UsageError(
                f"{flag} names {', '.join(unknown)}, which the {name} suite does not run",
                hint=f"The {name} suite runs: {', '.join(chosen.required)}",
            )
    # A mistyped path is the user's to fix now, not a task failure found hours into the suite.
    for task, path in datasets.items():
        if not Path(path).is_dir():
            raise DataError(f"dataset folder {path} for {task} does not exist", hint="Check the --dataset TASK=PATH entry")
    for task, path in weights.items():
        if not Path(path).is_file():
            raise ModelError(f"weights file {path} for {task} does not exist", hint="Check the --weights TASK=PATH entry")
    rules = inference_rules(chosen.round)
    run_id = new_run_id()
    plans: dict[str, Plan] = {}
    failed: dict[str, MlgaugeError] = {}
    for task, scenarios in chosen.required.items():
        tests = list(rules.benchmark(task).audits) if audits else []
        try:
            plans[task] = inference.plan_inference(
                task=task,
                scenarios=list(scenarios),
                modes=list(modes),
                rules_round=chosen.round,
                audits=[t for t in tests if "accuracy" in modes or t != "TEST01"],
                run_id=run_id,
                dataset=datasets.get(task),
                weights=weights.get(task),
                **options,
            )
        except MlgaugeError as exc:
            failed[task] = exc
    if cooldown_s is None:
        cooldown_s = chosen.cooldown_s if options.get("style") == "valid" else 0.0
    from mlgauge.backends import best_backend

    backend = options.get("backend") or best_backend()
    return SuitePlan(chosen, run_id, plans, failed, cooldown_s, backend, options.get("style", "quick"))


# Events: ("prepare", task), ("cooldown", seconds), and the run events of session.Listener.
SuiteListener = Callable[[str, object], None]


def _safe_run(plan: Plan, spec, done: list[ResultRecord], listener: Listener) -> ResultRecord:
    try:
        return run_one(plan, spec, done, listener)
    except MlgaugeError as exc:
        record = failed_record(spec, exc)
        listener("done", spec, record)
        return record


def execute_suite(
    splan: SuitePlan,
    listener: Listener,
    on_event: SuiteListener = lambda event, value: None,
    prepare: Callable[[str], None] | None = None,
) -> list[ResultRecord]:
    records: list[ResultRecord] = [
        failed_record(
            RunSpec(task=task, scenario=scenario, mode="performance", backend=splan.backend, out_dir="", style=splan.style, run_id=splan.run_id),
            exc,
        )
        for task, exc in splan.unplannable.items()
        for scenario in splan.suite.required[task]
    ]
    ready: dict[str, Plan] = {}
    for task, plan in splan.plans.items():
        try:
            if inference.needs_prepare(plan):
                on_event("prepare", task)
                (prepare or inference.prepare)(task)
            inference.check_workload(plan)
            ready[task] = plan
        except MlgaugeError as exc:
            records += [failed_record(spec, exc) for spec in plan.specs()]
    first = True
    for plan in ready.values():
        specs = plan.performance_specs()
        if specs and not first and splan.cooldown_s > 0:
            on_event("cooldown", splan.cooldown_s)
            time.sleep(splan.cooldown_s)
        first = first and not specs
        records += [_safe_run(plan, spec, records, listener) for spec in specs]
    for plan in ready.values():
        records += [_safe_run(plan, spec, records, listener) for spec in plan.accuracy_specs()]
    for plan in ready.values():
        records += [_safe_run(plan, spec, records, listener) for spec in plan.audit_specs()]
    return records


def run_suite(
    splan: SuitePlan, store: ResultStore | None = None, listener: Listener = lambda e, s, r: None, **kwargs
) -> list[ResultRecord]:
    """Run the suite and store every record (failed ones included) in one transaction."""
    records = execute_suite(splan, listener, **kwargs)
    if store is not None:
        store.add_many(records)
    return records


def suite_run_dir(splan: SuitePlan) -> Path | None:
    for plan in splan.plans.values():
        return plan.run_dir
    return None
