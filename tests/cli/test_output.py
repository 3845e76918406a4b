"""The results table: one row per (task, scenario, ...), shared columns in the title."""

from __future__ import annotations

from rich.console import Console

from mlgauge.cli.output import fmt_accuracy, results_table
from mlgauge.results.record import Metric, ResultRecord


def _record(scenario: str, mode: str, precision: str = "fp32", accuracy: dict | None = None) -> ResultRecord:
    return ResultRecord(
        task="resnet50", benchmark="resnet50", dataset="synthetic", scenario=scenario, mode=mode, style="quick",
        backend="onnxruntime", backend_info={}, log_dir="", settings={}, system={},
        metric=Metric("result_samples_per_second", "samples/s", 1234.0, "samples/s", True) if mode == "performance" else None,
        validity="VALID" if mode == "performance" else None, accuracy=accuracy, precision=precision,
    )  # fmt: skip


def _accuracy(value: float, **extra) -> dict:
    return {"value": value, "unit": "%", "passed": value >= 85.86, "target": {"threshold": 85.86}, **extra}


def _text(table) -> str:
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_accuracy_cell_shows_the_change_from_fp32():
    cell = fmt_accuracy(_record("Offline", "accuracy", "int8", _accuracy(94.75, fp32_reference=95.5, change_vs_fp32=-0.75)))
    assert cell.startswith("94.75% (≥85.86)")
    assert "PASS" in cell and cell.endswith(", -0.75 vs fp32")
    assert "vs fp32" not in fmt_accuracy(_record("Offline", "accuracy", "fp32", _accuracy(95.5)))


def test_a_run_with_its_fp32_reference_shows_precision_as_a_column():
    records = [
        _record("Offline", "performance", "int8"),
        _record("Offline", "accuracy", "fp32", _accuracy(95.5)),
        _record("Offline", "accuracy", "int8", _accuracy(70.0, fp32_reference=95.5, change_vs_fp32=-25.5)),
    ]
    text = _text(results_table(records, title="t"))
    assert "Precision" in text
    int8_row = next(line for line in text.splitlines() if "int8" in line)
    assert "1,234" in int8_row and "70.00%" in int8_row and "FAIL" in int8_row and "-25.50 vs fp32" in int8_row
    fp32_row = next(line for line in text.splitlines() if "fp32" in line and "95.50%" in line)
    assert "PASS" in fp32_row


def test_shared_columns_move_into_the_title():
    text = _text(results_table([_record("Offline", "performance"), _record("Offline", "accuracy", accuracy=_accuracy(95.5))], title="run"))
    title = " ".join(text.split("┏")[0].split())  # rich wraps the title to the table's width
    assert "task: resnet50" in title and "backend: onnxruntime" in title and "precision: fp32" in title
    assert "Precision" not in text


def test_repeats_show_their_median_and_range_and_an_invalid_one_shows():
    records = [_record("Offline", "performance") for _ in range(3)]
    for r, value in zip(records, (1000.0, 1300.0, 1200.0), strict=True):
        r.metric = Metric("result_samples_per_second", "samples/s", value, "samples/s", True)
    text = _text(results_table(records))
    assert "1,200 samples/s (n=3, 1,000 samples/s–1,300 samples/s)" in text and "VALID" in text
    records[1].validity, records[1].invalid_reasons = "INVALID", ["min_duration: ran 280 ms"]
    assert "INVALID (min_duration)" in _text(results_table(records))
