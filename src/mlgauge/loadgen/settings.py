"""Effective LoadGen settings for one (benchmark, scenario, mode) run.

Layers, lowest first: LoadGen's built-in mlperf.conf, the round's rule file
(official durations, counts, latency bounds), the run style (``quick`` shortens
runs), calibration hints measured on this machine (expected latency/QPS, only
where nothing above set them), the user's user.conf, then command-line flags.
The result is written as one fully-qualified user.conf per run, so the run
folder shows exactly what LoadGen was told, and LoadGen parses it itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mlgauge.config.userconf import SCENARIO_KEYS, ConfEntry, check_value, format_value, resolve
from mlgauge.errors import UsageError
from mlgauge.rules import BenchmarkRule, InferenceRules, quick_style

STYLES = ("quick", "valid")
# Keys that only steer query generation; a measured hint is better than LoadGen's defaults.
CALIBRATED_KEYS = {
    "SingleStream": "target_latency",
    "MultiStream": "target_latency",
    "Server": "target_qps",
    "Offline": "target_qps",
}


@dataclass
class EffectiveSettings:
    benchmark: str
    scenario: str
    values: dict[str, float] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def set(self, key: str, value: float, source: str) -> None:
        self.values[key] = float(value)
        self.sources[key] = source

    def conf_text(self) -> str:
        lines = [f"# Effective user.conf for {self.benchmark} {self.scenario}, written by mlgauge."]
        for key in sorted(self.values):
            # LoadGen's parser rejects a comment after a value, so provenance gets its own line.
            lines.append(f"# from {self.sources[key]}")
            lines.append(f"{self.benchmark}.{self.scenario}.{key} = {format_value(self.values[key])}")
        return "\n".join(lines) + "\n"

    def write(self, path: Path) -> Path:
        path.write_text(self.conf_text(), encoding="utf-8")
        return path


def resolve_settings(
    *,
    rules: InferenceRules,
    benchmark: BenchmarkRule,
    scenario: str,
    style: str,
    dataset_size: int,
    user_entries: list[ConfEntry] = (),
    flags: dict[str, float] | None = None,
    calibration: dict[str, float] | None = None,
) -> EffectiveSettings:
    """Merge every layer for one scenario; ``flags`` use user.conf key names."""
    if style not in STYLES:
        raise UsageError(f"unknown run style '{style}'", hint=f"Use one of {', '.join(STYLES)}")
    allowed = SCENARIO_KEYS[scenario]
    out = EffectiveSettings(benchmark.loadgen_model, scenario)

    rule_src = f"rules {rules.round}"
    for key, value in rules.scenario(scenario).conf.items():
        out.set(key, value, rule_src)
    for key, value in benchmark.conf.get(scenario, {}).items():
        out.set(key, value, f"{rule_src} {benchmark.name}")
    # The QSL cannot be larger than the dataset the user actually has.
    out.set("performance_sample_count_override", min(benchmark.performance_sample_count, dataset_size), rule_src)

    if style == "quick":
        for key, value in quick_style().get(scenario, {}).items():
            out.set(key, value, "quick style")

    user = resolve(list(user_entries), benchmark.loadgen_model, scenario)
    flags = {k: v for k, v in (flags or {}).items() if k in allowed and v is not None}
    hint_key = CALIBRATED_KEYS[scenario]
    if calibration and hint_key in calibration and hint_key not in user and hint_key not in flags:
        out.set(hint_key, calibration[hint_key], "calibration")
    for key, entry in user.items():
        out.set(key, entry.value, entry.origin)
    for key, value in flags.items():
        flag = f"--{key.replace('_', '-')}"
        check_value(key, scenario, value, flag, error=UsageError)
        out.set(key, value, flag)
    return out
