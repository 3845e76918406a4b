"""``mlgauge report``: one self-contained HTML page for stored runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlgauge import paths
from mlgauge.cli.output import console, print_json
from mlgauge.errors import UsageError
from mlgauge.results.report import ReportData, render_report, write_report
from mlgauge.results.selection import resolve_runs
from mlgauge.results.store import is_database_url, open_store


def register(sub) -> None:
    p = sub.add_parser("report", help="write an HTML report of stored runs")
    p.add_argument("runs", nargs="*", metavar="RUN", help="run ids (or last, last~1 ...); comma lists pool runs")
    p.add_argument("--last", action="store_true", help="the most recent run")
    p.add_argument("--suite-run", metavar="ID", help="a suite run's id (the same as giving it as RUN)")
    p.add_argument("--baseline", metavar="RUN", help="compare with this run (or comma list of repeats)")
    p.add_argument("-o", "--output", type=Path, help="the HTML file to write (default: report-RUN.html)")
    p.add_argument("--title", help="the report's title")
    p.add_argument("--db", help="results database: a file path or a postgresql:// URL")
    p.add_argument("--json", action="store_true", help="print where the report went, as JSON")
    p.set_defaults(handler=execute)


def execute(args: argparse.Namespace) -> int:
    specs = list(args.runs) + ([args.suite_run] if args.suite_run else []) + (["last"] if args.last else [])
    if not specs:
        raise UsageError("which runs? give run ids, --last or --suite-run ID", hint="List runs with 'mlgauge results --runs'")
    db = args.db or str(paths.default_db_path())
    # Reporting reads only: a mistyped path must not leave a new, empty database behind.
    if not is_database_url(db) and not Path(db).expanduser().exists():
        raise UsageError(f"no results database at {db}", hint="Run 'mlgauge run' first, or pass --db")
    with open_store(db) as store:
        run_ids = [run for spec in specs for run in resolve_runs(store, spec)]
        records = store.query(run_ids=run_ids)
        training = [t for run in run_ids for t in store.query_training(run_id=run)]
        tiny = [t for run in run_ids for t in store.query_tiny(run_id=run)]
        profiles = [p for run in run_ids for p in store.query_profiles(run_id=run)]
        baseline_ids = resolve_runs(store, args.baseline, "--baseline") if args.baseline else []
        baseline = store.query(run_ids=baseline_ids) if baseline_ids else []
        source = store.location
    comparison = None
    if baseline:
        from mlgauge.results.compare import compare

        comparison = compare(baseline, records).to_dict()
    title = args.title or f"mlgauge report: {', '.join(run_ids)}"
    data = ReportData(records, title, source, run_ids, comparison, baseline_ids, training, tiny, profiles)
    out = write_report(args.output or Path(f"report-{run_ids[0]}.html"), render_report(data))
    if args.json:
        counts = {"records": len(records), "training_runs": len(training), "tiny_runs": len(tiny),
                  "profiles": len(profiles)}  # fmt: skip
        print_json({"report": str(out), "runs": run_ids, "baseline": baseline_ids, **counts})
    else:
        total = len(records) + len(training) + len(tiny) + len(profiles)
        console.print(f"Report of {total} records from {len(run_ids)} run(s): {out}")
    return 0
