"""One LoadGen test in one process: ``python -m mlgauge.loadgen.worker SPEC.json``.

LoadGen accepts one configuration per process (its built-in mlperf.conf is only
applied on the first ``FromConfig`` call), so the CLI starts one of these per
(task, scenario, mode). The worker writes ``record.json`` on success, or
``error.json`` (exit 2 for a user-facing error, 3 for a crash) and never prints.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

import numpy as np

from mlgauge.config.run_spec import RunSpec
from mlgauge.errors import MlgaugeError, RunError, WorkerError

EXIT_USER_ERROR = 2
EXIT_CRASH = 3


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def _shape(spec: RunSpec, backend_cls, samples_per_query: int) -> tuple[int, int, int]:
    """(workers, threads per worker, max batch) for this run: flags win, then defaults."""
    from mlgauge.backends.base import BackendOptions
    from mlgauge.loadgen.suts import default_shape

    cores = BackendOptions().resolved_threads
    workers, threads = default_shape(spec.scenario, cores)
    if spec.scenario == "MultiStream":
        default_batch = samples_per_query  # one query, one batch
    else:
        default_batch = getattr(backend_cls, "default_max_batch", 32)
    return spec.workers or workers, spec.threads or threads, spec.max_batch or default_batch


def run(spec: RunSpec):
    """Run the test described by ``spec``; returns the ResultRecord."""
    import mlperf_loadgen as lg

    from mlgauge.backends import BackendOptions, get_backend_class
    from mlgauge.config.userconf import parse_file
    from mlgauge.rules import inference_rules, standin_rules
    from mlgauge.tasks import get_task

    rules = inference_rules(spec.rules_round)
    rules.scenario(spec.scenario)
    user_entries = parse_file(Path(spec.conf_path)) if spec.conf_path else []
    workload = get_task(spec.task).workload(
        dataset_path=spec.dataset_path, weights_path=spec.weights_path, count=spec.count, round=spec.rules_round
    )
    synthetic = workload.dataset.label == "synthetic"
    bench_rule = standin_rules()[workload.benchmark] if synthetic else rules.benchmark(workload.benchmark)

    backend_cls = get_backend_class(spec.backend)
    spq = int(rules.scenario("MultiStream").conf.get("samples_per_query", 8))
    workers, threads, max_batch = _shape(spec, backend_cls, spq)
    shape = {"workers": workers, "threads_per_worker": threads, "max_batch": max_batch}
    backend = backend_cls(BackendOptions(threads=threads, device=spec.device, compile=spec.compile))
    backend.load(workload.model)
    return _measure(lg, spec, rules, workload, bench_rule, user_entries, backend, shape, spq)


def _measure(lg, spec, rules, workload, bench_rule, user_entries, backend, shape: dict, spq: int):
    from mlgauge.loadgen import calibrate as cal
    from mlgauge.loadgen.qsl import SampleStore, construct_qsl
    from mlgauge.loadgen.record import build_record
    from mlgauge.loadgen.settings import resolve_settings
    from mlgauge.loadgen.suts import SUT_FOR_SCENARIO, BatchRunner, SutOptions

    out = spec.out_path
    workers, max_batch = shape["workers"], shape["max_batch"]
    # Calibrate on a few samples through the same path the SUT uses, then let LoadGen load its own set.
    store = SampleStore(workload.dataset)
    probe = list(range(min(64, workload.dataset.total_count)))
    store.load(probe)
    samples = store.gather(probe)

    def step(batch):
        return workload.postprocess(backend.run(batch))

    def settle(calibration: dict | None):
        return resolve_settings(
            rules=rules,
            benchmark=bench_rule,
            scenario=spec.scenario,
            style=spec.style,
            dataset_size=workload.dataset.total_count,
            user_entries=user_entries,
            flags=spec.flags,
            calibration=calibration,
        )

    server_latencies = None
    if spec.scenario == "Server" and not spec.max_batch:
        # The latency bound caps the batch: a batch that takes most of the bound cannot be VALID.
        bound_s = settle(None).values["target_latency"] / 1e3
        max_batch, server_latencies = cal.server_batch_cap(step, samples, bound_s=bound_s, upper=max_batch)
        shape["max_batch"] = max_batch
    measured = cal.calibrate(
        step,
        samples,
        max_batch=max_batch,
        samples_per_query=spq,
        workers=workers if spec.scenario in ("Server", "Offline") else 1,
        budget_s=spec.calibration_s,
        scenario=spec.scenario,
    )
    if server_latencies is not None:
        measured["server_batch_latency_s"] = server_latencies
    store.unload(probe)
    effective = settle(cal.conf_hints(measured)[spec.scenario])
    conf_path = effective.write(out / "user.conf")
    settings = lg.TestSettings()
    status = settings.FromConfig(str(conf_path), workload.benchmark, spec.scenario)
    if status != 0:
        raise RunError(f"LoadGen rejected the generated {conf_path} (status {status})")
    settings.scenario = getattr(lg.TestScenario, spec.scenario)
    settings.mode = lg.TestMode.AccuracyOnly if spec.mode == "accuracy" else lg.TestMode.PerformanceOnly
    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = str(out)
    log_settings.enable_trace = False

    runner = BatchRunner(lg, store, backend.run, workload.postprocess, workload.response_dtype)
    sut = SUT_FOR_SCENARIO[spec.scenario](
        runner, SutOptions(max_batch=max_batch, workers=workers, max_wait_ms=spec.max_wait_ms)
    )
    sut_handle = lg.ConstructFastSUT(sut.issue, sut.flush)
    qsl_handle = construct_qsl(lg, store)
    try:
        # LoadGen applies an audit.config from the working directory if one is there;
        # point it at the run folder so a stray file elsewhere cannot change a run.
        lg.StartTestWithLogSettings(sut_handle, qsl_handle, settings, log_settings, str(out / "audit.config"))
    finally:
        sut.stop()
        lg.DestroyQSL(qsl_handle)
        lg.DestroyFastSUT(sut_handle)
    if spec.raw_after_s > 0 and spec.scenario in ("Server", "Offline"):
        # The machine drifts: a raw rate from after the test as well as before it
        # lets a comparison with LoadGen's figure bracket the test in time.
        store.load(probe)
        full = np.concatenate([samples] * -(-max_batch // len(samples)))[:max_batch]
        measured["raw_throughput_after"] = cal.parallel_throughput(step, full, workers, spec.raw_after_s)
        store.unload(probe)
    if runner.failure is not None:
        exc = runner.failure
        raise RunError(f"the backend failed during the test: {type(exc).__name__}: {exc}".splitlines()[0])

    harness = {
        "sut": type(sut).__name__,
        **shape,
        "max_wait_ms": spec.max_wait_ms if spec.scenario == "Server" else None,
        "batches": runner.batches,
        "samples": runner.samples,
        "backend_seconds": runner.backend_s,
        "calibration": measured,
        "settings_sources": effective.sources,
    }
    return build_record(spec, workload, backend.describe(), rules, out, harness)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec_path = Path(argv[0])
    spec = RunSpec.from_json(spec_path.read_text())
    out = spec.out_path
    try:
        record = run(spec)
        _write_json(out / "record.json", record.to_dict())
        return 0
    except MlgaugeError as exc:
        _write_json(out / "error.json", exc.to_dict())
        return EXIT_USER_ERROR
    except BaseException as exc:  # noqa: BLE001 - a crash must still leave a readable reason
        log = out / "worker-traceback.txt"
        log.write_text(traceback.format_exc())
        err = WorkerError(
            f"the {spec.label} worker crashed: {type(exc).__name__}: {exc}".splitlines()[0],
            hint=f"The traceback is in {log}",
        )
        _write_json(out / "error.json", err.to_dict())
        return EXIT_CRASH


if __name__ == "__main__":
    sys.exit(main())
