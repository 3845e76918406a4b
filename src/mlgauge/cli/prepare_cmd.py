"""``mlgauge prepare``: generate a task's synthetic data and train its weights, once."""

from __future__ import annotations

import argparse

from mlgauge.cli.output import console, prepare_with_progress, print_json
from mlgauge.tasks import DEFAULT_TASK, get_task


def register(sub) -> None:
    p = sub.add_parser("prepare", help="build the synthetic stand-in data and weights (cached)")
    p.add_argument("task", nargs="?", default=DEFAULT_TASK)
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=execute)


def execute(args: argparse.Namespace) -> int:
    task = get_task(args.task)
    was_prepared = task.is_prepared()
    if not was_prepared:
        prepare_with_progress(args.task, args.json)
    meta = task.prepare()
    if args.json:
        print_json({**meta, "cached": was_prepared})
        return 0
    state = "already prepared" if was_prepared else f"prepared in {meta['seconds']:.0f} s"
    console.print(
        f"{args.task}: {state}. Synthetic validation top-1: trained {meta['val_top1_trained']:.2f}%, "
        f"untrained {meta['val_top1_untrained']:.2f}%."
    )
    return 0
