"""The v6.0 rule data pins MLPerf facts, and agrees with the mlperf.conf built
into the LoadGen we run (read back in a subprocess: LoadGen applies mlperf.conf
only on the first FromConfig of a process)."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest

from loadgen_reader import loadgen_read
from mlgauge.errors import UsageError
from mlgauge.rules import (
    DEFAULT_ROUND,
    SCENARIOS,
    QualityTarget,
    available_rounds,
    inference_rules,
    quick_style,
    standin_rules,
)


@pytest.fixture(scope="module")
def rules():
    return inference_rules("v6.0")


def test_round_and_default(rules) -> None:
    assert DEFAULT_ROUND == "v6.0"
    assert "v6.0" in available_rounds()
    assert inference_rules() == rules  # the default round
    assert inference_rules("v6.0") is rules  # cached
    assert rules.round == "v6.0"
    assert rules.loadgen_version == "6.0.17"
    assert SCENARIOS == ("SingleStream", "MultiStream", "Server", "Offline")
    assert tuple(rules.scenarios) == SCENARIOS


def test_installed_loadgen_is_the_rules_line() -> None:
    rules = inference_rules("v6.0")
    assert version("mlcommons-loadgen").split(".")[:2] == rules.loadgen_version.split(".")[:2]


@pytest.mark.parametrize(
    ("scenario", "metric_key", "unit", "higher"),
    [
        ("SingleStream", "early_stopping_latency_ss", "ns", False),
        ("MultiStream", "early_stopping_latency_ms", "ns", False),
        ("Server", "result_completed_samples_per_sec", "samples/s", True),
        ("Offline", "result_samples_per_second", "samples/s", True),
    ],
)
def test_scenario_metrics(rules, scenario: str, metric_key: str, unit: str, higher: bool) -> None:
    rule = rules.scenario(scenario)
    assert rule.name == scenario
    assert (rule.metric_key, rule.unit, rule.higher_is_better) == (metric_key, unit, higher)
    assert rule.metric_name


def test_scenario_run_rules(rules) -> None:
    assert {s: rules.scenario(s).conf for s in SCENARIOS} == {
        "SingleStream": {"min_duration": 600000, "target_latency_percentile": 90},
        "MultiStream": {
            "min_duration": 600000,
            "min_query_count": 662,
            "samples_per_query": 8,
            "target_latency_percentile": 99,
        },
        "Server": {"min_duration": 600000, "target_latency": 10, "target_latency_percentile": 99},
        "Offline": {"min_duration": 600000, "min_query_count": 24576},
    }


def test_resnet50(rules) -> None:
    resnet = rules.benchmark("resnet50")
    assert resnet.name == "resnet50"
    assert "ResNet-50" in resnet.title
    assert resnet.performance_sample_count == 1024
    assert resnet.conf == {"Server": {"target_latency": 15}, "Offline": {"min_query_count": 24576}}
    q = resnet.quality
    assert (q.metric, q.unit, q.reference, q.fraction) == ("top1", "%", 76.46, 0.99)
    assert q.threshold == pytest.approx(75.6954, abs=1e-9)
    assert q.to_dict() == {
        "metric": "top1",
        "unit": "%",
        "reference": 76.46,
        "fraction": 0.99,
        "threshold": q.threshold,
        "source": q.source,
    }


def test_standins_and_quick() -> None:
    standin = standin_rules()["resnet50"]
    assert standin.performance_sample_count == 1024
    assert standin.conf == {"Server": {"target_latency": 15}}
    assert standin.quality.threshold == pytest.approx(85.86)
    assert set(quick_style()) == set(SCENARIOS)


# --- unknown names -----------------------------------------------------------------


def test_unknown_round() -> None:
    with pytest.raises(UsageError, match="unknown rules round 'v5.1'") as info:
        inference_rules("v5.1")
    assert "v6.0" in info.value.hint


def test_unknown_scenario(rules) -> None:
    with pytest.raises(UsageError, match="unknown scenario 'offline'") as info:
        rules.scenario("offline")
    assert info.value.hint == "Valid scenarios: MultiStream, Offline, Server, SingleStream"


def test_unknown_benchmark(rules) -> None:
    with pytest.raises(UsageError, match="unknown benchmark 'bert'") as info:
        rules.benchmark("bert")
    assert "resnet50" in info.value.hint
    assert info.value.context == {"round": "v6.0"}


# --- QualityTarget ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "passed"),
    [
        (76.46, True),
        (75.6954, True),  # exactly the threshold, though 76.46 * 0.99 is 75.69539999999999 in floats
        (75.69540000001, True),
        (75.6953999999, True),  # float noise below printed precision
        (75.69539, False),
        (75.6953, False),
        (0.0, False),
    ],
)
def test_quality_boundary(value: float, passed: bool) -> None:
    target = inference_rules("v6.0").benchmark("resnet50").quality
    assert target.passed(value) is passed


def test_quality_target_arithmetic() -> None:
    target = QualityTarget(metric="mAP", unit="%", reference=37.55, fraction=0.99)
    assert target.threshold == pytest.approx(37.1745)
    assert target.passed(37.1745)
    assert not target.passed(37.174)
    assert QualityTarget("x", "", 1.0, 1.0).passed(1.0)
    assert not QualityTarget("x", "", 1.0, 1.0).passed(0.999998)


# --- cross-check with LoadGen's built-in mlperf.conf ---------------------------------

@pytest.fixture(scope="module")
def builtin(tmp_path_factory) -> dict[str, dict]:
    """LoadGen's TestSettings for resnet50 from an empty user.conf, per scenario."""
    empty = Path(tmp_path_factory.mktemp("lgconf")) / "user.conf"
    empty.write_text("")
    read = loadgen_read([(empty, "resnet50", s) for s in SCENARIOS])
    out = dict(zip(SCENARIOS, read, strict=True))
    assert all(v["rc"] == 0 for v in out.values())
    return out


PERCENTILE_ATTR = {
    "SingleStream": "single_stream_target_latency_percentile",
    "MultiStream": "multi_stream_target_latency_percentile",
    "Server": "server_target_latency_percentile",
}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rules_match_loadgen_builtin_mlperf_conf(rules, builtin, scenario: str) -> None:
    lg = builtin[scenario]
    resnet = rules.benchmark("resnet50")
    conf = {**rules.scenario(scenario).conf, **resnet.conf.get(scenario, {})}
    assert lg["min_duration_ms"] == conf["min_duration"] == 600000
    if "min_query_count" in conf:
        assert lg["min_query_count"] == conf["min_query_count"]
    assert lg["performance_sample_count_override"] == resnet.performance_sample_count == 1024
    if scenario in PERCENTILE_ATTR:
        assert lg[PERCENTILE_ATTR[scenario]] == pytest.approx(conf["target_latency_percentile"] / 100)
    if scenario == "MultiStream":
        assert lg["multi_stream_samples_per_query"] == conf["samples_per_query"] == 8
        assert lg["min_query_count"] == 662
    if scenario == "Server":
        assert lg["server_target_latency_ns"] == conf["target_latency"] * 1_000_000 == 15_000_000
    if scenario == "Offline":
        assert lg["min_query_count"] == 24576


def test_every_rule_key_is_checked_against_loadgen(rules) -> None:
    """If the rule file grows a key, the cross-check above must learn to read it."""
    checked = {
        "min_duration",
        "min_query_count",
        "target_latency_percentile",
        "samples_per_query",
        "target_latency",
    }
    for scenario in SCENARIOS:
        keys = set(rules.scenario(scenario).conf) | set(rules.benchmark("resnet50").conf.get(scenario, {}))
        assert keys <= checked, (scenario, keys - checked)


# --- every benchmark against LoadGen, and the suites -----------------------------

BENCH_SCENARIO_ATTR = {
    ("Server", "target_latency"): ("server_target_latency_ns", 1e6),
    ("MultiStream", "target_latency"): ("multi_stream_expected_latency_ns", 1e6),
    ("Offline", "min_query_count"): ("min_query_count", 1),
}


@pytest.fixture(scope="module")
def builtin_per_benchmark(rules, tmp_path_factory) -> dict:
    empty = Path(tmp_path_factory.mktemp("lgconf2")) / "user.conf"
    empty.write_text("")
    cases = [(empty, b.loadgen_model, s) for b in rules.benchmarks.values() for s in ("MultiStream", "Server", "Offline")]
    read = loadgen_read(cases)
    return {(model, s): r for (_, model, s), r in zip(cases, read, strict=True)}


@pytest.mark.parametrize("name", ["resnet50", "retinanet", "bert-99", "bert-99.9", "dlrm-v2-99", "dlrm-v2-99.9"])
def test_benchmark_values_match_loadgen_under_its_model_name(rules, builtin_per_benchmark, name):
    bench = rules.benchmark(name)
    for (scenario, key), (attr, scale) in BENCH_SCENARIO_ATTR.items():
        lg = builtin_per_benchmark[(bench.loadgen_model, scenario)]
        assert lg["performance_sample_count_override"] == bench.performance_sample_count
        if key in bench.conf.get(scenario, {}):
            assert lg[attr] == pytest.approx(bench.conf[scenario][key] * scale), (name, scenario, key)


def test_model_names_and_checker_ids(rules):
    assert rules.benchmark("bert-99").loadgen_model == "bert"
    assert rules.benchmark("dlrm-v2-99.9").loadgen_model == "dlrm-v2"
    assert rules.benchmark("resnet50").checker_id == "resnet"
    assert rules.benchmark("retinanet").checker_id == "retinanet"
    assert rules.benchmark("resnet50").audits == ("TEST01", "TEST04")
    assert "TEST04" not in rules.benchmark("bert-99").audits  # variable-cost inputs are exempt


def test_suites():
    from mlgauge.rules import suite, suite_names

    assert suite_names() == ["datacenter", "edge", "mobile"]
    edge = suite("edge")
    assert edge.round == "v6.0" and edge.required["resnet50"] == ("SingleStream", "MultiStream", "Offline")
    assert edge.required["bert-99"] == ("SingleStream", "Offline")
    assert suite("datacenter").required["dlrm-v2-99"] == ("Server", "Offline")
    mobile = suite("mobile")
    assert mobile.round == "mobile-v6.0" and mobile.score == "geomean" and mobile.performance_first
    assert mobile.cooldown_s > 0
    with pytest.raises(UsageError, match="datacenter, edge, mobile"):
        suite("cloud")


def test_mobile_round():
    mobile = inference_rules("mobile-v6.0")
    assert list(mobile.scenarios) == ["SingleStream", "Offline"]
    ss = mobile.scenario("SingleStream").conf
    assert ss["min_query_count"] == 1024 and ss["min_duration"] == 60000
    assert mobile.scenario("Offline").conf == {"min_duration": 0, "min_query_count": 24576}
    assert mobile.benchmark("edsr").quality.threshold == pytest.approx(33.0, abs=1e-4)
    assert mobile.benchmark("mosaic").quality.threshold == pytest.approx(57.36)
    with pytest.raises(UsageError, match="Server"):
        mobile.scenario("Server")
