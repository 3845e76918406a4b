"""MLPerf rule data, versioned: one TOML file per round, read into typed values.

A new MLPerf round is a new file here, not edits across the code.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from mlgauge.errors import ConfigError, choice_error

SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline")
DEFAULT_ROUND = "v6.0"


@dataclass(frozen=True)
class QualityTarget:
    """``value >= reference * fraction`` (MLPerf states targets as a fraction of a reference)."""

    metric: str
    unit: str
    reference: float
    fraction: float
    source: str = ""

    @property
    def threshold(self) -> float:
        return self.reference * self.fraction

    def passed(self, value: float) -> bool:
        # Compare at printed precision so float noise in the last digit cannot flip a verdict.
        return round(value, 6) >= round(self.threshold, 6)

    def to_dict(self) -> dict:
        return {
            "metric": self.metric,
            "unit": self.unit,
            "reference": self.reference,
            "fraction": self.fraction,
            "threshold": self.threshold,
            "source": self.source,
        }


@dataclass(frozen=True)
class ScenarioRule:
    name: str
    metric_key: str
    metric_name: str
    unit: str
    higher_is_better: bool
    conf: dict[str, float]  # official user.conf values for this scenario


@dataclass(frozen=True)
class BenchmarkRule:
    name: str
    title: str
    performance_sample_count: int
    quality: QualityTarget
    conf: dict[str, dict[str, float]] = field(default_factory=dict)  # scenario -> user.conf values


@dataclass(frozen=True)
class InferenceRules:
    round: str
    loadgen_version: str
    scenarios: dict[str, ScenarioRule]
    benchmarks: dict[str, BenchmarkRule]

    def scenario(self, name: str) -> ScenarioRule:
        if name not in self.scenarios:
            raise choice_error("scenario", name, list(self.scenarios))
        return self.scenarios[name]

    def benchmark(self, name: str) -> BenchmarkRule:
        if name not in self.benchmarks:
            raise choice_error("benchmark", name, list(self.benchmarks), round=self.round)
        return self.benchmarks[name]


def _read(filename: str) -> dict:
    try:
        text = resources.files(__name__).joinpath(filename).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"rule file {filename} is missing from the mlgauge package") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"rule file {filename} is not valid TOML: {exc}") from None


def _benchmarks(data: dict, filename: str) -> dict[str, BenchmarkRule]:
    out = {}
    for name, entry in data.get("benchmarks", {}).items():
        try:
            quality = QualityTarget(**entry["quality"])
            conf = {s: dict(v) for s, v in entry.get("conf", {}).items()}
            unknown = set(conf) - set(SCENARIOS)
            if unknown:
                raise KeyError(f"unknown scenario {sorted(unknown)}")
            out[name] = BenchmarkRule(
                name=name,
                title=entry["title"],
                performance_sample_count=int(entry["performance_sample_count"]),
                quality=quality,
                conf=conf,
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"rule file {filename}: benchmark '{name}' is incomplete: {exc}") from None
    return out


def available_rounds() -> list[str]:
    names = [p.name for p in resources.files(__name__).iterdir()]
    return sorted(n[len("inference_") : -len(".toml")] for n in names if n.startswith("inference_"))


@cache
def inference_rules(round: str = DEFAULT_ROUND) -> InferenceRules:
    if round not in available_rounds():
        raise choice_error("rules round", round, available_rounds())
    filename = f"inference_{round}.toml"
    data = _read(filename)
    scenarios = {}
    for name in SCENARIOS:
        entry = data["scenarios"][name]
        scenarios[name] = ScenarioRule(
            name=name,
            metric_key=entry["metric_key"],
            metric_name=entry["metric_name"],
            unit=entry["unit"],
            higher_is_better=bool(entry["higher_is_better"]),
            conf=dict(entry.get("conf", {})),
        )
    return InferenceRules(
        round=data["round"],
        loadgen_version=data["loadgen_version"],
        scenarios=scenarios,
        benchmarks=_benchmarks(data, filename),
    )


@cache
def standin_rules() -> dict[str, BenchmarkRule]:
    """mlgauge's synthetic stand-ins, keyed by the benchmark they stand in for."""
    return _benchmarks(_read("standins.toml"), "standins.toml")


@cache
def quick_style() -> dict[str, dict[str, float]]:
    """The quick run style's user.conf values per scenario."""
    return {s: dict(v) for s, v in _read("quick.toml")["conf"].items()}
