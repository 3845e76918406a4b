"""Presentation helpers shared by the commands: tables, units, JSON."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mlgauge.results.record import ResultRecord
from mlgauge.results.units import format_repeats

console = Console(stderr=False)
err_console = Console(stderr=True)


def print_json(payload: object) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def fmt_validity(record: ResultRecord | None) -> str:
    if record is None or record.validity is None:
        return "-"
    if record.validity == "VALID":
        return "[green]VALID[/green]"
    if record.validity == "FAILED":
        return "[red]FAILED[/red]"
    reason = record.invalid_reasons[0].split(":")[0] if record.invalid_reasons else "?"
    return f"[red]INVALID[/red] ({reason})"


def fmt_accuracy(record: ResultRecord | None) -> str:
    if record is not None and record.validity == "FAILED":
        return "[red]FAILED[/red]"
    if record is None or record.accuracy is None:
        return "-"
    acc = record.accuracy
    target = acc["target"]
    mark = "[green]PASS[/green]" if acc["passed"] else "[red]FAIL[/red]"
    change = f", {acc['change_vs_fp32']:+.2f} vs fp32" if "change_vs_fp32" in acc else ""
    return f"{acc['value']:.2f}{acc['unit']} (≥{target['threshold']:.2f}) {mark}{change}"


def results_table(records: list[ResultRecord], title: str | None = None) -> Table:
    """One row per (task, scenario, backend): the performance metric next to its accuracy check.

    Columns that are the same on every row (task, data, backend, style) move into the title.
    """
    rows: dict[tuple, dict[str, ResultRecord]] = {}
    repeats: dict[tuple, list[ResultRecord]] = {}
    audits: dict[tuple, list[ResultRecord]] = {}
    for r in records:
        key = (r.task, r.dataset, r.scenario, r.backend, r.style, r.precision)
        if r.audit:
            audits.setdefault(key, []).append(r)
        else:
            rows.setdefault(key, {})[r.mode] = r
            if r.mode == "performance":
                repeats.setdefault(key, []).append(r)
    keys = list(rows)
    varying = [i for i in range(len(_KEY_NAMES)) if i != 2 and len({k[i] for k in keys}) > 1]
    shared = [f"{_KEY_NAMES[i]}: {keys[0][i]}" for i in range(len(_KEY_NAMES)) if i != 2 and i not in varying] if keys else []
    full_title = " · ".join(filter(None, [title, *shared]))
    table = Table(title=full_title, title_justify="left")
    for i in varying:
        table.add_column(_KEY_NAMES[i].capitalize())
    table.add_column("Scenario")
    table.add_column("Metric")
    table.add_column("Value", justify="right")
    table.add_column("Validity")
    table.add_column("Accuracy vs target")
    if audits:
        table.add_column("Compliance")
    order = {s: i for i, s in enumerate(("SingleStream", "MultiStream", "Server", "Offline"))}
    for key in sorted(keys, key=lambda k: (k[0], k[1], order.get(k[2], 9), k[3], k[4], k[5])):
        perf, acc = rows[key].get("performance"), rows[key].get("accuracy")
        metric = perf.metric if perf else None
        runs = [r for r in repeats.get(key, []) if r.metric is not None]
        invalid = next((r for r in repeats.get(key, []) if r.validity != "VALID"), None)
        table.add_row(
            *[key[i] for i in varying],
            key[2],
            metric.name if metric else "-",
            format_repeats([r.metric.value for r in runs], metric.unit) if metric else "-",
            fmt_validity(invalid or perf),
            fmt_accuracy(acc),
            *([fmt_audits(audits.get(key, []))] if audits else []),
        )
    return table


def fmt_audits(records: list[ResultRecord]) -> str:
    if not records:
        return "-"
    return ", ".join(f"{r.audit} {verdict(r)}" for r in records)


def verdict(record: ResultRecord) -> str:
    """One word for a finished run: its audit verdict, validity or accuracy check."""
    if record.audit:
        if record.compliance is None:
            return "?"
        return "[green]PASS[/green]" if record.compliance["passed"] else "[red]FAIL[/red]"
    if record.validity:
        return record.validity
    return "PASS" if record.accuracy_passed else "FAIL"



_KEY_NAMES = ("task", "data", "scenario", "backend", "style", "precision")


def prepare_with_progress(task: str, quiet: bool, model_options: dict | None = None) -> None:
    """Prepare a task's synthetic stand-in, with a progress bar unless ``quiet``."""
    from mlgauge.inference import prepare

    if quiet:
        prepare(task, model_options=model_options)
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(), console=err_console) as bar:
        tid = bar.add_task(f"preparing {task}", total=1.0)
        prepare(task, lambda stage, f: bar.update(tid, description=f"preparing {task}: {stage}", completed=f),
                model_options)
