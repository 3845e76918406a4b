"""Composite suite scores, shown next to the raw metrics and never instead of them.

MLPerf Mobile's score (mobile_app_open ``task_runner.dart``, ``result-spec.md``):
each task's throughput — SingleStream ``1 / p90 latency``, Offline samples/s —
(MultiStream, outside MLPerf Mobile, counts as ``1 / p99 query latency``)
combined by a geometric mean. The app divides by a per-task maximum from its
task file; those maxima are device-class constants mlgauge does not have, so the
score here is the plain geometric mean in queries per second.

A result's validity in that scheme: *valid* when min duration, min queries and
early stopping are all met; *semi-valid* when only the min-queries rule failed;
*invalid* otherwise (including runs that failed outright).
"""

from __future__ import annotations

import math

from mlgauge.results.record import ResultRecord

_RANK = {"valid": 0, "semi-valid": 1, "invalid": 2}


def mobile_validity(record: ResultRecord) -> str:
    if record.validity == "VALID":
        return "valid"
    if record.validity == "FAILED" or record.metric is None:
        return "invalid"
    reasons = {r.split(":")[0] for r in record.invalid_reasons}
    return "semi-valid" if reasons == {"min_queries"} else "invalid"


def throughput(record: ResultRecord) -> float | None:
    """Queries per second as MLPerf Mobile scores it, or None without a metric."""
    metric = record.metric
    if metric is None or metric.value <= 0:
        return None
    if metric.unit == "ns":
        # SingleStream's p90 and MultiStream's p99 query latency: one query per latency.
        return 1e9 / metric.value
    return metric.value


def geomean_score(records: list[ResultRecord]) -> dict:
    """The suite score over the normal performance runs (audits excluded)."""
    parts = []
    for r in records:
        if r.mode != "performance" or r.audit:
            continue
        parts.append({"task": r.task, "scenario": r.scenario, "throughput": throughput(r), "validity": mobile_validity(r)})
    values = [p["throughput"] for p in parts]
    complete = bool(values) and all(v is not None for v in values)
    score = math.exp(sum(math.log(v) for v in values) / len(values)) if complete else None
    worst = max((p["validity"] for p in parts), key=_RANK.__getitem__, default="invalid")
    return {"method": "geomean", "unit": "queries/s", "score": score, "validity": worst if complete else "invalid", "parts": parts}


SCORERS = {"geomean": geomean_score}


def suite_score(method: str, records: list[ResultRecord]) -> dict | None:
    """The suite's composite score by ``method`` (from the rule data), or None if it has none."""
    return SCORERS[method](records) if method else None
