"""``mlgauge compare A B``: per-metric ratios of two runs, with confidence intervals and a regression gate."""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from mlgauge import paths
from mlgauge.cli.output import console, err_console, print_json
from mlgauge.errors import UsageError
from mlgauge.results.compare import IMPROVEMENT, REGRESSION, VERDICTS, Comparison, Row, compare
from mlgauge.results.selection import resolve_runs
from mlgauge.results.store import is_database_url, open_store
from mlgauge.results.units import format_value as fmt_metric

DEFAULT_THRESHOLD_PCT = 5.0
_PERCENT = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*%?\s*")


def register(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="compare two runs metric by metric",
        description="Compare run B (the candidate) with run A (the baseline). A and B are run ids, "
        "several run ids joined by commas (their results pool as repeats), or last, last~1, last~N.",
    )
    p.add_argument("a", metavar="A", help="baseline: run id(s), or last~N")
    p.add_argument("b", metavar="B", help="candidate: run id(s), or last~N")
    p.add_argument("--db", type=str, help="results database: a path or a postgresql:// URL")
    p.add_argument(
        "--fail-above",
        metavar="PCT",
        help="exit 1 when any metric is worse by more than this many percent, e.g. 5%% or 5",
    )
    p.add_argument(
        "--alpha", default="0.05", help="significance level of the Mann-Whitney U test (default 0.05)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=execute)


# -- arguments ------------------------------------------------------------------------


def parse_percent(text: str) -> float:
    """ "5%" or "5" -> 0.05. A bare number is always percent, so "0.05" means 0.05%, never 5%."""
    match = _PERCENT.fullmatch(text)
    if not match:
        raise UsageError(
            f"--fail-above must be a percentage, got '{text}'",
            hint="Write it as 5% or 5 (both mean five percent)",
        )
    return float(match.group(1)) / 100.0


def parse_alpha(text: str) -> float:
    try:
        alpha = float(text)
    except ValueError:
        alpha = math.nan
    if not 0.0 < alpha < 1.0:
        raise UsageError(
            f"--alpha must be a number between 0 and 1, got '{text}'", hint="The usual value is 0.05"
        )
    return alpha


# -- presentation -----------------------------------------------------------------------


def _value(row: Row, value: float | None) -> str:
    if value is None:
        return "-"
    if row.mode == "accuracy":
        return f"{value:.2f}{row.unit}" if row.unit == "%" else f"{value:.4g} {row.unit}".rstrip()
    return fmt_metric(value, row.unit)


def _median(row: Row, which: str) -> str:
    side = row.a if which == "a" else row.b
    return "-" if side is None else f"{_value(row, side.median)} ({side.n})"


def _ratio(row: Row) -> str:
    if row.ratio is None:
        return "-"
    ci = f" [{row.ci[0]:.3f}, {row.ci[1]:.3f}]" if row.ci is not None else ""
    return f"{row.ratio:.3f}{ci}"


def _verdict(row: Row) -> str:
    change = f" ({row.better_pct:+.1f}%)" if row.better_pct is not None else ""
    invalid = f", {' and '.join(row.invalid_sides)} INVALID" if row.invalid_sides else ""
    return row.verdict + change + invalid


def comparison_table(comparison: Comparison, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("Task", "Scenario", "Metric", "A median (n)", "B median (n)", "B/A [95% CI]", "p", "Verdict"):
        table.add_column(col, justify="right" if col in ("A median (n)", "B median (n)", "p") else "left")
    styles = {REGRESSION: "red", IMPROVEMENT: "green"}
    for row in [*comparison.rows, *comparison.only_in_a, *comparison.only_in_b]:
        variant = ", ".join(row.variant.values())
        metric = f"accuracy ({row.metric})" if row.mode == "accuracy" else row.metric
        cells = (
            row.task + (f" ({variant})" if variant else ""),
            row.scenario,
            metric,
            _median(row, "a"),
            _median(row, "b"),
            _ratio(row),
            f"{row.p_value:.3f}" if row.p_value is not None else "-",
            _verdict(row),
        )
        style = styles.get(row.verdict, "dim" if row.a is None or row.b is None else None)
        table.add_row(*(escape(c) for c in cells), style=style)
    return table


def summary(comparison: Comparison) -> str:
    counts = {v: sum(r.verdict == v for r in comparison.rows) for v in VERDICTS}
    plural = {REGRESSION: "regressions", IMPROVEMENT: "improvements"}
    parts = [f"{n} {plural.get(v, v) if n > 1 else v}" for v, n in counts.items() if n]
    extra = [
        f"{len(rows)} {name}"
        for name, rows in (("only in A", comparison.only_in_a), ("only in B", comparison.only_in_b))
        if rows
    ]
    text = f"{len(comparison.rows)} compared: {', '.join(parts) or 'none'}"
    text += f"; {', '.join(extra)}" if extra else ""
    return text + f" (threshold {comparison.threshold * 100:g}%, alpha {comparison.alpha:g})"


def _no_common_rows(comparison: Comparison, ids_a: list[str], ids_b: list[str]) -> str:
    def held(rows: list[Row]) -> str:
        names = dict.fromkeys(f"{r.task} {r.scenario} {r.mode}" for r in rows)
        return ", ".join(names) or "no normal results with a metric (audits and failed runs are not compared)"

    return (
        f"error: A ({', '.join(ids_a)}) and B ({', '.join(ids_b)}) have no results in common: "
        f"A holds {held(comparison.only_in_a)}; B holds {held(comparison.only_in_b)}"
    )


# -- the command ------------------------------------------------------------------------


def execute(args: argparse.Namespace) -> int:
    gate = parse_percent(args.fail_above) if args.fail_above is not None else None
    threshold = gate if gate is not None else DEFAULT_THRESHOLD_PCT / 100.0
    alpha = parse_alpha(args.alpha)
    db = args.db or str(paths.default_db_path())
    # Comparing reads only: a mistyped path must not leave a new, empty database behind.
    if not is_database_url(db) and not Path(db).expanduser().exists():
        raise UsageError(f"no results database at {db}", hint="Run 'mlgauge run' first, or pass --db")
    with open_store(db) as store:
        ids_a = resolve_runs(store, args.a, "A")
        ids_b = resolve_runs(store, args.b, "B")
        records_a = store.query(run_ids=ids_a)
        records_b = store.query(run_ids=ids_b)
    comparison = compare(records_a, records_b, threshold=threshold, alpha=alpha)
    failed = gate is not None and bool(comparison.regressions)
    if args.json:
        payload = comparison.to_dict()
        payload.update({"a": {"spec": args.a, "run_ids": ids_a}, "b": {"spec": args.b, "run_ids": ids_b}})
        payload["failed"] = failed
        print_json(payload)
    if not comparison.rows:
        err_console.print(escape(_no_common_rows(comparison, ids_a, ids_b)), soft_wrap=True)
        return 1
    if not args.json:
        console.print(comparison_table(comparison, f"B ({', '.join(ids_b)}) vs A ({', '.join(ids_a)})"))
        for note in comparison.notes:
            console.print(escape(f"note: {note}"), soft_wrap=True)
        console.print(escape(summary(comparison)), soft_wrap=True)
    if failed:
        worst = "; ".join(f"{r.label} ({r.better_pct:+.1f}%)" for r in comparison.regressions)
        err_console.print(
            escape(
                f"FAIL: {len(comparison.regressions)} regression(s) worse than {threshold * 100:g}%: {worst}"
            ),
            soft_wrap=True,
            style="red",
        )
        return 1
    return 0
