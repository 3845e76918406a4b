"""What a capture says: time by op, oneDNN primitives by kind and direction, reorders, rooflines.

Op times come from the trace. An op's self time is its duration minus its child ops'; costs
(FLOPs, bytes) are paired with the inclusive time of the outermost op that has a cost rule, so
``aten::linear -> aten::addmm`` is counted once. Coverage is the share of the profiled steps'
wall time spent inside named PyTorch ops (the rest is Python and framework overhead between them).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field

from mlgauge.profiler.attribute import AttributionResult
from mlgauge.profiler.breakdown import by_module, by_shape, outside_ops, self_times
from mlgauge.profiler.costs import event_cost
from mlgauge.profiler.kineto import KinetoTrace, TraceEvent
from mlgauge.profiler.modules import PREFIX
from mlgauge.profiler.onednn import OneDnnLog, tally
from mlgauge.profiler.peaks import MachinePeaks
from mlgauge.profiler.roofline import roofline

_STEP = re.compile(r"^ProfilerStep#\d+$")


@dataclass
class OpRow:
    name: str
    calls: int
    self_ms: float
    share: float  # of the summed self time of all ops
    flops: float | None = None
    bytes: float | None = None
    costed_ms: float | None = None  # inclusive time of the calls that have a cost
    bound: str | None = None  # "compute" or "memory"
    achieved_gflops: float | None = None
    achieved_gbs: float | None = None
    efficiency: float | None = None
    ideal_ms: float | None = None


@dataclass
class ProfileSummary:
    steps: int  # ProfilerStep windows in the trace (0: the whole run was recorded)
    step_ms: float | None  # their mean wall time
    profiled_ms: float  # wall time the coverage is measured over
    op_ms: float  # of which inside top-level ops
    ops: list[OpRow]
    regions: dict = field(default_factory=dict)  # record_function name -> {"calls", "ms"} inside the steps
    modules: dict = field(default_factory=dict)  # module path -> {"calls", "forward_ms", "backward_ms"}
    shapes: list = field(default_factory=list)  # {"op", "dims", "calls", "ms"}: self time by input shapes
    outside_ops: dict = field(default_factory=dict)  # step time between ops, by what it was inside (ms)
    onednn: dict = field(default_factory=dict)  # by_kind, by_direction, by_implementation, reorders, attributed
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # facts worth knowing that are not problems
    replay: dict = field(default_factory=dict)  # ReplayResult.to_dict(): heavy ops alone, the ideal step

    @property
    def coverage(self) -> float:
        return self.op_ms / self.profiled_ms if self.profiled_ms else 0.0

    def to_dict(self) -> dict:
        return asdict(self) | {"coverage": self.coverage}


def step_windows(trace: KinetoTrace) -> list[TraceEvent]:
    return [e for e in trace.events if _STEP.match(e.name)]


def inside_steps(event: TraceEvent, windows: list[TraceEvent]) -> bool:
    return not windows or any(w.start_ns <= event.start_ns < w.end_ns for w in windows)


def _top_level_ms(ops: list[TraceEvent], trace: KinetoTrace) -> float:
    """Wall time inside ops whose parents are not ops (a step annotation may be their parent)."""
    total = 0
    for e in ops:
        parent = trace.parent_of(e)
        if parent is None or parent.category != "cpu_op":
            total += e.duration_ns
    return total / 1e6


def summarize(
    trace: KinetoTrace,
    log: OneDnnLog | None = None,
    attribution: AttributionResult | None = None,
    peaks: MachinePeaks | None = None,
) -> ProfileSummary:
    windows = step_windows(trace)
    ops = [e for e in trace.ops() if inside_steps(e, windows)]
    if windows:
        profiled_ms = sum(w.duration_ns for w in windows) / 1e6
    else:
        start, end = trace.window_ns
        profiled_ms = (end - start) / 1e6
    self_ns = self_times(ops, trace)
    rows = _op_rows(ops, trace, self_ns, peaks)
    total_self = sum(r.self_ms for r in rows) or 1.0
    for r in rows:
        r.share = r.self_ms / total_self
    summary = ProfileSummary(
        steps=len(windows),
        step_ms=profiled_ms / len(windows) if windows else None,
        profiled_ms=profiled_ms,
        op_ms=_top_level_ms(ops, trace),
        ops=rows,  # all of them: a diff must not mistake an op that left the top list for a vanished one
        regions=_regions(trace, windows),
        modules=by_module(ops, trace, self_ns, _spans(trace, windows, modules=True)),
        shapes=by_shape(ops, self_ns),
        outside_ops=outside_ops(trace, windows),
        warnings=list(trace.warnings),
    )
    if log is not None:
        summary.onednn = _onednn(log, attribution)
        summary.warnings += log.warnings
    return summary


def _spans(trace: KinetoTrace, windows: list[TraceEvent], *, modules: bool) -> list[TraceEvent]:
    """record_function spans inside the steps: the module spans, or the others (a loss, a phase)."""
    return [
        e for e in trace.events
        if e.category == "user_annotation" and not _STEP.match(e.name) and inside_steps(e, windows)
        and not e.name.startswith("Optimizer.") and e.name.startswith(PREFIX) == modules
    ]  # fmt: skip


def _regions(trace: KinetoTrace, windows: list[TraceEvent]) -> dict:
    """Time in each record_function region (a loss, a phase) inside the steps, largest first."""
    buckets = tally((e.name, e.duration_ns / 1e6) for e in _spans(trace, windows, modules=False))
    return {name: {"calls": b.calls, "ms": b.time_ms} for name, b in buckets.items()}


def _op_rows(
    ops: list[TraceEvent], trace: KinetoTrace, self_ns: dict[int, int], peaks: MachinePeaks | None
) -> list[OpRow]:
    by_name: dict[str, dict] = defaultdict(lambda: {"calls": 0, "self": 0, "flops": 0.0, "bytes": 0.0, "ns": 0})
    costs = {e.index: cost for e in ops if (cost := event_cost(e.name, e.args)) is not None}
    # A cost goes to the innermost op that has one (linear -> addmm: addmm), whose inclusive time is the work.
    outer = {a.index for i in costs for a in list(trace.ancestors(trace.events[i]))[1:]}
    for e in ops:
        row = by_name[e.name]
        row["calls"] += 1
        row["self"] += self_ns[e.index]
        cost = costs.get(e.index)
        if cost is None or e.index in outer:
            continue
        row["flops"] += cost.flops
        row["bytes"] += cost.bytes
        row["ns"] += e.duration_ns
        row.setdefault("cost", cost)
    rows = []
    for name, row in by_name.items():
        out = OpRow(name, row["calls"], row["self"] / 1e6, 0.0)
        if row["ns"] and peaks is not None and "cost" in row:
            cost = row["cost"]
            point = roofline(type(cost)(row["flops"], 0, row["bytes"], cost.kind, cost.dtype), row["ns"] / 1e9, peaks)
            if point is not None:
                out.flops, out.bytes, out.costed_ms = row["flops"], row["bytes"], row["ns"] / 1e6
                out.bound, out.efficiency = point.bound, point.efficiency
                out.achieved_gflops, out.achieved_gbs = point.achieved_gflops, point.achieved_gbs
                out.ideal_ms = point.ideal_s * 1e3
        rows.append(out)
    return sorted(rows, key=lambda r: r.self_ms, reverse=True)


def _onednn(log: OneDnnLog, attribution: AttributionResult | None) -> dict:
    """The primitives that ran inside the trace's window (the log also holds the warm-up steps')."""
    primitives = log.primitives
    if attribution is not None:
        lo, hi = attribution.window_ns
        primitives = [a.primitive for a in attribution.items if a.primitive.start_ns and lo <= a.primitive.start_ns <= hi]

    def by(key, among=primitives) -> dict:
        buckets = tally((key(p), p.exec_time_ms) for p in among)
        return {str(k): {"calls": b.calls, "ms": b.time_ms} for k, b in buckets.items()}

    reorders = [p for p in primitives if p.reorder is not None]
    out = {
        "version": log.version,
        "isa": log.isa,
        "total_ms": sum(p.exec_time_ms for p in primitives),
        "by_kind": by(lambda p: p.kind),
        "by_direction": by(lambda p: p.direction),
        "by_implementation": by(lambda p: (p.kind, p.implementation)),
        "reorder_ms": sum(p.exec_time_ms for p in reorders),
        "reorders": by(lambda p: f"{p.reorder[0]} -> {p.reorder[1]}", reorders),
    }
    if attribution is not None:
        out["attributed_fraction"] = attribution.fraction_in_window
        out["by_op"] = {str(k): {"calls": b.calls, "ms": b.time_ms} for k, b in attribution.time_by_op().items()}
    return out
