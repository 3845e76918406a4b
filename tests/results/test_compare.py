"""Comparing two sets of results: ratios, direction, statistics, row matching and verdicts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mlgauge.results.compare import (
    IMPROVEMENT,
    NOT_COMPARABLE,
    NOT_SIGNIFICANT,
    ONLY_IN_A,
    ONLY_IN_B,
    REGRESSION,
    WITHIN,
    compare,
    mann_whitney_p,
    ratio_ci,
    smallest_p,
)
from mlgauge.results.record import Metric, ResultRecord

QPS = ("result_samples_per_second", "samples per second", "samples/s", True)
LATENCY = ("result_90.00_percentile_latency_ns", "p90 latency", "ns", False)


def perf(
    value: float,
    *,
    task: str = "resnet50",
    scenario: str = "Offline",
    metric: tuple = QPS,
    backend: str = "onnxruntime",
    validity: str = "VALID",
    run_id: str = "a",
    **fields,
) -> ResultRecord:
    key, name, unit, higher = metric
    base = {
        "dataset": "synthetic",
        "style": "valid",
        "settings": {"min_duration_ms": 600000},
        "system": {"cpu_model": "AMD EPYC", "cpu_logical_cores": 8},
    }
    base.update(fields)
    return ResultRecord(
        task=task, benchmark=task, scenario=scenario, mode="performance", backend=backend, backend_info={},
        log_dir="", metric=Metric(key, name, value, unit, higher), validity=validity,
        invalid_reasons=["min_duration: too short"] if validity == "INVALID" else [], run_id=run_id, **base,
    )  # fmt: skip


def acc(value: float, *, precision: str = "fp32", run_id: str = "a") -> ResultRecord:
    return ResultRecord(
        task="resnet50", benchmark="resnet50", dataset="synthetic", scenario="Offline", mode="accuracy",
        style="valid", backend="onnxruntime", backend_info={}, log_dir="", settings={},
        system={"cpu_model": "AMD EPYC", "cpu_logical_cores": 8},
        accuracy={"metric": "top1", "value": value, "unit": "%", "passed": True}, precision=precision, run_id=run_id,
    )  # fmt: skip


def test_single_values_give_ratio_and_change_by_hand_without_ci_or_p():
    comparison = compare([perf(1000.0)], [perf(1100.0, run_id="b")])
    (row,) = comparison.rows
    assert row.ratio == pytest.approx(1.1)
    assert row.better_pct == pytest.approx(10.0)
    assert row.ci is None and row.p_value is None
    assert row.basis == "threshold"
    assert row.verdict == IMPROVEMENT
    assert (row.a.n, row.b.n) == (1, 1)


def test_lower_is_better_turns_a_longer_latency_into_a_negative_change():
    # 2.0 ms -> 2.5 ms: B/A = 1.25, and B runs at 1/1.25 = 0.8 of A's speed: 20% worse.
    comparison = compare([perf(2.0e6, metric=LATENCY)], [perf(2.5e6, metric=LATENCY, run_id="b")])
    (row,) = comparison.rows
    assert row.ratio == pytest.approx(1.25)
    assert row.better_pct == pytest.approx(-20.0)
    assert row.verdict == REGRESSION
    assert comparison.regressions == [row]


def test_threshold_applies_to_the_change_in_the_metric_direction():
    # 100 -> 96 is 4% worse: inside 5%, a regression at 3%.
    a, b = [perf(100.0)], [perf(96.0, run_id="b")]
    assert compare(a, b).rows[0].verdict == WITHIN
    assert compare(a, b, threshold=0.03).rows[0].verdict == REGRESSION
    # A latency 5.1% longer is 4.85% slower (1/1.051 - 1), so 5% does not flag it.
    row = compare([perf(100.0, metric=LATENCY)], [perf(105.1, metric=LATENCY)]).rows[0]
    assert row.better_pct == pytest.approx((1 / 1.051 - 1) * 100)
    assert row.verdict == WITHIN


def test_mann_whitney_p_matches_exact_counts():
    # Exact two-sided p for samples that do not overlap is 2 / C(n_a + n_b, n_a).
    assert mann_whitney_p([1.0, 2.0], [3.0, 4.0]) == pytest.approx(2 / 6)
    assert mann_whitney_p([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(2 / 20)
    assert mann_whitney_p([1.0, 2.0, 3.0, 4.0, 5.0], [6.0, 7.0, 8.0, 9.0, 10.0]) == pytest.approx(2 / 252)
    # One overlap in 3 vs 3: U = 1, and 2 of the 20 orderings give U <= 1 on each side.
    assert mann_whitney_p([1.0, 2.0, 4.0], [3.0, 5.0, 6.0]) == pytest.approx(4 / 20)
    assert mann_whitney_p([1.0], [2.0, 3.0]) is None
    assert mann_whitney_p([5.0, 5.0], [5.0, 5.0]) == 1.0
    assert smallest_p(2, 2) == pytest.approx(1 / 3)
    assert smallest_p(5, 5) == pytest.approx(2 / 252)


def test_ci_contains_the_true_ratio_and_is_reproducible():
    rng = np.random.default_rng(7)
    a = list(100.0 + rng.normal(0.0, 2.0, 15))
    b = list(110.0 + rng.normal(0.0, 2.0, 15))
    low, high = ratio_ci(a, b)
    assert low < 1.1 < high
    assert low > 1.0 and high < 1.2  # 2% noise over 15 repeats cannot make the interval this wide
    assert ratio_ci(a, b) == (low, high)
    assert ratio_ci([1.0], [2.0, 3.0]) is None


def test_ci_of_two_against_two_spans_the_possible_ratios():
    # Resampled medians of [1, 2] are 1, 1.5 or 2, of [3, 4] are 3, 3.5 or 4: ratios from 1.5 to 4.
    low, high = ratio_ci([1.0, 2.0], [3.0, 4.0])
    assert low == pytest.approx(1.5) and high == pytest.approx(4.0)


def test_repeats_that_separate_clearly_are_a_significant_regression():
    a = [perf(v, run_id="a") for v in (100.0, 101.0, 99.0, 100.5, 99.5)]
    b = [perf(v, run_id="b") for v in (90.0, 91.0, 89.0, 90.5, 89.5)]
    (row,) = compare(a, b).rows
    assert row.a.median == 100.0 and row.b.median == 90.0
    assert row.p_value == pytest.approx(2 / 252)
    assert row.basis == "test"
    assert row.verdict == REGRESSION
    assert row.ci[0] <= 0.9 <= row.ci[1]


def test_two_repeats_a_side_can_never_be_significant():
    a = [perf(100.0), perf(101.0)]
    b = [perf(80.0, run_id="b"), perf(81.0, run_id="b")]
    comparison = compare(a, b)
    (row,) = comparison.rows
    assert row.better_pct == pytest.approx((80.5 / 100.5 - 1) * 100)
    assert row.p_value == pytest.approx(1 / 3)
    assert row.verdict == NOT_SIGNIFICANT
    assert comparison.regressions == []
    assert any("too few repeats" in note for note in comparison.notes)


def test_backends_match_by_task_unless_a_side_holds_several():
    # One backend a side: ORT vs torch compares task by task.
    row = compare([perf(100.0)], [perf(120.0, backend="torch", run_id="b")]).rows[0]
    assert row.variant == {} and row.a.backends == ["onnxruntime"] and row.b.backends == ["torch"]
    # A holds both: each backend is compared with itself, torch is only in A.
    comparison = compare([perf(100.0), perf(50.0, backend="torch")], [perf(110.0, run_id="b")])
    (row,) = comparison.rows
    assert row.variant == {"backend": "onnxruntime"} and row.ratio == pytest.approx(1.1)
    (only,) = comparison.only_in_a
    assert only.variant == {"backend": "torch"} and only.verdict == ONLY_IN_A and only.a.median == 50.0


def test_rows_on_one_side_only_are_listed():
    a = [perf(100.0), perf(5e6, scenario="SingleStream", metric=LATENCY)]
    b = [perf(100.0, run_id="b"), perf(30.0, scenario="Server", run_id="b")]
    comparison = compare(a, b)
    assert [r.scenario for r in comparison.rows] == ["Offline"]
    assert [(r.scenario, r.verdict) for r in comparison.only_in_a] == [("SingleStream", ONLY_IN_A)]
    assert [(r.scenario, r.verdict) for r in comparison.only_in_b] == [("Server", ONLY_IN_B)]
    assert comparison.only_in_a[0].b is None and comparison.only_in_a[0].ratio is None


def test_invalid_side_is_compared_and_named():
    comparison = compare([perf(100.0)], [perf(150.0, validity="INVALID", run_id="b")])
    (row,) = comparison.rows
    assert row.verdict == IMPROVEMENT and row.invalid_sides == ["B"]
    assert row.verdict_text == "improvement, B INVALID"
    assert any("INVALID" in note for note in comparison.notes)


def test_accuracy_rows_are_higher_is_better_and_split_by_precision():
    a = [acc(76.0), acc(75.0, precision="int8")]
    b = [acc(76.0, run_id="b"), acc(72.0, precision="int8", run_id="b")]
    comparison = compare(a, b)
    rows = {r.variant["precision"]: r for r in comparison.rows}
    assert rows["fp32"].verdict == WITHIN and rows["fp32"].unit == "%" and rows["fp32"].metric == "top1"
    assert rows["int8"].better_pct == pytest.approx((72 / 75 - 1) * 100)
    assert rows["int8"].verdict == WITHIN  # 4% worse, inside the default 5%
    assert [r.label for r in compare(a, b, threshold=0.02).regressions] == [rows["int8"].label]


def test_a_score_falling_to_zero_is_a_regression_but_a_zero_baseline_is_not_comparable():
    (row,) = compare([acc(76.0)], [acc(0.0, run_id="b")]).rows
    assert row.better_pct == pytest.approx(-100.0) and row.verdict == REGRESSION
    (row,) = compare([acc(0.0)], [acc(76.0, run_id="b")]).rows
    assert row.verdict == NOT_COMPARABLE and row.ratio is None


def test_audits_and_runs_without_a_number_are_skipped():
    audit = perf(1.0, audit="TEST04")
    failed = perf(1.0, validity="FAILED")
    failed.metric = None
    comparison = compare([perf(100.0), audit, failed], [perf(100.0, run_id="b")])
    assert comparison.rows[0].a.n == 1


def test_notes_name_system_style_settings_and_data_differences():
    a = [perf(100.0)]
    b = [
        perf(
            100.0, run_id="b", style="quick", dataset="imagenet", settings={"min_duration_ms": 2000},
            system={"cpu_model": "Intel Xeon", "cpu_logical_cores": 16},
        )
    ]  # fmt: skip
    notes = " | ".join(compare(a, b).notes)
    assert "AMD EPYC (8 cores)" in notes and "Intel Xeon (16 cores)" in notes
    assert "A is valid style and B is quick style" in notes
    assert "min_duration_ms differs (A 600000, B 2000)" in notes
    assert "synthetic data compared with real data" in notes
    (only,) = compare(a, [perf(100.0, run_id="b")]).notes
    assert "threshold alone" in only


def test_offline_query_sizes_follow_calibration_and_are_not_noted():
    sized = {"min_duration_ms": 600000, "samples_per_query": 3710, "min_sample_count": 3710}
    a = [perf(100.0, settings=sized), perf(5e5, scenario="SingleStream", metric=LATENCY, settings=sized)]
    resized = {**sized, "samples_per_query": 5341, "min_sample_count": 5341}
    b = [
        perf(150.0, run_id="b", settings=resized),
        perf(5e5, scenario="SingleStream", metric=LATENCY, run_id="b", settings=resized),
    ]
    notes = [n for n in compare(a, b).notes if n.startswith("LoadGen setting")]
    # Offline sizes its one query from the measured rate; in SingleStream the same keys are rules.
    assert notes == [
        "LoadGen setting min_sample_count differs (A 3710, B 5341) for resnet50 SingleStream: the metric is measured differently",
        "LoadGen setting samples_per_query differs (A 3710, B 5341) for resnet50 SingleStream: the metric is measured differently",
    ]


def test_to_dict_is_json():
    comparison = compare([perf(100.0), perf(101.0)], [perf(90.0, run_id="b"), perf(91.0, run_id="b")])
    data = json.loads(json.dumps(comparison.to_dict(), allow_nan=False))
    (row,) = data["rows"]
    assert row["label"] == "resnet50 Offline samples per second"
    assert len(row["ci"]) == 2 and math.isclose(row["ratio"], 90.5 / 100.5)
    assert data["threshold"] == 0.05 and data["regressions"] == []
