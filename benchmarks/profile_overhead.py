"""What profiling costs: the step time of a training script run plainly, under 'mlgauge profile
--summary-only' (op times) and under the full capture (shapes for FLOPs + oneDNN's verbose log).

The script times its own steps (``benchmarks/retinanet_steps.py --timings``), so the three runs
are measured the same way; the medians of the steps after warm-up are compared. The three ways
take turns for ``--rounds`` rounds, each first in one round, so the VM's drift hits each alike.

Goal (README): summary-only profiling adds <= 10% to the step time.

    python benchmarks/profile_overhead.py [--classes 264] [--steps 12] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

STEPS_SCRIPT = str(Path(__file__).with_name("retinanet_steps.py"))
WARMUP = 2


def run(way: str, steps: int, classes: int, folder: Path) -> list[float]:
    timings = folder / f"{way}.json"
    script = [STEPS_SCRIPT, "--steps", str(steps), "--classes", str(classes), "--timings", str(timings)]
    if way == "plain":
        command = [sys.executable, *script]
    else:
        mode = ["--summary-only"] if way == "summary-only" else []
        command = [str(Path(sys.executable).with_name("mlgauge")), "profile", "--warmup", str(WARMUP),
                   "--steps", str(steps - WARMUP), *mode, "--out", str(folder / way), "--json", "--", *script]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads(timings.read_text())[WARMUP:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=264)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args()
    ways = ("plain", "summary-only", "full")
    steps: dict[str, list[float]] = {way: [] for way in ways}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for way in ways[r % 3 :] + ways[: r % 3]:  # each way goes first in some round
                folder = Path(tmp) / f"round{r}"
                folder.mkdir(exist_ok=True)
                steps[way] += run(way, args.steps, args.classes, folder)
    medians = {way: statistics.median(values) for way, values in steps.items()}
    for way in ways:
        print(f"{way:13s} median step {medians[way] * 1000:7.1f} ms   "
              f"{medians[way] / medians['plain'] - 1:+6.1%} vs plain ({len(steps[way])} steps)")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"steps_s": steps, "median_s": medians}, indent=2))


if __name__ == "__main__":
    main()
