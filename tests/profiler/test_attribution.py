"""Joining a oneDNN log to a Kineto trace on a synthetic pair whose epoch times are set by hand.

Trace base = 1795408483000 ms since the epoch, so an event at ts = 1200 µs starts at
1795408483001.200 ms, the form oneDNN prints with ONEDNN_VERBOSE_TIMESTAMP=1.
"""

from __future__ import annotations

import pytest

from mlgauge.profiler.attribute import AttributionError, attribute
from mlgauge.profiler.kineto import parse_kineto_trace
from mlgauge.profiler.onednn import parse_onednn_log

BASE = 1_795_408_483_000_000_000
BWD_FRAME = "autograd::engine::evaluate_function: ConvolutionBackward0"


def _x(name, cat, ts, dur, tid=1):
    return {"ph": "X", "cat": cat, "name": name, "pid": 9, "tid": tid, "ts": ts, "dur": dur}


TRACE = {
    "baseTimeNanoseconds": BASE,
    "traceEvents": [
        _x("conv1", "user_annotation", 1000, 3000),  # 001.000 - 004.000 ms
        _x("aten::conv2d", "cpu_op", 1100, 2800),  # 001.100 - 003.900
        _x("aten::mkldnn_convolution", "cpu_op", 1200, 2600),  # 001.200 - 003.800
        _x("aten::empty", "cpu_op", 1250, 10),  # 001.250 - 001.260
        _x(BWD_FRAME, "cpu_op", 5000, 2000),  # 005.000 - 007.000
        _x("ConvolutionBackward0", "cpu_op", 5010, 1980),
        _x("aten::convolution_backward", "cpu_op", 5020, 1960),  # 005.020 - 006.980
        _x("aten::copy_", "cpu_op", 5400, 50, tid=2),  # 005.400 - 005.450, another thread
        _x("aten::addmm", "cpu_op", 6000, 100, tid=2),  # 006.000 - 006.100
    ],
}
TEMPLATE = (
    "onednn_verbose,v1,primitive,info,template:timestamp,operation,engine,primitive,implementation,"
    "prop_kind,memory_descriptors,attributes,auxiliary,problem_desc,exec_time"
)
F32 = "src:f32::blocked:abcd::f0 dst:f32::blocked:aBcd16b::f0"
ROWS = [  # (ms after the base, kind, prop_kind, exec ms)
    ("001.300000", "reorder", "undef", "0.1"),  # in mkldnn_convolution, after aten::empty ended
    ("001.500000", "convolution", "forward_training", "1.0"),
    ("001.255000", "reorder", "undef", "0.001"),  # inside aten::empty: the innermost op wins
    ("005.420000", "convolution", "backward_data", "0.5"),  # thread 2's copy_ also holds it
    ("006.050000", "matmul", "undef", "0.04"),  # thread 2's addmm and thread 1's conv backward
    ("010.000000", "reorder", "undef", "0.2"),  # after the trace window
    ("001.050000", "reorder", "undef", "0.05"),  # in the conv1 region, before any op
]


def _log(offset_ms: int = 0):
    lines = [TEMPLATE]
    for at, kind, prop, ms in ROWS:
        stamp = f"{1795408483000 + offset_ms + int(at[:3])}.{at[4:]}"
        lines.append(
            f"onednn_verbose,v1,{stamp},primitive,exec,cpu,{kind},jit:uni,{prop},{F32},,,2x16x28x28,{ms}"
        )
    return parse_onednn_log("\n".join(lines))


def test_primitives_land_on_the_innermost_op_and_region():
    result = attribute(_log(), parse_kineto_trace(TRACE))
    got = [(a.op_name, a.region, a.thread, a.backward, a.ambiguous) for a in result.items]
    assert got == [
        ("aten::mkldnn_convolution", "conv1", (9, 1), False, False),
        ("aten::mkldnn_convolution", "conv1", (9, 1), False, False),
        ("aten::empty", "conv1", (9, 1), False, False),
        # Both threads hold it: the oneDNN-dispatching op wins over the shorter aten::copy_.
        ("aten::convolution_backward", None, (9, 1), True, True),
        # Both candidates dispatch to oneDNN: the shorter one wins.
        ("aten::addmm", None, (9, 2), False, True),
        (None, None, None, False, False),
        (None, "conv1", (9, 1), False, False),
    ]
    assert result.total_ms == pytest.approx(1.891)
    assert result.attributed_ms == pytest.approx(1.641)
    assert result.in_window_ms == pytest.approx(1.691)
    assert result.fraction == pytest.approx(1.641 / 1.891)
    assert result.fraction_in_window == pytest.approx(1.641 / 1.691)
    assert result.ambiguous == 2 and result.warnings == ["2 primitive(s) overlapped ops on several threads"]
    by_op = {k: (b.calls, round(b.time_ms, 6)) for k, b in result.time_by_op().items()}
    assert by_op == {
        "aten::mkldnn_convolution": (2, 1.1),
        "aten::convolution_backward": (1, 0.5),
        "aten::addmm": (1, 0.04),
        "aten::empty": (1, 0.001),
    }
    assert {k: b.calls for k, b in result.time_by_region().items()} == {"conv1": 3, None: 2}
    assert {k: round(b.time_ms, 6) for k, b in result.time_by_phase().items()} == {
        "forward": 1.141,
        "backward": 0.5,
    }
    assert [p.line for p in result.unattributed()] == [7, 8]


def test_clock_offset_is_applied_and_a_disjoint_pair_warns():
    trace = parse_kineto_trace(TRACE)
    shifted = _log(offset_ms=1000)
    disjoint = attribute(shifted, trace)
    assert disjoint.attributed_ms == 0 and disjoint.in_window_ms == 0
    assert "no oneDNN timestamp falls inside the trace window" in disjoint.warnings[0]
    realigned = attribute(shifted, trace, offset_ns=-1_000_000_000)
    assert realigned.attributed_ms == pytest.approx(1.641)


def test_log_without_timestamps_cannot_be_joined():
    row = f"onednn_verbose,v1,primitive,exec,cpu,reorder,jit:uni,undef,{F32},,,2x16x28x28,0.1"
    with pytest.raises(AttributionError, match="no timestamps") as err:
        attribute(parse_onednn_log(row), parse_kineto_trace(TRACE))
    assert "ONEDNN_VERBOSE_TIMESTAMP=1" in err.value.hint
