"""RCPs: the rules' appendix example, the official records, and verdicts cross-checked with rcp_checker."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import scipy.stats
from mlperf_logging.rcp_checker import rcp_checker as official

from mlgauge.errors import ConfigError, UsageError
from mlgauge.training import rcp

OFFICIAL_RCPS = Path(official.__file__).parent / "training_4.0.0"


def spread(mean: float, stdev: float, count: int = 10) -> list[float]:
    """Points whose olympic mean is ``mean`` and whose np.std over all is ``stdev``: half at each side."""
    return [mean - stdev] * (count // 2) + [mean + stdev] * (count // 2)


# The appendix's trimmed spreads: [15]*2 + [16]*6 has stdev sqrt(3)/4, printed as 0.43;
# [20]*3 + [21]*4 + [22] has stdev 0.6614, printed as 0.66.
APPENDIX_128 = spread(15.75, math.sqrt(3) / 4)
APPENDIX_256 = spread(20.75, 0.6614378277661477)


def appendix_records() -> dict[str, dict]:
    return {
        rcp.rcp_name("resnet", 128): rcp.build_rcp("resnet", 128, APPENDIX_128, {}, runs_per_set=5),
        rcp.rcp_name("resnet", 256): rcp.build_rcp("resnet", 256, APPENDIX_256, {}, runs_per_set=5),
    }


def test_appendix_example_batch_128():
    stats = rcp.rcp_stats("a", appendix_records()["resnet_ref_128"], runs_per_set=5)
    assert stats.mean == pytest.approx(15.75)
    assert stats.stdev == pytest.approx(0.4330127)
    # Rules appendix: "the maximum allowed speedup ... is 3.53%", "the minimum mean epochs ... is 15.21".
    assert round(stats.max_speedup - 1, 4) == 0.0353
    assert round(stats.min_epochs, 2) == 15.21
    # Independently, in closed form: one-sided t at 0.95 with 8 + 3 - 2 degrees of freedom.
    t = scipy.stats.t.ppf(0.95, df=9)
    closed_form = 15.75 - t * stats.stdev * math.sqrt(1 / 8 + 1 / 3)
    assert stats.min_epochs == pytest.approx(closed_form, abs=2e-4)


def test_appendix_example_batch_256_and_interpolation_at_192():
    records = appendix_records()
    stats = rcp.rcp_stats("b", records["resnet_ref_256"], runs_per_set=5)
    # Appendix: "Mean = 20.75, Stdev = 0.66 ... 4.12% ... minimum ... 19.93".
    assert (round(stats.mean, 2), round(stats.stdev, 2)) == (20.75, 0.66)
    assert round(stats.max_speedup - 1, 4) == 0.0412
    assert round(stats.min_epochs, 2) == 19.93
    # S3: batch size 192, runs [17, 18, 18, 18, 20]: interpolated mean 18.25, stdev 0.547,
    # max speedup 3.68% (the checker gives an interpolated RCP 2N = 10 reference samples).
    verdict = rcp.check_runs(records, 192, [17, 18, 18, 18, 20])
    assert verdict.passed and verdict.outcome == "RCP Interpolation"
    assert verdict.reference.mean == pytest.approx(18.25)
    assert round(verdict.reference.stdev, 3) == 0.547
    assert round(verdict.reference.max_speedup - 1, 4) == 0.0368
    assert verdict.submission_mean == pytest.approx(18.0)
    assert verdict.scaling_factor == pytest.approx(18.25 / 18)


# The appendix's own reference data; the checker takes the stdev over all ten points.
RULES_128 = [16, 14, 16, 17, 16, 16, 15, 16, 15, 16]
RULES_256 = [20, 21, 21, 20, 22, 22, 21, 21, 20, 20]
SCENARIOS = {
    "S1 passes at 128": (128, [15, 15, 15, 16, 16]),
    "S2 too fast at 256": (256, [19, 19, 19, 20, 21]),
    "S3 interpolated at 192": (192, [17, 18, 18, 18, 20]),
    "S4 larger than every RCP": (512, [30, 31, 31, 32, 33]),
    "S5 smaller, slow enough": (64, [16, 16, 16, 17, 17]),
    "S6 smaller, too fast": (64, [13, 13, 13, 14, 14]),
    "one run aborted": (128, [None, 16, 16, 16, 17]),
    "two runs aborted": (128, [None, 16, None, 16, 17]),
}
EXPECTED = {
    "S1 passes at 128": (True, "RCP found"),
    "S2 too fast at 256": (False, "RCP found"),
    "S3 interpolated at 192": (True, "RCP Interpolation"),
    "S4 larger than every RCP": (False, "Missing RCP"),
    "S5 smaller, slow enough": (True, "RCP not found but slower convergence on smaller batch size"),
    "S6 smaller, too fast": (False, "Missing RCP"),
    "one run aborted": (True, "RCP found"),
    "two runs aborted": (False, "Insufficient convergence"),
}


def mllog(key: str, value: object = None, **metadata: object) -> str:
    event = {"namespace": "", "time_ms": 1_700_000_000_000, "event_type": "POINT_IN_TIME", "key": key}
    event.update(value=value, metadata={"file": "train.py", "lineno": 1, **metadata})
    return ":::MLLOG " + json.dumps(event)


def write_set(folder: Path, benchmark: str, batch_size: int, points: list[float | None]) -> Path:
    """A results folder of minimal mllog files: what rcp_checker reads and nothing more."""
    folder.mkdir(parents=True)
    for index, point in enumerate(points):
        lines = [mllog("submission_benchmark", benchmark), mllog("global_batch_size", batch_size)]
        for epoch in (1, 2, point or 3):
            lines.append(mllog("eval_accuracy", 0.5, epoch_num=epoch))
        lines.append(mllog("run_stop", status="aborted" if point is None else "success"))
        (folder / f"result_{index}.txt").write_text("\n".join(lines) + "\n")
    return folder


def official_verdict(folder: Path, rcp_file: Path) -> tuple[bool, str, float]:
    with rcp_file.open() as handle:
        return official.check_directory(
            str(folder), "training", "4.0.0", False, False, rcp_file=handle, rcp_pass="pruned_rcps"
        )


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_appendix_scenarios_agree_with_the_official_checker(scenario, tmp_path):
    records = {
        "resnet_ref_128": rcp.build_rcp("resnet", 128, RULES_128, {}, runs_per_set=5),
        "resnet_ref_256": rcp.build_rcp("resnet", 256, RULES_256, {}, runs_per_set=5),
    }
    rcp_file = rcp.save_rcps(tmp_path / "rcps.json", records)
    batch_size, points = SCENARIOS[scenario]
    verdict = rcp.check_runs(rcp.load_rcps(rcp_file), batch_size, points)
    assert (verdict.passed, verdict.outcome) == EXPECTED[scenario]
    passed, message, factor = official_verdict(
        write_set(tmp_path / "set", "resnet", batch_size, points), rcp_file
    )
    assert verdict.passed == passed
    assert message.startswith(verdict.outcome)
    if passed:
        assert verdict.scaling_factor == pytest.approx(factor)


def test_verdicts_agree_on_the_official_resnet_rcps(tmp_path):
    """Many sets against the official 4.0.0 ResNet records: exact, interpolated, smaller, larger sizes."""
    rcp_file = OFFICIAL_RCPS / "rcps_resnet.json"
    records = rcp.load_rcps(rcp_file)
    sizes = sorted({r["BS"] for r in records.values()})
    seen = set()
    # 3680 lies between 3264 and 4096, but pruning drops 4096: the checker interpolates up to 32768.
    for batch_size in (sizes[0] - 256, sizes[0], (sizes[1] + sizes[2]) // 2, sizes[-1], sizes[-1] + 1024):
        for base in (30.0, 34.0, 35.0, 38.0, 42.0):
            points = [base - 1, base, base, base + 0.5, base + 1]
            folder = write_set(tmp_path / f"{batch_size}-{base}", "resnet", batch_size, points)
            passed, message, factor = official_verdict(folder, rcp_file)
            verdict = rcp.check_runs(records, batch_size, points)
            assert (verdict.passed, message.startswith(verdict.outcome)) == (passed, True), (batch_size, base)
            if passed:
                assert verdict.scaling_factor == pytest.approx(factor)
            seen.add((verdict.outcome, verdict.passed, verdict.scaling_factor > 1))
    # Every outcome but "no RCPs" and "insufficient convergence" occurred, passing and failing, scaled or not.
    assert {outcome for outcome, _, _ in seen} == {
        "RCP found",
        "RCP Interpolation",
        "Missing RCP",
        "RCP not found but slower convergence on smaller batch size",
    }
    assert ("RCP found", False, False) in seen and ("RCP found", True, True) in seen
    assert ("RCP Interpolation", False, False) in seen and ("RCP Interpolation", True, True) in seen


@pytest.mark.parametrize(("offset", "should_pass"), [(-0.002, False), (0.002, True)])
def test_the_limit_is_where_the_official_checker_puts_it(offset, should_pass, tmp_path):
    records = appendix_records()
    rcp_file = rcp.save_rcps(tmp_path / "rcps.json", records)
    limit = rcp.rcp_stats("a", records["resnet_ref_128"], 5).min_epochs
    points = [round(limit + offset, 3)] * 5
    verdict = rcp.check_runs(records, 128, points)
    passed, _, factor = official_verdict(write_set(tmp_path / "set", "resnet", 128, points), rcp_file)
    assert verdict.passed is passed is should_pass
    assert verdict.suspiciously_fast is not should_pass
    if passed:
        assert verdict.scaling_factor == pytest.approx(factor) == pytest.approx(15.75 / points[0])


@pytest.mark.parametrize("benchmark", ["resnet", "ssd", "dlrm_dcnv2", "bert", "unet3d", "llama2_70b_lora"])
def test_stats_and_pruning_match_the_official_records(benchmark):
    path = OFFICIAL_RCPS / f"rcps_{benchmark}.json"
    runs = official.submission_runs["training"][benchmark]
    with path.open() as handle:
        checker = official.RCP_Checker("training", "4.0.0", benchmark, False, handle)
    records = rcp.load_rcps(path)
    for name, record in records.items():
        stats = rcp.rcp_stats(name, record, runs)
        theirs = checker.rcp_data[name]
        assert stats.mean == pytest.approx(theirs["RCP Mean"], rel=1e-12)
        assert stats.stdev == pytest.approx(theirs["RCP Stdev"], rel=1e-12)
        assert stats.min_epochs == pytest.approx(theirs["Min Epochs"], rel=1e-12)
    assert set(rcp.prune_rcps(records, runs)) == set(checker.pruned_rcp_data)


def test_pruning_drops_a_record_above_its_neighbours_line():
    records = {
        "a": rcp.build_rcp("ssd", 64, spread(10, 0.5), {}, runs_per_set=5),
        "b": rcp.build_rcp("ssd", 128, spread(16, 0.5), {}, runs_per_set=5),  # line at 128: 12
        "c": rcp.build_rcp("ssd", 192, spread(14, 0.5), {}, runs_per_set=5),
        "d": rcp.build_rcp("ssd", 32, spread(11, 0.5), {}, runs_per_set=5),  # below the fastest's size
    }
    assert list(rcp.prune_rcps(records, 5)) == ["a", "c"]


RCP_CLI_SETS = {
    # RCP: mean 15.75, minimum 15.21 epochs.
    "passes": ([16, 16, 16, 16, 17], True, None),
    "too fast": ([14, 14, 15, 15, 15], False, None),
    # Olympic mean 15.3333: faster than the mean, within the limit, scaled by 15.75 / 15.3333.
    "scaled": ([15, 15, 15.5, 15.5, 16], True, 15.75 / (46 / 3)),
}


def test_rcp_checker_command_agrees(tmp_path):
    rcp_file = rcp.save_rcps(
        tmp_path / "custom.json", {"resnet_ref_128": appendix_records()["resnet_ref_128"]}
    )
    procs = {}
    for name, (points, _, _) in RCP_CLI_SETS.items():
        folder = write_set(tmp_path / name.replace(" ", "_"), "resnet", 128, points)
        command = [sys.executable, "-m", "mlperf_logging.rcp_checker", str(folder), "--rcp_usage", "training"]
        command += ["--rcp_version", "4.0.0", "--custom_rcps", str(rcp_file)]
        command += ["--log_output", str(tmp_path / f"{folder.name}.log")]
        procs[name] = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    records = rcp.load_rcps(rcp_file)
    for name, (points, should_pass, factor) in RCP_CLI_SETS.items():
        output = procs[name].communicate(timeout=60)[0]
        verdict = rcp.check_runs(records, 128, points)
        assert verdict.passed is should_pass
        assert (procs[name].returncode == 0) is should_pass, output
        assert ("RCP test PASSED" if should_pass else "RCP test FAILED") in output
        assert verdict.suspiciously_fast is (not should_pass)
        normalized = re.search(r"normalized by factor of \S+ / \S+ = (\S+)", output)
        if factor is None:
            assert normalized is None and verdict.scaling_factor == 1.0
        else:
            assert verdict.scaling_factor == pytest.approx(factor)
            assert verdict.scaling_factor == pytest.approx(float(normalized.group(1)))
            assert "normalized by" in verdict.message
    assert (
        "suspiciously faster than the reference" in rcp.check_runs(records, 128, [14, 14, 15, 15, 15]).message
    )


def test_build_refuses_fewer_than_2n_points():
    with pytest.raises(UsageError, match="at least 10 convergence points") as err:
        rcp.build_rcp("resnet", 256, [35.0] * 9, {}, runs_per_set=5)
    assert "Run 1 more" in str(err.value)
    with pytest.raises(UsageError, match="positive finite"):
        rcp.build_rcp("resnet", 256, [35.0] * 9 + [math.inf], {}, runs_per_set=5)


def test_record_shape_and_round_trip(tmp_path):
    record = rcp.build_rcp(
        "llama2_70b_lora",
        8,
        [3072.0] * 20,
        {"opt_base_learning_rate": 4e-4},
        runs_per_set=10,
        when="2026-01-02",
    )
    assert set(record) == {
        "Benchmark",
        "Creator",
        "When",
        "Platform",
        "Precision",
        "BS",
        "Hyperparams",
        "samples to converge",
    }
    assert rcp.build_rcp("resnet", 8, [1.0] * 10, {}, runs_per_set=5).keys() >= {"Epochs to converge"}
    path = rcp.save_rcps(tmp_path / "sub" / "rcps.json", {"llama2_70b_lora_ref_8": record})
    assert rcp.load_rcps(path) == {"llama2_70b_lora_ref_8": record}


def test_bad_rcp_files_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        rcp.load_rcps(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"x": {"Benchmark": "resnet", "BS": 8}}))
    with pytest.raises(ConfigError, match="Epochs to converge"):
        rcp.load_rcps(bad)
    record = rcp.build_rcp("resnet", 8, [1.0] * 10, {}, runs_per_set=5)
    with pytest.raises(ConfigError, match="share batch size 8"):
        rcp.save_rcps(tmp_path / "dup.json", {"a": record, "b": record})


def test_check_runs_edge_cases():
    records = appendix_records()
    assert rcp.check_runs({}, 128, [16] * 5).outcome == "Cannot find any RCPs"
    with pytest.raises(UsageError, match="at least 3 runs"):
        rcp.check_runs(records, 128, [16, 16])
    mixed = {**records, "x": rcp.build_rcp("ssd", 8, [1.0] * 10, {}, runs_per_set=5)}
    with pytest.raises(UsageError, match="mix benchmarks"):
        rcp.check_runs(mixed, 128, [16] * 5)
    assert rcp.NOT_CONVERGED in rcp.check_runs(records, 128, [None, 16, 16, 16, 17]).points
