"""Write a PyTorch profiler trace with the oneDNN primitives that ran inside it merged in.

The result is a Chrome trace (chrome://tracing, ui.perfetto.dev): every event of the source trace,
untouched, plus one complete event per primitive on a track of its own next to the thread whose op
issued it, so a slow ``aten::mkldnn_convolution`` opens onto the reorders and kernels it ran.

Times: oneDNN's verbose timestamp is the primitive's start in epoch ns (after the attribution's
clock offset); the trace's ``ts`` is µs after ``baseTimeNanoseconds``, so ts = (start − base) / 1000.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from mlgauge import paths
from mlgauge.errors import OutputError, UsageError
from mlgauge.profiler.attribute import Attribution, AttributionError, AttributionResult, attribute
from mlgauge.profiler.kineto import KinetoTrace, parse_kineto_trace, read_trace_json
from mlgauge.profiler.onednn import OneDnnLog, Primitive

CATEGORY = "onednn"
# A primitive track's tid is the issuing thread's tid plus this. Linux thread ids stay below
# 2**22 (the largest pid_max), so a track never takes a real thread's id; below 2**31 because
# trace viewers read tids as 32-bit ints.
TRACK_TID_OFFSET = 1 << 30
UNATTRIBUTED_TID = TRACK_TID_OFFSET - 1
UNATTRIBUTED_NAME = "oneDNN primitives (unattributed)"


@dataclass(frozen=True)
class _Track:
    pid: int | str
    tid: int | str
    name: str
    sort_index: int | None  # the issuing thread's, so chrome://tracing draws the track right below it


def export_merged_trace(
    trace_path: Path, log: OneDnnLog, attribution: AttributionResult | None, out_path: Path
) -> Path:
    """Write ``out_path`` (gzip when it ends in .gz) and return it; the source trace is only read.

    ``attribution`` is ``attribute(log, trace)`` for this pair, computed here when None; its
    offset_ns shifts the primitives like it shifted their matching. Primitives that started outside
    the trace's window, or carry no timestamp, are left out.
    """
    trace_path, out_path = Path(trace_path), Path(out_path)
    if not log.has_timestamps:
        raise AttributionError(
            "the oneDNN log has no timestamps, so its primitives cannot be placed in the trace",
            hint="Capture with ONEDNN_VERBOSE_TIMESTAMP=1 set before the program starts",
        )
    if out_path.resolve() == trace_path.resolve():
        raise UsageError(
            f"the merged trace would overwrite its source {trace_path}",
            hint="Write it to another file, e.g. trace.onednn.json.gz",
        )
    data = read_trace_json(trace_path)
    trace = parse_kineto_trace(data, source=str(trace_path))
    result = attribution if attribution is not None else attribute(log, trace)
    data["traceEvents"] = [*data["traceEvents"], *_primitive_events(data, trace, result)]
    return _write(out_path, json.dumps(data, separators=(",", ":")))


def _primitive_events(data: dict, trace: KinetoTrace, result: AttributionResult) -> list[dict]:
    """Thread-name metadata and one complete event per in-window primitive, by track."""
    base_ns = data.get("baseTimeNanoseconds")
    base_ns = base_ns if isinstance(base_ns, int) else 0  # older PyTorch: ts is µs since the epoch
    sort_indexes = _sort_indexes(data["traceEvents"])
    main_pid = next((e.pid for e in trace.ops()), trace.events[0].pid)
    lo, hi = result.window_ns
    by_track: dict[_Track, list[dict]] = defaultdict(list)
    for item in result.items:
        start = item.primitive.start_ns
        if start is None or not lo <= start + result.offset_ns <= hi:
            continue
        track = _track(item, main_pid, sort_indexes)
        ts_ns = start + result.offset_ns - base_ns
        by_track[track].append(_slice(item, track, ts_ns))
    events: list[dict] = []
    for track, slices in by_track.items():
        events += _metadata(track)
        events += _clip_overlaps(sorted(slices, key=lambda e: e["ts"]))
    return events


def _track(item: Attribution, main_pid: int | str, sort_indexes: dict) -> _Track:
    if item.op is None:
        return _Track(main_pid, UNATTRIBUTED_TID, UNATTRIBUTED_NAME, None)
    pid, tid = item.op.pid, item.op.tid
    # Kineto's CPU tids are ints; a string tid (not seen on CPU) gets a readable string track id
    own_tid = TRACK_TID_OFFSET + tid if isinstance(tid, int) else f"{tid} oneDNN"
    sort_index = sort_indexes.get((pid, tid), tid if isinstance(tid, int) else None)
    return _Track(pid, own_tid, f"oneDNN primitives (thread {tid})", sort_index)


def _slice(item: Attribution, track: _Track, ts_ns: int) -> dict:
    p = item.primitive
    return {
        "ph": "X", "cat": CATEGORY, "name": f"{p.kind} {p.implementation}",
        "pid": track.pid, "tid": track.tid,
        # µs with 3 decimals, as Kineto writes them: ns resolution (float spacing near 4.5e12 µs is ~1 ns)
        "ts": round(ts_ns / 1000, 3), "dur": round(p.exec_time_ms * 1000, 3),
        "args": _args(item),
    }  # fmt: skip


def _args(item: Attribution) -> dict:
    p: Primitive = item.primitive
    args: dict[str, object] = {
        "direction": p.direction, "problem": p.problem, "exec_time_ms": p.exec_time_ms, "log_line": p.line,
    }  # fmt: skip
    if p.dims is not None:
        args["dims"] = "x".join(map(str, p.dims))
    if p.reorder is not None:
        args["reorder"] = f"{p.reorder[0]} -> {p.reorder[1]}"
    if item.op is not None:
        args["op"] = item.op.name
        # verbose leaves reorders and matmuls undirected; the autograd frame around the op does not
        args["phase"] = "backward" if item.backward else "forward"
    if item.regions:
        args["regions"] = " > ".join(item.regions)  # outermost first
    if item.module is not None:
        args["module"] = item.module
    return args


def _metadata(track: _Track) -> list[dict]:
    where = {"ph": "M", "pid": track.pid, "tid": track.tid, "ts": 0}
    events = [{**where, "name": "thread_name", "args": {"name": track.name}}]
    if track.sort_index is not None:
        events.append({**where, "name": "thread_sort_index", "args": {"sort_index": track.sort_index}})
    return events


def _clip_overlaps(slices: list[dict]) -> list[dict]:
    """End a slice where the next on its track starts.

    A thread runs one primitive at a time, but timestamps and exec times are rounded separately
    and ambiguous or unattributed primitives can share a track; partly overlapping slices do not
    nest, and viewers drop or misdraw them. args keep the measured exec_time_ms.
    """
    for current, following in pairwise(slices):
        if current["ts"] + current["dur"] > following["ts"]:
            current["dur"] = round(following["ts"] - current["ts"], 3)
            current["args"]["clipped"] = True
    return slices


def _sort_indexes(raw_events: list) -> dict[tuple, int]:
    """(pid, tid) -> the thread_sort_index the trace gives it."""
    out = {}
    for e in raw_events:
        if isinstance(e, dict) and e.get("ph") == "M" and e.get("name") == "thread_sort_index":
            index = (e.get("args") or {}).get("sort_index")
            if isinstance(index, int):
                out[(e.get("pid"), e.get("tid"))] = index
    return out


def _write(path: Path, text: str) -> Path:
    try:
        if not path.name.endswith(".gz"):
            return paths.write_text_atomic(path, text)
        # mtime=0: the same inputs give the same bytes
        return paths.write_bytes_atomic(path, gzip.compress(text.encode("utf-8"), mtime=0))
    except OSError as exc:
        raise OutputError(
            f"cannot write the merged trace to {path}: {exc.strerror or exc}",
            hint="Choose a writable folder for the output file",
        ) from None
