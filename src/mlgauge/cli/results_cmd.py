"""``mlgauge results``: list stored results, or export them as CSV or JSON."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from mlgauge import paths
from mlgauge.cli.output import console, print_json, results_table
from mlgauge.errors import OutputError, UsageError
from mlgauge.results.record import ResultRecord
from mlgauge.results.store import is_database_url, open_store

DB_HELP = (
    "results database: a file, or postgresql://user:password@host:port/dbname "
    "(default: results.db in the mlgauge data directory)"
)
# Shown when no --limit is given; an export takes every matching record.
_DISPLAY_LIMIT = 50

CSV_COLUMNS = (
    "record_id", "run_id", "created_at", "task", "benchmark", "dataset", "scenario", "mode", "style",
    "backend", "precision", "audit", "metric_key", "metric_name", "metric_value", "metric_unit", "validity",
    "invalid_reasons", "accuracy_value", "accuracy_passed", "latency_p50_ns", "latency_p90_ns",
    "latency_p99_ns", "log_dir",
)  # fmt: skip


def register(sub) -> None:
    p = sub.add_parser("results", help="list stored results, or export them (--export csv|json)")
    p.add_argument("--run", help="only this run id")
    p.add_argument("--last", action="store_true", help="only the most recent run")
    p.add_argument("--runs", action="store_true", help="list runs, one line each")
    p.add_argument("--task")
    p.add_argument("--scenario")
    p.add_argument(
        "--limit", type=int, help=f"at most this many, newest first (default: {_DISPLAY_LIMIT}; export: all)"
    )
    p.add_argument("--db", type=str, help=DB_HELP)
    p.add_argument("--json", action="store_true")
    p.add_argument("--export", choices=("csv", "json"), help="write the matching records as CSV or JSON")
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="file for --export (default: stdout)")
    p.set_defaults(handler=execute)


def _cell(value: object) -> object:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value


def csv_row(record: ResultRecord) -> dict[str, object]:
    """One record as a flat CSV row; fields a record does not have are empty."""
    metric, accuracy, latency = record.metric, record.accuracy or {}, record.latency_ns
    row = {name: getattr(record, name) for name in CSV_COLUMNS if hasattr(record, name)}
    row |= {
        "metric_key": metric.key if metric else None,
        "metric_name": metric.name if metric else None,
        "metric_value": metric.value if metric else None,
        "metric_unit": metric.unit if metric else None,
        "invalid_reasons": "; ".join(record.invalid_reasons),
        "accuracy_value": accuracy.get("value"),
        "accuracy_passed": record.accuracy_passed,
        **{f"latency_{p}_ns": latency.get(p) for p in ("p50", "p90", "p99")},
    }
    return {name: _cell(row.get(name)) for name in CSV_COLUMNS}


def export_text(records: list[ResultRecord], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([r.to_dict() for r in records], indent=2, sort_keys=True, default=str) + "\n"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(csv_row(r) for r in records)
    return buffer.getvalue()


def _write_atomically(path: Path, content: str) -> None:
    # Readers never see half a file, and a failed export leaves an older file as it was.
    try:
        paths.write_text_atomic(path, content)
    except OSError as exc:
        raise OutputError(
            f"cannot write the export: {exc.strerror or exc}",
            hint="Choose a file in a writable folder with -o",
            path=path,
        ) from None


def _check_args(args: argparse.Namespace) -> None:
    if args.output is not None and not args.export:
        raise UsageError("-o/--output goes with --export", hint="Add --export csv or --export json")
    if args.export and (args.runs or args.json):
        raise UsageError(
            "--export writes records; it does not go with --runs or --json", hint="Drop one of them"
        )


def _all_runs(store, limit: int) -> list[dict]:
    """Inference runs, training sets, MLPerf Tiny runs and profiles, newest first, each marked with its kind."""
    every = [{**r, "kind": "inference"} for r in store.runs(limit=limit)]
    kinds = (("training", store.training_sets), ("tiny", store.tiny_sets), ("profile", store.profile_sets))
    for kind, sets in kinds:
        every += [{**r, "tasks": [], "scenarios": [], "kind": kind} for r in sets(limit=limit)]
    every.sort(key=lambda r: r["created_at"] or "", reverse=True)
    return every[:limit]


def execute(args: argparse.Namespace) -> int:
    _check_args(args)
    db = args.db or str(paths.default_db_path())
    if not is_database_url(db) and not Path(db).exists():
        raise UsageError(f"no results database at {db}", hint="Run 'mlgauge run' first, or pass --db")
    limit = args.limit if args.limit is not None or args.export else _DISPLAY_LIMIT
    with open_store(db) as store:
        where = store.location
        if args.runs:
            runs = _all_runs(store, limit)
            if args.json:
                print_json(runs)
                return 0
            table = Table(title=f"Runs in {escape(where)}", title_justify="left")
            for col in ("Run", "Started (UTC)", "Records", "Tasks", "Scenarios"):
                table.add_column(col)
            for r in runs:
                tasks = ", ".join(r["tasks"]) if r["kind"] == "inference" else f"({r['kind']})"
                scenarios = ", ".join(r["scenarios"])
                table.add_row(r["run_id"], r["created_at"], str(r["n"]), tasks, scenarios)
            console.print(table)
            return 0
        run_id = store.last_run_id() if args.last else args.run
        records = store.query(task=args.task, scenario=args.scenario, run_id=run_id, limit=limit)
    if args.export:
        content = export_text(records, args.export)
        if args.output is None:
            sys.stdout.write(content)
        else:
            _write_atomically(args.output, content)
            console.print(f"Wrote {len(records)} records to {escape(str(args.output))}", soft_wrap=True)
        return 0
    if args.json:
        print_json([r.to_dict() for r in records])
        return 0
    if not records:
        console.print("No results match.")
        return 0
    title = f"Results in {where}" + (f" (run {run_id})" if run_id else "")
    console.print(results_table(records, title=escape(title)))
    return 0
