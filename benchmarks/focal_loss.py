"""Fused sigmoid focal loss vs torchvision's formula, forward + backward, on RetinaNet-sized input.

The loss of one 800x800 OpenImages image in MLPerf's RetinaNet: 120,087 anchors x 264 classes
(about 31.7 M logits), 1% positives, summed and divided by the positives as the reference does.
Three ways, each timed over the same tensors: the reference formula in eager mode, the same
formula under ``torch.compile`` (its compile time reported apart), and ``mlgauge.ops``'s fused op.

Goals (README): fused >= 8x faster than eager, and at least as fast as torch.compile.

    python benchmarks/focal_loss.py [--anchors 120087] [--classes 264] [--repeats 7] [--device cpu] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from mlgauge.ops import reference_sigmoid_focal_loss, sigmoid_focal_loss
from mlgauge.ops.build import fused_kernel


def step(loss_fn, logits: torch.Tensor, targets: torch.Tensor, positives: float) -> float:
    """One forward + backward; seconds."""
    x = logits.detach().requires_grad_()
    sync(x)
    start = time.perf_counter()
    loss = loss_fn(x, targets) / positives
    loss.backward()
    sync(x)
    return time.perf_counter() - start


def sync(x: torch.Tensor) -> None:
    if x.device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--anchors", type=int, default=120_087)
    parser.add_argument("--classes", type=int, default=264)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json")
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    logits = (torch.randn(args.anchors, args.classes, generator=g) * 2 - 4).to(args.device)
    targets = (torch.rand(args.anchors, args.classes, generator=g) < 0.01).float().to(args.device)
    positives = float(targets.sum())
    fused_kernel()  # built (or loaded from the cache) before any timing
    ways = {
        "eager reference": lambda x, t: reference_sigmoid_focal_loss(x, t, reduction="sum"),
        "fused (mlgauge.ops)": lambda x, t: sigmoid_focal_loss(x, t, reduction="sum"),
    }
    compiled = torch.compile(lambda x, t: reference_sigmoid_focal_loss(x, t, reduction="sum"), dynamic=False)
    started = time.perf_counter()
    step(compiled, logits, targets, positives)
    compile_s = time.perf_counter() - started
    ways["torch.compile(reference)"] = compiled
    times: dict[str, list[float]] = {name: [] for name in ways}
    for fn in ways.values():
        step(fn, logits, targets, positives)  # warm-up
    for _ in range(args.repeats):  # rounds take turns, so drift hits every way alike
        for name, fn in ways.items():
            times[name].append(step(fn, logits, targets, positives))
    medians = {name: statistics.median(values) for name, values in times.items()}
    eager = medians["eager reference"]
    for name, value in medians.items():
        print(f"{name:26s} {value * 1000:8.1f} ms   {eager / value:5.2f}x vs eager")
    print(f"torch.compile's first call (compile + run): {compile_s:.1f} s; threads: {torch.get_num_threads()}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"shape": [args.anchors, args.classes], "device": args.device, "positives": positives,
                       "seconds": times, "median_s": medians, "compile_first_call_s": compile_s}, fh, indent=2)


if __name__ == "__main__":
    main()
