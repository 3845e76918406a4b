"""One MLPerf Tiny benchmark from data to a stored result, on a board or on the host.

For each benchmark: load its data (real or the synthetic stand-in) in the device's format, train
the reference model with its recipe (or load it from the cache, or the user's weights), measure its
fp32 accuracy, load it into the backend (INT8 post-training quantization calibrated on the
benchmark's calibration samples when asked for), then measure through the runner<->device protocol:
a board on a serial port, or mlgauge's host device serving the backend over TCP or a
pseudo-terminal, identified, timed and metered the same way.

Accuracy on a board goes over the protocol (``infer 1 0`` per file, as the runner's accuracy mode);
on the host device it is the served inference function called on the same bytes in batches, unless
``accuracy_over_protocol`` asks for the round trip too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mlgauge.energy.choose import choose_meter
from mlgauge.energy.meter import Unavailable
from mlgauge.errors import RunError, UsageError
from mlgauge.results.system import describe_system
from mlgauge.results.tiny_record import TinyRecord
from mlgauge.rules.tiny import TinyBenchmark, tiny_rules
from mlgauge.tiny.accuracy import score
from mlgauge.tiny.data import CALIBRATION_SAMPLES, TinyData, check_split, load_tiny_data
from mlgauge.tiny.device import PtyDevice, TcpDevice
from mlgauge.tiny.measure import TinyPerformance, measure
from mlgauge.tiny.recipes import recipe_for
from mlgauge.tiny.runner import DEFAULT_INFER_TIMEOUT_S, DEFAULT_TIMEOUT_S, TinyRunner
from mlgauge.tiny.serve import infer_function, load_backend, model_source, run_batches
from mlgauge.tiny.train import Trained, load_weights, train_or_load

TRANSPORTS = ("tcp", "pty")
PRECISIONS = ("int8", "fp32")
PERFORMANCE_INPUTS = 5  # the runner's "loop 5" over different input files
Listener = Callable[[str, str, dict], None]  # (benchmark, stage, details)


@dataclass
class TinyOptions:
    backend: str = "onnxruntime"
    precision: str = "int8"
    port: str | None = None  # a board's serial port (pyserial URL); None: mlgauge's host device
    transport: str = "tcp"  # the host device's
    style: str = "valid"
    meter: str = "auto"
    trace: Path | None = None
    epochs: int | None = None  # recipe overrides, for smoke runs
    train_samples: int | None = None
    accuracy_samples: int | None = None  # default: the rule's count
    weights: Path | None = None
    retrain: bool = False
    seed: int = 0
    accuracy_over_protocol: bool = False
    input_quantization: tuple[float, int] | None = None  # kws01: a board's int8 input (scale, zero point)
    timeout_s: float = DEFAULT_TIMEOUT_S
    infer_timeout_s: float = DEFAULT_INFER_TIMEOUT_S
    notes: list[str] = field(default_factory=list)

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise UsageError(f"unknown precision '{self.precision}'", hint=f"Use one of {', '.join(PRECISIONS)}")
        if self.transport not in TRANSPORTS:
            raise UsageError(f"unknown transport '{self.transport}'", hint=f"Use one of {', '.join(TRANSPORTS)}")
        if self.style not in ("valid", "quick"):
            raise UsageError(f"unknown style '{self.style}'", hint="Use valid or quick")
        for name in ("epochs", "train_samples", "accuracy_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}", hint="Give a positive count")


def run_benchmark(
    benchmark: str, dataset: Path | None, options: TinyOptions, *, run_id: str, on_stage: Listener | None = None
) -> TinyRecord:
    bench = tiny_rules().benchmark(benchmark)
    say = _announcer(benchmark, on_stage)
    if options.port is not None:  # a wrong port or firmware is found before any data is prepared
        with TinyRunner(options.port, timeout_s=options.timeout_s) as dut:
            dut.identify(expected_model=benchmark)
    data = _data(bench, dataset, options, say)
    backend, infer, model_info = None, None, {}
    if options.port is None:  # a board runs its own firmware's model; the host device serves ours
        backend, model_info = _host_model(bench, data, options, say)
        infer = infer_function(backend, data.codec)
    with _device(bench, infer, options) as (url, transport), TinyRunner(
        url, timeout_s=options.timeout_s, infer_timeout_s=options.infer_timeout_s
    ) as dut:
        info = dut.identify(expected_model=benchmark)
        accuracy = _accuracy(dut, bench, data, backend, options, say)
        perf = _performance(dut, bench, data, options, say)
    device = {"url": url, "transport": transport, "name": info.name, "profile": info.profile, "model": info.model}
    record = _record(bench, data, options, backend, device, accuracy, perf, model_info, run_id)
    say("done", {"record": record})
    return record


def _accuracy(dut: TinyRunner, bench: TinyBenchmark, data: TinyData, backend, options: TinyOptions, say) -> dict:
    path = "device" if options.port is not None or options.accuracy_over_protocol else "host"
    say("accuracy", {"precision": options.precision, "path": path})
    if path == "device":
        outputs = _outputs_over_protocol(dut, data, lambda done: say("accuracy-progress", {"done": done}))
    else:
        outputs = run_batches(backend, data.codec, data.test.samples)
    return score(bench, data.test, outputs) | {"path": path}


def _performance(dut: TinyRunner, bench: TinyBenchmark, data: TinyData, options: TinyOptions, say) -> TinyPerformance:
    rules = tiny_rules()
    windows = rules.quick_windows if options.style == "quick" else rules.windows
    meter, energy_note = choose_meter(options.meter, trace=options.trace)
    say("performance", {"windows": windows.count, "min_s": windows.min_s})
    inputs = data.test.first_of_each(PERFORMANCE_INPUTS)
    try:
        return measure(dut, inputs, bench, windows, style=options.style, meter=meter, energy_note=energy_note)
    except Unavailable as exc:  # a meter that read at the start failed during a window
        raise RunError(
            f"energy of {bench.id} cannot be measured: {exc}",
            hint="Keep the power monitor recording for the whole run, or pass --meter none",
        ) from None


def _announcer(benchmark: str, on_stage: Listener | None) -> Callable[[str, dict], None]:
    def say(stage: str, details: dict) -> None:
        if on_stage is not None:
            on_stage(benchmark, stage, details)

    return say


def _data(bench: TinyBenchmark, dataset: Path | None, options: TinyOptions, say) -> TinyData:
    recipe = recipe_for(bench.id, synthetic=dataset is None)
    say("data", {"dataset": str(dataset) if dataset else "synthetic"})
    data = load_tiny_data(
        bench.id,
        dataset,
        # a board brings its own trained model: one training sample keeps the loaders' shapes
        train_samples=1 if options.port is not None else options.train_samples or recipe.train_samples,
        test_samples=options.accuracy_samples or bench.accuracy_samples,
        calibration_samples=CALIBRATION_SAMPLES,
        input_quantization=options.input_quantization,
    )
    check_split(data)
    return data


def _model(data: TinyData, options: TinyOptions, say) -> Trained:
    if options.weights is not None:
        say("weights", {"path": str(options.weights)})
        return load_weights(options.weights, data)
    recipe = recipe_for(data.benchmark, synthetic=data.dataset.startswith("synthetic"))
    recipe = recipe.with_overrides(epochs=options.epochs, train_samples=options.train_samples)
    say("train", {"recipe": recipe.name, "epochs": recipe.epochs, "samples": len(data.train.samples)})
    trained = train_or_load(
        data, recipe, seed=options.seed, retrain=options.retrain,
        on_epoch=lambda epoch, of, loss: say("epoch", {"epoch": epoch, "of": of, "loss": loss}),
    )  # fmt: skip
    say("trained", dict(trained.info))
    return trained


def _host_model(bench: TinyBenchmark, data: TinyData, options: TinyOptions, say) -> tuple[object, dict]:
    """The backend the host device serves, and how its model came to be (with its fp32 accuracy)."""
    trained = _model(data, options, say)
    say("accuracy", {"precision": "fp32"})
    source = model_source(bench.id, trained.served, data.codec, data.calibration)
    reference = load_backend("torch", source, "fp32", threads=0)
    fp32 = score(bench, data.test, run_batches(reference, data.codec, data.test.samples))
    say("load", {"backend": options.backend, "precision": options.precision})
    backend = load_backend(options.backend, source, options.precision)
    info = dict(trained.info) | {
        "fp32_accuracy": fp32["value"],
        "calibration_samples": len(data.calibration) if options.precision == "int8" else 0,
        "input_codec": data.codec.to_dict(),
    }
    return backend, info


@contextlib.contextmanager
def _device(bench: TinyBenchmark, infer, options: TinyOptions) -> Iterator[tuple[str, str]]:
    if options.port is not None:
        yield options.port, "serial"
        return
    kind = TcpDevice if options.transport == "tcp" else PtyDevice
    with kind(infer, bench.id, bench.input_bytes) as host:
        yield host.url, options.transport


def _outputs_over_protocol(dut: TinyRunner, data: TinyData, progress: Callable[[int], None]) -> np.ndarray:
    """The runner's accuracy mode: every file loaded and run once (``infer 1 0``)."""
    outputs = []
    for i, sample in enumerate(data.test.samples):
        dut.load(sample.tobytes())
        outputs.append(dut.infer(1, 0).results)
        if (i + 1) % 50 == 0:
            progress(i + 1)
    return np.asarray(outputs, dtype=np.float64)


def _record(
    bench: TinyBenchmark, data: TinyData, options: TinyOptions, backend, device: dict, accuracy: dict,
    perf: TinyPerformance, model_info: dict, run_id: str,
) -> TinyRecord:  # fmt: skip
    reasons = list(perf.notes)
    if options.style == "quick":
        reasons.append("quick style: windows shorter than the rule's 10 s")
    if not accuracy["passed"]:
        reasons.append(f"{bench.metric} {accuracy['value']:.4f} is below the target {bench.target}")
    if accuracy["samples"] != bench.accuracy_samples:
        reasons.append(f"accuracy on {accuracy['samples']} samples, the rule asks for {bench.accuracy_samples}")
    energy = None
    if perf.median_energy_uj is not None:
        energy = {"median_uj_per_inference": perf.median_energy_uj, "meter": perf.windows[0].meter}
    on_host = options.port is None
    return TinyRecord(
        benchmark=bench.id,
        dataset=data.dataset,
        precision=options.precision if on_host else "device",
        backend=options.backend if on_host else "device",
        backend_info=backend.describe() if backend is not None else {},
        device=device,
        style=options.style,
        valid=not reasons,
        invalid_reasons=reasons,
        accuracy=accuracy,
        performance={
            "median_inferences_per_s": perf.median_inferences_per_s,
            "latency_ms": perf.latency_ms,
            "windows": [w.__dict__ for w in perf.windows],
        },
        energy=energy,
        energy_note=perf.energy_note if energy is None else "",
        model=model_info or {"source": "device firmware", "input_codec": data.codec.to_dict()},
        system=describe_system(),
        run_id=run_id,
    )
