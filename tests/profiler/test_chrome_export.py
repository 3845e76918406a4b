"""Merging oneDNN primitives into a Chrome trace, on a hand-made pair and on a real capture.

Trace base = 1795408483000 ms since the epoch, so a primitive stamped 1795408483001.300000 ms
belongs at ts = 1300 µs, and one of 0.1 ms lasts dur = 100 µs.
"""

from __future__ import annotations

import copy
import gzip
import json

import pytest

from mlgauge.errors import UsageError
from mlgauge.profiler.attribute import AttributionError, attribute
from mlgauge.profiler.chrome import TRACK_TID_OFFSET, UNATTRIBUTED_TID, export_merged_trace
from mlgauge.profiler.kineto import load_kineto_trace, parse_kineto_trace
from mlgauge.profiler.onednn import load_onednn_log, parse_onednn_log

BASE = 1_795_408_483_000_000_000
BWD_FRAME = "autograd::engine::evaluate_function: ConvolutionBackward0"
CONV = "brg_conv_fwd:avx512_core"


def _x(name, cat, ts, dur, tid=1):
    return {"ph": "X", "cat": cat, "name": name, "pid": 9, "tid": tid, "ts": ts, "dur": dur}


def _m(kind, tid, args):
    return {"ph": "M", "name": kind, "pid": 9, "tid": tid, "ts": 0, "args": args}


TRACE = {
    "schemaVersion": 1,
    "baseTimeNanoseconds": BASE,
    "displayTimeUnit": "ms",
    "traceEvents": [
        _m("thread_name", 1, {"name": "thread 1 (python)"}),
        _m("thread_sort_index", 1, {"sort_index": 5}),
        # Kineto's whole-window span: not program work, so it does not widen the window (1000-7000 µs)
        _x("PyTorch Profiler (0)", "Trace", 0, 20000) | {"pid": "Spans"},
        _x("conv1", "user_annotation", 1000, 3000),
        _x("aten::conv2d", "cpu_op", 1100, 2800),
        _x("aten::mkldnn_convolution", "cpu_op", 1200, 2600),  # 1200 - 3800
        _x(BWD_FRAME, "cpu_op", 5000, 2000),
        _x("aten::convolution_backward", "cpu_op", 5020, 1960),  # 5020 - 6980
        _x("aten::addmm", "cpu_op", 6000, 100, tid=2),  # 6000 - 6100, another thread
        {"ph": "s", "id": 1, "pid": 9, "tid": 1, "ts": 1100, "cat": "fwdbwd", "name": "fwdbwd"},
        {"ph": "i", "s": "g", "name": "Record Window End", "pid": "", "tid": "", "ts": 7500},
    ],
}
TEMPLATE = (
    "onednn_verbose,v1,primitive,info,template:timestamp,operation,engine,primitive,implementation,"
    "prop_kind,memory_descriptors,attributes,auxiliary,problem_desc,exec_time"
)
F32 = "src:f32::blocked:abcd::f0 dst:f32::blocked:aBcd16b::f0"
CONV_PROBLEM = "mb2_ic16oc32_ih28oh28kh3sh1dh0ph1_iw28ow28kw3sw1dw0pw1"
ROWS = [  # (ms after the base, kind, implementation, prop_kind, problem, exec ms); log lines 2..8
    ("001.300000", "reorder", "jit:uni", "undef", "2x16x28x28", "0.1"),  # runs past the next start
    ("001.350000", "convolution", CONV, "forward_training", CONV_PROBLEM, "1.0"),
    ("002.400123", "reorder", "jit:uni", "undef", "2x32x28x28", "0.002"),  # sub-µs start
    ("005.500000", "convolution", CONV, "backward_data", CONV_PROBLEM, "0.5"),
    ("006.050000", "matmul", "brg_matmul:avx512_core", "undef", "4x8:8x4", "0.04"),  # thread 2's addmm
    ("001.050000", "reorder", "jit:uni", "undef", "2x16x28x28", "0.05"),  # in conv1, before any op
    ("000.500000", "reorder", "jit:uni", "undef", "2x16x28x28", "0.2"),  # before the window
    ("010.000000", "reorder", "jit:uni", "undef", "2x16x28x28", "0.2"),  # after it
]
OWN_1, OWN_2 = TRACK_TID_OFFSET + 1, TRACK_TID_OFFSET + 2
# (name, tid, ts µs, dur µs) by hand from ROWS, by track then time; the 1300 µs reorder is cut
# where the conv starts
EXPECTED = [
    ("reorder jit:uni", UNATTRIBUTED_TID, 1050.0, 50.0),
    ("reorder jit:uni", OWN_1, 1300.0, 50.0),
    ("convolution brg_conv_fwd:avx512_core", OWN_1, 1350.0, 1000.0),
    ("reorder jit:uni", OWN_1, 2400.123, 2.0),
    ("convolution brg_conv_fwd:avx512_core", OWN_1, 5500.0, 500.0),
    ("matmul brg_matmul:avx512_core", OWN_2, 6050.0, 40.0),
]


def _log(offset_ms: int = 0, stamped: bool = True):
    lines = [TEMPLATE if stamped else TEMPLATE.replace("template:timestamp,", "template:")]
    for at, kind, impl, prop, problem, ms in ROWS:
        stamp = f"{1795408483000 + offset_ms + int(at[:3])}.{at[4:]}," if stamped else ""
        row = f"{kind},{impl},{prop},{F32},,,{problem},{ms}"
        lines.append(f"onednn_verbose,v1,{stamp}primitive,exec,cpu,{row}")
    return parse_onednn_log("\n".join(lines))


@pytest.fixture
def trace_file(tmp_path):
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(TRACE))
    return path


def _onednn(events):
    return sorted((e for e in events if e.get("cat") == "onednn"), key=lambda e: (e["tid"], e["ts"]))


def test_merged_trace_keeps_every_event_and_adds_one_slice_per_primitive(trace_file, tmp_path):
    source = trace_file.read_bytes()
    out = export_merged_trace(trace_file, _log(), None, tmp_path / "merged.json")
    merged = json.loads(out.read_text())
    assert trace_file.read_bytes() == source
    n = len(TRACE["traceEvents"])
    assert merged["traceEvents"][:n] == TRACE["traceEvents"]
    assert {k: v for k, v in merged.items() if k != "traceEvents"} == {
        k: v for k, v in TRACE.items() if k != "traceEvents"
    }
    slices = _onednn(merged["traceEvents"])
    assert [(e["name"], e["tid"], e["ts"], e["dur"]) for e in slices] == EXPECTED
    assert all(e["ph"] == "X" and e["pid"] == 9 for e in slices)
    assert slices[1]["args"] == {
        "direction": "none", "problem": "2x16x28x28", "exec_time_ms": 0.1, "log_line": 2,
        "dims": "2x16x28x28", "reorder": "abcd -> aBcd16b", "op": "aten::mkldnn_convolution",
        "phase": "forward", "regions": "conv1", "clipped": True,
    }  # fmt: skip
    backward = slices[4]["args"]
    assert (backward["direction"], backward["op"], backward["phase"]) == (
        "backward_data", "aten::convolution_backward", "backward",
    )  # fmt: skip
    assert "op" not in slices[0]["args"] and slices[0]["args"]["regions"] == "conv1"

    meta = {(e["tid"], e["name"]): e["args"] for e in merged["traceEvents"][n:] if e["ph"] == "M"}
    assert meta == {
        (OWN_1, "thread_name"): {"name": "oneDNN primitives (thread 1)"},
        (OWN_1, "thread_sort_index"): {"sort_index": 5},  # thread 1's own, from the trace
        (OWN_2, "thread_name"): {"name": "oneDNN primitives (thread 2)"},
        (OWN_2, "thread_sort_index"): {"sort_index": 2},  # none given: Kineto's default, the tid
        (UNATTRIBUTED_TID, "thread_name"): {"name": "oneDNN primitives (unattributed)"},
    }


def test_merged_trace_still_loads_and_attributes_the_same(trace_file, tmp_path):
    out = export_merged_trace(trace_file, _log(), None, tmp_path / "merged.json")
    loaded = load_kineto_trace(out)
    starts = sorted(e.start_ns for e in loaded.events if e.category == "onednn")
    # back to epoch ns exactly, including the 2400.123 µs one
    assert starts == sorted(BASE + round(ts * 1000) for _, _, ts, _ in EXPECTED)
    assert BASE + 2_400_123 in starts
    log = _log()
    before = [a.op_name for a in attribute(log, parse_kineto_trace(TRACE)).items]
    assert [a.op_name for a in attribute(log, loaded).items] == before


def test_attribution_offset_moves_primitives_onto_the_trace_clock(trace_file, tmp_path):
    shifted = _log(offset_ms=1000)
    result = attribute(shifted, parse_kineto_trace(TRACE), offset_ns=-1_000_000_000)
    out = export_merged_trace(trace_file, shifted, result, tmp_path / "merged.json")
    slices = _onednn(json.loads(out.read_text())["traceEvents"])
    assert [(e["name"], e["tid"], e["ts"], e["dur"]) for e in slices] == EXPECTED
    # without the offset every primitive falls after the window: nothing is added
    out = export_merged_trace(trace_file, shifted, None, tmp_path / "unshifted.json")
    assert _onednn(json.loads(out.read_text())["traceEvents"]) == []


def test_gzip_output_round_trips(trace_file, tmp_path):
    plain = export_merged_trace(trace_file, _log(), None, tmp_path / "merged.json")
    packed = export_merged_trace(trace_file, _log(), None, tmp_path / "merged.json.gz")
    raw = packed.read_bytes()
    assert raw[:2] == b"\x1f\x8b"
    assert json.loads(gzip.decompress(raw)) == json.loads(plain.read_text())
    assert raw[4:8] == bytes(4)  # the header's MTIME is 0: the same inputs give the same bytes
    assert len([e for e in load_kineto_trace(packed).events if e.category == "onednn"]) == len(EXPECTED)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_bare_event_array_without_base_uses_epoch_microseconds(tmp_path):
    events = copy.deepcopy(TRACE["traceEvents"])
    for e in events:
        if e["ph"] == "X":
            e["ts"] += BASE // 1000  # older PyTorch: ts counts µs since the epoch
    path = tmp_path / "old.json"
    path.write_text(json.dumps(events))
    merged = json.loads(export_merged_trace(path, _log(), None, tmp_path / "m.json").read_text())
    assert merged["traceEvents"][: len(events)] == events
    slices = _onednn(merged["traceEvents"])
    assert slices[2]["ts"] == 1_795_408_483_001_350.0 and slices[2]["dur"] == 1000.0


def test_log_without_timestamps_is_refused(trace_file, tmp_path):
    out = tmp_path / "merged.json"
    with pytest.raises(AttributionError, match="no timestamps") as err:
        export_merged_trace(trace_file, _log(stamped=False), None, out)
    assert "ONEDNN_VERBOSE_TIMESTAMP=1" in err.value.hint
    assert not out.exists()


def test_source_is_never_overwritten(trace_file):
    source = trace_file.read_bytes()
    with pytest.raises(UsageError, match="overwrite its source"):
        export_merged_trace(trace_file, _log(), None, trace_file)
    assert trace_file.read_bytes() == source


def test_real_capture_puts_primitives_under_the_issuing_thread(conv_capture, tmp_path):
    trace_path, log_path = conv_capture
    log = load_onednn_log(log_path)
    trace = load_kineto_trace(trace_path)
    lo, hi = trace.window_ns
    inside = sorted((p for p in log.primitives if lo <= p.start_ns <= hi), key=lambda p: p.start_ns)
    assert {p.kind for p in inside} >= {"convolution", "reorder"}

    out = export_merged_trace(trace_path, log, None, tmp_path / "merged.json.gz")
    merged = load_kineto_trace(out)
    slices = sorted((e for e in merged.events if e.category == "onednn"), key=lambda e: e.start_ns)
    assert len(slices) == len(inside)
    # starts straight from the verbose text's epoch ms, within the float µs rounding
    assert all(abs(s.start_ns - p.start_ns) <= 1 for s, p in zip(slices, inside, strict=True))
    main = max(trace.threads(), key=lambda t: len(trace.threads()[t]))
    convs = [s for s in slices if s.name.startswith("convolution ")]
    assert convs and all((s.pid, s.tid) == (main[0], TRACK_TID_OFFSET + main[1]) for s in convs)
    for s in convs:  # each lies inside a convolution op of its issuing thread
        holder = trace.innermost_at(main, s.start_ns)
        assert any("convolution" in e.name for e in trace.ancestors(holder)), s.args
