"""How much does mlgauge's training harness cost per step? The same model, data, batches and
optimizer are trained by the harness (run_training: mllog events, the per-step NaN check,
sample accounting) and by a bare PyTorch loop, epoch by epoch, alternating.

Goal (README): harness step time <= 1.05x the bare loop. Epoch times come from the harness's
own mllog epoch_start/epoch_stop (evaluations lie outside those intervals) and from
perf_counter around the bare epoch. The first epoch of each (allocation, warm-up) is left out.

    python benchmarks/training_overhead.py [--variant default] [--epochs 4] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from mlgauge.training.benchmarks.image_classification import ImageClassification
from mlgauge.training.loop import Parallel, run_training

_MLLOG = ":::MLLOG "


def epoch_seconds_from_log(path: Path) -> list[float]:
    """epoch_stop - epoch_start per epoch, from the mllog file."""
    starts: dict[int, int] = {}
    out = []
    for line in path.read_text().splitlines():
        if _MLLOG not in line:
            continue
        entry = json.loads(line.split(_MLLOG, 1)[1])
        epoch = entry.get("metadata", {}).get("epoch_num")
        if entry["key"] == "epoch_start":
            starts[epoch] = entry["time_ms"]
        elif entry["key"] == "epoch_stop":
            out.append((entry["time_ms"] - starts[epoch]) / 1000.0)
    return out


def harness_epochs(bench: ImageClassification, seed: int, folder: Path) -> list[float]:
    log = folder / f"harness_{seed}.txt"
    run_training(bench, seed=seed, log_path=log)
    return epoch_seconds_from_log(log)


def bare_epochs(bench: ImageClassification, seed: int, epochs: int) -> list[float]:
    t = bench.build(seed, Parallel())
    out = []
    for epoch in range(1, epochs + 1):
        t.model.train()
        start = time.perf_counter()
        for batch in t.batches(epoch):
            t.optimizer.zero_grad(set_to_none=True)
            loss = bench.loss(t.model, batch)
            loss.backward()
            t.optimizer.step()
            t.scheduler.step()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="default")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per measurement (the target is set out of reach)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    bench = ImageClassification(variant=args.variant, max_epochs=args.epochs)
    # An unreachable target keeps the harness training for every epoch, like the bare loop.
    bench.rule = dataclasses.replace(bench.rule, target=2.0)
    harness, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            seed = 1000 + repeat
            # Alternate which goes first, so a drift of the machine falls on both alike.
            pair = [lambda s=seed: harness.extend(harness_epochs(bench, s, Path(tmp))[1:]),
                    lambda s=seed: bare.extend(bare_epochs(bench, s, args.epochs)[1:])]  # fmt: skip
            for measure in pair if repeat % 2 == 0 else reversed(pair):
                measure()
    h, b = statistics.median(harness), statistics.median(bare)
    steps = -(-bench.train_samples // bench.global_batch_size)
    result = {
        "variant": args.variant,
        "threads": args.threads,
        "steps_per_epoch": steps,
        "harness_epoch_s": harness,
        "bare_epoch_s": bare,
        "harness_step_ms": h / steps * 1e3,
        "bare_step_ms": b / steps * 1e3,
        "ratio": h / b,
    }
    print(
        f"{args.variant}: {steps} steps/epoch, median epoch harness {h:.3f} s vs bare {b:.3f} s "
        f"({result['harness_step_ms']:.2f} vs {result['bare_step_ms']:.2f} ms/step): ratio {h / b:.3f}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
