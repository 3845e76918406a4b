"""LoadGen's user.conf format: ``model.scenario.key = value`` lines.

LoadGen itself silently ignores keys it does not know and only logs malformed
lines into its detail log, so a typo quietly changes nothing. This parser checks
every line up front against the keys LoadGen 6.0.x honours from a user.conf
(found by setting each key through ``TestSettings.FromConfig`` and reading the
effective value back) and resolves values with LoadGen's own precedence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from mlgauge.errors import ConfigError
from mlgauge.rules import SCENARIOS

# Keys every scenario honours from a user.conf.
COMMON_KEYS = frozenset(
    {
        "min_duration",
        "max_duration",
        "min_query_count",
        "max_query_count",
        "accuracy_log_rng_seed",
        "accuracy_log_sampling_target",
        "print_timestamps",
        "performance_issue_unique",
        "performance_issue_same",
        "performance_issue_same_index",
        "performance_sample_count_override",
        "accuracy_sample_count_override",
    }
)
SCENARIO_KEYS: dict[str, frozenset[str]] = {
    "SingleStream": COMMON_KEYS | {"target_latency_percentile", "target_latency"},
    "MultiStream": COMMON_KEYS | {"target_latency_percentile", "target_latency", "samples_per_query"},
    "Server": COMMON_KEYS
    | {"target_latency_percentile", "target_latency", "target_qps", "max_async_queries", "coalesce_queries"},
    "Offline": COMMON_KEYS | {"target_qps"},
}
ALL_KEYS = frozenset().union(*SCENARIO_KEYS.values())
# LoadGen reads these only from its built-in mlperf.conf; in a user.conf they do nothing.
MLPERF_CONF_ONLY = frozenset(
    {
        "qsl_rng_seed",
        "sample_index_rng_seed",
        "schedule_rng_seed",
        "accuracy_log_probability",
        "sample_concatenate_permutation",
        "test05",
        "test05_qsl_rng_seed",
        "test05_sample_index_rng_seed",
        "test05_schedule_rng_seed",
    }
)
# LoadGen reads these with strtoull, so "12.5" would silently become 12. Server's
# target_latency is an integer too; the SingleStream/MultiStream ones are doubles.
DOUBLE_KEYS = frozenset({"target_latency_percentile", "target_qps"})
_DOUBLE_LATENCY_SCENARIOS = frozenset({"SingleStream", "MultiStream"})


def is_integer_key(key: str, scenario: str) -> bool:
    if key in DOUBLE_KEYS:
        return False
    if key == "target_latency":
        return scenario not in _DOUBLE_LATENCY_SCENARIOS  # "*" may reach Server
    return True


def check_value(key: str, scenario: str, value: float, origin: str, error=ConfigError) -> None:
    """Reject values LoadGen would silently change."""
    if value < 0:
        raise error(f"{origin}: {key} must not be negative, not {format_value(value)}")
    if is_integer_key(key, scenario) and not float(value).is_integer():
        raise error(
            f"{origin}: LoadGen reads {key} as a whole number for {scenario}, so {format_value(value)} would be truncated",
            hint="Give an integer value",
        )


_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_MODEL = re.compile(r"^(\*|[A-Za-z0-9][A-Za-z0-9_.\-]*)$")


@dataclass(frozen=True)
class ConfEntry:
    model: str
    scenario: str
    key: str
    value: float
    origin: str  # "file:line", for messages and provenance

    @property
    def qualified(self) -> str:
        return f"{self.model}.{self.scenario}.{self.key}"


def _parse_value(text: str) -> float | None:
    if _NUMBER.match(text):
        return float(text)
    if text.lower().startswith("0x"):
        try:
            return float(int(text, 16))
        except ValueError:
            return None
    return None


def parse_line(line: str, origin: str) -> ConfEntry | None:
    """One user.conf line -> entry, or None for blank/comment lines."""
    body = line.split("#", 1)[0].strip()
    if not body:
        return None
    if "=" not in body:
        raise ConfigError(f"{origin}: expected 'model.scenario.key = value', got '{line.strip()}'")
    lhs, rhs = (part.strip() for part in body.split("=", 1))
    # The model name may itself contain dots (e.g. "llama3.1-8b"), so split from the right.
    parts = lhs.rsplit(".", 2)
    if len(parts) != 3 or not all(parts):
        raise ConfigError(f"{origin}: key '{lhs}' is not 'model.scenario.key' (use '*' as a wildcard)")
    model, scenario, key = parts
    if not _MODEL.match(model):
        raise ConfigError(f"{origin}: '{model}' is not a model name or '*'")
    if scenario != "*" and scenario not in SCENARIOS:
        raise ConfigError(f"{origin}: unknown scenario '{scenario}'", hint=f"Use one of {', '.join(SCENARIOS)} or '*'")
    if key == "mode":
        raise ConfigError(f"{origin}: the test mode is chosen with --mode, not in user.conf")
    if key in MLPERF_CONF_ONLY:
        raise ConfigError(
            f"{origin}: LoadGen reads '{key}' only from its built-in mlperf.conf, so it would have no effect here",
            hint="Remove the line",
        )
    allowed = ALL_KEYS if scenario == "*" else SCENARIO_KEYS[scenario]
    if key not in allowed:
        raise ConfigError(f"{origin}: '{key}' is not a LoadGen setting for {scenario}", hint=f"Known keys: {', '.join(sorted(allowed))}")
    value = _parse_value(rhs)
    if value is None:
        raise ConfigError(f"{origin}: value '{rhs}' for {lhs} is not a number")
    check_value(key, scenario, value, origin)
    return ConfEntry(model, scenario, key, value, origin)


def parse_text(text: str, source: str = "user.conf") -> list[ConfEntry]:
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        entry = parse_line(line, f"{source}:{number}")
        if entry is not None:
            entries.append(entry)
    return entries


def parse_file(path: Path) -> list[ConfEntry]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"user.conf file {path} does not exist", hint="Check the --conf path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read user.conf file {path}: {exc}") from None
    return parse_text(text, str(path))


def resolve(entries: list[ConfEntry], model: str, scenario: str) -> dict[str, ConfEntry]:
    """The entry that wins for each key, with LoadGen's lookup order:
    ``model.scenario``, then ``*.scenario``, then ``model.*``, then ``*.*``; the
    last line wins among equal keys, as in LoadGen's key/value map."""
    by_key: dict[str, ConfEntry] = {e.qualified: e for e in entries}
    out = {}
    for key in sorted(SCENARIO_KEYS[scenario]):
        for m, s in ((model, scenario), ("*", scenario), (model, "*"), ("*", "*")):
            hit = by_key.get(f"{m}.{s}.{key}")
            if hit is not None:
                out[key] = hit
                break
    return out


def format_value(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
