"""A few training steps of the small RetinaNet that 'mlgauge train ssd' trains, for profiling.

The case study of the README: profile it with the reference focal loss, then with the fused one,
and compare.

    mlgauge profile --out ref -- python benchmarks/retinanet_steps.py
    mlgauge profile --out fused -- python benchmarks/retinanet_steps.py --fused
    mlgauge profile diff ref fused
"""

from __future__ import annotations

import argparse

from mlgauge.training.benchmarks.object_detection import ObjectDetection
from mlgauge.training.loop import Parallel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fused", action="store_true", help="the fused focal loss")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--variant", default="default", help="the ssd stand-in: default or tiny")
    args = parser.parse_args()
    bench = ObjectDetection(variant=args.variant, fused_focal_loss=args.fused)
    parallel = Parallel(0, 1, "cpu")
    trainable = bench.build(seed=0, parallel=parallel)
    model, optimizer = trainable.model.train(), trainable.optimizer
    done = 0
    while done < args.steps:
        for batch in trainable.batches(done):
            optimizer.zero_grad(set_to_none=True)
            bench.loss(model, batch).backward()
            optimizer.step()
            done += 1
            if done == args.steps:
                break


if __name__ == "__main__":
    main()
