"""Effective LoadGen settings: layering, provenance, and the written user.conf
read back by our parser and by LoadGen itself (one subprocess per FromConfig)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from loadgen_reader import loadgen_read, loadgen_view
from mlgauge.config.userconf import SCENARIO_KEYS, parse_text, resolve
from mlgauge.errors import ConfigError, UsageError
from mlgauge.loadgen.settings import CALIBRATED_KEYS, STYLES, EffectiveSettings, resolve_settings
from mlgauge.rules import SCENARIOS, inference_rules, quick_style, standin_rules

RULES = inference_rules("v6.0")
RESNET = RULES.benchmark("resnet50")
BIG = 50_000  # ImageNet val is 50k: larger than the rule's QSL size


def settle(
    scenario: str, style: str = "valid", *, conf: str = "", dataset_size: int = BIG, **kw
) -> EffectiveSettings:
    return resolve_settings(
        rules=RULES,
        benchmark=kw.pop("benchmark", RESNET),
        scenario=scenario,
        style=style,
        dataset_size=dataset_size,
        user_entries=parse_text(conf, "u.conf"),
        **kw,
    )


# --- rule and style layers -------------------------------------------------------


def test_valid_style_keeps_official_values() -> None:
    offline = settle("Offline")
    assert offline.values == {
        "min_duration": 600000.0,
        "min_query_count": 24576.0,
        "performance_sample_count_override": 1024.0,
    }
    assert offline.sources == {
        "min_duration": "rules v6.0",
        "min_query_count": "rules v6.0 resnet50",  # the benchmark's line wins over the scenario's
        "performance_sample_count_override": "rules v6.0",
    }
    server = settle("Server")
    assert server.values == {
        "min_duration": 600000.0,
        "target_latency": 15.0,  # resnet50's bound, not the scenario default of 10
        "target_latency_percentile": 99.0,
        "performance_sample_count_override": 1024.0,
    }
    assert server.sources["target_latency"] == "rules v6.0 resnet50"
    assert server.sources["target_latency_percentile"] == "rules v6.0"
    assert settle("SingleStream").values == {
        "min_duration": 600000.0,
        "target_latency_percentile": 90.0,
        "performance_sample_count_override": 1024.0,
    }
    assert settle("MultiStream").values == {
        "min_duration": 600000.0,
        "min_query_count": 662.0,
        "samples_per_query": 8.0,
        "target_latency_percentile": 99.0,
        "performance_sample_count_override": 1024.0,
    }


QUICK = {
    "SingleStream": {"min_duration": 2000.0, "min_query_count": 64.0},
    "MultiStream": {"min_duration": 2000.0, "min_query_count": 662.0},
    "Server": {"min_duration": 3000.0, "min_query_count": 100.0},
    "Offline": {"min_duration": 2000.0, "min_query_count": 512.0},
}


def test_quick_style_values_are_pinned() -> None:
    assert quick_style() == QUICK


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_quick_style_shortens_and_keeps_the_rest(scenario: str) -> None:
    quick, valid = settle(scenario, "quick"), settle(scenario, "valid")
    for key, value in QUICK[scenario].items():
        assert quick.values[key] == value
        assert quick.sources[key] == "quick style"
    for key in set(valid.values) - set(QUICK[scenario]):
        assert (quick.values[key], quick.sources[key]) == (valid.values[key], valid.sources[key])
    assert quick.values["min_duration"] < valid.values["min_duration"]


def test_unknown_style() -> None:
    assert STYLES == ("quick", "valid")
    with pytest.raises(UsageError, match="unknown run style 'fast'") as info:
        settle("Offline", "fast")
    assert info.value.hint == "Use one of quick, valid"


@pytest.mark.parametrize(
    ("size", "expected"), [(50_000, 1024), (1024, 1024), (1023, 1023), (100, 100), (1, 1)]
)
def test_performance_sample_count_is_capped_by_the_dataset(size: int, expected: int) -> None:
    for scenario in SCENARIOS:
        eff = settle(scenario, "quick", dataset_size=size)
        assert eff.values["performance_sample_count_override"] == expected
        assert eff.sources["performance_sample_count_override"] == "rules v6.0"


def test_standin_benchmark_rules() -> None:
    eff = settle("Server", benchmark=standin_rules()["resnet50"])
    assert eff.values["target_latency"] == 15.0
    assert eff.sources["target_latency"] == "rules v6.0 resnet50"


# --- calibration, user.conf, flags ---------------------------------------------------


def test_calibration_hint_fills_the_scenario_key() -> None:
    assert CALIBRATED_KEYS == {
        "SingleStream": "target_latency",
        "MultiStream": "target_latency",
        "Server": "target_qps",
        "Offline": "target_qps",
    }
    ss = settle("SingleStream", "quick", calibration={"target_latency": 0.37})
    assert (ss.values["target_latency"], ss.sources["target_latency"]) == (0.37, "calibration")
    server = settle("Server", "quick", calibration={"target_qps": 412.5, "target_latency": 1.0})
    assert (server.values["target_qps"], server.sources["target_qps"]) == (412.5, "calibration")
    # Only the scenario's own hint key is taken: the Server latency bound stays the rule's.
    assert (server.values["target_latency"], server.sources["target_latency"]) == (
        15.0,
        "rules v6.0 resnet50",
    )
    offline = settle("Offline", "quick", calibration={"target_latency": 3.0})
    assert "target_latency" not in offline.values and "target_qps" not in offline.values
    assert "target_qps" not in settle("Offline", "quick", calibration=None).values
    assert "target_qps" not in settle("Offline", "quick", calibration={}).values


def test_calibration_ignored_when_user_conf_sets_the_key() -> None:
    for conf in (
        "resnet50.Offline.target_qps = 77\n",
        "*.*.target_qps = 77\n",
        "resnet50.*.target_qps = 77\n",
    ):
        eff = settle("Offline", "quick", conf=conf, calibration={"target_qps": 5000.0})
        assert (eff.values["target_qps"], eff.sources["target_qps"]) == (77.0, "u.conf:1")
    # A user line for another model or scenario does not block the hint.
    for conf in ("bert.Offline.target_qps = 77\n", "resnet50.Server.target_qps = 77\n"):
        eff = settle("Offline", "quick", conf=conf, calibration={"target_qps": 5000.0})
        assert (eff.values["target_qps"], eff.sources["target_qps"]) == (5000.0, "calibration")


def test_calibration_ignored_when_a_flag_sets_the_key() -> None:
    eff = settle("SingleStream", "quick", flags={"target_latency": 2.5}, calibration={"target_latency": 0.37})
    assert (eff.values["target_latency"], eff.sources["target_latency"]) == (2.5, "--target-latency")
    # A flag given as None is not set, so the hint applies.
    eff = settle(
        "SingleStream", "quick", flags={"target_latency": None}, calibration={"target_latency": 0.37}
    )
    assert (eff.values["target_latency"], eff.sources["target_latency"]) == (0.37, "calibration")


def test_layer_order_rules_quick_user_flags() -> None:
    conf = "*.SingleStream.min_duration = 3000\n"
    assert (settle("SingleStream", "valid").values["min_duration"]) == 600000.0
    assert (settle("SingleStream", "quick").values["min_duration"]) == 2000.0
    eff = settle("SingleStream", "quick", conf=conf)
    assert (eff.values["min_duration"], eff.sources["min_duration"]) == (3000.0, "u.conf:1")
    eff = settle("SingleStream", "quick", conf=conf, flags={"min_duration": 4000})
    assert (eff.values["min_duration"], eff.sources["min_duration"]) == (4000.0, "--min-duration")
    # user.conf also beats the rules' own per-benchmark values and the QSL cap.
    eff = settle(
        "Server",
        "valid",
        conf="resnet50.Server.target_latency = 20\n*.*.performance_sample_count_override = 64\n",
        dataset_size=100,
    )
    assert (eff.values["target_latency"], eff.sources["target_latency"]) == (20.0, "u.conf:1")
    assert (
        eff.values["performance_sample_count_override"],
        eff.sources["performance_sample_count_override"],
    ) == (
        64.0,
        "u.conf:2",
    )


def test_user_conf_adds_keys_and_keeps_the_winning_origin() -> None:
    conf = "*.*.max_duration = 9000\nresnet50.*.max_duration = 8000\n*.Offline.max_duration = 7000\n"
    eff = settle("Offline", "quick", conf=conf)
    assert (eff.values["max_duration"], eff.sources["max_duration"]) == (7000.0, "u.conf:3")
    eff = settle("Server", "quick", conf=conf)
    assert (eff.values["max_duration"], eff.sources["max_duration"]) == (8000.0, "u.conf:2")


def test_flags_for_keys_outside_the_scenario_are_ignored() -> None:
    eff = settle(
        "Offline",
        "quick",
        flags={
            "target_latency": 5.0,
            "samples_per_query": 4,
            "max_async_queries": 2,
            "bogus": 1,
            "target_qps": 900,
        },
    )
    assert set(eff.values) == {
        "min_duration",
        "min_query_count",
        "performance_sample_count_override",
        "target_qps",
    }
    assert eff.sources["target_qps"] == "--target-qps"
    ms = settle("MultiStream", "quick", flags={"samples_per_query": 4, "target_qps": 900})
    assert (ms.values["samples_per_query"], ms.sources["samples_per_query"]) == (4.0, "--samples-per-query")
    assert "target_qps" not in ms.values


def test_values_are_floats() -> None:
    eff = settle("Offline", "quick", flags={"target_qps": 900})
    assert all(type(v) is float for v in eff.values.values())


# --- the written user.conf --------------------------------------------------------------


def rich(scenario: str) -> EffectiveSettings:
    """Settings from every layer, with fractional, hex and wildcard inputs."""
    conf = (
        "*.*.max_query_count = 0x3000\n"
        "resnet50.*.accuracy_log_rng_seed = 1234\n"
        "*.SingleStream.target_latency_percentile = 95.5\n"
        "resnet50.Server.max_async_queries = 2\n"
    )
    flags = {"min_duration": 2500, "target_qps": 777.25 if scenario == "Server" else None}
    calibration = {
        "SingleStream": {"target_latency": 0.37},
        "MultiStream": {"target_latency": 2.75},
        "Server": {"target_qps": 123.456},
        "Offline": {"target_qps": 98765.4321},
    }[scenario]
    return settle(scenario, "quick", conf=conf, flags=flags, calibration=calibration, dataset_size=600)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_conf_text_shape(scenario: str) -> None:
    eff = rich(scenario)
    lines = eff.conf_text().splitlines()
    assert lines[0] == f"# Effective user.conf for resnet50 {scenario}, written by mlgauge."
    body = lines[1:]
    assert len(body) == 2 * len(eff.values)
    value_line = re.compile(rf"^resnet50\.{scenario}\.([a-z_]+) = ([0-9.e+-]+)$")
    keys = []
    for comment, line in zip(body[::2], body[1::2], strict=True):
        # LoadGen fails a whole file on a comment after a value, or a '#' glued to a word.
        match = value_line.match(line)
        assert match, line
        assert "#" not in line
        keys.append(match.group(1))
        assert comment == f"# from {eff.sources[match.group(1)]}"
    assert keys == sorted(eff.values)
    assert eff.conf_text().endswith("\n")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_conf_text_round_trips_through_our_parser(scenario: str, tmp_path: Path) -> None:
    eff = rich(scenario)
    back = resolve(parse_text(eff.conf_text(), "eff.conf"), "resnet50", scenario)
    assert {k: e.value for k, e in back.items()} == eff.values
    path = eff.write(tmp_path / "user.conf")
    assert path == tmp_path / "user.conf"
    assert path.read_text() == eff.conf_text()


def test_rich_settings_pinned() -> None:
    server = rich("Server")
    assert server.values == {
        "min_duration": 2500.0,
        "min_query_count": 100.0,
        "max_query_count": 12288.0,
        "accuracy_log_rng_seed": 1234.0,
        "max_async_queries": 2.0,
        "target_latency": 15.0,
        "target_latency_percentile": 99.0,
        "target_qps": 777.25,
        "performance_sample_count_override": 600.0,
    }
    assert server.sources["target_qps"] == "--target-qps"
    ss = rich("SingleStream")
    assert ss.values["target_latency_percentile"] == 95.5
    assert ss.values["target_latency"] == 0.37
    assert "max_async_queries" not in ss.values


def test_loadgen_reads_the_written_conf_as_resolved(tmp_path: Path) -> None:
    written = {}
    for scenario in SCENARIOS:
        eff = rich(scenario)
        assert set(eff.values) <= SCENARIO_KEYS[scenario]
        written[scenario] = (eff, eff.write(tmp_path / f"{scenario}.conf"))
    got = loadgen_read([(path, "resnet50", scenario) for scenario, (_, path) in written.items()])
    for (scenario, (eff, _)), lg_settings in zip(written.items(), got, strict=True):
        assert lg_settings["rc"] == 0, scenario
        for key, value in eff.values.items():
            assert loadgen_view(lg_settings, scenario, key) == pytest.approx(value, rel=1e-12), (
                scenario,
                key,
            )
    ss, ms, server, offline = got
    # The numbers LoadGen will run with, in its own units.
    assert ss["single_stream_expected_latency_ns"] == pytest.approx(370_000)
    assert ss["single_stream_target_latency_percentile"] == pytest.approx(0.955)
    assert ss["min_query_count"] == 64 and ss["min_duration_ms"] == 2500
    assert ms["multi_stream_expected_latency_ns"] == pytest.approx(2_750_000)
    assert ms["multi_stream_samples_per_query"] == 8 and ms["min_query_count"] == 662
    assert server["server_target_latency_ns"] == 15_000_000
    assert server["server_target_qps"] == 777.25
    assert server["server_max_async_queries"] == 2
    assert server["max_query_count"] == 12288
    assert offline["offline_expected_qps"] == 98765.4321
    assert offline["min_query_count"] == 512
    assert offline["performance_sample_count_override"] == 600
    assert offline["accuracy_log_rng_seed"] == 1234


def test_loadgen_reads_valid_style_conf(tmp_path: Path) -> None:
    paths = {s: settle(s, "valid", dataset_size=BIG).write(tmp_path / f"{s}.conf") for s in SCENARIOS}
    got = dict(zip(SCENARIOS, loadgen_read([(p, "resnet50", s) for s, p in paths.items()]), strict=True))
    assert all(g["rc"] == 0 for g in got.values())
    assert got["Offline"]["min_query_count"] == 24576
    assert got["Offline"]["min_duration_ms"] == 600000
    assert got["Server"]["server_target_latency_ns"] == 15_000_000
    assert got["MultiStream"]["min_query_count"] == 662
    assert all(g["performance_sample_count_override"] == 1024 for g in got.values())


def test_fractional_server_latency_bound_is_rejected() -> None:
    # LoadGen would truncate 12.5 ms to 12 ms while the record said 12.5.
    with pytest.raises(ConfigError, match="whole number"):
        settle("Server", "quick", conf="resnet50.Server.target_latency = 12.5\n")


def test_fractional_flag_for_an_integer_key_is_rejected() -> None:
    with pytest.raises(UsageError, match="--min-duration: LoadGen reads min_duration as a whole number"):
        settle("Offline", "quick", flags={"min_duration": 300.5})
