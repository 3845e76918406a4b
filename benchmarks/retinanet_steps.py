"""A few training steps of the small RetinaNet that 'mlgauge train ssd' trains, for profiling.

The case study of the README: profile it with the reference focal loss, then with the fused one,
and compare. ``--classes 264`` gives the head the class count of MLPerf's OpenImages subset (the
stand-in's images still hold its 3 shapes): that is what made the focal loss a third of RetinaNet's
backward time in the ProfileDNN paper, where the stand-in's 3 classes make it negligible.

    mlgauge profile --out ref -- python benchmarks/retinanet_steps.py --classes 264
    mlgauge profile --out fused -- python benchmarks/retinanet_steps.py --classes 264 --fused
    mlgauge profile diff ref fused
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mlgauge.data.synthetic_shapes import IMAGE_SIZE, NUM_CLASSES
from mlgauge.models.retinanet import SmallRetinaNet
from mlgauge.training.benchmarks.object_detection import SYNTHETIC, ObjectDetection
from mlgauge.training.loop import Parallel


def build(classes: int = NUM_CLASSES, variant: str = "default", fused: bool = False):
    """One training step of the model, as a function; each call takes the next batch."""
    bench = ObjectDetection(variant=variant, fused_focal_loss=fused)
    config = SYNTHETIC[variant]
    bench.source.model = lambda: SmallRetinaNet(classes, IMAGE_SIZE, channels=config.channels, widths=config.widths)
    trainable = bench.build(seed=0, parallel=Parallel(0, 1, "cpu"))
    model, optimizer = trainable.model.train(), trainable.optimizer

    def batches():
        epoch = 0
        while True:
            epoch += 1
            yield from trainable.batches(epoch)

    stream = batches()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        bench.loss(model, next(stream)).backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fused", action="store_true", help="the fused focal loss")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--variant", default="default", help="the ssd stand-in: default or tiny")
    parser.add_argument("--classes", type=int, default=NUM_CLASSES, help="classes of the detection head")
    parser.add_argument("--timings", help="write each step's wall time (s) to this JSON file")
    args = parser.parse_args()
    step = build(args.classes, args.variant, args.fused)
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    if args.timings:
        Path(args.timings).write_text(json.dumps(times))


if __name__ == "__main__":
    main()
