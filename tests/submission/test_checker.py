"""'mlgauge check' on trees built from a real run: a quick tree fails on its durations, the
same tree edited to meet the rules passes every check, each single breakage yields its
own finding and exit code 1, and no broken tree makes the checker crash."""

from __future__ import annotations

import argparse
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from mlgauge.cli import check_cmd
from mlgauge.errors import UsageError
from mlgauge.loadgen import compliance
from mlgauge.submission import submission_rules
from mlgauge.submission.checker import CheckReport, check_tree
from mlgauge.submission.tree import build_tree

SCENARIOS = ("SingleStream", "MultiStream", "Offline")
_MLLOG = ":::MLLOG "


# -- helpers --------------------------------------------------------------------


def set_log_values(path: Path, **values: object) -> None:
    """Rewrite entries of a LoadGen detail log in place (the JSON of ':::MLLOG' lines)."""
    out, seen = [], set()
    for line in path.read_text().splitlines(keepends=True):
        start = line.find(_MLLOG)
        if start >= 0 and any(f'"key": "{k}"' in line for k in values):
            entry = json.loads(line[start + len(_MLLOG) :])
            entry["value"] = values[entry["key"]]
            seen.add(entry["key"])
            line = line[:start] + _MLLOG + json.dumps(entry) + "\n"
        out.append(line)
    assert seen == set(values), f"{path} lacks {set(values) - seen}"
    path.write_text("".join(out))


def meet_the_rules(tree: Path) -> None:
    """Edit a quick tree's performance logs and user.confs to the v6.0 run lengths: 600 s,
    and Offline's 24,576-sample query (the quick run was real; only its length was short)."""
    for detail in tree.rglob("performance/run_1/mlperf_log_detail.txt"):
        scenario = next(p for p in detail.parts if p in SCENARIOS)
        values: dict[str, object] = {"effective_min_duration_ms": 600000}
        if scenario == "Offline":
            values |= {"effective_samples_per_query": 24576, "effective_min_sample_count": 24576}
        set_log_values(detail, **values)
    for conf in tree.rglob("user.conf"):
        text = re.sub(r"^(\S+\.min_duration) = .*$", r"\1 = 600000", conf.read_text(), flags=re.MULTILINE)
        text = re.sub(r"^(\S+\.Offline\.min_query_count) = .*$", r"\1 = 24576", text, flags=re.MULTILINE)
        conf.write_text(text)


def all_passed(verdict: dict) -> dict:
    # On a loaded 2-core machine the audits' timing comparison of 0.3 s runs is noise;
    # the checker's job is reading the verdict, so the passing tree gets passing ones.
    return {**verdict, "passed": True, "checks": [{**c, "passed": True} for c in verdict["checks"]]}


def scenario_dir(tree: Path, scenario: str) -> Path:
    (system,) = (tree / "open/mlgauge/results").iterdir()
    return system / "resnet" / scenario


def rel(tree: Path, path: Path) -> str:
    return path.relative_to(tree).as_posix()


def run_check(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mlgauge")
    check_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["check", *argv])
    return args.handler(args)


def assert_no_crash(report: CheckReport) -> None:
    internal = [f for f in report.findings if f.check == "checker.internal"]
    assert not internal, internal


# -- fixtures -------------------------------------------------------------------


@pytest.fixture(scope="module")
def passing_tree(run_records, tmp_path_factory) -> Path:
    records = [replace(r, compliance=all_passed(r.compliance)) if r.audit else r for r in run_records]
    tree = build_tree(records, tmp_path_factory.mktemp("passing") / "tree")
    meet_the_rules(tree)
    return tree


@pytest.fixture
def tree(passing_tree, tmp_path) -> Path:
    """A private copy of the passing tree, to break."""
    return Path(shutil.copytree(passing_tree, tmp_path / "tree"))


# -- real trees -------------------------------------------------------------------


@pytest.mark.integration  # built from real LoadGen runs
def test_a_quick_tree_fails_on_its_durations(quick_tree, capsys):
    report = check_tree(quick_tree)
    assert_no_crash(report)
    for s in SCENARIOS:
        log = rel(quick_tree, scenario_dir(quick_tree, s) / "performance/run_1/mlperf_log_detail.txt")
        (finding,) = report.failed("performance.min_duration", log)
        assert finding.message == (
            f"effective_min_duration_ms = 300; the v6.0 rule for {s} needs at least 600000"
        )
    offline = rel(quick_tree, scenario_dir(quick_tree, "Offline") / "performance/run_1/mlperf_log_detail.txt")
    (short,) = report.failed("performance.min_query_count", offline)
    assert short.message.startswith("effective_samples_per_query = ") and short.message.endswith(
        "needs at least 24576"
    )
    # Only run length (and possibly the audits' noisy timing verdicts) fail: the logs, accuracy,
    # hashes, seeds, user.conf and structure all pass.
    assert {f.check for f in report.failures} <= {
        "performance.min_duration",
        "performance.min_query_count",
        "audit.verdict",
    }
    assert run_check([str(quick_tree)]) == 1
    out = capsys.readouterr().out
    assert "performance.min_duration" in out and "checks failed" in out


@pytest.mark.integration  # built from real LoadGen runs
def test_a_tree_that_meets_the_rules_passes_every_check(passing_tree, capsys):
    report = check_tree(passing_tree)
    assert report.failures == []
    assert report.passed and len(report.findings) > 150
    checks = {f.check for f in report.findings}
    for expected in (
        "performance.valid",
        "performance.seeds",
        "userconf.consistent",
        "accuracy.target",
        "accuracy.hash",
        "accuracy.sample_count",
        "audit.verdict",
        "audit.settings",
        "system.fields",
    ):
        assert expected in checks
    assert run_check([str(passing_tree)]) == 0
    assert f"all {len(report.findings)} checks passed" in capsys.readouterr().out
    assert run_check([str(passing_tree), "--verbose"]) == 0
    out = capsys.readouterr().out
    assert "performance.seeds" in out and "FAIL" not in out
    assert run_check([str(passing_tree), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["passed"] is True and payload["failed"] == 0


def _at(tree: Path, sub: str) -> Path:
    """A path in the tree's resnet folder, e.g. 'Offline/accuracy/accuracy.txt'."""
    scenario, _, rest = sub.partition("/")
    return scenario_dir(tree, scenario) / rest


def _edit_log(tree: Path, sub: str, **values: object) -> Path:
    set_log_values(_at(tree, sub), **values)
    return _at(tree, sub)


def _write(tree: Path, sub: str, text: str) -> Path:
    _at(tree, sub).write_text(text)
    return _at(tree, sub)


def _remove(tree: Path, sub: str) -> Path:
    shutil.rmtree(_at(tree, sub))
    return _at(tree, sub)


def _change_hashed_log(tree: Path) -> Path:
    with open(_at(tree, "Offline/accuracy/mlperf_log_accuracy.json"), "ab") as f:
        f.write(b"\n")  # still valid JSON, but no longer what accuracy.txt's hash says
    return _at(tree, "Offline/accuracy/accuracy.txt")


def _low_accuracy(tree: Path) -> Path:
    txt = _at(tree, "Offline/accuracy/accuracy.txt")
    lines = txt.read_text().splitlines()
    txt.write_text("\n".join(["accuracy=50.000000%, good=1024, total=2048", *lines[1:]]) + "\n")
    return txt


def _user_conf(tree: Path) -> Path:
    conf = _at(tree, "SingleStream/user.conf")
    conf.write_text(conf.read_text().replace("min_duration = 600000", "min_duration = 1200000"))
    return conf


PERF_LOG = "performance/run_1/mlperf_log_detail.txt"

# (name, break the tree and return the path the finding is about, check id, words in its message)
BREAKS = [
    (
        "TEST04 deleted",
        lambda t: _remove(t, "SingleStream/TEST04"),
        "audit.present",
        "TEST04 is required for resnet in v6.0, but TEST04/ is missing",
    ),
    (
        "accuracy log changed after hashing",
        _change_hashed_log,
        "accuracy.hash",
        "does not match mlperf_log_accuracy.json",
    ),
    (
        "INVALID result",
        lambda t: _edit_log(t, f"MultiStream/{PERF_LOG}", result_validity="INVALID"),
        "performance.valid",
        "result_validity = 'INVALID'",
    ),
    ("accuracy below target", _low_accuracy, "accuracy.target", "top1 50.0000% vs target >= 85.8600%"),
    (
        "scenario missing",
        lambda t: _remove(t, "MultiStream"),
        "suite.scenarios",
        "MultiStream is required for resnet in v6.0",
    ),
    (
        "malformed measurements.json",
        lambda t: _write(t, "Offline/measurements.json", "{not json"),
        "measurements.json",
        "not valid JSON",
    ),
    (
        "scenario in the log differs from the folder",
        lambda t: _edit_log(t, f"SingleStream/{PERF_LOG}", effective_scenario="Offline"),
        "performance.scenario",
        "effective_scenario = 'Offline', expected 'SingleStream'",
    ),
    (
        "user.conf disagrees with the log",
        _user_conf,
        "userconf.consistent",
        "resnet50.SingleStream.min_duration = 1200000 but effective_min_duration_ms = 600000",
    ),
    (
        "non-default seed",
        lambda t: _edit_log(t, f"Offline/{PERF_LOG}", effective_qsl_rng_seed=1),
        "performance.seeds",
        "effective_qsl_rng_seed = 1, expected 2085463073848966840",
    ),
    (
        "audit verdict FAIL",
        lambda t: _write(t, "Offline/TEST04/verify_performance.txt", "x: FAIL\nTEST FAIL\n"),
        "audit.verdict",
        "says TEST FAIL",
    ),
    (
        "LoadGen error",
        lambda t: _edit_log(t, f"Offline/{PERF_LOG}", num_errors=2),
        "performance.errors",
        "num_errors = 2",
    ),
    (
        "accuracy run on part of the dataset",
        lambda t: _edit_log(
            t, "Offline/accuracy/mlperf_log_detail.txt", effective_accuracy_sample_count=1000
        ),
        "accuracy.sample_count",
        "effective_accuracy_sample_count = 1000",
    ),
    (
        "TEST01 without its audit.config",
        lambda t: _edit_log(t, f"Offline/TEST01/{PERF_LOG}", effective_accuracy_log_rng_seed=0),
        "audit.settings",
        "effective_accuracy_log_rng_seed = 0, TEST01 needs 720381539243781796",
    ),
]


@pytest.mark.integration  # built from real LoadGen runs
@pytest.mark.parametrize(("name", "breakage", "check", "words"), BREAKS, ids=[b[0] for b in BREAKS])
def test_each_breakage_has_its_own_finding(tree, capsys, name, breakage, check, words):
    path = breakage(tree)
    report = check_tree(tree)
    assert_no_crash(report)
    found = report.failed(check, rel(tree, path))
    assert found, [(f.path, f.check, f.message) for f in report.failures]
    assert words in found[0].message
    assert run_check([str(tree)]) == 1
    assert check in capsys.readouterr().out


@pytest.mark.integration  # built from real LoadGen runs
def test_closed_division_needs_the_real_dataset_and_the_whole_suite(run_records, tmp_path):
    tree = build_tree(run_records, tmp_path / "t", division="closed")
    report = check_tree(tree)
    assert_no_crash(report)
    (system,) = (tree / "closed/mlgauge/results").iterdir()
    for s in SCENARIOS:
        (finding,) = report.failed("division.dataset", rel(tree, system / "resnet" / s / "measurements.json"))
        assert finding.message.startswith(
            "closed division needs the real dataset (measurements.json says 'synthetic')"
        )
    missing = {f.path for f in report.failed("suite.benchmarks")}
    assert missing == {rel(tree, system / "retinanet"), rel(tree, system / "bert-99")}


def test_the_tree_rules_agree_with_mlgauges_audits():
    # The audit settings the checker expects are the ones mlgauge's audit.config writes.
    rules = submission_rules().audits
    assert rules["TEST01"].settings["effective_accuracy_log_rng_seed"] == compliance.TEST01_SEED
    assert "*.*.performance_issue_same_index = 3" in compliance.audit_config("TEST04", _resnet_rule())
    assert rules["TEST04"].settings["effective_performance_issue_same_index"] == 3


def _resnet_rule():
    from mlgauge.rules import inference_rules

    return inference_rules("v6.0").benchmark("resnet50")


# -- broken trees: findings, never a traceback -------------------------------------


def test_a_missing_path_is_one_usage_error(tmp_path):
    with pytest.raises(UsageError, match="does not exist") as info:
        check_tree(tmp_path / "nowhere")
    assert "mlgauge submit --out" in info.value.hint
    with pytest.raises(UsageError):
        run_check([str(tmp_path / "nowhere")])


def test_an_empty_folder_or_a_file_is_a_finding(tmp_path, capsys):
    report = check_tree(tmp_path)
    assert [(f.path, f.check, f.passed) for f in report.findings] == [(".", "structure.division", False)]
    assert run_check([str(tmp_path)]) == 1
    file = tmp_path / "tree.txt"
    file.write_text("not a tree")
    report = check_tree(file)
    assert [(f.check, f.message) for f in report.findings] == [
        ("structure.root", "is a file, not a submission tree folder")
    ]
    assert run_check([str(file)]) == 1
    assert "is a file" in capsys.readouterr().out


def test_a_hand_made_mess_is_explained(tmp_path):
    org = tmp_path / "open" / "acme"
    (org / "systems").mkdir(parents=True)
    (org / "systems" / "box.json").write_text('{"division": "open", ')
    (org / "results" / "box" / "not-a-benchmark" / "Offline").mkdir(parents=True)
    (org / "results" / "box" / "resnet" / "Sideways").mkdir(parents=True)
    (org / "results" / "box" / "resnet" / "Offline" / "performance" / "run_1").mkdir(parents=True)
    (
        org / "results" / "box" / "resnet" / "Offline" / "performance" / "run_1" / "mlperf_log_detail.txt"
    ).write_text("garbage\n")
    (org / "results" / "stray.txt").write_text("x")
    (tmp_path / "README").write_text("x")
    report = check_tree(tmp_path)
    assert_no_crash(report)
    failed = {(f.path, f.check) for f in report.failures}
    assert ("README", "structure.division") in failed
    assert ("open/acme/code", "structure.org") in failed
    assert ("open/acme/systems/box.json", "system.json") in failed
    assert ("open/acme/results/stray.txt", "structure.results") in failed
    assert ("open/acme/results/box/not-a-benchmark", "structure.benchmark") in failed
    assert ("open/acme/results/box/resnet/Sideways", "structure.scenario") in failed
    assert (
        "open/acme/results/box/resnet/Offline/performance/run_1/mlperf_log_detail.txt",
        "performance.log",
    ) in failed
    assert ("open/acme/results/box", "rules.round") in failed  # no measurements.json says which round


@pytest.mark.integration  # built from real LoadGen runs
def test_no_damage_to_any_file_or_folder_crashes_the_checker(tree):
    """Delete each file, fill it with garbage, and replace each folder by a file, one at a
    time: always findings, never an internal error."""
    files = sorted(p for p in tree.rglob("*") if p.is_file())
    # Files whose content the checker does not read (only that they are there and not empty).
    unread = {"README.md", "accuracy/mlperf_log_summary.txt"}
    for path in files:
        original = path.read_bytes()
        path.unlink()
        report = check_tree(tree)
        assert_no_crash(report)
        assert report.failures, f"deleting {path} went unnoticed"
        path.write_bytes(b"\x00\xff garbage {[ :::MLLOG {\n")
        report = check_tree(tree)
        assert_no_crash(report)
        if not any(path.as_posix().endswith("/" + u) for u in unread):
            assert report.failures, f"garbage in {path} went unnoticed"
        path.write_bytes(original)
    aside = tree.parent / "aside"  # outside the tree, so only the damage is there to find
    for folder in sorted(p for p in tree.rglob("*") if p.is_dir()):
        folder.rename(aside)
        folder.write_text("a file where a folder belongs")
        report = check_tree(tree)
        assert_no_crash(report)
        assert report.failures, f"{folder} as a file went unnoticed"
        folder.unlink()
        aside.rename(folder)
    assert check_tree(tree).passed  # every damage was undone
