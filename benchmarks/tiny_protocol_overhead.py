"""Does measuring through the Tiny protocol cost throughput? The same inference function (a Tiny
reference model behind one of mlgauge's backends, one thread: what ``mlgauge tiny`` serves) is
timed called directly in a loop on a prepared input and served by mlgauge's host device over TCP,
measured by the runner with ``infer N W`` and the device's m-lap-us timestamps, as a board would
be (the device too prepares the loaded bytes once, as th_load_tensor does). Windows alternate
between the two ways.

Goal (README): inferences/s through the protocol >= 90% of the direct calls. The device loops
N inferences itself, so the protocol's cost is one command per window; what shows is mostly this
VM's drift (single windows move by 20%), hence 11 alternating windows and their medians. The
model's weights are untrained (speed does not depend on them); INT8 calibrates on random inputs.

    python benchmarks/tiny_protocol_overhead.py [--model kws01] [--backend onnxruntime] [--precision int8]
        [--window-s 2] [--windows 11] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from mlgauge.models.tiny import TINY_MODELS, build_tiny_model
from mlgauge.rules.tiny import tiny_rules
from mlgauge.tiny.data import CALIBRATION_SAMPLES
from mlgauge.tiny.device import TcpDevice
from mlgauge.tiny.inputs import LOG_MEL_WINDOW, RGB_32, RGB_96, InputCodec
from mlgauge.tiny.runner import TinyRunner
from mlgauge.tiny.serve import AnomalyScore, Probabilities, infer_function, load_backend, model_source

CODECS = {
    "kws01": InputCodec("int8", (49, 10), (1, 49, 10), scale=0.5, zero_point=83),
    "vww01": RGB_96,
    "ic01": RGB_32,
    "ad01": LOG_MEL_WINDOW,
}


def random_samples(codec: InputCodec, n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    if codec.kind == "float32":
        return rng.standard_normal((n, *codec.sample_shape)).astype("<f4")
    return rng.integers(0, 256, (n, *codec.sample_shape), dtype=np.uint8).view(codec.dtype)


def inference_function(model_id: str, backend: str, precision: str):
    """bytes -> output vector through the backend, as the host device serves it."""
    torch.manual_seed(0)
    model = build_tiny_model(model_id)
    codec = CODECS[model_id]
    served = AnomalyScore(model, torch.zeros(640), torch.ones(640)) if model_id == "ad01" else Probabilities(model)
    source = model_source(model_id, served, codec, random_samples(codec, CALIBRATION_SAMPLES))
    return infer_function(load_backend(backend, source, precision), codec), codec


def direct_rate(infer, data, count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        infer(data)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="kws01", choices=sorted(TINY_MODELS))
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--precision", default="int8", choices=("int8", "fp32"))
    parser.add_argument("--window-s", type=float, default=2.0)
    parser.add_argument("--windows", type=int, default=11)
    parser.add_argument("--json")
    args = parser.parse_args()
    bench = tiny_rules().benchmark(args.model)
    infer, codec = inference_function(args.model, args.backend, args.precision)
    data = random_samples(codec, 1)[0].tobytes()
    prepared = infer.prepare(data)  # the device prepares a loaded input once too (th_load_tensor)
    for _ in range(50):  # warm-up: allocator, first-call paths
        infer.infer(prepared)
    count = max(10, round(args.window_s * direct_rate(infer.infer, prepared, 200)))
    direct, served = [], []
    with TcpDevice(infer, args.model, bench.input_bytes) as device:
        runner = TinyRunner(device.url, infer_timeout_s=max(120.0, 10 * args.window_s))
        try:
            runner.identify(expected_model=args.model)
            runner.load(data)
            for _ in range(args.windows):
                direct.append(direct_rate(infer.infer, prepared, count))
                reply = runner.infer(count, bench.warmups)
                served.append(count / (reply.elapsed_us / 1e6))
        finally:
            runner.close()
    out = {
        "model": args.model, "backend": args.backend, "precision": args.precision, "inferences_per_window": count, "windows": args.windows,
        "direct_inferences_per_s": direct, "protocol_inferences_per_s": served,
        "direct_median": statistics.median(direct), "protocol_median": statistics.median(served),
    }  # fmt: skip
    out["ratio"] = out["protocol_median"] / out["direct_median"]
    print(f"{args.model} ({args.backend}, {args.precision}): direct {out['direct_median']:.1f} inf/s, through the protocol "
          f"{out['protocol_median']:.1f} inf/s, ratio {out['ratio']:.3f} ({count} inferences x {args.windows} windows)")  # fmt: skip
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
