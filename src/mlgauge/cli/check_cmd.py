"""``mlgauge check``: check a submission tree against the MLPerf rules; exit 1 if anything fails."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from mlgauge.cli.output import console, print_json
from mlgauge.submission.checker import CheckReport, check_tree


def register(sub) -> None:
    p = sub.add_parser("check", help="check an MLPerf submission tree (exit 1 if any check fails)")
    p.add_argument("dir", type=Path, help="the tree's folder (what 'mlgauge submit --out' wrote)")
    p.add_argument("--verbose", "-v", action="store_true", help="list every check, not only the failures")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=execute)


def _common_folder(paths: list[str]) -> str:
    """The deepest folder holding every path, so the table can show short paths."""
    parts = [p.split("/")[:-1] for p in paths]  # a path may be a file: compare folders only
    common: list[str] = []
    for level in zip(*parts, strict=False) if parts else ():
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return "/".join(common)


def findings_table(report: CheckReport, verbose: bool) -> Table:
    shown = report.findings if verbose else report.failures
    prefix = _common_folder([f.path for f in shown])
    where = f"{report.root}/{prefix}" if prefix else str(report.root)
    table = Table(
        title=f"{'Checks' if verbose else 'Failed checks'} in {escape(where)}", title_justify="left"
    )
    if verbose:
        table.add_column("Result")
    # Check ids stay whole so they can be searched for; paths and messages fold.
    table.add_column("Path", overflow="fold")
    table.add_column("Check", no_wrap=True)
    table.add_column("Message", overflow="fold")
    for f in shown:
        path = f.path[len(prefix) + 1 :] if prefix and f.path.startswith(prefix + "/") else f.path
        row = [escape(path or "."), f.check, escape(f.message)]
        if verbose:
            row.insert(0, "[green]pass[/green]" if f.passed else "[red]FAIL[/red]")
        table.add_row(*row)
    return table


def execute(args: argparse.Namespace) -> int:
    report = check_tree(args.dir)
    if args.json:
        print_json(report.to_dict())
    else:
        if args.verbose or report.failures:
            console.print(findings_table(report, args.verbose))
        colour = "green" if report.passed else "red"
        console.print(f"[{colour}]{escape(report.summary())}[/{colour}]", soft_wrap=True)
    return 0 if report.passed else 1
