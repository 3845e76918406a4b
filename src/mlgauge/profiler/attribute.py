"""Attribute oneDNN primitive executions to the PyTorch ops and regions that ran them.

oneDNN's verbose timestamp (``ONEDNN_VERBOSE_TIMESTAMP=1``) is the primitive's start in ms
since the Unix epoch; a Kineto event's start is ``baseTimeNanoseconds`` + ts × 1000 in the
same clock (checked on PyTorch 2.13: every primitive of a conv forward + backward starts
inside its ATen op). A primitive belongs to the innermost ``cpu_op`` whose interval holds its
start. Verbose rows carry no thread id, so every thread is searched; when ops on several
threads hold the start, an op that dispatches to oneDNN wins, then the shortest.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from mlgauge.errors import DataError
from mlgauge.profiler.kineto import KinetoTrace, TraceEvent
from mlgauge.profiler.onednn import Bucket, OneDnnLog, Primitive, tally

# ATen ops that call oneDNN on CPU (PyTorch 2.x): mkldnn_* kernels, convolution and its
# backward, and matmul-family ops, which route bf16/fp16 to oneDNN's matmul.
DISPATCH_HINTS = (
    "mkldnn", "onednn", "convolution", "conv1d", "conv2d", "conv3d", "conv_transpose", "linear",
    "matmul", "addmm", "baddbmm", "bmm", "aten::mm", "_to_dense", "to_mkldnn",
)  # fmt: skip
# Autograd runs backward functions inside these frames (PyTorch's profiler names).
_BACKWARD = re.compile(r"^autograd::engine::evaluate_function|Backward\d*$")
_MODULE_PREFIX = "nn.Module: "  # python_function events from with_modules / with_stack


class AttributionError(DataError):
    """A oneDNN log and a PyTorch trace cannot be joined."""


@dataclass(frozen=True)
class Attribution:
    primitive: Primitive
    op: TraceEvent | None  # innermost cpu_op holding the primitive's start
    regions: tuple[str, ...]  # enclosing record_function / user annotations, outermost first
    module: str | None  # innermost enclosing nn.Module when the trace has module events
    thread: tuple | None  # (pid, tid) of the chosen op
    backward: bool  # ran inside an autograd backward function
    ambiguous: bool  # ops on several threads held the start

    @property
    def op_name(self) -> str | None:
        return None if self.op is None else self.op.name

    @property
    def region(self) -> str | None:
        return self.regions[-1] if self.regions else None


@dataclass
class AttributionResult:
    items: list[Attribution]
    window_ns: tuple[int, int]  # the trace's first start and last end
    offset_ns: int = 0  # added to oneDNN timestamps before matching
    warnings: list[str] = field(default_factory=list)

    @property
    def total_ms(self) -> float:
        return sum(a.primitive.exec_time_ms for a in self.items)

    @property
    def attributed_ms(self) -> float:
        return sum(a.primitive.exec_time_ms for a in self.items if a.op is not None)

    @property
    def in_window_ms(self) -> float:
        """Primitive time that started inside the trace window: what could be attributed."""
        lo, hi = self.window_ns
        starts = ((a.primitive.start_ns, a.primitive.exec_time_ms) for a in self.items)
        return sum(ms for start, ms in starts if start is not None and lo <= start + self.offset_ns <= hi)

    @property
    def fraction(self) -> float:
        """Share of all primitive time attributed to an op."""
        return self.attributed_ms / self.total_ms if self.total_ms else 0.0

    @property
    def fraction_in_window(self) -> float:
        return self.attributed_ms / self.in_window_ms if self.in_window_ms else 0.0

    @property
    def ambiguous(self) -> int:
        return sum(a.ambiguous for a in self.items)

    def time_by(self, key: Callable[[Attribution], object]) -> dict:
        """Calls and primitive time per key over attributed primitives, largest time first."""
        return tally((key(a), a.primitive.exec_time_ms) for a in self.items if a.op is not None)

    def time_by_op(self) -> dict[str, Bucket]:
        return self.time_by(lambda a: a.op_name)

    def time_by_region(self) -> dict[str | None, Bucket]:
        return self.time_by(lambda a: a.region)

    def time_by_phase(self) -> dict[str, Bucket]:
        """forward / backward, which also places reorders and matmuls that verbose leaves undirected."""
        return self.time_by(lambda a: "backward" if a.backward else "forward")

    def unattributed(self) -> list[Primitive]:
        return [a.primitive for a in self.items if a.op is None]


def _dispatches(op: TraceEvent) -> bool:
    return any(hint in op.name for hint in DISPATCH_HINTS)


def _candidates(trace: KinetoTrace, threads: list[tuple], t_ns: int) -> list[tuple]:
    """(thread, innermost event, innermost cpu_op or None) for each thread with an event at t_ns."""
    found = []
    for thread in threads:
        inner = trace.innermost_at(thread, t_ns)
        if inner is not None:
            op = next((e for e in trace.ancestors(inner) if e.category == "cpu_op"), None)
            found.append((thread, inner, op))
    return found


def _attribution(trace: KinetoTrace, primitive: Primitive, found: list[tuple]) -> Attribution:
    with_op = [f for f in found if f[2] is not None]
    if with_op:
        thread, inner, op = min(with_op, key=lambda f: (not _dispatches(f[2]), f[2].duration_ns))
    elif found:
        thread, inner, op = min(found, key=lambda f: f[1].duration_ns)
    else:
        return Attribution(primitive, None, (), None, None, False, False)
    chain = list(trace.ancestors(inner))
    regions = tuple(e.name for e in reversed(chain) if e.category == "user_annotation")
    modules = (e.name.removeprefix(_MODULE_PREFIX) for e in chain if e.name.startswith(_MODULE_PREFIX))
    module = next(modules, None)
    backward = any(_BACKWARD.search(e.name) for e in chain)
    return Attribution(primitive, op, regions, module, thread, backward, len(with_op) > 1)


def attribute(log: OneDnnLog, trace: KinetoTrace, *, offset_ns: int = 0) -> AttributionResult:
    """Join a verbose log to a trace of the same run.

    offset_ns is added to oneDNN timestamps, for logs whose clock is known to differ.
    Raises AttributionError when the log has no timestamps to join on.
    """
    if not log.has_timestamps:
        raise AttributionError(
            "the oneDNN log has no timestamps, so its primitives cannot be placed in the trace",
            hint="Capture with ONEDNN_VERBOSE_TIMESTAMP=1 set before the program starts",
        )
    threads = list(trace.threads())
    items = []
    for primitive in log.primitives:
        if primitive.start_ns is None:
            items.append(Attribution(primitive, None, (), None, None, False, False))
            continue
        t_ns = primitive.start_ns + offset_ns
        items.append(_attribution(trace, primitive, _candidates(trace, threads, t_ns)))
    result = AttributionResult(items, trace.window_ns, offset_ns)
    if result.in_window_ms == 0:
        result.warnings.append(
            "no oneDNN timestamp falls inside the trace window; the log and trace may come from "
            "different runs or machines"
        )
    elif result.ambiguous:
        result.warnings.append(f"{result.ambiguous} primitive(s) overlapped ops on several threads")
    return result
