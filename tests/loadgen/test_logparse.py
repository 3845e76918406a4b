"""logparse against real LoadGen logs, generated once per module by lg_fixture.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mlgauge.errors import RunError
from mlgauge.loadgen.logparse import (
    DetailLog,
    decode_accuracy_log,
    early_stopping,
    effective_settings,
    latency_percentiles,
    parse_detail_log,
    read_accuracy_log,
    result_stats,
    validity,
)

FIXTURE_SCRIPT = Path(__file__).with_name("lg_fixture.py")

# name -> lg_fixture.py arguments after OUTDIR
RUNS = {
    "SingleStream": ["SingleStream", "performance"],
    "MultiStream": ["MultiStream", "performance"],
    "Server": ["Server", "performance"],
    "Offline": ["Offline", "performance"],
    "accuracy": ["Offline", "accuracy"],
    "invalid": ["Server", "performance", "--invalid"],
}

# The scenario metric keys the MLPerf checker reads (RESULT_FIELD_NEW["v6.0"]).
METRIC_KEYS = {
    "SingleStream": "early_stopping_latency_ss",
    "MultiStream": "early_stopping_latency_ms",
    "Server": "result_completed_samples_per_sec",
    "Offline": "result_samples_per_second",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loadgen_logs")
    # One process per LoadGen test (LoadGen keeps per-process state), all at
    # once: each run mostly sleeps for its 300 ms minimum duration.
    procs = {
        name: subprocess.Popen(
            [sys.executable, str(FIXTURE_SCRIPT), str(root / name), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name, args in RUNS.items()
    }
    for name, proc in procs.items():
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"lg_fixture {name} failed:\n{output}"
    return {name: root / name for name in RUNS}


def detail(runs: dict[str, Path], name: str) -> DetailLog:
    return parse_detail_log(runs[name] / "mlperf_log_detail.txt")


def summary_number(run_dir: Path, label: str) -> float:
    """The number after ``label`` ... ':' in mlperf_log_summary.txt."""
    text = (run_dir / "mlperf_log_summary.txt").read_text()
    match = re.search(rf"^\s*\*?\s*{re.escape(label)}\s*:\s*([0-9.eE+-]+)\s*$", text, re.MULTILINE)
    assert match, f"{label!r} not in summary:\n{text}"
    return float(match.group(1))


# --- validity -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["SingleStream", "MultiStream", "Server", "Offline"])
def test_performance_runs_are_valid(runs: dict[str, Path], name: str) -> None:
    log = detail(runs, name)
    assert validity(log) == ("VALID", [])
    assert log.errors == []
    assert "Result is : VALID" in (runs[name] / "mlperf_log_summary.txt").read_text()


def test_invalid_server_run_reports_latency(runs: dict[str, Path]) -> None:
    log = detail(runs, "invalid")
    verdict, reasons = validity(log)
    assert verdict == "INVALID"
    ids = [reason.split(":", 1)[0] for reason in reasons]
    assert "latency" in ids
    assert "early_stopping" in ids  # every query is over a 1 ns bound
    latency = next(r for r in reasons if r.startswith("latency:"))
    p99_ms = log.values["result_99.00_percentile_latency_ns"] / 1e6
    assert re.fullmatch(r"latency: p99 [0-9.]+ ms over the 0\.000001 ms bound", latency)
    assert float(latency.split()[2]) == pytest.approx(p99_ms, abs=1e-6)
    assert log.values["result_overlatency_query_count"] == log.values["result_query_count"]


def test_validity_needs_a_result(runs: dict[str, Path]) -> None:
    # Accuracy runs log no result_validity at all.
    with pytest.raises(RunError, match="result_validity") as err:
        validity(detail(runs, "accuracy"))
    assert "accuracy log" in (err.value.hint or "")


@pytest.mark.parametrize("name", ["Server", "Offline", "SingleStream"])
def test_min_duration_reason_rebuilds_the_measured_time(runs: dict[str, Path], name: str) -> None:
    # No cheap deterministic way to make LoadGen cut a run short, so flip the
    # flag on a real log: the duration comes from the logged rates.
    log = detail(runs, name)
    values = dict(log.values, result_validity="INVALID", result_min_duration_met=False)
    verdict, reasons = validity(DetailLog(values, [], []))
    assert verdict == "INVALID"
    match = re.fullmatch(r"min_duration: ran ([0-9.]+) ms, needed 300 ms", reasons[0])
    assert match, reasons
    ran = float(match.group(1))
    # The real run met min_duration, so the rebuilt time is at least 300 ms.
    assert 300 <= ran < 60_000
    if name == "Offline":
        assert ran == pytest.approx(log.values["result_max_latency_ns"] / 1e6, abs=1e-3)


def test_min_queries_and_error_reasons(runs: dict[str, Path]) -> None:
    values = dict(
        detail(runs, "MultiStream").values,
        result_validity="INVALID",
        result_min_queries_met=False,
        result_query_count=10,
        num_errors=2,
    )
    _, reasons = validity(DetailLog(values, ["error_runtime: x"], []))
    assert reasons == [
        "min_queries: ran 10 queries (80 samples), needed 700 queries and 5600 samples",
        "loadgen_errors: 2",
    ]


# --- metrics --------------------------------------------------------------------


@pytest.mark.parametrize("name", list(METRIC_KEYS))
def test_metric_key_present_and_positive(runs: dict[str, Path], name: str) -> None:
    value = detail(runs, name).values[METRIC_KEYS[name]]
    assert isinstance(value, int | float) and not isinstance(value, bool)
    assert value > 0


def test_single_stream_headline_matches_summary(runs: dict[str, Path]) -> None:
    log = detail(runs, "SingleStream")
    es = early_stopping(log)
    # The summary's "90.0th percentile latency (ns)" line is the plain p90;
    # the metric (early stopping estimate) is on the "Early stopping" line.
    assert es["early_stopping_latency_ss"] == summary_number(
        runs["SingleStream"], "Early stopping 90.0th percentile estimate"
    )
    assert es["early_stopping_latency_ms"] == summary_number(
        runs["SingleStream"], "Early stopping 99.0th percentile estimate"
    )
    assert latency_percentiles(log)["p90"] == summary_number(
        runs["SingleStream"], "90.0th percentile latency (ns)"
    )
    assert es["early_stopping_met"] is True
    assert "Processed at least 64 queries" in es["early_stopping_result"]
    stats = result_stats(log)
    assert stats["result_query_count"] >= 700
    assert stats["result_qps_with_loadgen_overhead"] == pytest.approx(
        summary_number(runs["SingleStream"], "QPS w/ loadgen overhead"), rel=1e-5
    )


def test_multi_stream_headline_matches_summary(runs: dict[str, Path]) -> None:
    log = detail(runs, "MultiStream")
    assert early_stopping(log)["early_stopping_latency_ms"] == summary_number(
        runs["MultiStream"], "Early stopping 99.0th percentile estimate"
    )
    per_query = latency_percentiles(log, per_query=True)
    assert per_query["p99"] == summary_number(runs["MultiStream"], "99.0th percentile latency (ns)")
    assert per_query["min"] == summary_number(runs["MultiStream"], "Min latency (ns)")
    assert result_stats(log)["result_query_count"] >= 700
    assert "early_stopping_latency_ss" not in early_stopping(log)


def test_server_logs_scheduled_and_completed_rates(runs: dict[str, Path]) -> None:
    log = detail(runs, "Server")
    stats = result_stats(log)
    assert stats["result_completed_samples_per_sec"] == pytest.approx(
        summary_number(runs["Server"], "Completed samples per second"), rel=1e-5
    )
    assert stats["result_scheduled_samples_per_sec"] == pytest.approx(
        summary_number(runs["Server"], "Scheduled samples per second"), rel=1e-5
    )
    # Poisson arrivals at 2000 QPS over >= 300 ms.
    assert 1000 < stats["result_scheduled_samples_per_sec"] < 3000
    assert stats["result_overlatency_query_count"] == 0
    assert early_stopping(log)["early_stopping_result"].strip() == "* Run successful."


def test_offline_headline_matches_summary(runs: dict[str, Path]) -> None:
    log = detail(runs, "Offline")
    stats = result_stats(log)
    assert stats["result_samples_per_second"] == pytest.approx(
        summary_number(runs["Offline"], "Samples per second"), rel=1e-5
    )
    assert stats["result_query_count"] == 1
    # samples/s = samples / max latency (the one query's duration).
    assert stats["result_samples_per_second"] == pytest.approx(
        660 / (latency_percentiles(log)["max"] / 1e9), rel=1e-3
    )


@pytest.mark.parametrize("name", ["SingleStream", "MultiStream", "Server", "Offline", "invalid"])
def test_percentiles_are_complete_and_monotonic(runs: dict[str, Path], name: str) -> None:
    pct = latency_percentiles(detail(runs, name))
    assert set(pct) == {"min", "max", "mean", "p50", "p90", "p95", "p97", "p99", "p99.9"}
    ordered = [pct[k] for k in ("min", "p50", "p90", "p95", "p97", "p99", "p99.9", "max")]
    assert ordered == sorted(ordered)
    assert ordered[0] > 0
    assert pct["min"] <= pct["mean"] <= pct["max"]
    assert all(isinstance(v, float) for v in pct.values())


def test_percentiles_ignore_per_query_keys_unless_asked(runs: dict[str, Path]) -> None:
    assert latency_percentiles(detail(runs, "Server"), per_query=True) == {}
    assert len(latency_percentiles(detail(runs, "MultiStream"), per_query=True)) == 9


@pytest.mark.parametrize(
    ("name", "scenario", "samples_per_query"),
    [("SingleStream", "SingleStream", 1), ("MultiStream", "MultiStream", 8), ("Server", "Server", 1)],
)
def test_effective_settings(runs: dict[str, Path], name: str, scenario: str, samples_per_query: int) -> None:
    settings = effective_settings(detail(runs, name))
    assert settings["scenario"] == scenario
    assert settings["test_mode"] == "PerformanceOnly"
    assert settings["min_duration_ms"] == 300
    assert settings["samples_per_query"] == samples_per_query
    assert settings["performance_sample_count"] == 64
    assert not any(key.startswith("effective_") for key in settings)


def test_effective_settings_offline_and_server_bounds(runs: dict[str, Path]) -> None:
    # Offline query size = 1.1 * 0.3 s * 2000 expected QPS.
    assert effective_settings(detail(runs, "Offline"))["samples_per_query"] == 660
    assert effective_settings(detail(runs, "Server"))["target_latency_ns"] == 1_000_000_000
    assert effective_settings(detail(runs, "invalid"))["target_latency_ns"] == 1


def test_result_stats_leave_out_covered_keys(runs: dict[str, Path]) -> None:
    stats = result_stats(detail(runs, "MultiStream"))
    assert "result_validity" not in stats
    assert not any("latency_ns" in key for key in stats)
    assert not any(key.endswith("_met") for key in stats)


# --- detail log parsing ----------------------------------------------------------


def test_value_types_and_last_occurrence_wins(runs: dict[str, Path]) -> None:
    log = detail(runs, "Server")
    assert log.values["sut_name"] == "PyFastSUT"
    assert log.values["qsl_reported_total_count"] == 64
    assert log.values["effective_print_timestamps"] is False
    assert isinstance(log.values["loaded_qsl_set"], list)
    assert log.values["generic_message"] == "Starting performance mode"
    assert log.values["num_errors"] == 0


def test_non_mllog_lines_and_damage_are_ignored(runs: dict[str, Path], tmp_path: Path) -> None:
    lines = (runs["Server"] / "mlperf_log_detail.txt").read_text().splitlines()
    error_entry = {
        "key": "error_invalid_config",
        "value": "Multiple conf files are used.",
        "metadata": {"is_error": True, "is_warning": False},
    }
    warning_entry = {"key": "warning_generic_message", "value": "slow", "metadata": {"is_warning": True}}
    mixed = [
        "some stdout chatter",
        "",
        *lines[:20],
        ":::MLLOG " + json.dumps(error_entry),
        ":::MLLOG " + json.dumps(warning_entry),
        'prefix text :::MLLOG {"key": "result_qps_with_loadgen_overhead", "value": inf, "metadata": {}}',
        *lines[20:],
        ':::MLLOG {"key": "cut_off", "val',
    ]
    path = tmp_path / "mlperf_log_detail.txt"
    path.write_text("\n".join(mixed) + "\n")
    log = parse_detail_log(path)
    assert log.values["result_completed_samples_per_sec"] > 0
    assert log.values["result_qps_with_loadgen_overhead"] == float("inf")
    assert "cut_off" not in log.values
    assert log.errors == ["error_invalid_config: Multiple conf files are used."]
    assert log.warnings == ["warning_generic_message: slow"]
    verdict, reasons = validity(log)
    assert verdict == "VALID"
    assert reasons == ["loadgen_errors: 1"]


def test_missing_detail_log_raises(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="detail log not found") as err:
        parse_detail_log(tmp_path / "nope" / "mlperf_log_detail.txt")
    assert "nope" in str(err.value)
    assert err.value.hint


def test_detail_log_without_entries_raises(tmp_path: Path) -> None:
    path = tmp_path / "mlperf_log_detail.txt"
    path.write_text("not a log\n")
    with pytest.raises(RunError, match="no ':::MLLOG' entries"):
        parse_detail_log(path)


# --- accuracy log ----------------------------------------------------------------


def test_accuracy_run_decodes_every_sample(runs: dict[str, Path]) -> None:
    path = runs["accuracy"] / "mlperf_log_accuracy.json"
    decoded = decode_accuracy_log(path, np.dtype(np.int32))
    assert sorted(decoded) == list(range(64))
    for idx, value in decoded.items():
        assert value.dtype == np.int32
        assert value.shape == (1,)
        assert int(value[0]) == idx * 3
    # File order follows LoadGen's completion order, not qsl_idx order.
    entries = read_accuracy_log(path)
    assert len(entries) == 64
    assert [idx for idx, _ in entries] == detail(runs, "accuracy").values["loaded_qsl_set"]
    assert all(len(data) == 4 for _, data in entries)


@pytest.mark.parametrize("name", ["SingleStream", "MultiStream", "Server", "Offline"])
def test_performance_accuracy_log_is_empty(runs: dict[str, Path], name: str) -> None:
    path = runs[name] / "mlperf_log_accuracy.json"
    assert read_accuracy_log(path) == []
    assert decode_accuracy_log(path, np.int32) == {}


def test_first_answer_wins_and_per_sample_reshape(tmp_path: Path) -> None:
    path = tmp_path / "mlperf_log_accuracy.json"
    first = np.arange(6, dtype=np.float32)
    entries = [
        {"seq_id": 0, "qsl_idx": 5, "data": first.tobytes().hex().upper()},
        {"seq_id": 1, "qsl_idx": 5, "data": np.zeros(6, np.float32).tobytes().hex()},
    ]
    path.write_text(json.dumps(entries))
    decoded = decode_accuracy_log(path, np.float32, per_sample=2)
    assert list(decoded) == [5]
    np.testing.assert_array_equal(decoded[5], first.reshape(2, 3))


@pytest.mark.parametrize(
    "text",
    [
        '[\n{ "seq_id" : 0, "qsl_idx" : 1, "data" : "07000000" },\n{ "seq_id" : 1, "qsl_id',  # truncated
        "garbage\x00not json",
        '{"qsl_idx": 1, "data": "00"}',  # not an array
        '[{"seq_id": 0, "qsl_idx": 1, "data": "XYZ"}]',  # not hex
        '[{"seq_id": 0, "data": "00000000"}]',  # no qsl_idx
    ],
)
def test_malformed_accuracy_log_raises(tmp_path: Path, text: str) -> None:
    path = tmp_path / "mlperf_log_accuracy.json"
    path.write_text(text)
    with pytest.raises(RunError) as err:
        decode_accuracy_log(path, np.int32)
    assert str(path) in str(err.value)


def test_accuracy_data_not_multiple_of_dtype_raises(runs: dict[str, Path]) -> None:
    path = runs["accuracy"] / "mlperf_log_accuracy.json"
    with pytest.raises(RunError, match="not a multiple of int64") as err:
        decode_accuracy_log(path, np.int64)
    assert "mlperf_log_accuracy.json" in str(err.value)


def test_missing_accuracy_log_raises(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="accuracy log not found"):
        read_accuracy_log(tmp_path / "mlperf_log_accuracy.json")
