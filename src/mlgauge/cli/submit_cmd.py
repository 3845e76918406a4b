"""``mlgauge submit``: write a run's results as an MLPerf submission tree."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from mlgauge import paths
from mlgauge.cli.output import console, print_json
from mlgauge.errors import UsageError
from mlgauge.results.store import is_database_url, open_store
from mlgauge.submission.checker import check_tree
from mlgauge.submission.tree import build_tree, records_for_run, select_records


def register(sub) -> None:
    p = sub.add_parser("submit", help="write a run's results as an MLPerf submission tree")
    p.add_argument("--run", help="run id (default: the latest run; see 'mlgauge results --runs')")
    p.add_argument(
        "--out", type=Path, required=True, help="folder for the tree (it will hold <division>/<org>/...)"
    )
    p.add_argument(
        "--division",
        choices=("closed", "open"),
        help="default: closed when every result used a real dataset, open for synthetic stand-ins",
    )
    p.add_argument("--org", default="mlgauge", help="submitter (organization) folder name (default: mlgauge)")
    p.add_argument("--system", help="system name (default: from the CPU and backend)")
    p.add_argument("--overwrite", action="store_true", help="replace a tree already in --out")
    p.add_argument(
        "--db",
        type=str,
        help="results database: a file, or postgresql://user:password@host:port/dbname "
        "(default: results.db in the mlgauge data directory)",
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=execute)


def execute(args: argparse.Namespace) -> int:
    db = args.db or str(paths.default_db_path())
    if not is_database_url(db) and not Path(db).exists():
        raise UsageError(f"no results database at {db}", hint="Run 'mlgauge run' first, or pass --db")
    with open_store(db) as store:
        run_id, records = records_for_run(store, args.run)
    selection = select_records(records)
    root = build_tree(
        records,
        args.out,
        division=args.division,
        org=args.org,
        system_name=args.system,
        overwrite=args.overwrite,
    )
    report = check_tree(root)
    exported = [
        {
            "benchmark": g.benchmark,
            "scenario": g.scenario,
            "performance": g.performance is not None,
            "accuracy": g.accuracy is not None,
            "audits": sorted(g.audits),
        }
        for g in selection.scenarios.values()
    ]
    skipped = [
        {"task": r.task, "scenario": r.scenario, "run": r.audit or r.mode, "reason": why}
        for r, why in selection.skipped
    ]
    if args.json:
        print_json(
            {
                "run_id": run_id,
                "tree": str(root),
                "exported": exported,
                "skipped": skipped,
                "check": {
                    "passed": report.passed,
                    "checks": len(report.findings),
                    "failed": len(report.failures),
                },
            }
        )
        return 0
    table = Table(title=f"Submission tree for run {run_id}", title_justify="left")
    for col in ("Benchmark", "Scenario", "Performance", "Accuracy", "Audits"):
        table.add_column(col)
    for e in exported:
        mark = {True: "[green]yes[/green]", False: "[red]missing[/red]"}
        table.add_row(
            e["benchmark"],
            e["scenario"],
            mark[e["performance"]],
            mark[e["accuracy"]],
            ", ".join(e["audits"]) or "-",
        )
    console.print(table)
    for s in skipped:
        console.print(
            f"[yellow]not exported:[/yellow] {s['task']} {s['scenario']} {s['run']}: {escape(s['reason'])}"
        )
    # soft_wrap: paths stay on one line, so they can be copied.
    console.print(f"Wrote {escape(str(root))}", soft_wrap=True)
    verdict = "[green]passes[/green]" if report.passed else "[red]does not pass[/red]"
    console.print(
        f"The tree {verdict} mlgauge's checks ({escape(report.summary())}). "
        f"Details: mlgauge check {escape(str(root))}",
        soft_wrap=True,
    )
    return 0
