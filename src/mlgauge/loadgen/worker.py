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
from dataclasses import dataclass
from pathlib import Path

from mlgauge.config.run_spec import RunSpec
from mlgauge.errors import MlgaugeError, RunError, WorkerError
from mlgauge.tensors import batch_len

EXIT_USER_ERROR = 2
EXIT_CRASH = 3


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def _shape(spec: RunSpec, backend_cls, samples_per_query: int) -> dict:
    """Workers, threads per worker and max batch for this run: flags win, then defaults."""
    from mlgauge.backends.base import BackendOptions
    from mlgauge.loadgen.suts import default_shape

    cores = BackendOptions().resolved_threads
    workers, threads = default_shape(spec.scenario, cores)
    if hasattr(backend_cls, "default_workers"):  # a backend that knows better; it gets every core
        workers = backend_cls.default_workers
        threads = max(1, cores // workers)
    if spec.scenario == "MultiStream":
        default_batch = samples_per_query  # one query, one batch
    else:
        default_batch = getattr(backend_cls, "default_max_batch", 32)
    return {
        "workers": spec.workers or workers,
        "threads_per_worker": spec.threads or threads,
        "max_batch": spec.max_batch or default_batch,
    }


@dataclass
class _Context:
    """Everything one test needs, opened once."""

    spec: RunSpec
    rules: object
    bench_rule: object
    user_entries: list
    workload: object
    backend: object
    store: object
    shape: dict
    samples_per_query: int
    probe: list[int]

    def step(self, batch):
        """The SUT's path for one batch, minus LoadGen: what calibration times."""
        return self.workload.postprocess(self.backend.run(batch), range(batch_len(batch)))

    def settle(self, calibration: dict | None):
        from mlgauge.loadgen.settings import resolve_settings

        return resolve_settings(
            rules=self.rules,
            benchmark=self.bench_rule,
            scenario=self.spec.scenario,
            style=self.spec.style,
            dataset_size=self.workload.dataset.total_count,
            user_entries=self.user_entries,
            flags=self.spec.flags,
            calibration=calibration,
        )


def _open(spec: RunSpec) -> _Context:
    from mlgauge.backends import BackendOptions, get_backend_class
    from mlgauge.config.userconf import parse_file
    from mlgauge.loadgen.qsl import SampleStore
    from mlgauge.rules import inference_rules, standin_rules
    from mlgauge.tasks import get_task

    rules = inference_rules(spec.rules_round)
    rules.scenario(spec.scenario)
    user_entries = parse_file(Path(spec.conf_path)) if spec.conf_path else []
    workload = get_task(spec.task, spec.model_options).workload(
        dataset_path=spec.dataset_path, weights_path=spec.weights_path, count=spec.count, round=spec.rules_round
    )
    synthetic = workload.dataset.label == "synthetic"
    bench_rule = standin_rules()[workload.benchmark] if synthetic else rules.benchmark(workload.benchmark)
    backend_cls = get_backend_class(spec.backend)
    # Rounds without MultiStream (MLPerf Mobile) never batch queries of several samples.
    spq = int(rules.scenario("MultiStream").conf.get("samples_per_query", 8)) if "MultiStream" in rules.scenarios else 1
    shape = _shape(spec, backend_cls, spq)
    backend = backend_cls(
        BackendOptions(
            threads=shape["threads_per_worker"], device=spec.device, compile=spec.compile, precision=spec.precision
        )
    )
    backend.load(workload.model)
    probe = list(range(min(64, workload.dataset.total_count)))
    return _Context(spec, rules, bench_rule, user_entries, workload, backend, SampleStore(workload.dataset), shape, spq, probe)


def _parallel_workers(ctx: _Context) -> int:
    return ctx.shape["workers"] if ctx.spec.scenario in ("Server", "Offline") else 1


def _calibrate(ctx: _Context) -> dict:
    """Untimed probes on a few samples; LoadGen loads its own set afterwards."""
    from mlgauge.loadgen import calibrate as cal

    spec, shape = ctx.spec, ctx.shape
    ctx.store.load(ctx.probe)
    try:
        samples = ctx.store.gather(ctx.probe)
        server_latencies = None
        if spec.scenario == "Server" and not spec.max_batch:
            # The latency bound caps the batch: a batch that takes most of the bound cannot be VALID.
            bound_s = ctx.settle(None).values["target_latency"] / 1e3
            shape["max_batch"], server_latencies = cal.server_batch_cap(
                ctx.step, samples, bound_s=bound_s, upper=shape["max_batch"]
            )
        measured = cal.calibrate(
            ctx.step,
            samples,
            max_batch=shape["max_batch"],
            samples_per_query=ctx.samples_per_query,
            workers=_parallel_workers(ctx),
            budget_s=spec.calibration_s,
            scenario=spec.scenario,
        )
        if server_latencies is not None:
            measured["server_batch_latency_s"] = server_latencies
        return measured
    finally:
        ctx.store.unload(ctx.probe)


def _raw_throughput(ctx: _Context, seconds: float) -> float:
    """Batched samples/s without LoadGen, same instances, threads and batch size."""
    from mlgauge.loadgen import calibrate as cal
    from mlgauge.tensors import batch_repeat_to

    ctx.store.load(ctx.probe)
    try:
        full = batch_repeat_to(ctx.store.gather(ctx.probe), ctx.shape["max_batch"])
        return cal.parallel_throughput(ctx.step, full, _parallel_workers(ctx), seconds)
    finally:
        ctx.store.unload(ctx.probe)


def _test(ctx: _Context, conf_path: Path):
    """The LoadGen test itself; returns the runner (its counters) and the SUT's name."""
    import mlperf_loadgen as lg

    from mlgauge.loadgen.qsl import construct_qsl
    from mlgauge.loadgen.suts import SUT_FOR_SCENARIO, BatchRunner, SutOptions

    spec, out = ctx.spec, ctx.spec.out_path
    settings = lg.TestSettings()
    status = settings.FromConfig(str(conf_path), ctx.bench_rule.loadgen_model, spec.scenario)
    if status != 0:
        raise RunError(f"LoadGen rejected the generated {conf_path} (status {status})")
    settings.scenario = getattr(lg.TestScenario, spec.scenario)
    settings.mode = lg.TestMode.AccuracyOnly if spec.mode == "accuracy" else lg.TestMode.PerformanceOnly
    log_settings = lg.LogSettings()
    log_settings.log_output.outdir = str(out)
    log_settings.enable_trace = False
    if spec.audit:
        from mlgauge.loadgen.compliance import audit_config
        from mlgauge.rules import inference_rules

        # Audit parameters come from the official rules, also for a stand-in.
        official = inference_rules(spec.rules_round).benchmark(ctx.workload.benchmark)
        (out / "audit.config").write_text(audit_config(spec.audit, official))

    w = ctx.workload
    runner = BatchRunner(lg, ctx.store, ctx.backend.run, w.postprocess, w.response_dtype)
    options = SutOptions(max_batch=ctx.shape["max_batch"], workers=ctx.shape["workers"], max_wait_ms=spec.max_wait_ms)
    sut = SUT_FOR_SCENARIO[spec.scenario](runner, options)
    sut_handle = lg.ConstructFastSUT(sut.issue, sut.flush)
    qsl_handle = construct_qsl(lg, ctx.store)
    try:
        # LoadGen applies an audit.config from the working directory if one is there;
        # point it at the run folder so a stray file elsewhere cannot change a run.
        lg.StartTestWithLogSettings(sut_handle, qsl_handle, settings, log_settings, str(out / "audit.config"))
    finally:
        sut.stop()
        lg.DestroyQSL(qsl_handle)
        lg.DestroyFastSUT(sut_handle)
    if runner.failure is not None:
        exc = runner.failure
        raise RunError(f"the backend failed during the test: {type(exc).__name__}: {exc}".splitlines()[0])
    return runner, type(sut).__name__


def run(spec: RunSpec):
    """Run the test described by ``spec``; returns the ResultRecord."""
    from mlgauge.loadgen import calibrate as cal
    from mlgauge.loadgen.record import build_record

    ctx = _open(spec)
    measured = _calibrate(ctx)
    effective = ctx.settle(cal.conf_hints(measured)[spec.scenario])
    runner, sut_name = _test(ctx, effective.write(spec.out_path / "user.conf"))
    if spec.raw_after_s > 0 and spec.scenario in ("Server", "Offline"):
        # The machine drifts: a raw rate from after the test as well as before it
        # lets a comparison with LoadGen's figure bracket the test in time.
        measured["raw_throughput_after"] = _raw_throughput(ctx, spec.raw_after_s)
    harness = {
        "sut": sut_name,
        **ctx.shape,
        "max_wait_ms": spec.max_wait_ms if spec.scenario == "Server" else None,
        "batches": runner.batches,
        "samples": runner.samples,
        "backend_seconds": runner.backend_s,
        "calibration": measured,
        "settings_sources": effective.sources,
    }
    return build_record(spec, ctx.workload, ctx.backend.describe(), ctx.rules, spec.out_path, harness)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec_path = Path(argv[0])
    spec = RunSpec.from_json(spec_path.read_text())
    out = spec.out_path
    try:
        record = run(spec)
        record.save(out)
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
