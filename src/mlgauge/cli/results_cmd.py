"""``mlgauge results``: list stored results."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from mlgauge import paths
from mlgauge.cli.output import console, print_json, results_table
from mlgauge.errors import UsageError
from mlgauge.results.store import ResultStore


def register(sub) -> None:
    p = sub.add_parser("results", help="list stored results")
    p.add_argument("--run", help="only this run id")
    p.add_argument("--last", action="store_true", help="only the most recent run")
    p.add_argument("--runs", action="store_true", help="list runs, one line each")
    p.add_argument("--task")
    p.add_argument("--scenario")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--db", type=Path, help="results database (default: the mlgauge data directory)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=execute)


def execute(args: argparse.Namespace) -> int:
    db = args.db or paths.default_db_path()
    if not Path(db).exists():
        raise UsageError(f"no results database at {db}", hint="Run 'mlgauge run' first, or pass --db")
    with ResultStore(Path(db)) as store:
        if args.runs:
            runs = store.runs(limit=args.limit)
            if args.json:
                print_json(runs)
                return 0
            table = Table(title=f"Runs in {db}", title_justify="left")
            for col in ("Run", "Started (UTC)", "Records", "Tasks", "Scenarios"):
                table.add_column(col)
            for r in runs:
                table.add_row(r["run_id"], r["created_at"], str(r["n"]), ", ".join(r["tasks"]), ", ".join(r["scenarios"]))
            console.print(table)
            return 0
        run_id = store.last_run_id() if args.last else args.run
        records = store.query(task=args.task, scenario=args.scenario, run_id=run_id, limit=args.limit)
    if args.json:
        print_json([r.to_dict() for r in records])
        return 0
    if not records:
        console.print("No results match.")
        return 0
    console.print(results_table(records, title=f"Results in {db}" + (f" (run {run_id})" if run_id else "")))
    return 0
