"""``mlgauge results --export csv|json``: the stored records, filtered as usual, read back exactly."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from mlgauge.cli import main
from mlgauge.results.record import Metric, ResultRecord
from mlgauge.results.store import ResultStore


def _record(record_id: str, run_id: str, minute: int, **overrides) -> ResultRecord:
    fields = dict(
        task="resnet50", benchmark="resnet", dataset="imagenet", scenario="Offline", mode="performance",
        style="valid", backend="onnxruntime", backend_info={"version": "1.20"}, settings={}, system={},
        log_dir=f"/logs/{run_id}/{record_id}",
        metric=Metric("result_samples_per_second", "throughput", 1234.5678, "samples/s", True),
        validity="VALID", latency_ns={"p50": 2500, "p90": 4000.5, "p99": 7000, "max": 9000},
        run_id=run_id, record_id=record_id, created_at=f"2025-03-01T10:{minute:02d}:00+00:00",
    )  # fmt: skip
    fields.update(overrides)
    return ResultRecord(**fields)


RECORDS = [
    _record("perf1", "run-a", 0),
    _record(
        "acc1", "run-a", 1, mode="accuracy", metric=None, validity=None, latency_ns={}, precision="int8",
        accuracy={"metric": "top1", "value": 0.7612, "unit": "fraction", "passed": False,
                  "target": {"reference": 0.7646, "threshold": 0.757}},
    ),  # fmt: skip
    _record(
        "bad1", "run-b", 2, task="bert", scenario="Server", audit="TEST04", validity="INVALID",
        invalid_reasons=["min_duration not met", "early stopping: p99, not enough queries"],
        latency_ns={"p50": 1, "p90": 2},
    ),  # fmt: skip
]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "results.db"
    with ResultStore(path) as store:
        store.add_many(RECORDS)
    return path


def _export(capsys, *argv: str) -> str:
    assert main(["results", *argv]) == 0
    return capsys.readouterr().out


def test_csv_has_one_row_per_record_with_the_record_values(capsys, db: Path) -> None:
    rows = list(csv.DictReader(io.StringIO(_export(capsys, "--db", str(db), "--export", "csv"))))
    assert [r["record_id"] for r in rows] == ["bad1", "acc1", "perf1"]  # newest first
    bad, acc, perf = rows
    assert perf == {
        "record_id": "perf1", "run_id": "run-a", "created_at": "2025-03-01T10:00:00+00:00",
        "task": "resnet50",
        "benchmark": "resnet", "dataset": "imagenet", "scenario": "Offline", "mode": "performance",
        "style": "valid", "backend": "onnxruntime", "precision": "fp32", "audit": "",
        "metric_key": "result_samples_per_second", "metric_name": "throughput", "metric_value": "1234.5678",
        "metric_unit": "samples/s", "validity": "VALID", "invalid_reasons": "", "accuracy_value": "",
        "accuracy_passed": "", "latency_p50_ns": "2500", "latency_p90_ns": "4000.5", "latency_p99_ns": "7000",
        "log_dir": "/logs/run-a/perf1",
    }  # fmt: skip
    assert (acc["mode"], acc["precision"], acc["accuracy_value"], acc["accuracy_passed"]) == (
        "accuracy", "int8", "0.7612", "false",
    )  # fmt: skip
    assert acc["metric_value"] == acc["validity"] == acc["latency_p50_ns"] == ""
    # A reason holding a comma survives the round trip; reasons are joined by "; ".
    assert bad["invalid_reasons"] == "min_duration not met; early stopping: p99, not enough queries"
    assert (bad["audit"], bad["latency_p90_ns"], bad["latency_p99_ns"]) == ("TEST04", "2", "")
    assert float(perf["metric_value"]) == RECORDS[0].metric.value


def test_json_export_is_the_full_records(capsys, db: Path) -> None:
    got = json.loads(_export(capsys, "--db", str(db), "--export", "json"))
    assert [ResultRecord.from_dict(d) for d in got] == list(reversed(RECORDS))


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["--run", "run-a"], ["acc1", "perf1"]),
        (["--last"], ["bad1"]),
        (["--task", "resnet50", "--limit", "1"], ["acc1"]),
        (["--scenario", "Offline"], ["acc1", "perf1"]),
        (["--task", "nope"], []),
    ],
)
def test_export_uses_the_usual_filters(capsys, db: Path, filters: list[str], expected: list[str]) -> None:
    out = _export(capsys, "--db", str(db), "--export", "csv", *filters)
    assert [r["record_id"] for r in csv.DictReader(io.StringIO(out))] == expected
    assert out.splitlines()[0].startswith("record_id,run_id,created_at,")


def test_export_to_a_file_replaces_it_whole(capsys, db: Path, tmp_path: Path) -> None:
    out = tmp_path / "export.csv"
    out.write_text("old content that must go\n" * 100)
    assert main(["results", "--db", str(db), "--export", "csv", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Wrote 3 records" in printed and "record_id" not in printed
    with open(out, newline="") as f:
        assert [r["record_id"] for r in csv.DictReader(f)] == ["bad1", "acc1", "perf1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.csv", "results.db"]  # no temporary left
    assert main(["results", "--db", str(db), "--export", "json", "--output", str(tmp_path / "e.json")]) == 0
    assert len(json.loads((tmp_path / "e.json").read_text())) == 3


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["-o", "x.csv"], "-o/--output goes with --export"),
        (["--export", "csv", "--runs"], "does not go with --runs"),
        (["--export", "xml"], "invalid choice: 'xml'"),
        (["--export", "csv", "-o", "/nonexistent-dir/x.csv"], "cannot write the export"),
    ],
)
def test_export_errors_are_one_line(capsys, db: Path, argv: list[str], needle: str) -> None:
    assert main(["results", "--db", str(db), *argv]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert not Path("/nonexistent-dir").exists()
