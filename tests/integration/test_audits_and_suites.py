"""Compliance audits and suites through the CLI, with real LoadGen workers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mlgauge.cli import main
from mlgauge.results.store import ResultStore

pytestmark = pytest.mark.integration

SHORT = ["--min-duration", "300", "--calibration-s", "0.2"]


def test_audits_run_through_loadgen_and_are_judged(capsys, tmp_path, prepared):
    code = main(
        ["run", "--backend", "onnxruntime", "--scenario", "Offline", "--audit", "TEST01,TEST04", "--json",
         "--db", str(tmp_path / "r.db"), "--output-dir", str(tmp_path / "logs"), *SHORT]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    records = json.loads(out)["records"]
    assert [(r["mode"], r["audit"]) for r in records] == [
        ("performance", ""), ("accuracy", ""), ("performance", "TEST01"), ("performance", "TEST04")
    ]
    test01, test04 = records[2], records[3]
    for record in (test01, test04):
        detail = (Path(record["log_dir"]) / "mlperf_log_detail.txt").read_text()
        assert "Found Audit Config file" in detail  # LoadGen itself applied the audit
        assert (Path(record["log_dir"]) / "audit.config").is_file()
    # TEST01 logged a sample of responses in performance mode, and they equal the accuracy run's.
    responses = test01["compliance"]["checks"][0]
    assert responses["name"] == "responses match the accuracy run" and responses["passed"], responses
    assert test01["settings"]["accuracy_log_sampling_target"] == 4096
    assert test04["settings"]["performance_issue_same"] in (True, 1)
    assert [c["name"] for c in test04["compliance"]["checks"]] == ["not faster on a repeated sample"]
    assert len(ResultStore(tmp_path / "r.db").query()) == 4


def test_test01_needs_an_accuracy_run(capsys, tmp_path):
    code = main(["run", "--scenario", "Offline", "--mode", "performance", "--audit", "TEST01", "--db", str(tmp_path / "r.db")])
    assert code == 2
    assert "include --mode accuracy" in capsys.readouterr().err


def test_a_suite_survives_a_failing_task(capsys, tmp_path, prepared, monkeypatch):
    """The edge suite with one task whose stand-in cannot be built: it is recorded as
    FAILED with the reason, and the other tasks still run."""
    import mlgauge.suite as suite_mod
    from mlgauge.errors import DataError

    real_prepare = suite_mod.inference.prepare

    def prepare(task, progress=None, model_options=None):
        if task != "resnet50":
            raise DataError(f"cannot build the stand-in for {task} here")
        return real_prepare(task, progress, model_options)

    monkeypatch.setattr(suite_mod.inference, "prepare", prepare)
    monkeypatch.setattr(suite_mod.inference, "needs_prepare", lambda plan: plan.base.task != "resnet50")
    code = main(
        ["run", "--suite", "edge", "--mode", "performance", "--backend", "onnxruntime", "--json",
         "--db", str(tmp_path / "r.db"), "--output-dir", str(tmp_path / "logs"), *SHORT]
    )
    out, err = capsys.readouterr()
    assert code == 1, err
    payload = json.loads(out)
    by_task: dict[str, list] = {}
    for r in payload["records"]:
        by_task.setdefault(r["task"], []).append(r)
    assert {r["scenario"] for r in by_task["resnet50"]} == {"SingleStream", "MultiStream", "Offline"}
    assert all(r["validity"] == "VALID" for r in by_task["resnet50"])
    failed = [r for t, rs in by_task.items() if t != "resnet50" for r in rs]
    assert failed and all(r["validity"] == "FAILED" and r["invalid_reasons"] for r in failed)
    assert set(payload["failed_tasks"]) == set(by_task) - {"resnet50"}
    stored = ResultStore(tmp_path / "r.db").query()
    assert len(stored) == len(payload["records"])
