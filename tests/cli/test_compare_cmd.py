"""``mlgauge compare``: the table, --json, the --fail-above gate, run selection and errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
from rich.console import Console

from mlgauge import cli
from mlgauge.cli import compare_cmd
from mlgauge.errors import UsageError
from mlgauge.results.record import Metric, ResultRecord
from mlgauge.results.store import ResultStore

QPS = Metric("result_samples_per_second", "samples per second", 0.0, "samples/s", True)
P90 = Metric("result_90.00_percentile_latency_ns", "p90 latency", 0.0, "ns", False)


def record(run_id: str, day: int, scenario: str, value: float, *, task: str = "resnet50") -> ResultRecord:
    template = QPS if scenario == "Offline" else P90
    return ResultRecord(
        task=task, benchmark=task, dataset="synthetic", scenario=scenario, mode="performance", style="valid",
        backend="onnxruntime", backend_info={}, log_dir="", settings={"min_duration_ms": 600000},
        system={"cpu_model": "AMD EPYC", "cpu_logical_cores": 8},
        metric=Metric(template.key, template.name, value, template.unit, template.higher_is_better),
        validity="VALID", run_id=run_id, created_at=f"2025-01-0{day}T10:00:00+00:00",
    )  # fmt: skip


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = tmp_path / "results.db"
    with ResultStore(path) as store:
        store.add_many(
            [
                record("r1", 1, "Offline", 1000.0),
                record("r1", 1, "SingleStream", 2.0e6),
                record("r2", 2, "Offline", 1020.0),
                record("r2", 2, "SingleStream", 2.5e6),  # 20% slower than r1
                record("r3", 3, "Offline", 1010.0),
                record("r3", 3, "SingleStream", 2.4e6),
                record("bert-run", 4, "Offline", 50.0, task="bert"),
            ]
        )
    return str(path)


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    # The shared console sizes itself from the terminal; a fixed width keeps rows on one line.
    monkeypatch.setattr(compare_cmd, "console", Console(width=200))


def run(db: str, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="mlgauge")
    compare_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["compare", *argv, "--db", db])
    return args.handler(args)


def line_with(text: str, needle: str) -> str:
    return next(line for line in text.splitlines() if needle in line)


def test_table_shows_medians_ratio_and_verdicts(db, capsys):
    assert run(db, "r1", "r2") == 0  # a regression fails nothing without --fail-above
    out = capsys.readouterr().out
    assert "B (r2) vs A (r1)" in out
    offline = line_with(out, "Offline")
    assert "1,000 samples/s (1)" in offline and "1,020 samples/s (1)" in offline
    assert "1.020" in offline and "within threshold (+2.0%)" in offline
    single = line_with(out, "SingleStream")
    assert "2 ms (1)" in single and "2.5 ms (1)" in single and "1.250" in single
    assert "regression (-20.0%)" in single
    assert "threshold alone" in out
    assert "2 compared: 1 regression, 1 within threshold (threshold 5%, alpha 0.05)" in out


def test_json_carries_the_comparison_and_the_gate(db, capsys):
    assert run(db, "r1", "r2", "--json", "--fail-above", "5%") == 1
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["failed"] is True
    assert data["a"]["run_ids"] == ["r1"] and data["b"]["run_ids"] == ["r2"]
    rows = {r["scenario"]: r for r in data["rows"]}
    assert rows["SingleStream"]["ratio"] == pytest.approx(1.25)
    assert rows["SingleStream"]["better_pct"] == pytest.approx(-20.0)
    assert data["regressions"] == ["resnet50 SingleStream p90 latency"]
    assert "resnet50 SingleStream p90 latency (-20.0%)" in captured.err


@pytest.mark.parametrize(("limit", "code"), [("5%", 1), ("19.9", 1), ("25", 0), ("25%", 0)])
def test_fail_above_gates_the_exit_code(db, capsys, limit, code):
    assert run(db, "r1", "r2", "--fail-above", limit) == code
    err = capsys.readouterr().err
    assert ("FAIL: 1 regression(s)" in err) == (code == 1)


def test_last_and_last_tilde_pick_runs_newest_first(db, capsys):
    assert run(db, "last~2", "last~1", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["a"]["run_ids"] == ["r2"] and data["b"]["run_ids"] == ["r3"]
    assert run(db, "last~1", "last") == 1  # r3 (resnet50) vs bert-run: nothing in common
    assert "no results in common" in capsys.readouterr().err


def test_comma_joined_runs_pool_as_repeats(db, capsys):
    assert run(db, "r2,r3", "r1", "--json") == 0
    row = next(r for r in json.loads(capsys.readouterr().out)["rows"] if r["scenario"] == "Offline")
    assert row["a"]["n"] == 2 and sorted(row["a"]["values"]) == [1010.0, 1020.0]
    assert row["a"]["median"] == 1015.0 and row["b"]["n"] == 1
    assert row["p_value"] is None and row["basis"] == "threshold"
    run(db, "r2,r3", "r1")
    assert "1,015 samples/s (2)" in line_with(capsys.readouterr().out, "Offline")


def test_nothing_in_common_exits_1_with_a_message(db, capsys):
    assert run(db, "r1", "bert-run") == 1
    err = capsys.readouterr().err
    assert "no results in common" in err and "resnet50 Offline" in err and "bert Offline" in err


def test_unknown_run_is_one_line_error(db, capsys, monkeypatch):
    if "compare" not in cli.COMMANDS:  # until the command is registered in mlgauge.cli
        monkeypatch.setattr(cli, "COMMANDS", (*cli.COMMANDS, "compare"))
    code = cli.main(["compare", "r1", "nope", "--db", db])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err
    assert "unknown run id 'nope' for B" in lines[0] and "mlgauge results --runs" in lines[0]
    with pytest.raises(UsageError, match="asks for the run 9 before the newest"):
        run(db, "last~9", "r1")
    missing = Path(db).parent / "missing.db"
    with pytest.raises(UsageError, match="no results database at"):
        run(str(missing), "r1", "r2")
    assert not missing.exists()


@pytest.mark.parametrize(("text", "value"), [("5%", 0.05), ("5", 0.05), ("0.5", 0.005), ("12.5 %", 0.125)])
def test_percent_rule(text, value):
    assert compare_cmd.parse_percent(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["abc", "-5", "5%%", "0.05x", "1e2"])
def test_bad_percent_and_alpha_are_usage_errors(db, text):
    with pytest.raises(UsageError, match="--fail-above must be a percentage"):
        run(db, "r1", "r2", "--fail-above", text)
    with pytest.raises(UsageError, match="--alpha"):
        run(db, "r1", "r2", "--alpha", "1.5")
