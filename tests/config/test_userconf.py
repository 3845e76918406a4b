"""user.conf parsing: every accepted form, every error path, LoadGen's precedence,
and one cross-check against LoadGen's own parser (run in a subprocess: LoadGen
applies its built-in mlperf.conf only on the first FromConfig of a process)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadgen_reader import loadgen_read, loadgen_view
from mlgauge.config.userconf import (
    ALL_KEYS,
    MLPERF_CONF_ONLY,
    SCENARIO_KEYS,
    ConfEntry,
    format_value,
    parse_file,
    parse_line,
    parse_text,
    resolve,
)
from mlgauge.errors import ConfigError

# --- parse_line / parse_text: accepted forms ---------------------------------


def test_comment_and_blank_lines_give_nothing() -> None:
    assert parse_line("", "u.conf:1") is None
    assert parse_line("   \t ", "u.conf:2") is None
    assert parse_line("# resnet50.Offline.target_qps = 5", "u.conf:3") is None
    assert parse_line("   # indented comment", "u.conf:4") is None


def test_plain_line() -> None:
    entry = parse_line("resnet50.Offline.target_qps = 1234.5", "u.conf:7")
    assert entry == ConfEntry("resnet50", "Offline", "target_qps", 1234.5, "u.conf:7")
    assert entry.qualified == "resnet50.Offline.target_qps"


def test_no_spaces_around_equals_and_trailing_comment() -> None:
    assert parse_line("resnet50.Server.target_qps=7", "o").value == 7.0
    # Accepted here (the comment is dropped); LoadGen itself would reject this line,
    # which is why mlgauge never hands the user's file to LoadGen (see the cross-check).
    assert parse_line("resnet50.Server.target_qps = 5   # tuned by hand", "o").value == 5.0


@pytest.mark.parametrize(
    ("line", "model", "scenario"),
    [
        ("*.*.min_duration = 1000", "*", "*"),
        ("*.Server.min_duration = 1000", "*", "Server"),
        ("resnet50.*.min_duration = 1000", "resnet50", "*"),
        ("llama3.1-8b.Offline.target_qps = 3", "llama3.1-8b", "Offline"),
        ("stable-diffusion-xl.SingleStream.min_duration = 1000", "stable-diffusion-xl", "SingleStream"),
        ("llama2-70b-99.9.Server.target_qps = 3", "llama2-70b-99.9", "Server"),
    ],
)
def test_wildcards_and_dotted_model_names(line: str, model: str, scenario: str) -> None:
    entry = parse_line(line, "o")
    assert (entry.model, entry.scenario) == (model, scenario)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0x10", 16.0),
        ("0X1f", 31.0),
        ("0x0", 0.0),
        ("42", 42.0),
        ("+3", 3.0),
        ("1e3", 1000.0),
        ("2.5E-1", 0.25),
        (".5", 0.5),
        ("7.", 7.0),
        ("0", 0.0),
    ],
)
def test_numeric_forms(text: str, value: float) -> None:
    # target_qps is read as a double by LoadGen, so fractions are legal here.
    assert parse_line(f"*.*.target_qps = {text}", "o").value == value


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("*.*.min_duration = 2000.5", "min_duration"),
        ("*.Server.target_latency = 12.5", "target_latency"),
        ("*.*.target_latency = 0.5", "target_latency"),
        ("*.MultiStream.samples_per_query = 7.5", "samples_per_query"),
    ],
)
def test_fractions_of_integer_keys_are_rejected(line: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"o: LoadGen reads {key} as a whole number"):
        parse_line(line, "o")


def test_fractional_latency_is_fine_where_loadgen_reads_a_double() -> None:
    assert parse_line("*.SingleStream.target_latency = 0.25", "o").value == 0.25
    assert parse_line("*.MultiStream.target_latency = 1.5", "o").value == 1.5


def test_parse_text_numbers_lines_from_one_and_skips_non_entries() -> None:
    text = (
        "# header\n"
        "\n"
        "resnet50.Offline.target_qps = 100\n"
        "   \n"
        "*.Server.target_latency = 12 # ms\n"
        "llama3.1-8b.Offline.target_qps = 0x20\n"
    )
    entries = parse_text(text, "my/user.conf")
    assert [(e.qualified, e.value, e.origin) for e in entries] == [
        ("resnet50.Offline.target_qps", 100.0, "my/user.conf:3"),
        ("*.Server.target_latency", 12.0, "my/user.conf:5"),
        ("llama3.1-8b.Offline.target_qps", 32.0, "my/user.conf:6"),
    ]
    assert parse_text("", "x") == []
    assert parse_text("# only\n\n", "x") == []


def test_parse_text_default_source_name() -> None:
    assert parse_text("\n*.*.min_duration = 1\n")[0].origin == "user.conf:2"


def test_key_tables_match_loadgen_scenarios() -> None:
    # target_qps is Server/Offline only; samples_per_query MultiStream only;
    # target_latency every scenario except Offline.
    assert {s for s, keys in SCENARIO_KEYS.items() if "target_qps" in keys} == {"Server", "Offline"}
    assert {s for s, keys in SCENARIO_KEYS.items() if "samples_per_query" in keys} == {"MultiStream"}
    assert {s for s, keys in SCENARIO_KEYS.items() if "target_latency" in keys} == {
        "SingleStream",
        "MultiStream",
        "Server",
    }
    assert {s for s, keys in SCENARIO_KEYS.items() if "max_async_queries" in keys} == {"Server"}
    assert not (ALL_KEYS & MLPERF_CONF_ONLY)
    assert "mode" not in ALL_KEYS


def test_wildcard_scenario_accepts_any_scenario_key() -> None:
    assert parse_line("*.*.target_latency = 5", "o").key == "target_latency"
    assert parse_line("*.*.samples_per_query = 4", "o").key == "samples_per_query"


# --- error paths ----------------------------------------------------------------


def _error(line: str, origin: str = "conf/u.conf:12") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_line(line, origin)
    assert str(info.value).startswith(f"{origin}: "), str(info.value)
    return info.value


def test_missing_equals() -> None:
    err = _error("resnet50.Offline.target_qps 100")
    assert "expected 'model.scenario.key = value'" in err.message
    assert "resnet50.Offline.target_qps 100" in err.message


@pytest.mark.parametrize(
    "lhs",
    [
        "target_qps",
        "Offline.target_qps",
        ".Offline.target_qps",
        "resnet50..target_qps",
        "resnet50.Offline.",
        "",
    ],
)
def test_key_not_three_parts(lhs: str) -> None:
    err = _error(f"{lhs} = 5")
    assert "is not 'model.scenario.key'" in err.message


@pytest.mark.parametrize("model", ["res net50", "-resnet", "resnet50/x", "**"])
def test_bad_model_name(model: str) -> None:
    err = _error(f"{model}.Offline.target_qps = 5")
    assert "is not a model name or '*'" in err.message


@pytest.mark.parametrize("scenario", ["offline", "Batch", "Multistream", "server"])
def test_unknown_scenario(scenario: str) -> None:
    err = _error(f"resnet50.{scenario}.min_duration = 5")
    assert f"unknown scenario '{scenario}'" in err.message
    assert err.hint == "Use one of SingleStream, MultiStream, Server, Offline or '*'"


@pytest.mark.parametrize("scope", ["*.*", "resnet50.Offline", "*.Server"])
def test_mode_key_is_refused(scope: str) -> None:
    err = _error(f"{scope}.mode = 2")
    assert "--mode" in err.message


@pytest.mark.parametrize("key", sorted(MLPERF_CONF_ONLY))
def test_mlperf_conf_only_keys(key: str) -> None:
    err = _error(f"*.*.{key} = 1")
    assert f"LoadGen reads '{key}' only from its built-in mlperf.conf" in err.message
    assert err.hint == "Remove the line"


def test_mlperf_conf_only_keys_pinned() -> None:
    assert {
        "qsl_rng_seed",
        "sample_index_rng_seed",
        "schedule_rng_seed",
        "accuracy_log_probability",
    } <= MLPERF_CONF_ONLY


@pytest.mark.parametrize(
    ("line", "scenario", "key"),
    [
        ("*.Offline.target_latency = 10", "Offline", "target_latency"),
        ("resnet50.Offline.target_latency_percentile = 90", "Offline", "target_latency_percentile"),
        ("resnet50.SingleStream.target_qps = 10", "SingleStream", "target_qps"),
        ("resnet50.Server.samples_per_query = 8", "Server", "samples_per_query"),
        ("resnet50.Offline.max_async_queries = 1", "Offline", "max_async_queries"),
        ("*.*.no_such_key = 1", "*", "no_such_key"),
        ("*.*.min_duration_ms = 1", "*", "min_duration_ms"),
    ],
)
def test_key_not_valid_for_scenario(line: str, scenario: str, key: str) -> None:
    err = _error(line)
    assert f"'{key}' is not a LoadGen setting for {scenario}" in err.message
    assert err.hint.startswith("Known keys: ")
    if scenario == "Offline":
        assert "target_qps" in err.hint and "target_latency," not in err.hint


@pytest.mark.parametrize(
    "value", ["abc", "", "1,5", "1 2", "0x", "0xZZ", "nan", "inf", "1e", "ten", "--1", "-0x10"]
)
def test_non_numeric_value(value: str) -> None:
    err = _error(f"resnet50.Offline.target_qps = {value}")
    assert f"value '{value}' for resnet50.Offline.target_qps is not a number" in err.message


@pytest.mark.parametrize("value", ["-1", "-0.5", "-1e3"])
def test_negative_value(value: str) -> None:
    err = _error(f"*.*.min_duration = {value}")
    assert "must not be negative" in err.message


def test_parse_text_reports_the_failing_line_number() -> None:
    text = "# ok\n*.*.min_duration = 1\n\n*.Offline.target_latency = 3\n"
    with pytest.raises(
        ConfigError, match=r"^site\.conf:4: 'target_latency' is not a LoadGen setting for Offline"
    ):
        parse_text(text, "site.conf")


def test_config_error_str_carries_hint() -> None:
    err = _error("*.Batch.min_duration = 5", "a.conf:1")
    assert (
        str(err)
        == "a.conf:1: unknown scenario 'Batch'. Use one of SingleStream, MultiStream, Server, Offline or '*'"
    )


# --- parse_file -------------------------------------------------------------------


def test_parse_file_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nope.conf"
    with pytest.raises(ConfigError, match="does not exist") as info:
        parse_file(missing)
    assert str(missing) in info.value.message
    assert info.value.hint == "Check the --conf path"


def test_parse_file_directory_and_binary(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read user.conf file"):
        parse_file(tmp_path)
    binary = tmp_path / "bin.conf"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="cannot read user.conf file"):
        parse_file(binary)


def test_parse_file_origin_is_path_and_line(tmp_path: Path) -> None:
    path = tmp_path / "user.conf"
    path.write_text("# c\nresnet50.Offline.target_qps = 9\n*.Offline.target_latency = 1\n")
    with pytest.raises(ConfigError) as info:
        parse_file(path)
    assert info.value.message.startswith(f"{path}:3: ")
    path.write_text("# c\nresnet50.Offline.target_qps = 9\n")
    assert [e.origin for e in parse_file(path)] == [f"{path}:2"]


# --- resolve: LoadGen's precedence ---------------------------------------------------


def _values(entries: list[ConfEntry], model: str, scenario: str) -> dict[str, float]:
    return {k: e.value for k, e in resolve(entries, model, scenario).items()}


def test_resolve_precedence_each_level() -> None:
    all_four = parse_text(
        "*.*.min_duration = 1\nresnet50.*.min_duration = 2\n*.Server.min_duration = 3\nresnet50.Server.min_duration = 4\n"
    )
    # The order of lines does not matter, only the specificity.
    for entries in (all_four, list(reversed(all_four))):
        assert _values(entries, "resnet50", "Server") == {"min_duration": 4.0}
        assert _values([e for e in entries if e.value != 4], "resnet50", "Server") == {"min_duration": 3.0}
        # *.scenario beats model.*, as in LoadGen's lookupkv.
        assert _values([e for e in entries if e.value in (1, 2)], "resnet50", "Server") == {
            "min_duration": 2.0
        }
        assert _values([e for e in entries if e.value == 1], "resnet50", "Server") == {"min_duration": 1.0}
        # Another model sees only the wildcards.
        assert _values(entries, "bert", "Server") == {"min_duration": 3.0}
        assert _values(entries, "bert", "Offline") == {"min_duration": 1.0}
        assert _values(entries, "resnet50", "Offline") == {"min_duration": 2.0}


def test_resolve_last_duplicate_wins() -> None:
    entries = parse_text(
        "resnet50.Offline.target_qps = 10\n*.Offline.target_qps = 99\nresnet50.Offline.target_qps = 20\n",
        "d.conf",
    )
    hit = resolve(entries, "resnet50", "Offline")["target_qps"]
    assert (hit.value, hit.origin) == (20.0, "d.conf:3")


def test_resolve_only_keys_of_that_scenario_and_model() -> None:
    entries = parse_text(
        "*.*.target_latency = 5\n"
        "*.*.samples_per_query = 4\n"
        "*.Offline.target_qps = 100\n"
        "bert.Server.target_qps = 7\n"
        "llama3.1-8b.Server.target_qps = 8\n"
    )
    assert _values(entries, "resnet50", "Offline") == {"target_qps": 100.0}
    assert _values(entries, "resnet50", "Server") == {"target_latency": 5.0}
    assert _values(entries, "resnet50", "MultiStream") == {"target_latency": 5.0, "samples_per_query": 4.0}
    assert _values(entries, "llama3.1-8b", "Server") == {"target_latency": 5.0, "target_qps": 8.0}
    assert resolve([], "resnet50", "Offline") == {}


def test_resolve_dotted_model_does_not_match_its_prefix() -> None:
    entries = parse_text("llama3.1-8b.Offline.target_qps = 8\n")
    assert _values(entries, "llama3", "Offline") == {}
    assert _values(entries, "llama3.1-8b", "Offline") == {"target_qps": 8.0}


# --- format_value -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (5.0, "5"),
        (0.0, "0"),
        (600000.0, "600000"),
        (24576, "24576"),
        (2.5, "2.5"),
        (0.1, "0.1"),
        (1234.5678, "1234.5678"),
        (1e-07, "1e-07"),
        (1e16, "10000000000000000"),
    ],
)
def test_format_value(value: float, text: str) -> None:
    assert format_value(value) == text


@pytest.mark.parametrize("value", [0.37, 1 / 3, 12345.678901234, 1e-7, 2.0**40 + 0.5])
def test_format_value_round_trips_through_the_parser(value: float) -> None:
    assert parse_line(f"*.*.target_qps = {format_value(value)}", "o").value == value


# --- cross-check with LoadGen's own parser -----------------------------------------

CROSS_CONF = """\
# A user.conf exercising precedence, duplicates, hex and dotted model names.
*.*.min_duration = 1000
resnet50.*.min_duration = 2000
*.Server.min_duration = 3000
*.*.max_query_count = 777
resnet50.*.target_qps = 11
resnet50.Server.target_qps = 123.5
resnet50.Server.target_latency = 12
*.Server.target_latency_percentile = 97
resnet50.Server.max_async_queries = 3
resnet50.Server.min_query_count = 50
resnet50.Server.min_query_count = 60
resnet50.Server.performance_sample_count_override = 0x100
resnet50.Server.coalesce_queries = 1
resnet50.Server.accuracy_log_rng_seed = 4242
bert.Server.target_qps = 5
llama3.1-8b.Offline.target_qps = 0x10
llama3.1-8b.*.min_query_count = 333
*.Offline.max_duration = 90000
resnet50.SingleStream.target_latency = 0.25
*.SingleStream.target_latency_percentile = 95
resnet50.MultiStream.samples_per_query = 4
resnet50.MultiStream.target_latency = 3.5
"""


def test_resolve_agrees_with_loadgen_fromconfig(tmp_path: Path) -> None:
    conf = tmp_path / "user.conf"
    conf.write_text(CROSS_CONF)
    entries = parse_file(conf)
    cases = [
        ("resnet50", "Server"),
        ("llama3.1-8b", "Offline"),
        ("resnet50", "SingleStream"),
        ("resnet50", "MultiStream"),
    ]
    results = loadgen_read([(conf, model, scenario) for model, scenario in cases])
    expected_keys = {
        ("resnet50", "Server"): {
            "min_duration",
            "max_query_count",
            "target_qps",
            "target_latency",
            "target_latency_percentile",
            "max_async_queries",
            "min_query_count",
            "performance_sample_count_override",
            "coalesce_queries",
            "accuracy_log_rng_seed",
        },
        ("llama3.1-8b", "Offline"): {
            "min_duration",
            "max_query_count",
            "target_qps",
            "min_query_count",
            "max_duration",
        },
        ("resnet50", "SingleStream"): {
            "min_duration",
            "max_query_count",
            "target_latency",
            "target_latency_percentile",
        },
        ("resnet50", "MultiStream"): {
            "min_duration",
            "max_query_count",
            "target_latency",
            "samples_per_query",
        },
    }
    for (model, scenario), lg_settings in zip(cases, results, strict=True):
        assert lg_settings["rc"] == 0
        ours = _values(entries, model, scenario)
        assert set(ours) == expected_keys[(model, scenario)]
        for key, value in ours.items():
            assert loadgen_view(lg_settings, scenario, key) == pytest.approx(value, rel=1e-12), (
                model,
                scenario,
                key,
            )

    # Pinned, so a shared mistake in both readings cannot pass unnoticed.
    server = results[0]
    assert server["min_duration_ms"] == 3000  # *.Server beats resnet50.*
    assert server["min_query_count"] == 60  # last duplicate
    assert server["performance_sample_count_override"] == 256  # 0x100
    assert server["server_target_qps"] == 123.5
    assert server["server_target_latency_ns"] == 12_000_000
    assert server["server_target_latency_percentile"] == pytest.approx(0.97)
    assert server["server_max_async_queries"] == 3
    assert server["server_coalesce_queries"] is True
    offline = results[1]
    assert offline["offline_expected_qps"] == 16.0
    assert offline["min_query_count"] == 333
    assert offline["min_duration_ms"] == 1000
    assert offline["max_duration_ms"] == 90000
    assert results[2]["single_stream_expected_latency_ns"] == 250_000
    assert results[2]["single_stream_target_latency_percentile"] == pytest.approx(0.95)
    assert results[3]["multi_stream_samples_per_query"] == 4
    assert results[3]["multi_stream_expected_latency_ns"] == 3_500_000


def test_loadgen_rejects_what_our_parser_tolerates(tmp_path: Path) -> None:
    """A comment after a value, or a '#' glued to the first word, makes LoadGen's
    parser fail the whole file (-EINVAL). Our parser tolerates both, so the user's
    file must never reach LoadGen as is; the effective user.conf is written anew."""
    trailing = tmp_path / "trailing.conf"
    trailing.write_text("resnet50.Offline.target_qps = 5 # comment\n")
    glued = tmp_path / "glued.conf"
    glued.write_text("#a comment\nresnet50.Offline.target_qps = 5\n")
    clean = tmp_path / "clean.conf"
    clean.write_text("# a comment\nresnet50.Offline.target_qps = 5\n")
    got = loadgen_read([(p, "resnet50", "Offline") for p in (trailing, glued, clean)])
    assert [g["rc"] for g in got] == [-22, -22, 0]
    assert got[2]["offline_expected_qps"] == 5.0
    for path in (trailing, glued, clean):
        assert _values(parse_file(path), "resnet50", "Offline") == {"target_qps": 5.0}
