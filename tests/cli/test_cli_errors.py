"""Bad input gets one clear line on stderr, exit code 2, no traceback, nothing stored."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from mlgauge.cli import main


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def _rows(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        return con.execute("SELECT COUNT(*) FROM results").fetchone()[0]


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["run", "--task", "nope"], ["unknown task 'nope'", "resnet50"]),
        (["run", "--backend", "tensorflow"], ["unknown backend 'tensorflow'", "onnxruntime", "torch", "null"]),
        (["run", "--scenario", "Streaming"], ["unknown scenario 'Streaming'", "SingleStream", "Offline"]),
        (["run", "--mode", "fast"], ["invalid choice: 'fast'"]),
        (["run", "--rules", "v0.5"], ["unknown rules round 'v0.5'", "v6.0"]),
        (["run", "--scenario", "Offline", "--find-peak"], ["--find-peak", "Server"]),
        (["run", "--threads", "-1"], ["--threads"]),
        (["run", "--dataset", "/nonexistent/imagenet"], ["dataset folder /nonexistent/imagenet does not exist"]),
        (["run", "--weights", "/nonexistent/w.pt"], ["weights file /nonexistent/w.pt does not exist"]),
        (["run", "--dataset", "/a", "--dataset", "/b"], ["--dataset was given 2 times", "--suite"]),
        (["run", "--suite", "edge", "--dataset", "/data/imagenet"], ["needs the form TASK=PATH", "resnet50=/data/imagenet"]),
        (["run", "--suite", "edge", "--dataset", "edsr=/tmp"], ["names edsr, which the edge suite does not run", "resnet50"]),
        (["run", "--suite", "edge", "--dataset", "resnet50=/nonexistent/in"], ["/nonexistent/in for resnet50 does not exist"]),
        (["run", "--suite", "mobile", "--weights", "mosaic=/nonexistent/m.tflite"], ["/nonexistent/m.tflite for mosaic does not exist"]),
        (["run", "--repeats", "0"], ["--repeats", "at least 1"]),
        (["run", "--scenario", "Server", "--find-peak", "--repeats", "3"], ["--find-peak", "without --repeats"]),
        (["report"], ["which runs?", "--last"]),
        (["report", "--last", "--db", "/nonexistent/r.db"], ["no results database at /nonexistent/r.db"]),
        (["compare", "a", "b", "--db", "/nonexistent/r.db"], ["no results database at /nonexistent/r.db"]),
        (["report", "--last", "--db", "mysql://host/db"], ["mysql"]),
        (["nosuchcommand"], ["invalid choice: 'nosuchcommand'"]),
        (["run", "--task", "resnet50", "--embedding", "robe", "--robe-size", "1MB"], ["--embedding does not apply to resnet50"]),
        (["run", "--task", "dlrm-v2-99", "--embedding", "robe", "--robe-size", "1 parsec"], ["cannot read the size '1 parsec'"]),
        (["run", "--task", "dlrm-v2-99", "--embedding", "hashing"], ["--embedding hashing needs a compression >= 1"]),
        (["run", "--suite", "edge", "--embedding", "qr", "--compression", "4"], ["--embedding changes one task's model"]),
    ],
)
def test_bad_names_and_paths(capsys, argv, needles):
    code, _, err = _run(capsys, argv)
    _assert_one_line_error(code, err, *needles)


def test_malformed_user_conf_names_the_line(capsys, tmp_path):
    conf = tmp_path / "user.conf"
    conf.write_text("# overrides\n*.Server.target_qps = 100\nresnet50.Offline.target_qps 5\n")
    code, _, err = _run(capsys, ["run", "--conf", str(conf)])
    _assert_one_line_error(code, err, f"{conf}:3", "model.scenario.key = value")


def test_user_conf_unknown_key(capsys, tmp_path):
    conf = tmp_path / "user.conf"
    conf.write_text("*.Offline.target_latency = 5\n")
    code, _, err = _run(capsys, ["run", "--conf", str(conf)])
    _assert_one_line_error(code, err, f"{conf}:1", "target_latency", "Offline")


def test_missing_user_conf(capsys, tmp_path):
    code, _, err = _run(capsys, ["run", "--conf", str(tmp_path / "missing.conf")])
    _assert_one_line_error(code, err, "missing.conf does not exist")


def test_unwritable_output_dir(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = _run(capsys, ["run", "--output-dir", str(blocker / "runs")])
    _assert_one_line_error(code, err, "cannot write the run logs", str(blocker / "runs"))


def test_imagenet_without_weights(capsys, tmp_path, prepared):
    data = tmp_path / "imagenet"
    data.mkdir()
    (data / "val_map.txt").write_text("")
    db = tmp_path / "r.db"
    code, _, err = _run(capsys, ["run", "--dataset", str(data), "--db", str(db)])
    _assert_one_line_error(code, err, "needs weights", "--weights")
    assert _rows(db) == 0


def test_corrupt_weights_fail_in_worker_without_record(capsys, tmp_path, prepared):
    weights = tmp_path / "broken.pt"
    weights.write_bytes(b"\x80\x02 this is not a state dict")
    db = tmp_path / "r.db"
    argv = ["run", "--weights", str(weights), "--scenario", "SingleStream", "--mode", "performance",
            "--backend", "torch", "--db", str(db), "--output-dir", str(tmp_path / "runs"), "--json"]
    code, out, err = _run(capsys, argv)
    _assert_one_line_error(code, err, "broken.pt", "not a readable PyTorch state dict")
    assert out == ""
    assert _rows(db) == 0


def test_mismatched_weights(capsys, tmp_path, prepared):
    import torch

    weights = tmp_path / "other.pt"
    torch.save({"linear.weight": torch.zeros(3, 3)}, weights)
    db = tmp_path / "r.db"
    argv = ["run", "--weights", str(weights), "--scenario", "SingleStream", "--mode", "performance",
            "--backend", "torch", "--db", str(db), "--output-dir", str(tmp_path / "runs"), "--json"]
    code, _, err = _run(capsys, argv)
    _assert_one_line_error(code, err, "other.pt", "does not fit the model")
    assert _rows(db) == 0


def test_worker_crash_is_one_line_and_stores_nothing(capsys, tmp_path, monkeypatch, prepared):
    # A sitecustomize on the worker's path kills the worker with SIGSEGV mid-run,
    # the way a native crash in a backend would.
    hook = tmp_path / "crashhook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, signal, threading\n"
        "if os.environ.get('MLGAUGE_TEST_CRASH'):\n"
        "    threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGSEGV)).start()\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("MLGAUGE_TEST_CRASH", "1")
    db = tmp_path / "r.db"
    argv = ["run", "--scenario", "Offline", "--backend", "null", "--db", str(db),
            "--output-dir", str(tmp_path / "runs"), "--json"]
    code, _, err = _run(capsys, argv)
    _assert_one_line_error(code, err, "Offline performance worker was killed by SIGSEGV", "worker.log")
    assert _rows(db) == 0


def test_results_without_database(capsys, tmp_path):
    code, _, err = _run(capsys, ["results", "--db", str(tmp_path / "none.db")])
    _assert_one_line_error(code, err, "no results database")
