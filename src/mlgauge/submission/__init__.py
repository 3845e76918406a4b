"""MLPerf submission trees: export a run in MLPerf's layout (``tree``) and check one (``checker``).

This module holds what both sides share: the rules of a tree, read from
``rules/submission.toml`` into typed values. The numbers a run must reach
(durations, query counts, quality targets, required scenarios and audits) are
not here; they come from the round's rule file (``mlgauge.rules``).
"""

from __future__ import annotations

import importlib
import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from mlgauge.errors import ConfigError

_FILE = "submission.toml"

_API = {
    "build_tree": "mlgauge.submission.tree",
    "records_for_run": "mlgauge.submission.tree",
    "select_records": "mlgauge.submission.tree",
    "check_tree": "mlgauge.submission.checker",
    "CheckReport": "mlgauge.submission.checker",
    "Finding": "mlgauge.submission.checker",
}

__all__ = [
    "DivisionPolicy",
    "FieldRules",
    "LogRule",
    "AuditRule",
    "SubmissionRules",
    "submission_rules",
    *sorted(_API),
]


def __getattr__(name: str):
    # Lazy, so tree.py and checker.py can import this module's rules without a cycle.
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'mlgauge.submission' has no attribute {name!r}")


@dataclass(frozen=True)
class DivisionPolicy:
    require_suite: bool
    require_scenarios: bool
    real_dataset: bool
    full_dataset: bool
    accuracy_target: bool
    audits: bool
    measurements: dict[str, tuple[str, ...]] = field(default_factory=dict)  # stricter allowed values


@dataclass(frozen=True)
class FieldRules:
    """Fields a JSON file must have, which must say something, which are integers, allowed values."""

    required: tuple[str, ...]
    non_empty: tuple[str, ...] = ()
    integer: tuple[str, ...] = ()
    allowed: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class LogRule:
    """How a value shows in a detail log: ``log <compare> value * scale``."""

    log_key: str
    compare: str = "at_least"  # "at_least" | "at_most" | "equal"
    scale: float = 1.0
    achieved_key: str = ""


@dataclass(frozen=True)
class AuditRule:
    files: tuple[str, ...]
    verify_files: tuple[str, ...]
    performance_checks: tuple[str, ...]
    logged_responses: str
    settings: dict[str, object]


@dataclass(frozen=True)
class SubmissionRules:
    divisions_allowed: tuple[str, ...]
    code_dir: str
    systems_dir: str
    results_dir: str
    performance_dir: str
    accuracy_dir: str
    org_optional: tuple[str, ...]
    files: dict[str, tuple[str, ...]]
    divisions: dict[str, DivisionPolicy]
    systems: FieldRules
    measurements: FieldRules
    round_by_system_type: dict[str, str]
    seeds: dict[str, dict[str, int]]  # LoadGen version -> effective_* seed key -> value
    run_length: dict[str, dict[str, LogRule | None]]  # rule key -> scenario ("*" = any) -> rule
    userconf: dict[str, dict[str, LogRule | None]]
    userconf_tolerance: float
    summary: dict[str, str]  # summary label -> detail-log key
    modes: dict[str, str]
    audit_marker: str
    hash_prefix: str
    accuracy_labels: dict[str, str]
    pass_line: str
    fail_line: str
    audits: dict[str, AuditRule]

    def run_length_rule(self, key: str, scenario: str) -> LogRule | None:
        return _pick(self.run_length, key, scenario)

    def userconf_rule(self, key: str, scenario: str) -> LogRule | None:
        return _pick(self.userconf, key, scenario)

    def accuracy_label(self, metric: str) -> str:
        return self.accuracy_labels.get(metric, metric)


def _pick(table: dict[str, dict[str, LogRule | None]], key: str, scenario: str) -> LogRule | None:
    entry = table.get(key)
    if entry is None:
        return None
    return entry.get(scenario, entry.get("*"))


def _log_rule(entry: dict, default_compare: str) -> LogRule | None:
    if not entry.get("log_key"):
        return None  # "" marks a rule that does not apply (to this scenario)
    compare = entry.get("compare", default_compare)
    if compare not in ("at_least", "at_most", "equal"):
        raise KeyError(f"compare must be at_least, at_most or equal, not {compare!r}")
    return LogRule(entry["log_key"], compare, float(entry.get("scale", 1.0)), entry.get("achieved_key", ""))


def _log_rules(table: dict, default_compare: str) -> dict[str, dict[str, LogRule | None]]:
    out: dict[str, dict[str, LogRule | None]] = {}
    for key, entry in table.items():
        rules: dict[str, LogRule | None] = {"*": _log_rule(entry, default_compare)}
        base = {k: v for k, v in entry.items() if k != "by_scenario"}
        for scenario, override in entry.get("by_scenario", {}).items():
            rules[scenario] = _log_rule({**base, **override}, default_compare)
        out[key] = rules
    return out


def _fields(table: dict) -> FieldRules:
    return FieldRules(
        required=tuple(table["required"]),
        non_empty=tuple(table.get("non_empty", ())),
        integer=tuple(table.get("integer", ())),
        allowed={k: tuple(v) for k, v in table.get("allowed", {}).items()},
    )


def _parse(data: dict) -> SubmissionRules:
    layout = data["layout"]
    divisions = {
        name: DivisionPolicy(
            require_suite=bool(entry["require_suite"]),
            require_scenarios=bool(entry["require_scenarios"]),
            real_dataset=bool(entry["real_dataset"]),
            full_dataset=bool(entry["full_dataset"]),
            accuracy_target=bool(entry["accuracy_target"]),
            audits=bool(entry["audits"]),
            measurements={k: tuple(v) for k, v in entry.get("measurements", {}).items()},
        )
        for name, entry in data["divisions"].items()
    }
    audits_table = data["audits"]
    audits = {
        test: AuditRule(
            files=tuple(entry["files"]),
            verify_files=tuple(entry["verify_files"]),
            performance_checks=tuple(entry.get("performance_checks", ())),
            logged_responses=entry.get("logged_responses", ""),
            settings=dict(entry.get("settings", {})),
        )
        for test, entry in audits_table.items()
        if isinstance(entry, dict)
    }
    return SubmissionRules(
        divisions_allowed=tuple(layout["divisions"]),
        code_dir=layout["code_dir"],
        systems_dir=layout["systems_dir"],
        results_dir=layout["results_dir"],
        performance_dir=layout["performance_dir"],
        accuracy_dir=layout["accuracy_dir"],
        org_optional=tuple(layout.get("org_optional", ())),
        files={k: tuple(v) for k, v in data["files"].items()},
        divisions=divisions,
        systems=_fields(data["systems"]),
        measurements=_fields(data["measurements"]),
        round_by_system_type=dict(data.get("round_by_system_type", {})),
        # Stored as strings (TOML integers are signed 64-bit); compared as integers.
        seeds={version: {k: int(v) for k, v in seeds.items()} for version, seeds in data["seeds"].items()},
        # A run-length rule is a minimum; a user.conf value must show as given.
        run_length=_log_rules(data["run_length"], "at_least"),
        userconf=_log_rules(data["userconf"]["keys"], "equal"),
        userconf_tolerance=float(data["userconf"]["relative_tolerance"]),
        summary=dict(data["summary"]["performance"]),
        modes=dict(data["modes"]),
        audit_marker=data["audit_marker"]["text"],
        hash_prefix=data["accuracy_txt"]["hash_prefix"],
        accuracy_labels=dict(data["accuracy_txt"].get("labels", {})),
        pass_line=audits_table["pass_line"],
        fail_line=audits_table["fail_line"],
        audits=audits,
    )


@cache
def submission_rules() -> SubmissionRules:
    """The tree rules shipped in ``mlgauge/rules/submission.toml``."""
    try:
        text = resources.files("mlgauge.rules").joinpath(_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"rule file {_FILE} is missing from the mlgauge package") from None
    try:
        return _parse(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"rule file {_FILE} is not valid TOML: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"rule file {_FILE} is incomplete: {exc}") from None
