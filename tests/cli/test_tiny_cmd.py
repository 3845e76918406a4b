"""'mlgauge tiny' end to end on ad01 at smoke size: trained, quantized, served by the host device,
measured over the protocol, stored and reported; and the faults a user meets, each one line."""

from __future__ import annotations

import json

import pytest

from mlgauge.cli import main
from mlgauge.results.store import ResultStore
from mlgauge.tiny.device import TcpDevice

SMOKE = ["ad01", "--quick", "--meter", "none", "--train-samples", "40", "--epochs", "3", "--accuracy-samples", "16"]


def _tiny(capsys, tmp_path, *extra: str) -> tuple[int, dict | None, str]:
    argv = ["tiny", *SMOKE, "--db", str(tmp_path / "r.db"), "--output-dir", str(tmp_path / "out"), *extra]
    code = main(argv)
    out, err = capsys.readouterr()
    return code, (json.loads(out) if "--json" in extra and out.strip() else None), err


def test_a_smoke_run_is_measured_over_the_protocol_stored_and_reported(capsys, tmp_path):
    code, data, _ = _tiny(capsys, tmp_path, "--json")
    (record,) = data["records"]
    assert record["accuracy"]["value"] > 0.8  # 16 clips, 8 of them anomalous
    assert code == (0 if record["accuracy"]["passed"] else 1)  # quick style alone does not fail a run
    assert record["benchmark"] == "ad01" and record["dataset"] == "synthetic" and record["precision"] == "int8"
    assert record["device"]["transport"] == "tcp" and record["device"]["model"] == "ad01"
    assert record["accuracy"]["metric"] == "AUC" and record["accuracy"]["samples"] == 16
    assert record["accuracy"]["path"] == "host" and record["model"]["calibration_samples"] == 100
    windows = record["performance"]["windows"]
    assert len(windows) == 5 and all(w["seconds"] >= 0.2 and w["inferences"] >= 10 for w in windows)
    assert record["energy"] is None and record["energy_note"] == "not measured: no meter asked for"
    assert not record["valid"] and any("quick style" in r for r in record["invalid_reasons"])
    assert any("rule asks for 248" in r for r in record["invalid_reasons"])
    with ResultStore(tmp_path / "r.db") as store:
        (stored,) = store.query_tiny(run_id=data["run_id"])
    assert stored.to_dict() == record
    assert (tmp_path / "out" / "tiny_record_ad01.json").is_file()
    assert main(["report", data["run_id"], "--db", str(tmp_path / "r.db"), "-o", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "not measured: no meter asked for" in page and "ad01" in page


def test_the_second_run_reuses_the_trained_model_and_the_protocol_path_agrees(capsys, tmp_path):
    ic = ["tiny", "ic01", "--quick", "--meter", "none", "--train-samples", "40", "--epochs", "1",
          "--accuracy-samples", "20", "--db", str(tmp_path / "r.db"), "--json"]  # fmt: skip
    assert main([*ic, "--transport", "pty", "--output-dir", str(tmp_path / "a")]) == 1  # far from 85% top-1
    first = json.loads(capsys.readouterr().out)["records"][0]
    main([*ic, "--accuracy-over-protocol", "--backend", "torch", "--precision", "fp32", "--output-dir", str(tmp_path / "b")])
    second = json.loads(capsys.readouterr().out)["records"][0]
    assert first["device"]["transport"] == "pty" and first["device"]["url"].startswith("/dev/")
    assert second["model"]["cached"] and second["model"]["seconds"] == first["model"]["seconds"]
    assert second["accuracy"]["path"] == "device" and second["accuracy"]["samples"] == 20  # 2 per class
    # the device prints probabilities to 3 decimals: at most a tie (one sample of 20) may break differently
    assert second["accuracy"]["value"] == pytest.approx(second["model"]["fp32_accuracy"], abs=0.051)


def test_a_board_running_another_model_is_named_and_nothing_is_stored(capsys, tmp_path):
    with TcpDevice(lambda data: [0.5], "kws01", 490) as board:
        code, _, err = _tiny(capsys, tmp_path, "--port", board.url)
    assert code != 0
    assert err.count("\n") == 1 and "expected model ad01, the device says kws01" in err
    with ResultStore(tmp_path / "r.db") as store:
        assert store.query_tiny() == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tiny", "xx01"], "xx01"),
        (["tiny", "ad01", "kws01", "--dataset", "/tmp"], "does not say which benchmark"),
        (["tiny", "ad01", "--dataset", "/no/such/folder"], "no dataset folder at /no/such/folder"),
        (["tiny", "ad01", "kws01", "--port", "/dev/ttyUSB9"], "a board runs one benchmark's firmware"),
        (["tiny", "ad01", "--epochs", "0"], "--epochs must be at least 1"),
        (["tiny", "ad01", "--port", "/dev/no-such-port", "--train-samples", "1"], "cannot open the device port"),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(capsys, tmp_path, argv, message):
    code = main([*argv, "--db", str(tmp_path / "r.db"), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code != 0 and err.count("\n") == 1 and message in err and "Traceback" not in err


def test_a_silent_device_times_out_in_the_bounded_wait(capsys, tmp_path):
    import socket
    import time

    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        port = silent.getsockname()[1]
        started = time.monotonic()
        code, _, err = _tiny(capsys, tmp_path, "--port", f"socket://127.0.0.1:{port}", "--timeout", "0.5")
        waited = time.monotonic() - started
    assert code != 0 and err.count("\n") == 1
    assert "'name' got no reply ending in m-ready within 0.5 s" in err and waited < 5


def test_an_external_monitor_trace_gives_energy_per_inference(capsys, tmp_path):
    import time

    now = time.time()
    trace = tmp_path / "trace.csv"
    trace.write_text("time_s,watts\n" + "".join(f"{now - 60 + i},2.0\n" for i in range(0, 1200, 5)))
    code, data, _ = _tiny(capsys, tmp_path, "--json", "--energy-trace", str(trace))
    record = data["records"][0]
    assert record["energy"]["meter"] == "trace:trace.csv" and record["energy_note"] == ""
    for w in record["performance"]["windows"]:
        timed = 2.0 * w["seconds"] / w["inferences"] * 1e6  # 2 W over the timed loop, in µJ per inference
        # the meter's window is the whole infer command: the loop plus its replies, a little more
        assert timed <= w["energy_uj_per_inference"] <= 1.5 * timed
    assert record["energy"]["median_uj_per_inference"] == sorted(
        w["energy_uj_per_inference"] for w in record["performance"]["windows"]
    )[2]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--input-quantization", "half"], "is not SCALE:ZERO_POINT"),
        (["--input-quantization", "0.5:3"], "ad01 takes its input as float32, not int8"),
    ],
)
def test_input_quantization_is_checked(capsys, tmp_path, extra, message):
    code, _, err = _tiny(capsys, tmp_path, *extra)
    assert code == 2 and err.count("\n") == 1 and message in err
