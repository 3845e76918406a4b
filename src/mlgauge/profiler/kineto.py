"""Load a PyTorch profiler (Kineto) Chrome trace into typed, nested events.

``torch.profiler`` writes complete events (``"ph": "X"``) whose ``ts`` and ``dur`` are µs;
``ts`` counts from ``baseTimeNanoseconds`` (epoch ns; present in PyTorch 2.13's traces) so
that float µs keep sub-µs precision. Epoch ns = base + ts × 1000, the clock oneDNN's verbose timestamps
use, which is what lets the two be joined. Parents come from interval nesting on one thread:
CPU events on a thread are properly nested (a callee ends before its caller).
"""

from __future__ import annotations

import json
import math
import re
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mlgauge.errors import DataError
from mlgauge.profiler.files import read_bytes

# Float µs → ns rounding can push a child's end a nanosecond past its parent's.
NEST_SLACK_NS = 2
# The "Trace" span wraps the whole profiling window on a pseudo-thread; it is not program work.
_IGNORED_CATEGORIES = frozenset({"Trace"})


class KinetoTraceError(DataError):
    """A PyTorch profiler trace is unreadable or holds no events."""


@dataclass(slots=True)
class TraceEvent:
    index: int  # position in KinetoTrace.events
    name: str
    category: str  # cpu_op, user_annotation, python_function, ...
    pid: int | str
    tid: int | str
    start_ns: int  # ns since the Unix epoch
    end_ns: int
    input_dims: tuple | None = None  # record_shapes=True: one shape tuple per input, () for non-tensors
    input_types: tuple | None = None
    external_id: int | None = None
    # the profiler's args as recorded ("Concrete Inputs", "Input Strides" ...): costs.event_cost reads
    # strides, padding and groups from them
    args: dict = field(default_factory=dict, compare=False, repr=False)
    parent: int | None = None  # index of the enclosing event on the same thread
    depth: int = 0

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    def contains(self, t_ns: int) -> bool:
        return self.start_ns <= t_ns <= self.end_ns


@dataclass
class KinetoTrace:
    base_ns: int
    events: list[TraceEvent]
    skipped: int  # complete events without a usable name, ts, dur or thread
    warnings: list[str]
    metadata: dict = field(default_factory=dict)
    _threads: dict | None = field(default=None, repr=False)

    def ops(self) -> list[TraceEvent]:
        return [e for e in self.events if e.category == "cpu_op"]

    def parent_of(self, event: TraceEvent) -> TraceEvent | None:
        return None if event.parent is None else self.events[event.parent]

    def ancestors(self, event: TraceEvent) -> Iterator[TraceEvent]:
        """The event itself, then each enclosing event outwards."""
        current: TraceEvent | None = event
        while current is not None:
            yield current
            current = self.parent_of(current)

    def threads(self) -> dict[tuple, list[TraceEvent]]:
        """(pid, tid) -> that thread's events in start order."""
        return {key: events for key, (events, _) in self._by_thread().items()}

    def _by_thread(self) -> dict[tuple, tuple[list[TraceEvent], list[int]]]:
        if self._threads is None:
            groups = _by_thread(self.events)
            self._threads = {k: (g, [e.start_ns for e in g]) for k, g in groups.items()}
        return self._threads

    def innermost_at(self, thread: tuple, t_ns: int) -> TraceEvent | None:
        """The deepest event on a thread whose interval contains t_ns."""
        events, starts = self._by_thread().get(thread, ([], []))
        i = bisect_right(starts, t_ns) - 1
        if i < 0:
            return None
        # With proper nesting the innermost container is the last-started event or one of its ancestors.
        return next((e for e in self.ancestors(events[i]) if e.contains(t_ns)), None)

    @property
    def window_ns(self) -> tuple[int, int]:
        return min(e.start_ns for e in self.events), max(e.end_ns for e in self.events)


def _event(raw: dict, index: int, base_ns: int) -> TraceEvent | None:
    try:
        name, ts, dur = raw["name"], float(raw["ts"]), float(raw["dur"])
        tid, pid = raw["tid"], raw.get("pid", 0)
    except (KeyError, TypeError, ValueError):
        return None
    if not isinstance(name, str) or not all(isinstance(x, int | str) for x in (tid, pid)):
        return None
    if not (math.isfinite(ts) and math.isfinite(dur)) or dur < 0:
        return None
    args = raw.get("args") if isinstance(raw.get("args"), dict) else {}
    start = base_ns + _us_to_ns(ts)
    dims, types = args.get("Input Dims"), args.get("Input type")
    return TraceEvent(
        index=index, name=name, category=str(raw.get("cat", "")), pid=pid, tid=tid,
        start_ns=start, end_ns=start + _us_to_ns(dur),
        input_dims=tuple(_shape(d) for d in dims) if isinstance(dims, list) else None,
        input_types=tuple(types) if isinstance(types, list) else None,
        external_id=ext if isinstance(ext := args.get("External id"), int) else None,
        args=args,
    )  # fmt: skip


def _shape(dims: object) -> object:
    return tuple(dims) if isinstance(dims, list) else dims


def _us_to_ns(us: float) -> int:
    # Whole µs first: multiplying an epoch-sized float by 1000 would round to 256 ns.
    whole = int(us)
    return whole * 1000 + round((us - whole) * 1000)


def _by_thread(events: list[TraceEvent]) -> dict[tuple, list[TraceEvent]]:
    """(pid, tid) -> events by start; a parent sorts before a child that starts with it."""
    groups: dict[tuple, list[TraceEvent]] = defaultdict(list)
    for event in events:
        groups[(event.pid, event.tid)].append(event)
    for group in groups.values():
        group.sort(key=lambda e: (e.start_ns, -e.end_ns, e.index))
    return dict(groups)


def _nest(events: list[TraceEvent]) -> None:
    for group in _by_thread(events).values():
        stack: list[TraceEvent] = []
        for event in group:
            while stack and event.end_ns > stack[-1].end_ns + NEST_SLACK_NS:
                stack.pop()  # the top ended before this event did: not an ancestor
            if stack:
                event.parent, event.depth = stack[-1].index, stack[-1].depth + 1
            stack.append(event)


def parse_kineto_trace(data: dict | list, source: str = "<trace>") -> KinetoTrace:
    """Build typed events from a decoded Chrome trace (object form, or the bare event array)."""
    raw_events = data.get("traceEvents") if isinstance(data, dict) else data
    if not isinstance(raw_events, list):
        raise KinetoTraceError(
            "the trace has no traceEvents list", source=source,
            hint="Pass the JSON written by torch.profiler's export_chrome_trace",
        )  # fmt: skip
    warnings: list[str] = []
    base = data.get("baseTimeNanoseconds") if isinstance(data, dict) else None
    if not isinstance(base, int):
        base = 0
        warnings.append("no baseTimeNanoseconds; assumed ts is µs since the Unix epoch (older PyTorch)")
    events: list[TraceEvent] = []
    skipped = 0
    for raw in raw_events:
        if not isinstance(raw, dict) or raw.get("ph") != "X" or str(raw.get("cat")) in _IGNORED_CATEGORIES:
            continue  # metadata, flow arrows, instants (memory) carry no interval
        event = _event(raw, len(events), base)
        if event is None:
            skipped += 1
        else:
            events.append(event)
    if skipped:
        warnings.append(f"{skipped} trace event(s) lacked a name, ts, dur or thread and were skipped")
    if not events:
        raise KinetoTraceError(
            "the trace holds no timed events", source=source,
            hint="Profile at least one step with torch.profiler (activities=[CPU])",
        )  # fmt: skip
    _nest(events)
    meta = {k: v for k, v in data.items() if k != "traceEvents"} if isinstance(data, dict) else {}
    return KinetoTrace(base, events, skipped, warnings, meta)


def read_trace_json(path: str | Path) -> dict:
    """A trace file's JSON in object form (a bare event array is wrapped); gzip is detected by content."""
    path = Path(path)
    try:
        data = json.loads(read_bytes(path))
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise KinetoTraceError(
            f"cannot read the trace: {exc}", source=str(path),
            hint="Check the path and that the file was written completely",
        ) from exc  # fmt: skip
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        data = _salvage(read_bytes(path))
        if data is None:
            raise KinetoTraceError(
                f"the trace is not valid JSON ({exc})", source=str(path),
                hint="The file may be truncated; export the trace again",
            ) from exc  # fmt: skip
    if isinstance(data, list):
        data = {"traceEvents": data}
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        raise KinetoTraceError(
            "the trace has no traceEvents list", source=str(path),
            hint="Pass the JSON written by torch.profiler's export_chrome_trace",
        )  # fmt: skip
    return data


TRUNCATED = "mlgaugeTruncatedAfter"  # set on a salvaged trace: the complete events it kept


def _salvage(raw: bytes) -> dict | None:
    """The complete events of a trace cut off mid-write (a process killed while exporting): the
    header up to ``"traceEvents": [`` and every event object that closes. None when nothing is left."""
    text = raw.decode("utf-8", errors="replace")
    opening = re.search(r'"traceEvents"\s*:\s*\[', text)
    if opening is None:
        return None
    try:
        header = json.loads(text[: opening.end()] + "]}")
    except ValueError:
        return None
    decoder, events, at = json.JSONDecoder(), [], opening.end()
    while True:
        at = re.compile(r"[\s,]*").match(text, at).end()
        try:
            event, at = decoder.raw_decode(text, at)
        except ValueError:
            break
        events.append(event)
    if not events:
        return None
    return header | {"traceEvents": events, TRUNCATED: len(events)}


def load_kineto_trace(path: str | Path) -> KinetoTrace:
    """Read a trace file written by export_chrome_trace; a truncated one keeps its complete events."""
    data = read_trace_json(path)
    trace = parse_kineto_trace(data, source=str(path))
    if TRUNCATED in data:
        trace.warnings.insert(0, f"the trace file is truncated: analysed its first {data[TRUNCATED]} complete "
                                 "events; ops still open when it was cut are missing")  # fmt: skip
    return trace
