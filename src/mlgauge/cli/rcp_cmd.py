"""``mlgauge rcp build|check``: reference convergence points from stored training sets."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape

from mlgauge.cli.output import console, print_json
from mlgauge.results.selection import resolve_runs
from mlgauge.results.store import open_store


def register(sub) -> None:
    p = sub.add_parser("rcp", help="reference convergence points: build from training sets, check a set")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", parser_class=type(p), required=True)
    build = verbs.add_parser("build", help="record epochs-to-target of reference sets (>= 2N runs)")
    build.add_argument("sets", metavar="SET", help="training set id(s), comma-joined (last, last~1 ...)")
    build.add_argument("-o", "--output", type=Path, required=True, help="RCP JSON file (records are merged in)")
    check = verbs.add_parser("check", help="check a set's convergence against RCPs")
    check.add_argument("sets", metavar="SET", help="the training set to check")
    check.add_argument("--rcps", type=Path, required=True, help="RCP JSON file (ours or an official rcps_*.json)")
    for q in (build, check):
        q.add_argument("--db", help="results database: a file path or a postgresql:// URL")
        q.add_argument("--json", action="store_true")
        q.set_defaults(handler=execute)


def _points(args):
    from mlgauge.training.convergence import set_points

    with open_store(args.db) as store:
        ids = resolve_runs(store, args.sets, "SET")
        records = [r for run in ids for r in store.query_training(run_id=run)]
    return set_points(records, ", ".join(ids)), ids


def execute(args: argparse.Namespace) -> int:
    from mlgauge.training import rcp

    points, ids = _points(args)
    if args.verb == "build":
        converged = [p for p in points.points if p is not None]
        record = rcp.build_rcp(points.benchmark, points.global_batch_size, converged, points.hyperparameters,
                               runs_per_set=points.rule.runs_per_set)  # fmt: skip
        existing = rcp.load_rcps(args.output) if args.output.exists() else {}
        name = rcp.rcp_name(points.benchmark, points.global_batch_size)
        rcp.save_rcps(args.output, {**existing, name: record})
        if args.json:
            print_json({"name": name, "record": record, "file": str(args.output), "sets": ids})
        else:
            console.print(f"RCP {name}: {len(converged)} points from {', '.join(ids)} → {args.output}")
        return 0
    verdict = rcp.check_runs(rcp.load_rcps(args.rcps), points.global_batch_size, points.points,
                             runs_per_set=points.rule.runs_per_set)  # fmt: skip
    if args.json:
        print_json({"sets": ids, "passed": verdict.passed, "outcome": verdict.outcome, "message": verdict.message,
                    "scaling_factor": verdict.scaling_factor, "suspiciously_fast": verdict.suspiciously_fast})  # fmt: skip
    else:
        colour = "green" if verdict.passed else "red"
        console.print(f"[{colour}]{verdict.outcome}[/{colour}]: {escape(verdict.message)}")
    return 0 if verdict.passed else 1
