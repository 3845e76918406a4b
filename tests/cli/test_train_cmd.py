"""'mlgauge train' on the tiny synthetic variant: a scored set in the database and in MLPerf's
layout, logs the official checker accepts, and faults that keep what was already recorded."""

from __future__ import annotations

import json
import subprocess
import sys
from statistics import mean

import pytest

from mlgauge.cli import main
from mlgauge.results.store import ResultStore
from mlgauge.training import session


def _train(capsys, tmp_path, *extra: str) -> tuple[int, dict | None, str]:
    argv = ["train", "--variant", "tiny", "--seed", "11", "--db", str(tmp_path / "r.db"),
            "--output-dir", str(tmp_path / "logs"), *extra]  # fmt: skip
    code = main(argv)
    out, err = capsys.readouterr()
    return code, (json.loads(out) if "--json" in extra and out.strip() else None), err


def _stored(tmp_path) -> list:
    with ResultStore(tmp_path / "r.db") as store:
        return store.query_training()


def test_a_set_is_scored_stored_and_laid_out_for_mlperf(capsys, tmp_path):
    code, data, _ = _train(capsys, tmp_path, "--json")
    assert code == 0
    runs = data["runs"]
    assert [r["seed"] for r in runs] == [11, 12, 13, 14, 15]  # the rules' 5 runs, distinct logged seeds
    assert all(r["status"] == "success" for r in runs)
    times = sorted(r["time_to_train_s"] for r in runs)
    assert data["score"]["valid"] and data["score"]["seconds"] == pytest.approx(mean(times[1:-1]))
    assert [r.seed for r in _stored(tmp_path)] == [11, 12, 13, 14, 15]

    results = sorted(p.name for p in (tmp_path / "logs").rglob("result_*.txt"))
    assert results == [f"result_{i}.txt" for i in range(5)]
    log = next((tmp_path / "logs").rglob("result_3.txt"))
    check = subprocess.run(
        [sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage", "training", "--ruleset", "4.0.0", str(log)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert check.returncode == 0 and "SUCCESS" in check.stdout + check.stderr


@pytest.mark.integration  # two torchrun processes
def test_two_data_parallel_processes_train_to_the_target(capsys, tmp_path):
    code, data, _ = _train(capsys, tmp_path, "--runs", "1", "--nproc", "2", "--json")
    (run,) = data["runs"]
    assert run["status"] == "success" and run["config"]["world_size"] == 2
    # Samples are counted over both ranks: whole epochs of the 2,048-image tiny training set.
    assert run["samples"] == 2048 * run["epochs"]
    log = next((tmp_path / "logs").rglob("result_0.txt"))
    check = subprocess.run(
        [sys.executable, "-m", "mlperf_logging.compliance_checker", "--usage", "training", "--ruleset", "4.0.0", str(log)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert check.returncode == 0 and "SUCCESS" in check.stdout + check.stderr
    assert '"key": "global_batch_size", "value": 64' in log.read_text()


def test_fewer_runs_than_the_rules_want_give_no_score(capsys, tmp_path):
    code, data, _ = _train(capsys, tmp_path, "--runs", "2", "--json")
    assert code == 1 and not data["score"]["valid"] and "5" in data["score"]["reason"]
    assert len(_stored(tmp_path)) == 2  # the runs themselves are kept


def test_a_crashed_run_is_recorded_as_failed_and_the_set_goes_on(capsys, tmp_path, monkeypatch):
    real = session.run_training
    calls = []

    def crash_second(bench, **kw):
        calls.append(kw["seed"])
        if len(calls) == 2:
            raise RuntimeError("rank 0 lost its worker")
        return real(bench, **kw)

    monkeypatch.setattr(session, "run_training", crash_second)
    code, data, _ = _train(capsys, tmp_path, "--json")
    statuses = [r["status"] for r in data["runs"]]
    assert statuses == ["success", "failed", "success", "success", "success"]
    assert data["runs"][1]["reason"] == "failed: RuntimeError: rank 0 lost its worker"
    assert code == 0 and data["score"]["valid"]  # one non-converging run is the dropped slowest
    assert [r.status for r in _stored(tmp_path)] == statuses


def test_ctrl_c_keeps_the_finished_runs_and_records_the_interrupted_one(capsys, tmp_path, monkeypatch):
    real = session.run_training
    calls = []

    def interrupt_third(bench, **kw):
        calls.append(kw["seed"])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(bench, **kw)

    monkeypatch.setattr(session, "run_training", interrupt_third)
    code, _, err = _train(capsys, tmp_path, "--json")
    assert code == 130 and "interrupted" in err
    stored = _stored(tmp_path)
    assert [(r.status, r.reason) for r in stored] == [
        ("success", stored[0].reason), ("success", stored[1].reason), ("aborted", "interrupted (Ctrl-C)"),
    ]  # fmt: skip


def test_bad_input_is_one_line(capsys, tmp_path):
    for extra, needle in (
        (["--dataset", str(tmp_path / "missing")], "does not exist"),
        (["--runs", "0"], "--runs must be at least 1"),
        (["--nproc", "3"], "does not split over 3 processes"),
        (["nosuchbench"], "nosuchbench"),
        (["--backbone-weights", str(tmp_path / "w.pt")], "--backbone-weights does not apply to resnet"),
        (["--embedding", "robe", "--robe-size", "1MB"], "--embedding does not apply to resnet"),
        (["dlrm_dcnv2", "--embedding", "robe"], "ROBE needs the size of its shared array"),
        (["dlrm_dcnv2", "--embedding", "robe", "--robe-size", "ten"], "cannot read the size 'ten'"),
        (["dlrm_dcnv2", "--embedding", "qr"], "--embedding qr needs a compression >= 1"),
    ):
        code, _, err = _train(capsys, tmp_path, *extra)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and needle in lines[0], err
