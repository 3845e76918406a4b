"""Every scenario, both modes, both real backends: short runs through the CLI,
real LoadGen worker processes, real logs, the real results database."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from mlgauge.cli import main
from mlgauge.results.store import ResultStore
from mlgauge.rules import SCENARIOS, standin_rules

pytestmark = pytest.mark.integration

SHORT = ["--min-duration", "300", "--calibration-s", "0.2"]


def _run_json(capsys, argv: list[str]) -> dict:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, prepared) -> dict:
    """One quick run of all four scenarios in both modes per backend, shared by the tests below."""
    root = tmp_path_factory.mktemp("runs")
    results = {}
    for backend in ("torch", "onnxruntime"):
        # A module-scoped fixture cannot use capsys, so capture by hand.
        buf_out, buf_err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err):
            code = main(
                ["run", "--backend", backend, "--scenario", "all", "--mode", "both", "--json",
                 "--db", str(root / "results.db"), "--output-dir", str(root / "logs"), *SHORT]
            )
        assert code == 0, buf_err.getvalue()
        results[backend] = json.loads(buf_out.getvalue())
    results["db"] = root / "results.db"
    return results


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_every_scenario_and_mode_produces_a_record(runs, backend):
    records = runs[backend]["records"]
    got = {(r["scenario"], r["mode"]) for r in records}
    assert got == {(s, m) for s in SCENARIOS for m in ("performance", "accuracy")}
    for r in records:
        assert r["backend"] == backend
        assert r["dataset"] == "synthetic"
        assert r["style"] == "quick"
        log_dir = Path(r["log_dir"])
        assert (log_dir / "mlperf_log_detail.txt").is_file()
        assert (log_dir / "mlperf_log_summary.txt").is_file()
        assert (log_dir / "user.conf").is_file()
        if r["mode"] == "performance":
            assert r["metric"]["value"] > 0
            assert r["validity"] in ("VALID", "INVALID")
            assert r["latency_ns"]["p50"] <= r["latency_ns"]["p99"]
            assert r["settings"]["min_duration_ms"] == 300
            assert r["settings"]["scenario"] == r["scenario"]
        else:
            assert r["metric"] is None
            assert r["accuracy"]["samples"] == 2048


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_accuracy_from_loadgen_log_matches_the_prepared_model(runs, prepared, backend):
    """Top-1 decoded from mlperf_log_accuracy.json equals the model's accuracy measured
    directly at prepare time (same weights, same 2048 validation images)."""
    target = standin_rules()["resnet50"].quality
    for r in runs[backend]["records"]:
        if r["mode"] != "accuracy":
            continue
        assert r["accuracy"]["passed"] is True
        assert r["accuracy"]["value"] == pytest.approx(prepared["val_top1_trained"], abs=0.1)
        assert r["accuracy"]["target"]["threshold"] == pytest.approx(target.threshold)


def test_latency_scenarios_are_valid_with_enough_queries(runs):
    # Early stopping needs >= 64 (p90) / 662 (p99) queries; the quick style asks for them.
    for backend in ("torch", "onnxruntime"):
        by = {(r["scenario"], r["mode"]): r for r in runs[backend]["records"]}
        assert by[("SingleStream", "performance")]["validity"] == "VALID"
        assert by[("MultiStream", "performance")]["validity"] == "VALID"
        assert by[("MultiStream", "performance")]["settings"]["samples_per_query"] == 8
        assert by[("Offline", "performance")]["validity"] == "VALID"


def test_records_are_stored_and_listed(runs, capsys):
    with ResultStore(runs["db"]) as store:
        assert store.count() == 16
        run_ids = {r["run_id"] for b in ("torch", "onnxruntime") for r in runs[b]["records"]}
        assert {r["run_id"] for r in store.runs()} == run_ids
    listed = _run_json(capsys, ["results", "--db", str(runs["db"]), "--json", "--limit", "100"])
    assert len(listed) == 16
    code = main(["results", "--db", str(runs["db"]), "--last"])
    out, _ = capsys.readouterr()
    assert code == 0
    for scenario in SCENARIOS:
        assert scenario in out


def test_untrained_weights_fail_the_quality_target(capsys, tmp_path, prepared):
    import torch

    from mlgauge.models.resnet import SmallResNet

    torch.manual_seed(123)
    weights = tmp_path / "untrained.pt"
    torch.save(SmallResNet().state_dict(), weights)
    data = _run_json(
        capsys,
        ["run", "--weights", str(weights), "--scenario", "Offline", "--mode", "accuracy", "--backend", "onnxruntime",
         "--json", "--db", str(tmp_path / "r.db"), "--output-dir", str(tmp_path / "logs"), *SHORT],
    )
    (record,) = data["records"]
    assert record["accuracy"]["passed"] is False
    assert record["accuracy"]["value"] < 20.0


def test_user_conf_and_flags_reach_loadgen(capsys, tmp_path, prepared):
    conf = tmp_path / "user.conf"
    conf.write_text("*.Server.target_qps = 321\n*.*.min_duration = 1000\n")
    data = _run_json(
        capsys,
        ["run", "--scenario", "Server", "--mode", "performance", "--backend", "null", "--conf", str(conf),
         "--min-duration", "400", "--json", "--db", str(tmp_path / "r.db"), "--output-dir", str(tmp_path / "logs"),
         "--calibration-s", "0.2"],
    )
    (record,) = data["records"]
    assert record["settings"]["target_qps"] == pytest.approx(321)
    assert record["settings"]["min_duration_ms"] == 400  # the flag beats user.conf
    sources = record["harness"]["settings_sources"]
    assert sources["target_qps"] == f"{conf}:1"
    assert sources["min_duration"] == "--min-duration"


def test_harness_shape_per_scenario(runs):
    for backend in ("torch", "onnxruntime"):
        by = {(r["scenario"], r["mode"]): r for r in runs[backend]["records"]}
        server = by[("Server", "performance")]["harness"]
        latencies = server["calibration"]["server_batch_latency_s"]
        bound_s = by[("Server", "performance")]["settings"]["target_latency_ns"] / 1e9
        # The cap is the largest measured size within a third of the latency bound.
        fitting = [int(b) for b, t in latencies.items() if t <= bound_s / 3]
        assert server["max_batch"] == max(fitting, default=1)
        assert by[("MultiStream", "performance")]["harness"]["max_batch"] == 8
        assert by[("SingleStream", "performance")]["harness"]["sut"] == "InlineSUT"
        assert by[("Offline", "performance")]["harness"]["sut"] == "BatchingSUT"
        assert server["sut"] == "DynamicBatchingSUT"
        assert server["backend_seconds"] > 0
        assert server["samples"] >= by[("Server", "performance")]["stats"].get("result_query_count", 1)


def test_raw_throughput_is_measured_again_after_the_test(tmp_path, prepared):
    from mlgauge import plan_inference, run_inference

    plan = plan_inference(
        task="resnet50", backend="torch", scenarios=["Offline"], modes=["performance"],
        flags={"min_duration": 300}, calibration_s=0.2, runs_dir=tmp_path,
    )
    plan.base = plan.base.with_(raw_after_s=0.2)
    (record,) = run_inference(plan)
    calibration = record.harness["calibration"]
    assert calibration["raw_throughput_after"] > 0
    assert calibration["batch_throughput"] > 0
