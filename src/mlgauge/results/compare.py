"""Compare two sets of results (A, the baseline, and B, the candidate) metric by metric.

Each side is a list of records, usually one or more runs. Records that measure the
same thing form a row; several records of one row on a side are repeats of the same
benchmark, and their spread is what the significance test and confidence interval use.

Statistics, and what they can and cannot say:

* ``ratio = median(B) / median(A)``; ``better_pct`` turns it into "how much better B is"
  in the metric's own direction, so a positive number is always good news.
* With at least 2 values per side: a 95% bootstrap confidence interval of the ratio of
  medians (two independent samples, percentile method, fixed seed so the same data always
  gives the same interval) and a two-sided Mann-Whitney U p-value. The U test is exact for
  small samples: with 2 values against 2 the smallest possible p is 2/6 = 0.33, with 3 vs 3
  it is 0.1, and with 4 vs 4 it is 0.029; about 5 repeats per side (smallest p 0.008) are
  needed before a real difference can be called significant at alpha = 0.05.
* With one value on a side there is no spread to test against: the verdict rests on the
  threshold alone, and says so (``basis == "threshold"``).

Nothing here prints; :meth:`Comparison.to_dict` is the JSON form for tools and reports.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

from mlgauge.results.record import ResultRecord

# A record field joins the row key only where it takes several values on a side:
# "onnxruntime run vs torch run" then still matches task by task, while a run that
# holds both backends compares each backend with itself.
VARIANT_FIELDS = ("backend", "precision", "dataset")

# LoadGen settings that change what the headline metric means or how noisy it is.
# target_qps is left out: calibration sets it run by run, and for Server it is the result itself.
METRIC_SETTINGS = (
    "min_duration_ms", "max_duration_ms", "min_query_count", "max_query_count", "min_sample_count",
    "samples_per_query", "performance_sample_count", "max_async_queries", "target_latency_percentile",
)  # fmt: skip
# Offline's one query is sized from the calibrated target_qps (1.1 x min_duration x QPS), so
# these two follow the machine's speed rather than the rules.
OFFLINE_SIZED = ("min_sample_count", "samples_per_query")
# Only in Server is target_latency_ns the latency bound; elsewhere it is a calibration hint.
SERVER_SETTINGS = ("target_latency_ns",)

BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 20240917
CONFIDENCE = 0.95

REGRESSION = "regression"
IMPROVEMENT = "improvement"
NOT_SIGNIFICANT = "no significant change"
WITHIN = "within threshold"
NOT_COMPARABLE = "not comparable"
ONLY_IN_A = "only in A"
ONLY_IN_B = "only in B"
VERDICTS = (REGRESSION, IMPROVEMENT, NOT_SIGNIFICANT, WITHIN, NOT_COMPARABLE)  # of rows on both sides


@dataclass
class Side:
    """One side's values for a row."""

    values: list[float]
    median: float
    n: int
    invalid: bool  # at least one of the records is INVALID
    run_ids: list[str]
    record_ids: list[str]
    backends: list[str]
    precisions: list[str]
    datasets: list[str]
    styles: list[str]


@dataclass
class Row:
    task: str
    benchmark: str
    scenario: str
    mode: str
    metric: str
    unit: str
    higher_is_better: bool
    variant: dict[str, str]  # the VARIANT_FIELDS that split this row from its siblings
    a: Side | None
    b: Side | None
    ratio: float | None = None
    better_pct: float | None = None
    ci: tuple[float, float] | None = None  # of the ratio
    p_value: float | None = None
    verdict: str = WITHIN
    basis: str = ""  # "test" (Mann-Whitney U) or "threshold" (a side has one value)
    invalid_sides: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.variant.items())
        return f"{self.task} {self.scenario} {self.metric}" + (f" ({extra})" if extra else "")

    @property
    def verdict_text(self) -> str:
        """The verdict, with the INVALID side(s) named: comparing an INVALID run proves little."""
        if not self.invalid_sides:
            return self.verdict
        return f"{self.verdict}, {' and '.join(self.invalid_sides)} INVALID"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["ci"] = list(self.ci) if self.ci is not None else None
        data["label"] = self.label
        data["verdict_text"] = self.verdict_text
        return data


@dataclass
class Comparison:
    rows: list[Row]  # found on both sides
    only_in_a: list[Row]
    only_in_b: list[Row]
    notes: list[str]
    threshold: float  # a fraction: 0.05 is 5%
    alpha: float

    @property
    def regressions(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == REGRESSION]

    @property
    def improvements(self) -> list[Row]:
        return [r for r in self.rows if r.verdict == IMPROVEMENT]

    def to_dict(self) -> dict:
        return {
            "threshold": self.threshold,
            "alpha": self.alpha,
            "rows": [r.to_dict() for r in self.rows],
            "only_in_a": [r.to_dict() for r in self.only_in_a],
            "only_in_b": [r.to_dict() for r in self.only_in_b],
            "notes": list(self.notes),
            "regressions": [r.label for r in self.regressions],
            "improvements": [r.label for r in self.improvements],
        }


# -- picking values -----------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    base: tuple  # (task, benchmark, scenario, mode, metric name, unit)
    higher_is_better: bool
    value: float
    record: ResultRecord


def _measured(r: ResultRecord) -> tuple[str, str, float, bool] | None:
    """(metric name, unit, value, higher_is_better) of a record, or None when it has no number."""
    if r.mode == "performance" and r.metric is not None:
        return r.metric.name, r.metric.unit, float(r.metric.value), r.metric.higher_is_better
    if r.mode == "accuracy" and r.accuracy is not None and r.accuracy.get("value") is not None:
        return str(r.accuracy.get("metric", "accuracy")), str(r.accuracy.get("unit", "")), float(r.accuracy["value"]), True
    return None


def _entries(records: Iterable[ResultRecord]) -> list[_Entry]:
    """The comparable value of each normal run; audits and runs without a number are skipped."""
    out = []
    for r in records:
        measured = None if r.audit else _measured(r)
        if measured is not None:
            name, unit, value, higher = measured
            # The unit is part of the key, so values in different units are never divided.
            out.append(_Entry((r.task, r.benchmark, r.scenario, r.mode, name, unit), higher, value, r))
    return out


def _group(a: list[_Entry], b: list[_Entry]) -> dict[tuple, tuple[list[_Entry], list[_Entry]]]:
    """Rows keyed by the base key plus the variant fields that vary within this base key on a side."""
    def varies(base: tuple, name: str) -> bool:
        return any(len({getattr(e.record, name) for e in side if e.base == base}) > 1 for side in (a, b))

    split = {base: [f for f in VARIANT_FIELDS if varies(base, f)] for base in dict.fromkeys(e.base for e in a + b)}
    groups: dict[tuple, tuple[list[_Entry], list[_Entry]]] = {}
    for index, side in enumerate((a, b)):
        for e in side:
            key = (e.base, tuple((f, getattr(e.record, f)) for f in split[e.base]))
            groups.setdefault(key, ([], []))[index].append(e)
    return groups


def _side(entries: list[_Entry]) -> Side | None:
    if not entries:
        return None
    values = [e.value for e in entries]
    records = [e.record for e in entries]

    def distinct(name: str) -> list[str]:
        return sorted({str(getattr(r, name)) for r in records})

    return Side(
        values=values,
        median=float(statistics.median(values)),
        n=len(values),
        invalid=any(r.validity == "INVALID" for r in records),
        run_ids=sorted({r.run_id for r in records}),
        record_ids=[r.record_id for r in records],
        backends=distinct("backend"),
        precisions=distinct("precision"),
        datasets=distinct("dataset"),
        styles=distinct("style"),
    )


# -- statistics -----------------------------------------------------------------------


def _ratio_of_medians(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(b, axis=axis) / np.median(a, axis=axis)


def ratio_ci(a: list[float], b: list[float]) -> tuple[float, float] | None:
    """95% bootstrap CI of median(b) / median(a); None when a side has fewer than 2 values.

    The percentile method is used rather than BCa: BCa's jackknife divides by zero when a
    side's values are all equal, which short benchmark runs produce often.
    """
    if len(a) < 2 or len(b) < 2 or min(a) <= 0:
        return None
    result = stats.bootstrap(
        (np.asarray(a, dtype=float), np.asarray(b, dtype=float)),
        _ratio_of_medians,
        n_resamples=BOOTSTRAP_RESAMPLES,
        vectorized=True,
        paired=False,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    low, high = result.confidence_interval
    return float(low), float(high)


def mann_whitney_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided Mann-Whitney U p-value; None when a side has fewer than 2 values."""
    if len(a) < 2 or len(b) < 2:
        return None
    p = float(stats.mannwhitneyu(a, b, alternative="two-sided").pvalue)
    return 1.0 if math.isnan(p) else p  # all values tied: no evidence of a difference


def smallest_p(n_a: int, n_b: int) -> float:
    """The smallest two-sided exact Mann-Whitney U p-value possible with these sample sizes.

    It is reached when the samples do not overlap: 2 of the C(n_a + n_b, n_a) orderings
    are that extreme (all of A below B, or all above).
    """
    return min(1.0, 2.0 / math.comb(n_a + n_b, n_a))


def better_pct(ratio: float, higher_is_better: bool) -> float:
    """How much better B is than A, in percent; negative when B is worse."""
    return (ratio - 1.0) * 100.0 if higher_is_better else (1.0 / ratio - 1.0) * 100.0


def _judge(row: Row, threshold: float, alpha: float) -> None:
    assert row.a is not None and row.b is not None
    row.invalid_sides = [name for name, side in (("A", row.a), ("B", row.b)) if side.invalid]
    if row.a.median <= 0 or (row.b.median <= 0 and not row.higher_is_better):
        row.verdict = NOT_COMPARABLE  # a ratio against zero means nothing; a score falling to 0 does
        return
    row.ratio = row.b.median / row.a.median
    row.better_pct = better_pct(row.ratio, row.higher_is_better)
    row.ci = ratio_ci(row.a.values, row.b.values)
    row.p_value = mann_whitney_p(row.a.values, row.b.values)
    row.basis = "threshold" if row.p_value is None else "test"
    significant = row.p_value is None or row.p_value < alpha
    limit = threshold * 100.0
    if row.better_pct < -limit and significant:
        row.verdict = REGRESSION
    elif row.better_pct > limit and significant:
        row.verdict = IMPROVEMENT
    elif row.p_value is not None and row.p_value >= alpha:
        row.verdict = NOT_SIGNIFICANT
    else:
        row.verdict = WITHIN


def _row(key: tuple, a: list[_Entry], b: list[_Entry]) -> Row:
    (task, benchmark, scenario, mode, metric, unit), variant = key
    higher = (a or b)[0].higher_is_better
    return Row(task, benchmark, scenario, mode, metric, unit, higher, dict(variant), _side(a), _side(b))


_SCENARIO_ORDER = {s: i for i, s in enumerate(("SingleStream", "MultiStream", "Server", "Offline"))}


def _order(row: Row) -> tuple:
    return (row.task, _SCENARIO_ORDER.get(row.scenario, 9), row.scenario, row.mode != "performance", row.metric,
            sorted(row.variant.items()))  # fmt: skip


def compare(
    a: list[ResultRecord], b: list[ResultRecord], *, threshold: float = 0.05, alpha: float = 0.05
) -> Comparison:
    """Compare records ``a`` (baseline) with ``b`` (candidate).

    A row is a regression when B is worse by more than ``threshold`` (a fraction, compared
    with ``better_pct``: for a lower-is-better latency 0.05 means B/A above 1/0.95) and, when
    both sides have repeats, the Mann-Whitney U test agrees (p < ``alpha``); improvements
    likewise. Repeated rows with p >= alpha are "no significant change". Mind the U test's
    floor on p for few repeats (see the module docstring): 2 vs 2 can never be significant.
    """
    entries_a, entries_b = _entries(a), _entries(b)
    rows, only_a, only_b = [], [], []
    for key, (side_a, side_b) in _group(entries_a, entries_b).items():
        row = _row(key, side_a, side_b)
        if row.a is None:
            row.verdict = ONLY_IN_B
            only_b.append(row)
        elif row.b is None:
            row.verdict = ONLY_IN_A
            only_a.append(row)
        else:
            _judge(row, threshold, alpha)
            rows.append(row)
    for found in (rows, only_a, only_b):
        found.sort(key=_order)
    used_a = [e.record for e in entries_a]
    used_b = [e.record for e in entries_b]
    notes = _setup_notes(rows, used_a, used_b) if used_a and used_b else []
    notes += _evidence_notes(rows, threshold, alpha)
    return Comparison(rows, only_a, only_b, notes, threshold, alpha)


# -- notes on the whole comparison ---------------------------------------------------------


def _systems(records: list[ResultRecord]) -> list[str]:
    found = {(str(r.system.get("cpu_model", "?")), r.system.get("cpu_logical_cores")) for r in records}
    return sorted(f"{model} ({cores} cores)" if cores is not None else model for model, cores in found)


def _setting_notes(rows: list[Row], a: list[ResultRecord], b: list[ResultRecord]) -> list[str]:
    by_id = {r.record_id: r for r in a + b}
    differences: dict[tuple, list[str]] = {}
    for row in rows:
        if row.mode != "performance" or row.a is None or row.b is None:
            continue
        names = METRIC_SETTINGS + (SERVER_SETTINGS if row.scenario == "Server" else ())
        if row.scenario == "Offline":
            names = tuple(n for n in names if n not in OFFLINE_SIZED)
        for name in names:
            values = []
            for side in (row.a, row.b):
                found = {by_id[i].settings.get(name) for i in side.record_ids}
                values.append(", ".join(sorted(str(v) for v in found if v is not None)))
            if values[0] != values[1] and values[0] and values[1]:
                differences.setdefault((name, *values), []).append(f"{row.task} {row.scenario}")
    return [
        f"LoadGen setting {name} differs (A {va}, B {vb}) for {', '.join(dict.fromkeys(where))}: "
        "the metric is measured differently"
        for (name, va, vb), where in differences.items()
    ]


def _setup_notes(rows: list[Row], a: list[ResultRecord], b: list[ResultRecord]) -> list[str]:
    """Ways the two sides were measured differently, each of which can explain a change by itself."""
    notes = []
    systems_a, systems_b = _systems(a), _systems(b)
    if systems_a != systems_b:
        notes.append(
            f"A and B were measured on different systems (A: {'; '.join(systems_a)}; B: {'; '.join(systems_b)}): "
            "differences may come from the hardware"
        )
    styles_a, styles_b = "/".join(sorted({r.style for r in a})), "/".join(sorted({r.style for r in b}))
    if styles_a != styles_b:
        notes.append(
            f"A is {styles_a} style and B is {styles_b} style: quick runs are shorter, noisier and not MLPerf-valid"
        )
    notes.extend(_setting_notes(rows, a, b))
    mixed = [
        f"{r.task} {r.scenario} (A {'/'.join(r.a.datasets)}, B {'/'.join(r.b.datasets)})"
        for r in rows
        if r.a and r.b and r.a.datasets != r.b.datasets and "synthetic" in r.a.datasets + r.b.datasets
    ]
    if mixed:
        notes.append(
            f"synthetic data compared with real data: {', '.join(dict.fromkeys(mixed))}; "
            "accuracy on the synthetic stand-in says nothing about the real dataset"
        )
    return notes


def _evidence_notes(rows: list[Row], threshold: float, alpha: float) -> list[str]:
    """How much the verdicts can be trusted: INVALID runs, and too few repeats to test."""
    notes = []
    invalid = [r.label for r in rows if r.invalid_sides]
    if invalid:
        notes.append(
            f"{len(invalid)} row(s) compare an INVALID run ({'; '.join(invalid)}): "
            "their numbers are not MLPerf results, fix the run before trusting the change"
        )
    too_few = [
        r.label for r in rows if r.a and r.b and r.basis == "test" and smallest_p(r.a.n, r.b.n) >= alpha
    ]
    if too_few:
        notes.append(
            f"{len(too_few)} row(s) have too few repeats for the Mann-Whitney U test to ever reach p < {alpha:g} "
            f"({'; '.join(too_few)}); repeat runs (about 5 per side)"
        )
    single = [r for r in rows if r.basis == "threshold"]
    if single:
        notes.append(
            f"{len(single)} row(s) have one value on a side and are judged on the {threshold * 100:g}% "
            "threshold alone; repeat runs (about 5 per side) for a significance test"
        )
    return notes
