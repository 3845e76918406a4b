"""``mlgauge list``: what can be run here."""

from __future__ import annotations

import argparse

from rich.table import Table

from mlgauge.backends import backend_names, is_installed
from mlgauge.cli.output import console, print_json
from mlgauge.rules import SCENARIOS, available_rounds, inference_rules, suite, suite_names
from mlgauge.tasks import get_task, task_names


def register(sub) -> None:
    p = sub.add_parser("list", help="list tasks, backends, scenarios and rule rounds")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=execute)


def execute(args: argparse.Namespace) -> int:
    tasks = [{"name": n, "title": get_task(n).title, "prepared": get_task(n).is_prepared()} for n in task_names()]
    backends = [{"name": n, "installed": is_installed(n)} for n in backend_names()]
    rules = inference_rules()
    scenarios = [{"name": s, "metric": rules.scenario(s).metric_name} for s in SCENARIOS]
    suites = []
    for name in suite_names():
        found = suite(name)
        suites.append({
            "name": name,
            "title": found.title,
            "rules": found.round,
            "required": {task: list(scenarios) for task, scenarios in found.required.items()},
        })
    if args.json:
        print_json({"tasks": tasks, "backends": backends, "scenarios": scenarios, "suites": suites, "rules": available_rounds()})
        return 0
    t = Table(title="Tasks", title_justify="left")
    for col in ("Task", "Description", "Synthetic data prepared"):
        t.add_column(col)
    for task in tasks:
        t.add_row(task["name"], task["title"], "yes" if task["prepared"] else "no")
    console.print(t)
    b = Table(title="Backends", title_justify="left")
    b.add_column("Backend")
    b.add_column("Installed")
    for backend in backends:
        b.add_row(backend["name"], "yes" if backend["installed"] else "no")
    console.print(b)
    s = Table(title=f"Scenarios (rules {', '.join(available_rounds())})", title_justify="left")
    s.add_column("Scenario")
    s.add_column("Metric")
    for sc in scenarios:
        s.add_row(sc["name"], sc["metric"])
    console.print(s)
    u = Table(title="Suites (mlgauge run --suite NAME)", title_justify="left")
    for col in ("Suite", "Rules", "Required task: scenarios"):
        u.add_column(col)
    for entry in suites:
        required = "\n".join(f"{task}: {', '.join(sc)}" for task, sc in entry["required"].items())
        u.add_row(entry["name"], entry["rules"], required)
    console.print(u)
    return 0
