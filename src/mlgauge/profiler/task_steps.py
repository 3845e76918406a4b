"""The loop ``mlgauge profile TASK`` profiles: a task's training steps or inference batches.

Run as a script by the profiler's child process (``task_steps.py --train ssd --steps 8``). Training
steps are the ones ``mlgauge train`` takes (zero_grad, the benchmark's loss, backward, optimizer and
scheduler step) on the benchmark's data; inference batches are ``mlgauge run``'s torch backend
calls on the task's samples. Each iteration ends a profiler step.
"""

from __future__ import annotations

import argparse
from typing import Any


def train_steps(bench: Any, count: int, *, seed: int = 0) -> None:
    """``count`` optimizer steps of a training benchmark on this process's CPU or GPU."""
    from mlgauge.training.device import pick_device
    from mlgauge.training.loop import Parallel, to_device

    parallel = Parallel(0, 1, pick_device("auto"))
    trainable = bench.build(seed=seed, parallel=parallel)
    model, optimizer = trainable.model.train(), trainable.optimizer
    done, epoch = 0, 1
    while done < count:
        for batch in trainable.batches(epoch):
            optimizer.zero_grad(set_to_none=True)
            bench.loss(model, to_device(batch, parallel.device)).backward()
            optimizer.step()
            if trainable.scheduler is not None:
                trainable.scheduler.step()
            done += 1
            if done == count:
                return
        epoch += 1


def infer_batches(task: str, count: int, batch: int, threads: int = 0) -> None:
    """``count`` calls of the torch backend on the first ``batch`` samples of the task's data."""
    from mlgauge.backends.base import BackendOptions
    from mlgauge.backends.torch_backend import TorchBackend
    from mlgauge.profiler.steps import step_done
    from mlgauge.tasks import get_task

    workload = get_task(task).workload()
    backend = TorchBackend(BackendOptions(threads=threads, device="auto"))
    backend.load(workload.model)
    samples = workload.dataset.load(list(range(min(batch, workload.dataset.total_count))))
    for _ in range(count):
        backend.run(samples)
        step_done()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="task_steps.py")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--train", metavar="BENCHMARK")
    mode.add_argument("--infer", metavar="TASK")
    parser.add_argument("--steps", type=int, required=True, help="iterations in all (warm-up + recorded)")
    parser.add_argument("--variant", default="default")
    parser.add_argument("--global-batch-size", type=int)
    parser.add_argument("--fused-focal-loss", action="store_true")
    parser.add_argument("--batch", type=int, default=32, help="inference batch size")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    if args.train:
        from mlgauge.training.benchmarks import benchmark_class

        options = {"global_batch_size": args.global_batch_size, "fused_focal_loss": args.fused_focal_loss or None}
        bench = benchmark_class(args.train)(None, variant=args.variant,
                                            **{k: v for k, v in options.items() if v is not None})  # fmt: skip
        train_steps(bench, args.steps)
    else:
        infer_batches(args.infer, args.steps, args.batch, args.threads)


if __name__ == "__main__":
    main()
