"""Replay a trace's heavy ops one at a time, benchdnn-style, to project an ideal step time.

ProfileDNN (arXiv:2206.10034, §2.3) re-runs each oneDNN primitive of a log in benchdnn and weighs
the isolated times by call counts. This does the same from a ``torch.profiler`` trace recorded with
``record_shapes=True``, so it also covers what oneDNN never sees (MKL GEMMs, ATen element-wise ops,
losses): each heavy call is rebuilt from its "Input Dims", "Input type", "Concrete Inputs" and
"Input Strides", called through ``torch.ops`` and timed alone with torch.utils.benchmark. The gap
between a call's traced and isolated time is what the step loses around it (dispatch and autograd
overhead, cold caches, contention); the step without the gaps is the ideal step time.

On each call path the op replayed is the outermost one with a kernel of its own: a composite
(CompositeImplicitAutograd: ``aten::linear``, ``aten::conv2d``) only calls other ops, so ``linear ->
addmm`` replays ``addmm``, and the calls inside a kernel op (``empty``, ``copy_``) are part of its
time. Nothing is counted twice.

Limits: the replay runs on the CPU at the trace's shapes, dtypes and strides, with made-up values:
floats uniform in [0.5, 1.5), integers zero (a valid index anywhere), bools random. Fine for dense
kernels, not for ops whose cost depends on the data (``nonzero``, ``unique``, gathers). Cache state
differs from the step's: replayed inputs stay warm. In-place ops run on the same tensors again and
again, so their values drift (denormals are flushed while timing, on the calling thread). Tensor
lists record no dtype; they take the op's first tensor dtype (float32 without one).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from itertools import islice

import torch
from torch.utils import benchmark
from torch.utils.benchmark.utils.common import set_torch_threads

from mlgauge.errors import DataError, UsageError
from mlgauge.profiler.kineto import KinetoTrace, TraceEvent
from mlgauge.profiler.replay_call import UnreplayableOp, has_kernel, rebuild_call
from mlgauge.profiler.summary import inside_steps, step_windows

WARMUP_CALLS = 2  # after the call that picks the overload: fills caches and oneDNN's primitive cache
# blocked_autorange spends about min_run_time sizing its blocks and at least as much measuring:
# a third of an op's share of the budget keeps the replay inside it.
_AUTORANGE_COST = 3.0


@dataclass
class ReplayRow:
    op: str
    dims: list  # one shape per input, [] for non-tensors
    dtypes: list  # the recorded "Input type" of each input
    scalars: list  # the recorded "Concrete Inputs" ('' for tensors)
    calls_per_step: float
    traced_ms_per_call: float  # mean inclusive time in the trace
    isolated_ms_per_call: float  # median of the replay
    isolated_iqr_ms: float  # spread of the replay's blocks
    gap_ms_per_step: float  # max(0, traced - isolated) x calls per step


@dataclass
class ReplayResult:
    rows: list[ReplayRow]
    skipped: list[tuple[str, str]]  # (op, why it was not replayed)
    steps: int  # ProfilerStep windows (0: the whole trace was one step)
    step_ms: float
    replayed_share: float  # of the step time, spent in the replayed calls as traced
    ideal_step_ms: float  # step_ms - the gaps: every heavy op as fast as alone
    threads: int
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _work_ops(trace: KinetoTrace, windows: list[TraceEvent]) -> Iterator[TraceEvent]:
    """Calls inside the steps of ops with a kernel, without an enclosing op that has one."""
    for event in trace.ops():
        if has_kernel(event.name) and inside_steps(event, windows):
            outer = islice(trace.ancestors(event), 1, None)
            if not any(a.category == "cpu_op" and has_kernel(a.name) for a in outer):
                yield event


def _frozen(value: object) -> object:
    return tuple(_frozen(v) for v in value) if isinstance(value, list | tuple) else value


def _heavy(trace: KinetoTrace, windows: list, profiled_ns: int, top: int, min_share: float) -> list[list]:
    """Calls grouped by (op, dims, types, scalars), heaviest first; each group's calls in trace order."""
    groups: dict[tuple, list[TraceEvent]] = {}
    for e in _work_ops(trace, windows):
        key = (e.name, *(_frozen(e.args.get(k)) for k in ("Input Dims", "Input type", "Concrete Inputs")))
        groups.setdefault(key, []).append(e)
    if groups and all(calls[0].input_dims is None for calls in groups.values()):
        raise DataError(
            "the trace records no input shapes, so its ops cannot be replayed",
            hint="Profile with torch.profiler.profile(record_shapes=True)",
        )
    totals = {key: sum(e.duration_ns for e in calls) for key, calls in groups.items()}
    ranked = sorted(groups, key=totals.__getitem__, reverse=True)
    return [groups[k] for k in ranked if totals[k] >= min_share * profiled_ns][:top]


# ------------------------------------------------------------------ timing


@contextmanager
def _denormals_flushed() -> Iterator[None]:
    # An in-place op replayed thousands of times drifts toward denormals (SGD momentum's mul_(0.9)
    # gets there in ~830 calls), which x86 computes ~100x slower. This sets FTZ/DAZ on the calling
    # thread only; PyTorch has no getter, so its default (off) is what is restored.
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _row(calls: list[TraceEvent], measurement: benchmark.Measurement, steps: int) -> ReplayRow:
    args = calls[0].args
    per_step = len(calls) / steps
    traced = sum(e.duration_ns for e in calls) / len(calls) / 1e6
    isolated = measurement.median * 1e3
    return ReplayRow(
        op=calls[0].name, dims=args.get("Input Dims") or [], dtypes=args.get("Input type") or [],
        scalars=args.get("Concrete Inputs") or [], calls_per_step=per_step, traced_ms_per_call=traced,
        isolated_ms_per_call=isolated, isolated_iqr_ms=measurement.iqr * 1e3,
        gap_ms_per_step=max(0.0, traced - isolated) * per_step,
    )  # fmt: skip


def _replay_one(calls: list[TraceEvent], share_s: float, steps: int, threads: int) -> ReplayRow | str:
    """The key's row, or why it could not be replayed."""
    first = calls[0]
    try:
        with set_torch_threads(threads):
            call = rebuild_call(first.name, first.args)
            for _ in range(WARMUP_CALLS):
                call()
        timer = benchmark.Timer(stmt="call()", globals={"call": call}, num_threads=threads)
        measurement = timer.blocked_autorange(min_run_time=share_s / _AUTORANGE_COST)
    except UnreplayableOp as exc:
        return f"{exc} (inputs {first.args.get('Input Dims')})"
    except Exception as exc:  # a call that ran once can still fail on a later run
        return f"failed while timed: {exc}"
    return _row(calls, measurement, steps)


def _replay(groups: list[list], steps: int, budget_s: float, threads: int) -> tuple[list, list]:
    rows, skipped = [], []
    deadline = time.perf_counter() + budget_s
    with _denormals_flushed():
        for i, calls in enumerate(groups):
            left = deadline - time.perf_counter()
            outcome = (
                _replay_one(calls, left / (len(groups) - i), steps, threads) if left > 0
                else "the replay budget was spent before this op"
            )  # fmt: skip
            if isinstance(outcome, str):
                skipped.append((calls[0].name, outcome))
            else:
                rows.append(outcome)
    return rows, skipped


# ------------------------------------------------------------------ the replay


def _check(top: int, min_share: float, budget_s: float, threads: int | None) -> None:
    problems = [text for bad, text in (
        (top < 1, f"top={top} (needs >= 1)"),
        (not 0 <= min_share < 1, f"min_share={min_share} (needs 0 <= share < 1)"),
        (not budget_s > 0, f"budget_s={budget_s} (needs > 0)"),
        (threads is not None and threads < 1, f"threads={threads} (needs >= 1)"),
    ) if bad]  # fmt: skip
    if problems:
        raise UsageError(f"invalid replay settings: {', '.join(problems)}", hint="Fix the values listed")


def replay_heavy_ops(
    trace: KinetoTrace,
    *,
    top: int = 20,
    min_share: float = 0.005,
    budget_s: float = 20.0,
    threads: int | None = None,
) -> ReplayResult:
    """Time the ``top`` heaviest op calls of the profiled steps alone and project the step time
    they would allow; each kept op takes at least ``min_share`` of the profiled time. The timing
    shares ``budget_s`` seconds and runs at ``threads`` torch threads (default: the current)."""
    _check(top, min_share, budget_s, threads)
    threads = threads or torch.get_num_threads()
    windows, warnings = step_windows(trace), list(trace.warnings)
    if windows:
        profiled_ns = sum(w.duration_ns for w in windows)
    else:
        profiled_ns = trace.window_ns[1] - trace.window_ns[0]
        warnings.append("no ProfilerStep windows: the whole trace is taken as one step")
    if any(e.category in ("kernel", "gpu_memcpy", "cuda_runtime") for e in trace.events):
        warnings.append("the trace has GPU work, but the replay runs every op on the CPU")
    steps = len(windows) or 1
    groups = _heavy(trace, windows, profiled_ns, top, min_share)
    for calls in groups:
        if len({_frozen(e.args.get("Input Strides")) for e in calls}) > 1:
            warnings.append(f"{calls[0].name} {calls[0].input_dims}: strides vary; replayed the first call")
    rows, skipped = _replay(groups, steps, budget_s, threads)
    step_ms = profiled_ns / steps / 1e6
    traced_ms = sum(r.traced_ms_per_call * r.calls_per_step for r in rows)
    return ReplayResult(
        rows=rows, skipped=skipped, steps=len(windows), step_ms=step_ms,
        replayed_share=traced_ms / step_ms if step_ms else 0.0,
        ideal_step_ms=step_ms - sum(r.gap_ms_per_step for r in rows), threads=threads, warnings=warnings,
    )  # fmt: skip
