"""The MLPerf Mobile-style composite score."""

from __future__ import annotations

import math

import pytest

from mlgauge.results.record import Metric, ResultRecord
from mlgauge.results.score import geomean_score, mobile_validity, suite_score, throughput


def _record(scenario: str, value: float | None, validity: str = "VALID", reasons=(), **kw) -> ResultRecord:
    latency = scenario in ("SingleStream", "MultiStream")
    metric = None if value is None else Metric("k", "m", value, "ns" if latency else "samples/s", not latency)
    return ResultRecord(
        task=kw.get("task", "t"), benchmark="b", dataset="synthetic", scenario=scenario, mode=kw.get("mode", "performance"),
        style="quick", backend="x", backend_info={}, log_dir="", settings={}, system={}, metric=metric,
        validity=validity, invalid_reasons=list(reasons), audit=kw.get("audit", ""),
    )


def test_throughput_per_scenario():
    assert throughput(_record("SingleStream", 2_000_000)) == pytest.approx(500.0)  # p90 2 ms -> 500 q/s
    assert throughput(_record("MultiStream", 4_000_000)) == pytest.approx(250.0)  # p99 query 4 ms -> 250 q/s
    assert throughput(_record("Offline", 1234.0)) == 1234.0
    assert throughput(_record("Offline", None, "FAILED")) is None


def test_validity_classes():
    assert mobile_validity(_record("Offline", 1.0)) == "valid"
    assert mobile_validity(_record("Offline", 1.0, "INVALID", ["min_queries: 10 of 100"])) == "semi-valid"
    assert mobile_validity(_record("Offline", 1.0, "INVALID", ["min_duration: ran 5 ms"])) == "invalid"
    assert mobile_validity(_record("Offline", 1.0, "INVALID", ["min_queries: x", "early_stopping: y"])) == "invalid"
    assert mobile_validity(_record("Offline", None, "FAILED", ["boom"])) == "invalid"


def test_geomean_over_performance_runs_only():
    records = [
        _record("SingleStream", 1_000_000, task="a"),  # 1000 q/s
        _record("Offline", 10.0, task="b"),
        _record("Offline", 99999.0, task="b", mode="accuracy"),
        _record("Offline", 99999.0, task="b", audit="TEST04"),
    ]
    score = geomean_score(records)
    assert score["score"] == pytest.approx(math.sqrt(1000 * 10))
    assert score["validity"] == "valid" and len(score["parts"]) == 2


def test_worst_validity_wins_and_failures_void_the_score():
    semi = geomean_score([_record("Offline", 4.0), _record("Offline", 9.0, "INVALID", ["min_queries: 1"])])
    assert semi["score"] == pytest.approx(6.0) and semi["validity"] == "semi-valid"
    failed = geomean_score([_record("Offline", 4.0), _record("Offline", None, "FAILED", ["x"])])
    assert failed["score"] is None and failed["validity"] == "invalid"


def test_suites_without_a_score():
    assert suite_score("", [_record("Offline", 1.0)]) is None
