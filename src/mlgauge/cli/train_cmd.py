"""``mlgauge train``: time-to-train of an N-run set, the MLPerf Training way."""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from mlgauge.cli.output import console, err_console, print_json
from mlgauge.results.store import open_store


def register(sub) -> None:
    p = sub.add_parser("train", help="train to a quality target and measure time to train (MLPerf Training)")
    p.add_argument("benchmark", nargs="?", default="resnet", help="MLPerf Training benchmark: resnet (default), ssd or dlrm_dcnv2")
    p.add_argument("--dataset", type=Path, help="real dataset folder (default: the synthetic stand-in)")
    p.add_argument("--variant", default="default",
                   help="default, or tiny for a smoke test (dlrm_dcnv2 on real data: default, small or tiny)")
    p.add_argument("--runs", type=int, help="runs in the set (default: the rules' count, e.g. 5 for resnet)")
    p.add_argument("--seed", type=int, help="seed of the first run (the others follow); default: from entropy")
    p.add_argument("--max-epochs", type=int, help="end a run that has not reached the target after this many epochs")
    p.add_argument("--global-batch-size", type=int, help="global batch size (the learning rate scales with it)")
    p.add_argument("--backbone-weights", type=Path, metavar="FILE",
                   help="ssd on OpenImages: torchvision's resnext50_32x4d ImageNet state dict to start the backbone from")
    p.add_argument("--fused-focal-loss", action="store_true",
                   help="ssd: compute the focal loss with mlgauge's fused kernel (same values, one pass)")
    p.add_argument("--embedding", choices=("full", "robe", "hashing", "qr"),
                   help="dlrm_dcnv2: the embedding layer (default full tables; robe needs --robe-size, "
                   "hashing and qr --compression)")
    p.add_argument("--robe-size", metavar="SIZE", help="dlrm_dcnv2 with --embedding robe: the shared array, e.g. 100MB")
    p.add_argument("--compression", type=float,
                   help="dlrm_dcnv2 with --embedding hashing|qr: how many times fewer rows than the full tables")
    p.add_argument("--nproc", type=int, default=1,
                   help="data-parallel processes per node (torchrun; NCCL between GPUs, gloo on CPUs)")
    p.add_argument("--device", default="auto",
                   help="auto (this process's GPU if PyTorch sees one, else the CPU), cpu, cuda or cuda:N")
    p.add_argument("--torchrun-args", default="", metavar="ARGS",
                   help="multi-node options passed to torchrun, e.g. \"--nnodes 2 --node-rank 0 --master-addr h0\"")
    p.add_argument("--org", default="mlgauge", help="submission_org in the logs")
    p.add_argument("--system", default="mlgauge-host", help="submission_platform and the results folder's system name")
    p.add_argument("--output-dir", type=Path, help="where run logs go (default: the mlgauge data directory)")
    p.add_argument("--db", help="results database: a file path or a postgresql:// URL")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=execute)


def execute(args: argparse.Namespace) -> int:
    from mlgauge.training.session import plan_training, run_set

    given = {"max_epochs": args.max_epochs, "global_batch_size": args.global_batch_size,
             "backbone_weights": args.backbone_weights, "fused_focal_loss": args.fused_focal_loss or None,
             "embedding": args.embedding, "robe_size": args.robe_size, "compression": args.compression}  # fmt: skip
    options = {k: v for k, v in given.items() if v is not None}
    plan = plan_training(
        args.benchmark, dataset=args.dataset, variant=args.variant, runs=args.runs, seed=args.seed,
        runs_dir=args.output_dir, org=args.org, system=args.system, nproc=args.nproc,
        torchrun_args=shlex.split(args.torchrun_args), device=args.device, **options,
    )  # fmt: skip
    started = time.perf_counter()
    with open_store(args.db) as store:
        location = store.location
        if args.json:
            result = run_set(plan, store)
        else:
            with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err_console) as bar:
                result = run_set(plan, store, _listener(bar, plan.runs))
    score = result.score
    if args.json:
        print_json({
            "run_id": plan.run_id, "logs": str(plan.run_dir), "database": location,
            "results_dir": str(result.results_dir) if result.results_dir else None,
            "score": {"valid": score.valid, "reason": score.reason, "seconds": score.score_s,
                      "runs_used": list(score.runs_used), "cv": score.cv},
            "runs": [r.to_dict() for r in result.records],
        })  # fmt: skip
        return 0 if score.valid else 1
    console.print(_table(result.records, plan))
    if score.valid:
        cv = f", CV {score.cv:.1%} over the converged runs" if score.cv is not None else ""
        console.print(f"Time to train (olympic mean of {len(score.runs_used)} runs): [bold]{score.score_s:.1f} s[/bold]{cv}")
    else:
        console.print(f"[red]No valid score:[/red] {escape(score.reason or '')}")
    if result.results_dir:
        console.print(f"MLPerf results layout: {result.results_dir}")
    console.print(f"Set {plan.run_id} took {time.perf_counter() - started:.0f} s. Logs: {plan.run_dir}")
    console.print(f"Results database: {location}")
    return 0 if score.valid else 1


def _listener(bar, runs: int):
    tasks: dict[int, int] = {}

    def on_event(event, index, seed, record):
        if event == "start":
            tasks[index] = bar.add_task(f"run {index + 1}/{runs} (seed {seed}): training", total=None)
        else:
            ttt = f"{record.time_to_train_s:.1f} s" if record.time_to_train_s is not None else "-"
            bar.update(tasks[index], description=f"run {index + 1}/{runs} (seed {seed}): {record.status} {ttt}")
            bar.stop_task(tasks[index])

    return on_event


def _table(records, plan) -> Table:
    rule = plan.bench.rule
    title = f"mlgauge train · {rule.benchmark} · {rule.division} · target {rule.metric} ≥ {rule.target}"
    table = Table(title=title, title_justify="left")
    for col in ("Run", "Seed", "Status", "Time to train", "Epochs", "Final quality"):
        table.add_column(col, justify="right" if col not in ("Status",) else "left")
    for r in records:
        status = "[green]success[/green]" if r.converged else f"[red]{r.status}[/red] {escape(r.reason)}"
        table.add_row(
            str(r.run_index), str(r.seed), status,
            f"{r.time_to_train_s:.1f} s" if r.time_to_train_s is not None else "-",
            f"{r.epochs:g}" if r.epochs is not None else "-",
            f"{r.quality['value']:.4f}" if r.quality.get("value") is not None else "-",
        )  # fmt: skip
    return table
