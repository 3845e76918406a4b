"""Likely fixes for what a profile shows, from the rules in ``hints.toml``.

A measure is a share of time computed from the summary; the data file sets when a hint fires
and what it says, so a new hint is a new table entry, and wording changes touch no code.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources

from mlgauge.errors import ConfigError
from mlgauge.profiler.summary import OpRow, ProfileSummary

SLOW_COMPUTE = 0.30  # efficiency under which a compute-bound op counts as slow
_ELEMENTWISE = (
    "aten::add", "aten::sub", "aten::mul", "aten::div", "aten::neg", "aten::abs", "aten::pow", "aten::exp",
    "aten::log", "aten::log1p", "aten::sigmoid", "aten::clamp", "aten::where", "aten::relu", "aten::threshold",
    "aten::rsub", "aten::sqrt", "aten::log_sigmoid", "aten::binary_cross_entropy", "aten::fill_", "aten::copy_",
    "aten::sigmoid_backward", "aten::threshold_backward", "aten::clamp_min",
)  # fmt: skip
_NORMALIZATION = ("batch_norm", "layer_norm", "group_norm")


@dataclass(frozen=True)
class Hint:
    title: str
    advice: str
    share: float


def _op_share(summary: ProfileSummary, keep: Callable[[OpRow], bool]) -> tuple[float, str]:
    total = sum(r.self_ms for r in summary.ops) or 1.0
    chosen = sorted((r for r in summary.ops if keep(r)), key=lambda r: r.self_ms, reverse=True)
    return sum(r.self_ms for r in chosen) / total, chosen[0].name if chosen else ""


def _elementwise(r: OpRow) -> bool:
    return r.name.rstrip("_") in _ELEMENTWISE  # in-place variants end in "_"; aten::addmm is not aten::add


MEASURES: dict[str, Callable[[ProfileSummary], tuple[float, str]]] = {
    "elementwise_share": lambda s: _op_share(s, _elementwise),
    "normalization_share": lambda s: _op_share(s, lambda r: any(n in r.name for n in _NORMALIZATION)),
    "slow_compute_share": lambda s: _op_share(
        s, lambda r: r.bound == "compute" and r.efficiency is not None and r.efficiency < SLOW_COMPUTE
    ),
    "reorder_share": lambda s: (
        (s.onednn.get("reorder_ms", 0.0) / s.onednn["total_ms"]) if s.onednn.get("total_ms") else 0.0, ""
    ),
    "overhead_share": lambda s: (1.0 - s.coverage if s.profiled_ms else 0.0, ""),
}


@cache
def _rules() -> list[dict]:
    text = resources.files("mlgauge.profiler").joinpath("hints.toml").read_text(encoding="utf-8")
    try:
        rules = tomllib.loads(text)["hint"]
    except (tomllib.TOMLDecodeError, KeyError) as exc:
        raise ConfigError(f"profiler/hints.toml is invalid: {exc}") from None
    for rule in rules:
        if rule.get("measure") not in MEASURES or not {"threshold", "title", "advice"} <= set(rule):
            raise ConfigError(f"profiler/hints.toml: hint {rule.get('title', '?')!r} needs a known measure, "
                              f"a threshold, a title and advice")  # fmt: skip
    return rules


def hints(summary: ProfileSummary) -> list[Hint]:
    """The hints that fire, largest share first."""
    fired = []
    for rule in _rules():
        share, op = MEASURES[rule["measure"]](summary)
        if share >= rule["threshold"]:
            fired.append(Hint(rule["title"].format(share=share, op=op), rule["advice"].format(share=share, op=op), share))
    return sorted(fired, key=lambda h: h.share, reverse=True)
