"""The submission tree 'mlgauge submit' writes from a real run: MLPerf's layout, LoadGen's
logs byte for byte, and the files mlgauge writes itself (systems, measurements,
accuracy.txt, verify files, READMEs)."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from mlgauge.cli import submit_cmd
from mlgauge.config.run_spec import RunSpec
from mlgauge.errors import DataError, OutputError, UsageError
from mlgauge.loadgen.record import failed_record
from mlgauge.results.store import ResultStore
from mlgauge.submission import submission_rules
from mlgauge.submission.tree import build_tree, records_for_run, select_records, verify_texts

# Built from real LoadGen runs (worker processes), like tests/integration.
pytestmark = pytest.mark.integration

SCENARIOS = ("SingleStream", "MultiStream", "Offline")
PERF = ("mlperf_log_detail.txt", "mlperf_log_summary.txt")


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _system_files(tree: Path):
    return (tree / "open" / "mlgauge" / "systems").glob("*.json")


def _scenario_dir(tree: Path, scenario: str) -> Path:
    system = json.loads(next(iter(_system_files(tree))).read_text())["system_name"]
    return tree / "open" / "mlgauge" / "results" / system / "resnet" / scenario


def _record(records, scenario: str, kind: str):
    return next(r for r in records if r.scenario == scenario and (r.audit or r.mode) == kind)


def test_the_layout_is_mlperfs(quick_tree):
    system = json.loads(next(iter(_system_files(quick_tree))).read_text())["system_name"]
    org = "open/mlgauge"
    expected = {f"{org}/systems/{system}.json", f"{org}/code/resnet/README.md"}
    for s in SCENARIOS:
        d = f"{org}/results/{system}/resnet/{s}"
        expected |= {f"{d}/user.conf", f"{d}/measurements.json", f"{d}/README.md"}
        expected |= {f"{d}/performance/run_1/{n}" for n in PERF}
        expected |= {f"{d}/accuracy/{n}" for n in ("accuracy.txt", "mlperf_log_accuracy.json", *PERF)}
        expected |= {f"{d}/TEST01/{n}" for n in ("verify_accuracy.txt", "verify_performance.txt")}
        expected |= {f"{d}/TEST01/accuracy/mlperf_log_accuracy.json"}
        expected |= {f"{d}/TEST01/performance/run_1/{n}" for n in PERF}
        expected |= {f"{d}/TEST04/verify_performance.txt"} | {
            f"{d}/TEST04/performance/run_1/{n}" for n in PERF
        }
    assert _files(quick_tree) == expected
    # Nothing left beside the tree from building it.
    assert [p.name for p in quick_tree.parent.iterdir()] == ["tree"]


def test_loadgen_logs_are_copied_byte_for_byte(quick_tree, run_records):
    for s in SCENARIOS:
        d = _scenario_dir(quick_tree, s)
        perf, acc = _record(run_records, s, "performance"), _record(run_records, s, "accuracy")
        for name in PERF:
            assert (d / "performance/run_1" / name).read_bytes() == (Path(perf.log_dir) / name).read_bytes()
            assert (d / "accuracy" / name).read_bytes() == (Path(acc.log_dir) / name).read_bytes()
        assert (d / "accuracy/mlperf_log_accuracy.json").read_bytes() == (
            Path(acc.log_dir) / "mlperf_log_accuracy.json"
        ).read_bytes()
        assert (d / "user.conf").read_bytes() == (Path(perf.log_dir) / "user.conf").read_bytes()
        for test in ("TEST01", "TEST04"):
            audit = _record(run_records, s, test)
            assert (d / test / "performance/run_1/mlperf_log_detail.txt").read_bytes() == (
                Path(audit.log_dir) / "mlperf_log_detail.txt"
            ).read_bytes()
        test01 = _record(run_records, s, "TEST01")
        assert (d / "TEST01/accuracy/mlperf_log_accuracy.json").read_bytes() == (
            Path(test01.log_dir) / "mlperf_log_accuracy.json"
        ).read_bytes()


def test_accuracy_txt_has_the_metric_line_and_the_logs_hash(quick_tree, run_records):
    for s in SCENARIOS:
        d = _scenario_dir(quick_tree, s) / "accuracy"
        acc = _record(run_records, s, "accuracy").accuracy
        lines = (d / "accuracy.txt").read_text().splitlines()
        # The official imagenet pattern is ^accuracy=([\d\.]+).*
        value = float(re.match(r"^accuracy=([\d.]+)%", lines[0]).group(1))
        assert value == pytest.approx(acc["value"], abs=1e-6)
        assert f"good={acc['details']['good']}, total=2048" in lines[0]
        digest = hashlib.sha256((d / "mlperf_log_accuracy.json").read_bytes()).hexdigest()
        assert lines[-1] == f"hash={digest}"


def test_system_description_has_the_checkers_fields(quick_tree, run_records):
    (path,) = list(_system_files(quick_tree))
    desc = json.loads(path.read_text())
    assert set(submission_rules().systems.required) <= set(desc)
    system = run_records[0].system
    assert desc["division"] == "open"  # synthetic stand-ins default to the open division
    assert desc["submitter"] == "mlgauge"
    assert desc["system_type"] == "edge"  # resnet50 is in v6.0's edge suite only
    assert desc["status"] == "available"
    assert desc["host_processor_model_name"] == system["cpu_model"]
    assert desc["host_processor_core_count"] == (system["cpu_physical_cores"] or system["cpu_logical_cores"])
    assert desc["accelerators_per_node"] == 0 and desc["accelerator_model_name"] == "N/A"  # a CPU run
    assert desc["framework"].startswith("onnxruntime ")
    assert path.stem == desc["system_name"]


def test_measurements_say_what_was_run(quick_tree, run_records):
    for s in SCENARIOS:
        m = json.loads((_scenario_dir(quick_tree, s) / "measurements.json").read_text())
        assert set(submission_rules().measurements.required) <= set(m)
        assert (
            m["retraining"] == "no"
            and m["weight_transformations"] == "none"
            and m["weight_data_types"] == "fp32"
        )
        assert (m["benchmark"], m["task"], m["dataset"], m["backend"]) == (
            "resnet50",
            "resnet50",
            "synthetic",
            "onnxruntime",
        )
        assert (m["rules_round"], m["style"], m["precision"], m["count"]) == ("v6.0", "quick", "fp32", None)
        assert m["dataset_size"] == 2048  # the stand-in's validation split
        assert m["records"] == {
            k: _record(run_records, s, k).record_id for k in ("performance", "accuracy", "TEST01", "TEST04")
        }


def test_verify_files_follow_the_audit_verdicts(quick_tree, run_records):
    rules = submission_rules()
    for s in SCENARIOS:
        for test, files in (
            ("TEST01", ("verify_accuracy.txt", "verify_performance.txt")),
            ("TEST04", ("verify_performance.txt",)),
        ):
            verdict = _record(run_records, s, test).compliance
            texts = [(_scenario_dir(quick_tree, s) / test / f).read_text() for f in files]
            lines = [t.splitlines()[-1] for t in texts]
            assert all(line in ("TEST PASS", "TEST FAIL") for line in lines)
            # The test passes overall exactly when every verify file says so.
            assert (lines == ["TEST PASS"] * len(files)) == verdict["passed"], (s, test, verdict)
    failing = {
        "test": "TEST01",
        "passed": False,
        "checks": [
            {"name": "responses match the accuracy run", "passed": True, "detail": "10/10 identical"},
            {"name": "performance within tolerance", "passed": False, "detail": "-30% vs the normal run"},
        ],
    }
    texts = verify_texts("TEST01", failing, rules)
    assert texts["verify_accuracy.txt"].splitlines()[-1] == "TEST PASS"
    assert texts["verify_performance.txt"].splitlines()[-2:] == [
        "performance within tolerance: -30% vs the normal run: FAIL",
        "TEST FAIL",
    ]
    missing = verify_texts("TEST04", None, rules)["verify_performance.txt"]
    assert missing.splitlines()[-2:] == ["no verdict was recorded for this audit", "TEST FAIL"]


def test_readmes_say_how_to_reproduce(quick_tree):
    code = (quick_tree / "open/mlgauge/code/resnet/README.md").read_text()
    assert "mlgauge prepare resnet50" in code
    assert (
        "mlgauge run --task resnet50 --scenario SingleStream,MultiStream,Offline --backend onnxruntime "
        "--quick --audit TEST01,TEST04 --calibration-s 0.2 --min-duration 300"
    ) in code
    offline = (_scenario_dir(quick_tree, "Offline") / "README.md").read_text()
    assert "--scenario Offline " in offline


def test_failed_and_repeated_runs_are_reported_not_exported(run_records, tmp_path):
    spec = RunSpec(task="bert-99", scenario="Offline", mode="performance", backend="onnxruntime", out_dir="")
    failed = failed_record(spec, DataError("no stand-in here"))
    older = replace(
        _record(run_records, "Offline", "performance"),
        created_at="2000-01-01T00:00:00+00:00",
        record_id="old",
    )
    selection = select_records([*run_records, failed, older])
    reasons = {r.record_id: why for r, why in selection.skipped}
    assert reasons[failed.record_id].startswith("the run failed: no stand-in here")
    assert reasons["old"] == "superseded by a later run of the same test"
    assert [(b, s) for b, s in selection.scenarios] == [("resnet50", s) for s in SCENARIOS]
    assert selection.scenarios[("resnet50", "Offline")].performance.record_id != "old"
    tree = build_tree([*run_records, failed, older], tmp_path / "t")
    assert not list(tree.rglob("bert*"))


def test_an_existing_tree_is_kept_unless_overwrite(run_records, tmp_path):
    out = build_tree(run_records, tmp_path / "t")
    marker = out / "open" / "marker.txt"
    marker.write_text("mine")
    with pytest.raises(UsageError, match="already holds") as info:
        build_tree(run_records, out)
    assert "--overwrite" in info.value.hint
    assert marker.read_text() == "mine"
    build_tree(run_records, out, overwrite=True)
    assert not marker.exists() and (out / "open" / "mlgauge").is_dir()
    # --overwrite replaces a tree, never a folder holding something else.
    (out / "notes.txt").write_text("not a division")
    with pytest.raises(UsageError, match="refusing to replace"):
        build_tree(run_records, out, overwrite=True)
    assert (out / "notes.txt").exists()


def test_a_failed_export_leaves_the_old_tree_and_no_temporary_folder(run_records, tmp_path):
    out = build_tree(run_records, tmp_path / "t")
    before = _files(out)
    # A system name longer than the file system allows fails half way through writing.
    with pytest.raises(OutputError, match="cannot write the submission tree"):
        build_tree(run_records, out, overwrite=True, system_name="s" * 300)
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]


def test_names_that_cannot_be_folders_are_refused(run_records, tmp_path):
    with pytest.raises(UsageError, match="cannot be a folder name"):
        build_tree(run_records, tmp_path / "t", org="../escape")
    with pytest.raises(UsageError, match="unknown division"):
        build_tree(run_records, tmp_path / "t", division="secret")
    assert not (tmp_path / "t").exists()


def test_records_for_run_defaults_to_the_latest_run(submission_run):
    with ResultStore(submission_run["db"]) as store:
        run_id, records = records_for_run(store)
        assert run_id == submission_run["run_id"]
        assert {r.record_id for r in records} == {r.record_id for r in submission_run["records"]}
        with pytest.raises(UsageError, match="no results for run 'nope'"):
            records_for_run(store, "nope")


def test_an_empty_database_has_no_run_to_export(tmp_path):
    with ResultStore(tmp_path / "empty.db") as store, pytest.raises(UsageError, match="holds no runs"):
        records_for_run(store)


def _submit(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mlgauge")
    submit_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["submit", *argv])
    return args.handler(args)


def test_submit_command_builds_the_tree_and_says_where(submission_run, tmp_path, capsys):
    out = tmp_path / "sub"
    assert (
        _submit(["--out", str(out), "--db", str(submission_run["db"]), "--org", "acme", "--system", "box1"])
        == 0
    )
    text = capsys.readouterr().out
    assert f"Wrote {out}" in text and "does not pass" in text  # a quick run is too short for MLPerf
    assert (out / "open/acme/systems/box1.json").is_file()
    assert (out / "open/acme/results/box1/resnet/Offline/performance/run_1/mlperf_log_detail.txt").is_file()
    code = _submit(
        [
            "--out",
            str(tmp_path / "j"),
            "--db",
            str(submission_run["db"]),
            "--run",
            submission_run["run_id"],
            "--json",
        ]
    )
    payload = json.loads(capsys.readouterr().out)
    assert code == 0 and payload["run_id"] == submission_run["run_id"]
    assert payload["tree"] == str(tmp_path / "j")
    assert [(e["scenario"], e["audits"]) for e in payload["exported"]] == [
        (s, ["TEST01", "TEST04"]) for s in SCENARIOS
    ]
    assert payload["check"]["passed"] is False and payload["check"]["failed"] > 0
    with pytest.raises(UsageError, match="already holds"):
        _submit(["--out", str(out), "--db", str(submission_run["db"])])
    with pytest.raises(UsageError, match="no results database"):
        _submit(["--out", str(out), "--db", str(tmp_path / "none.db")])
