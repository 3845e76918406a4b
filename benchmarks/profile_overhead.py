"""What profiling costs per training step: the small RetinaNet's steps (264 classes, the case study's
model) timed plainly, under the profiler as ``mlgauge profile --summary-only`` sets it up (op times
only), and as the full capture sets it up (input shapes, named module spans, oneDNN's verbose log
with timestamps).

All three run in one process and take turns in windows of ``--window`` steps, each way first in
some round, so heap state, thread placement and this VM's drift hit all three alike (separate
processes differed by more than the effect: plain runs were at times the slow ones). A window's
first step is not counted: it pays for switching. The profiler's start, stop and trace export
happen outside the timed steps, as they do in a capture.

Goal (README): summary-only profiling adds <= 10% to the step time.

    python benchmarks/profile_overhead.py [--classes 264] [--window 6] [--rounds 6] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ONEDNN_VERBOSE_TIMESTAMP", "1")  # read once, when oneDNN loads

import torch  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from mlgauge.profiler.modules import ModuleSpans  # noqa: E402
from retinanet_steps import build  # noqa: E402

WAYS = ("plain", "summary-only", "full")


@contextlib.contextmanager
def stdout_to(path: Path):
    """oneDNN writes its verbose lines to fd 1: send them to a file, as a capture does."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(path, "ab") as sink:
        os.dup2(sink.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


@contextlib.contextmanager
def way_on(way: str, log: Path):
    if way == "plain":
        yield
        return
    full = way == "full"
    with contextlib.ExitStack() as stack:
        if full:
            stack.enter_context(stdout_to(log))
            spans = ModuleSpans().install()
            stack.callback(spans.remove)
            stack.enter_context(torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON))
        prof = stack.enter_context(profile(activities=[ProfilerActivity.CPU], record_shapes=full))
        yield
    prof.export_chrome_trace(str(log.with_suffix(".json")))  # the capture's cost after the steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=264)
    parser.add_argument("--window", type=int, default=6, help="steps per window (the first is not counted)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--json")
    args = parser.parse_args()
    step = build(classes=args.classes)
    for _ in range(3):
        step()  # warm-up: allocator, oneDNN primitive caches
    times: dict[str, list[float]] = {way: [] for way in WAYS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for way in WAYS[r % 3 :] + WAYS[: r % 3]:
                with way_on(way, Path(tmp) / f"{way}-{r}.log"):
                    for i in range(args.window):
                        started = time.perf_counter()
                        step()
                        if i:
                            times[way].append(time.perf_counter() - started)
    medians = {way: statistics.median(values) for way, values in times.items()}
    for way in WAYS:
        print(f"{way:13s} median step {medians[way] * 1000:7.1f} ms   "
              f"{medians[way] / medians['plain'] - 1:+6.1%} vs plain ({len(times[way])} steps)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"steps_s": times, "median_s": medians}, indent=2))


if __name__ == "__main__":
    main()
