"""Plan and execute a set of LoadGen runs, one worker process each.

MLPerf Mobile's rule is followed for ordering: every performance run comes
before any accuracy run, so accuracy passes cannot heat the machine between
performance measurements. Offline goes first among performance runs because
``--find-peak`` uses its throughput as the upper bound for Server.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from secrets import token_hex

from mlgauge.config.run_spec import RunSpec
from mlgauge.loadgen.calibrate import OFFLINE_MARGIN, OFFLINE_QPS_CAP
from mlgauge.loadgen.launcher import run_in_worker
from mlgauge.results.record import ResultRecord
from mlgauge.rules import SCENARIOS

_PERF_ORDER = ("Offline", "Server", "SingleStream", "MultiStream")
PEAK_PROBES = 8  # one probe at the bound, then 7 halvings: within 1/128 of the bound


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + token_hex(2)


@dataclass
class Plan:
    base: RunSpec  # scenario/mode/out_dir are filled per run
    runs_root: Path
    scenarios: list[str]
    modes: list[str]
    find_peak: bool = False
    audits: list[str] = field(default_factory=list)  # compliance tests, after the normal runs
    # Each performance run this many times: repeats are what 'mlgauge compare' needs for a
    # confidence interval and a significance test. Accuracy does not vary, so it runs once.
    repeats: int = 1
    run_id: str = field(default_factory=new_run_id)

    @property
    def run_dir(self) -> Path:
        return self.runs_root / self.run_id

    def performance_specs(self) -> list[RunSpec]:
        if "performance" not in self.modes:
            return []
        suffixes = [""] if self.repeats == 1 else [f"-{i}" for i in range(1, self.repeats + 1)]
        # Repeats interleave (A1 B1 A2 B2 ...) so a drift of the machine spreads over every scenario.
        return [self._spec(s, "performance", x) for x in suffixes for s in _PERF_ORDER if s in self.scenarios]

    def accuracy_specs(self) -> list[RunSpec]:
        if "accuracy" not in self.modes:
            return []
        specs = [self._spec(s, "accuracy") for s in SCENARIOS if s in self.scenarios]
        if self.base.precision != "fp32" and specs:
            # A quantized model's accuracy means most next to the FP32 model's on the
            # same samples: one FP32 accuracy run first, for the comparison.
            specs.insert(0, self._spec(specs[0].scenario, "accuracy", "-fp32").with_(precision="fp32"))
        return specs

    def audit_specs(self) -> list[RunSpec]:
        # An audit compares against the normal performance run (and TEST01 against
        # the accuracy run), so audits come last.
        return [
            self._spec(s, "performance", f"-{test}").with_(audit=test)
            for test in self.audits
            for s in _PERF_ORDER
            if s in self.scenarios
        ]

    def specs(self) -> list[RunSpec]:
        return self.performance_specs() + self.accuracy_specs() + self.audit_specs()

    def _spec(self, scenario: str, mode: str, suffix: str = "") -> RunSpec:
        folder = f"{self.base.task}-{scenario}-{mode}{suffix}"
        return self.base.with_(scenario=scenario, mode=mode, out_dir=str(self.run_dir / folder), run_id=self.run_id)


# Events for whoever shows progress: ("start", spec, None) and ("done", spec, record).
Listener = Callable[[str, RunSpec, ResultRecord | None], None]


def _quiet(event: str, spec: RunSpec, record: ResultRecord | None) -> None:
    pass


def run_one(plan: Plan, spec: RunSpec, done: list[ResultRecord], listener: Listener = _quiet) -> ResultRecord:
    """One planned test (a find-peak search counts as one); audits get their verdict."""
    if spec.scenario == "Server" and spec.mode == "performance" and plan.find_peak and not spec.audit:
        return find_peak(plan, spec, done, listener)
    listener("start", spec, None)
    record = run_in_worker(spec)
    resized = _resized_offline(spec, record)
    if resized is not None:
        record = _rerun_resized(resized, record)
    if spec.audit:
        from mlgauge.loadgen.audits import judge

        record.compliance = judge(spec, record, done)
        record.save(Path(record.log_dir))  # the worker wrote it before the verdict existed
    elif spec.mode == "accuracy" and spec.precision != "fp32" and record.accuracy is not None:
        _compare_with_fp32(record, done)
    listener("done", spec, record)
    return record


def _resized_offline(spec: RunSpec, record: ResultRecord) -> RunSpec | None:
    """The spec for one rerun of an Offline run that beat its calibrated rate.

    LoadGen sizes the single Offline query from the expected QPS; a system faster than
    the short calibration finishes it before min_duration and the run is INVALID for that
    reason alone. LoadGen's own advice is a larger expected QPS, and the rate the run
    just achieved is a far better estimate than the calibration, so the harness takes
    that advice once instead of leaving the user to guess. A target_qps the user set
    (user.conf or flag) is never second-guessed.
    """
    if (spec.scenario, spec.mode, record.validity) != ("Offline", "performance", "INVALID"):
        return None
    if record.harness.get("settings_sources", {}).get("target_qps") != "calibration":
        return None
    reasons = record.invalid_reasons
    if not reasons or not all(r.startswith("min_duration:") for r in reasons) or record.metric is None:
        return None
    qps = min(record.metric.value * OFFLINE_MARGIN, OFFLINE_QPS_CAP)
    return spec.with_(flags={**spec.flags, "target_qps": round(qps, 3)})


def _rerun_resized(spec: RunSpec, first: ResultRecord) -> ResultRecord:
    record = run_in_worker(spec)  # same folder: its logs replace the short run's
    record.harness["settings_sources"]["target_qps"] = "rerun at the rate of a run that ended too soon"
    record.harness["resized_from"] = {
        "target_qps": first.settings.get("target_qps"),
        "samples_per_second": first.metric.value,
        "invalid_reasons": first.invalid_reasons,
    }
    record.save(Path(record.log_dir))
    return record


def _compare_with_fp32(record: ResultRecord, done: list[ResultRecord]) -> None:
    """Put the FP32 reference accuracy and the change from it into a quantized run's accuracy."""
    for ref in done:
        if (ref.task, ref.mode, ref.precision, ref.audit) == (record.task, "accuracy", "fp32", "") and ref.accuracy:
            record.accuracy["fp32_reference"] = ref.accuracy["value"]
            record.accuracy["change_vs_fp32"] = record.accuracy["value"] - ref.accuracy["value"]
            record.save(Path(record.log_dir))
            return


def execute(plan: Plan, listener: Listener = _quiet) -> list[ResultRecord]:
    """Run every planned test; the first failure raises (its worker's error)."""
    records: list[ResultRecord] = []
    for spec in plan.specs():
        records.append(run_one(plan, spec, records, listener))
    return records


def _offline_throughput(plan: Plan, done: list[ResultRecord], listener: Listener) -> float:
    for r in done:
        if r.scenario == "Offline" and r.mode == "performance" and r.metric:
            return r.metric.value
    spec = plan._spec("Offline", "performance", "-peak-bound")
    listener("start", spec, None)
    record = run_in_worker(spec)
    listener("done", spec, record)
    return record.metric.value


def find_peak(
    plan: Plan, server_spec: RunSpec, done: list[ResultRecord], listener: Listener, upper: float | None = None
) -> ResultRecord:
    """Bisect Server ``target_qps`` in (0, upper] for the highest VALID run; the upper
    bound defaults to the Offline throughput (from ``done``, or measured now).

    Each probe is a complete LoadGen run in its own process. Returns the best
    VALID probe's record (or the lowest probe's, if none was VALID), with every
    probe listed under ``harness["find_peak"]``.
    """
    if upper is None:
        upper = _offline_throughput(plan, done, listener)
    lo, hi = 0.0, upper
    best: ResultRecord | None = None
    lowest: ResultRecord | None = None
    probes = []
    for step in range(PEAK_PROBES):
        qps = hi if step == 0 else (lo + hi) / 2
        spec = plan._spec("Server", "performance", f"-peak-{step + 1}").with_(
            flags={**server_spec.flags, "target_qps": round(qps, 3)}
        )
        listener("start", spec, None)
        record = run_in_worker(spec)
        listener("done", spec, record)
        probes.append({"target_qps": round(qps, 3), "validity": record.validity, "completed": record.metric.value})
        if record.validity == "VALID":
            lo, best = qps, record
            if step == 0:
                break  # Server kept up with the Offline rate: nothing higher to find
        else:
            hi = qps
            lowest = record
    chosen = best or lowest
    chosen.harness["find_peak"] = {"upper_bound": upper, "probes": probes, "found": best is not None}
    return chosen
