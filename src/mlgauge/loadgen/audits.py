"""Judge a finished compliance run against the normal runs it audits."""

from __future__ import annotations

from pathlib import Path

from mlgauge.config.run_spec import RunSpec
from mlgauge.loadgen import compliance, logparse
from mlgauge.results.record import ResultRecord


def _find(done: list[ResultRecord], spec: RunSpec, mode: str) -> ResultRecord | None:
    for r in done:
        if r.task == spec.task and r.scenario == spec.scenario and r.mode == mode and not r.audit:
            return r
    return None


def _missing(test: str, what: str) -> dict:
    return compliance.AuditVerdict(test, [compliance.Check(what, False, "run it in the same session")]).to_dict()


def _subset_scores(spec: RunSpec, audit_dir: Path, accuracy_dir: Path) -> tuple[float, float, float]:
    """(accuracy-run score, audit score, allowed drop) on the samples the audit logged."""
    from mlgauge.rules import inference_rules
    from mlgauge.tasks import get_task

    workload = get_task(spec.task, spec.model_options).workload(
        dataset_path=spec.dataset_path, weights_path=spec.weights_path, count=spec.count, round=spec.rules_round
    )
    audit = logparse.decode_accuracy_log(audit_dir / "mlperf_log_accuracy.json", workload.response_dtype)
    reference = logparse.decode_accuracy_log(accuracy_dir / "mlperf_log_accuracy.json", workload.response_dtype)
    subset = {i: reference[i] for i in audit if i in reference}
    base = workload.score(subset).value
    mine = workload.score({i: audit[i] for i in subset}).value
    # A 99% target allows a 1% drop, 99.9% a 0.1% drop (compliance/TEST01 README).
    fraction = inference_rules(spec.rules_round).benchmark(workload.benchmark).quality.fraction
    return base, mine, base * (1.0 - fraction)


def judge(spec: RunSpec, record: ResultRecord, done: list[ResultRecord]) -> dict:
    normal = _find(done, spec, "performance")
    if normal is None or normal.metric is None or record.metric is None:
        return _missing(spec.audit, f"a normal {spec.scenario} performance run to compare with")
    common = {
        "scenario": spec.scenario,
        "audit_value": record.metric.value,
        "normal_value": normal.metric.value,
        "higher_is_better": record.metric.higher_is_better,
    }
    if spec.audit == "TEST04":
        return compliance.verify_test04(**common).to_dict()
    accuracy = _find(done, spec, "accuracy")
    if accuracy is None:
        return _missing("TEST01", f"an accuracy run of {spec.scenario} to compare responses with")
    audit_dir, accuracy_dir = Path(record.log_dir), Path(accuracy.log_dir)
    _, _, differing = compliance.compare_responses(audit_dir / "mlperf_log_accuracy.json", accuracy_dir / "mlperf_log_accuracy.json")
    subset, tolerance = None, 0.0
    if differing:
        base, mine, tolerance = _subset_scores(spec, audit_dir, accuracy_dir)
        subset = (base, mine)
    return compliance.verify_test01(
        audit_dir=audit_dir, accuracy_dir=accuracy_dir, subset_scores=subset, score_tolerance=tolerance, **common
    ).to_dict()
