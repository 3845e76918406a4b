"""Op self time told by module (layer) and by input shape.

Forward work belongs to the innermost ``nn.Module: <path>`` span around it (profiler/modules.py).
Backward work runs outside any module span, inside autograd's ``evaluate_function: XBackward0``
frames; such a frame records the sequence number of the forward op that made its node, so it
belongs to the module that op ran in. Times are exclusive (a module's own ops, not its
submodules'), so the rows add up to the ops' total.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict

from mlgauge.profiler.kineto import KinetoTrace, TraceEvent
from mlgauge.profiler.modules import PREFIX

NO_MODULE = "(outside modules)"
_BACKWARD_FRAME = "autograd::engine::evaluate_function"
_SEQUENCE = "Sequence number"


def self_times(ops: list[TraceEvent], trace: KinetoTrace) -> dict[int, int]:
    """Event index -> its duration minus its child ops' (ns)."""
    children: dict[int, int] = defaultdict(int)
    for e in ops:
        parent = trace.parent_of(e)
        if parent is not None and parent.category == "cpu_op":
            children[parent.index] += e.duration_ns
    return {e.index: max(0, e.duration_ns - children[e.index]) for e in ops}


def _placement(event: TraceEvent, trace: KinetoTrace) -> tuple[str | None, TraceEvent | None]:
    """(innermost module span's path, enclosing backward frame) of one op."""
    module = frame = None
    for a in trace.ancestors(event):
        if frame is None and a.category == "cpu_op" and a.name.startswith(_BACKWARD_FRAME):
            frame = a
        if module is None and a.category == "user_annotation" and a.name.startswith(PREFIX):
            module = a.name[len(PREFIX) :]
    return module, frame


def by_module(ops: list[TraceEvent], trace: KinetoTrace, self_ns: dict[int, int], spans: list[TraceEvent]) -> dict:
    """{module path: {"calls", "forward_ms", "backward_ms"}}, largest first; {} when the trace has
    no module spans (a summary-only capture)."""
    if not spans:
        return {}
    placed = {e.index: _placement(e, trace) for e in ops}
    made_by: dict[int, str] = {}  # autograd sequence number -> module of the forward op
    for e in ops:
        module, frame = placed[e.index]
        seq = e.args.get(_SEQUENCE)
        if frame is None and module is not None and seq is not None:
            made_by.setdefault(seq, module)
    rows: dict[str, dict] = defaultdict(lambda: {"calls": 0, "forward_ms": 0.0, "backward_ms": 0.0})
    for span in spans:
        rows[span.name[len(PREFIX) :]]["calls"] += 1
    for e in ops:
        module, frame = placed[e.index]
        if frame is None:
            rows[module or NO_MODULE]["forward_ms"] += self_ns[e.index] / 1e6
        else:
            owner = made_by.get(frame.args.get(_SEQUENCE), NO_MODULE)
            rows[owner]["backward_ms"] += self_ns[e.index] / 1e6
    ordered = sorted(rows.items(), key=lambda kv: kv[1]["forward_ms"] + kv[1]["backward_ms"], reverse=True)
    return dict(ordered)


def by_shape(ops: list[TraceEvent], self_ns: dict[int, int], top: int = 40) -> list[dict]:
    """Self time per (op, tensor input shapes), largest first; ops recorded without shapes are left out."""
    groups: dict[tuple, dict] = defaultdict(lambda: {"calls": 0, "ns": 0})
    for e in ops:
        if not e.input_dims or not any(e.input_dims):
            continue
        tensors = [list(d) for d in e.input_dims if d]  # scalar arguments record no dims
        group = groups[(e.name, str(tensors))]
        group["calls"] += 1
        group["ns"] += self_ns[e.index]
    ordered = sorted(groups.items(), key=lambda kv: kv[1]["ns"], reverse=True)[:top]
    return [{"op": op, "dims": dims, "calls": g["calls"], "ms": g["ns"] / 1e6} for (op, dims), g in ordered]


def outside_ops(trace: KinetoTrace, windows: list[TraceEvent]) -> dict[str, float]:
    """Step time on the stepping thread that no op covers, by what it was inside (ms): module
    forward code (Python between a module's ops), a named region (data loading, the optimizer's
    Python loop, a loss), or the step loop itself. Explains the part of the step that coverage misses."""
    out: dict[str, float] = defaultdict(float)
    for window in windows:
        thread = (window.pid, window.tid)
        events = [e for e in trace.threads().get(thread, []) if e.start_ns < window.end_ns and e.end_ns > window.start_ns]
        tops = [e for e in events if e.category == "cpu_op" and window.start_ns <= e.start_ns
                and (trace.parent_of(e) is None or trace.parent_of(e).category != "cpu_op")]  # fmt: skip
        # a gap is split where a span starts or ends, so each piece has one owner
        edges = sorted({t for e in events if e.category == "user_annotation" for t in (e.start_ns, e.end_ns)})
        cursor = window.start_ns
        for op in [*tops, None]:
            end = window.end_ns if op is None else op.start_ns
            cuts = [cursor, *edges[bisect_right(edges, cursor) : bisect_left(edges, end)], end]
            for a, b in zip(cuts, cuts[1:], strict=False):
                if b > a:
                    out[_gap_owner(trace, thread, (a + b) // 2)] += (b - a) / 1e6
            if op is not None:
                cursor = max(cursor, op.end_ns)
    return dict(sorted(out.items(), key=lambda kv: kv[1], reverse=True))


def _gap_owner(trace: KinetoTrace, thread: tuple, t_ns: int) -> str:
    inner = trace.innermost_at(thread, t_ns)
    for a in trace.ancestors(inner) if inner is not None else ():
        if a.category != "user_annotation" or a.name.startswith("ProfilerStep#"):
            continue
        if a.name.startswith(PREFIX):
            return "module forward code"
        if a.name.startswith("enumerate(DataLoader)"):
            return "data loading"
        if a.name.startswith("Optimizer."):
            return "optimizer step"
        return a.name
    return "step loop"
