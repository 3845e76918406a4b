"""Kineto Chrome-trace loading on a small hand-written trace shaped like torch.profiler's output."""

from __future__ import annotations

import gzip
import json

import pytest

from mlgauge.errors import DataError
from mlgauge.profiler.kineto import KinetoTraceError, load_kineto_trace, parse_kineto_trace

BASE = 1_790_857_026_000_000_000  # baseTimeNanoseconds as PyTorch 2.13 writes it


def _x(name, cat, ts, dur, tid=11, **args):
    return {"ph": "X", "cat": cat, "name": name, "pid": 7, "tid": tid, "ts": ts, "dur": dur, "args": args}


def trace_dict() -> dict:
    return {
        "schemaVersion": 1,
        "baseTimeNanoseconds": BASE,
        "traceEvents": [
            {"ph": "M", "name": "thread_name", "ts": 0, "pid": 7, "tid": 11, "args": {"name": "python"}},
            _x("step", "user_annotation", 100, 1000),
            _x(
                "aten::conv2d",
                "cpu_op",
                150.5,
                500,
                **{
                    "Input Dims": [[2, 16, 28, 28], [32, 16, 3, 3], []],
                    "Input type": ["float", "float", "ScalarList"],
                    "External id": 3,
                },
            ),  # fmt: skip
            _x("aten::mkldnn_convolution", "cpu_op", 200, 300),
            _x("aten::empty", "cpu_op", 210, 5),
            {"ph": "s", "id": 2, "pid": 7, "tid": 11, "ts": 150.5, "cat": "fwdbwd", "name": "fwdbwd"},
            {
                "ph": "i",
                "s": "t",
                "cat": "cpu_instant_event",
                "name": "[memory]",
                "pid": 7,
                "tid": 11,
                "ts": 220,
            },
            _x("aten::add", "cpu_op", 120, 50, tid=12),
            _x("broken", "cpu_op", 300, None),
            {"ph": "X", "cat": "cpu_op", "ts": 400, "dur": 1, "pid": 7, "tid": 11},  # no name
            {
                "ph": "X",
                "cat": "Trace",
                "name": "PyTorch Profiler (0)",
                "pid": "Spans",
                "tid": "PyTorch Profiler",
                "ts": 90,
                "dur": 2000,
            },  # fmt: skip
        ],
    }


def test_events_are_typed_timed_and_nested():
    trace = parse_kineto_trace(trace_dict())
    assert trace.base_ns == BASE and trace.skipped == 2
    assert trace.warnings == ["2 trace event(s) lacked a name, ts, dur or thread and were skipped"]
    names = [e.name for e in trace.events]
    assert names == ["step", "aten::conv2d", "aten::mkldnn_convolution", "aten::empty", "aten::add"]
    step, conv2d, mkldnn, empty, add = trace.events
    assert (conv2d.start_ns, conv2d.end_ns) == (BASE + 150_500, BASE + 650_500)
    assert conv2d.input_dims == ((2, 16, 28, 28), (32, 16, 3, 3), ())
    assert conv2d.input_types == ("float", "float", "ScalarList") and conv2d.external_id == 3
    assert (step.parent, conv2d.parent, mkldnn.parent, empty.parent, add.parent) == (None, 0, 1, 2, None)
    assert (empty.depth, add.depth, add.tid, step.category) == (3, 0, 12, "user_annotation")
    assert [e.name for e in trace.ancestors(empty)] == [
        "aten::empty",
        "aten::mkldnn_convolution",
        "aten::conv2d",
        "step",
    ]
    assert [e.name for e in trace.ops()] == names[1:]
    assert trace.window_ns == (BASE + 100_000, BASE + 1_100_000)
    assert trace.metadata["schemaVersion"] == 1


def test_innermost_event_at_a_time():
    trace = parse_kineto_trace(trace_dict())
    at = lambda tid, us: getattr(trace.innermost_at((7, tid), BASE + us * 1000), "name", None)  # noqa: E731
    assert at(11, 212) == "aten::empty"
    assert at(11, 400) == "aten::mkldnn_convolution"  # after aten::empty ended
    assert at(11, 600) == "aten::conv2d"
    assert at(11, 900) == "step"
    assert at(11, 50) is None and at(11, 1200) is None
    assert at(12, 130) == "aten::add" and at(12, 400) is None


def test_epoch_time_keeps_sub_microsecond_precision():
    # A real 2.13 event: ts is µs from the base with three decimals; epoch ns must be exact.
    raw = {
        "baseTimeNanoseconds": BASE,
        "traceEvents": [_x("aten::mkldnn_convolution", "cpu_op", 4551457070386.192, 1904.308)],
    }
    (event,) = parse_kineto_trace(raw).events
    assert event.start_ns == 1_795_408_483_070_386_192 and event.duration_ns == 1_904_308


def test_a_child_rounded_a_nanosecond_past_its_parent_still_nests():
    raw = {"baseTimeNanoseconds": BASE, "traceEvents": [
        _x("aten::linear", "cpu_op", 200, 300),  # ends at 500.000 µs
        _x("aten::addmm", "cpu_op", 499.999, 0.002),  # ends at 500.001 µs after float rounding
        _x("aten::relu", "cpu_op", 500.01, 1),  # a sibling after it, not a child
    ]}  # fmt: skip
    linear, addmm, relu = parse_kineto_trace(raw).events
    assert (addmm.parent, relu.parent) == (0, None)


def test_json_and_gzip_files_load_the_same(tmp_path):
    text = json.dumps(trace_dict())
    (tmp_path / "t.json").write_text(text)
    (tmp_path / "t.pt.trace.json.gz").write_bytes(gzip.compress(text.encode()))
    plain, packed = load_kineto_trace(tmp_path / "t.json"), load_kineto_trace(tmp_path / "t.pt.trace.json.gz")
    assert [(e.name, e.start_ns, e.parent) for e in plain.events] == [
        (e.name, e.start_ns, e.parent) for e in packed.events
    ]


def test_missing_base_time_assumes_epoch_microseconds():
    raw = {"traceEvents": [_x("aten::mm", "cpu_op", 1_700_000_000_000_000.5, 10)]}
    trace = parse_kineto_trace(raw)
    assert trace.events[0].start_ns == 1_700_000_000_000_000_500
    assert "no baseTimeNanoseconds" in trace.warnings[0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not valid JSON"),
        (json.dumps(trace_dict()).encode()[:60], "not valid JSON"),  # cut before the first event closed
        (gzip.compress(json.dumps(trace_dict()).encode())[:60], "cannot read the trace"),
        (b'{"traceEvents": []}', "holds no timed events"),
        (b'{"schemaVersion": 1}', "no traceEvents list"),
    ],
)
def test_unreadable_traces_raise_a_data_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(KinetoTraceError, match=message) as err:
        load_kineto_trace(path)
    assert isinstance(err.value, DataError) and err.value.hint


def test_a_truncated_trace_keeps_its_complete_events_with_a_warning(tmp_path):
    text = json.dumps(trace_dict())
    cut = text.index('"name": "aten::mkldnn_convolution"')  # inside the fourth event
    path = tmp_path / "cut.json"
    path.write_text(text[:cut])
    trace = load_kineto_trace(path)
    assert [e.name for e in trace.events] == ["step", "aten::conv2d"]  # the metadata event is not timed
    assert trace.base_ns == BASE
    assert trace.warnings[0].startswith("the trace file is truncated: analysed its first 3 complete events")
