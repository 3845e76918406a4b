"""Turn one finished LoadGen test (its log folder) into a ResultRecord."""

from __future__ import annotations

from pathlib import Path

from mlgauge.config.run_spec import RunSpec
from mlgauge.errors import RunError
from mlgauge.loadgen import logparse
from mlgauge.results.record import Metric, ResultRecord
from mlgauge.results.system import describe_system
from mlgauge.rules import InferenceRules
from mlgauge.tasks.base import Workload


def build_record(
    spec: RunSpec, workload: Workload, backend_info: dict, rules: InferenceRules, log_dir: Path, harness: dict
) -> ResultRecord:
    detail = logparse.parse_detail_log(log_dir / "mlperf_log_detail.txt")
    scenario_rule = rules.scenario(spec.scenario)
    record = ResultRecord(
        task=spec.task,
        benchmark=workload.benchmark,
        dataset=workload.dataset.label,
        scenario=spec.scenario,
        mode=spec.mode,
        style=spec.style,
        backend=spec.backend,
        backend_info=backend_info,
        log_dir=str(log_dir),
        settings=logparse.effective_settings(detail),
        system=describe_system(),
        loadgen_errors=list(detail.errors),
        loadgen_warnings=list(detail.warnings),
        harness={**harness, "rules_round": rules.round},
        run_id=spec.run_id,
        audit=spec.audit,
        precision=spec.precision,
        model_options=dict(spec.model_options),
    )
    if spec.mode == "performance":
        value = detail.values.get(scenario_rule.metric_key)
        if not isinstance(value, int | float):
            raise RunError(
                f"LoadGen's log has no {scenario_rule.metric_key} for {spec.scenario}",
                hint=f"See {log_dir / 'mlperf_log_summary.txt'}",
            )
        record.metric = Metric(
            key=scenario_rule.metric_key,
            name=scenario_rule.metric_name,
            value=float(value),
            unit=scenario_rule.unit,
            higher_is_better=scenario_rule.higher_is_better,
        )
        record.validity, record.invalid_reasons = logparse.validity(detail)
        record.latency_ns = logparse.latency_percentiles(detail, per_query=spec.scenario == "MultiStream")
        record.early_stopping = logparse.early_stopping(detail)
        record.stats = logparse.result_stats(detail)
    else:
        predictions = logparse.decode_accuracy_log(log_dir / "mlperf_log_accuracy.json", workload.response_dtype)
        expected = workload.dataset.total_count
        if len(predictions) != expected:
            raise RunError(
                f"the accuracy log holds {len(predictions)} distinct samples, expected {expected}",
                hint=f"See {log_dir}",
            )
        record.accuracy = workload.score(predictions).to_dict()
    return record


def failed_record(spec: RunSpec, error: Exception) -> ResultRecord:
    """A run that could not produce a result (in a suite, the others go on): FAILED, with why."""
    message = str(error)
    hint = getattr(error, "hint", "")
    return ResultRecord(
        task=spec.task,
        benchmark=spec.task,
        dataset="-",
        scenario=spec.scenario,
        mode=spec.mode,
        style=spec.style,
        backend=spec.backend,
        backend_info={},
        log_dir=spec.out_dir,
        settings={},
        system=describe_system(),
        validity="FAILED",
        invalid_reasons=[message + (f" ({hint})" if hint and hint not in message else "")],
        run_id=spec.run_id,
        audit=spec.audit,
        precision=spec.precision,
        model_options=dict(spec.model_options),
    )
