"""Time by module (forward in the module's span, backward through the autograd sequence number),
by input shape, and the step time outside ops, on a hand-written trace with exact numbers."""

from __future__ import annotations

import pytest

from mlgauge.profiler.breakdown import NO_MODULE, by_module, by_shape, outside_ops, self_times
from mlgauge.profiler.kineto import parse_kineto_trace
from mlgauge.profiler.summary import summarize

SEQ = "Sequence number"


def _x(name, cat, ts, dur, **args):
    return {"ph": "X", "cat": cat, "name": name, "pid": 1, "tid": 1, "ts": ts, "dur": dur, "args": args}


def _trace():
    conv_dims = {"Input Dims": [[2, 3, 8, 8], [4, 3, 3, 3], []], "Input type": ["float", "float", "ScalarList"]}
    events = [
        _x("ProfilerStep#3", "user_annotation", 0, 1000),
        _x("nn.Module: Net", "user_annotation", 10, 400),
        _x("nn.Module: Net.conv", "user_annotation", 20, 200),
        _x("aten::conv2d", "cpu_op", 30, 150, **{SEQ: 7}, **conv_dims),
        _x("aten::mkldnn_convolution", "cpu_op", 40, 100, **conv_dims),  # conv2d's self time: 50
        _x("nn.Module: Net.fc", "user_annotation", 250, 100),
        _x("aten::addmm", "cpu_op", 260, 80, **{SEQ: 8}),
        _x("aten::relu", "cpu_op", 360, 20, **{SEQ: 9}),  # in Net, outside its children
        _x("aten::mse_loss", "cpu_op", 450, 30, **{SEQ: 10}),  # the loss: outside modules
        _x("autograd::engine::evaluate_function: AddmmBackward0", "cpu_op", 500, 100, **{SEQ: 8}),
        _x("aten::mm", "cpu_op", 510, 70),
        _x("autograd::engine::evaluate_function: ConvolutionBackward0", "cpu_op", 620, 200, **{SEQ: 7}),
        _x("aten::convolution_backward", "cpu_op", 630, 180),
        _x("autograd::engine::evaluate_function: MseLossBackward0", "cpu_op", 830, 20, **{SEQ: 10}),
        _x("Optimizer.step#SGD.step", "user_annotation", 900, 90),
        _x("aten::add_", "cpu_op", 910, 40),
    ]
    return parse_kineto_trace({"baseTimeNanoseconds": 0, "traceEvents": events})


def test_forward_goes_to_the_innermost_module_and_backward_follows_the_sequence_number():
    trace = _trace()
    ops = trace.ops()
    spans = [e for e in trace.events if e.name.startswith("nn.Module: ")]
    rows = by_module(ops, trace, self_times(ops, trace), spans)
    ms = {name: (r["forward_ms"] * 1e3, r["backward_ms"] * 1e3, r["calls"]) for name, r in rows.items()}
    assert ms["Net.conv"] == pytest.approx((150, 200, 1))  # conv2d 50 + mkldnn 100; frame 20 + backward 180
    assert ms["Net.fc"] == pytest.approx((80, 100, 1))
    assert ms["Net"] == pytest.approx((20, 0, 1))
    assert ms[NO_MODULE] == pytest.approx((70, 20, 0))  # mse_loss 30 + optimizer add_ 40; its backward 20
    assert sum(f + b for f, b, _ in ms.values()) == pytest.approx(sum(self_times(ops, trace).values()) / 1e3)
    assert list(rows)[0] == "Net.conv"
    assert by_module(ops, trace, self_times(ops, trace), []) == {}  # no module spans: no breakdown


def test_shapes_group_self_time_by_op_and_input_dims():
    trace = _trace()
    rows = by_shape(trace.ops(), self_times(trace.ops(), trace))
    assert rows[0] == {"op": "aten::mkldnn_convolution", "dims": "[[2, 3, 8, 8], [4, 3, 3, 3]]", "calls": 1,
                       "ms": pytest.approx(0.1)}  # fmt: skip
    assert [r["op"] for r in rows] == ["aten::mkldnn_convolution", "aten::conv2d"]  # ops without dims left out


def test_time_outside_ops_is_told_by_what_it_was_inside():
    trace = _trace()
    windows = [e for e in trace.events if e.name.startswith("ProfilerStep#")]
    gaps = {k: round(v * 1e3) for k, v in outside_ops(trace, windows).items()}
    # ops cover 30-180, 260-340, 360-380, 450-480, 500-600, 620-820, 830-850, 910-950 of the 0-1000 step
    # step loop: 0-10, 410-450, 480-500, 600-620, 820-830, 850-900, 990-1000; module code: 10-30 (Net,
    # Net.conv), 180-260 (Net.conv, Net, Net.fc), 340-360 (Net.fc, Net), 380-410 (Net); optimizer 900-910, 950-990
    assert gaps == {"step loop": 160, "module forward code": 150, "optimizer step": 50}
    summary = summarize(trace)
    assert summary.coverage == pytest.approx(0.64)
    assert summary.coverage + sum(summary.outside_ops.values()) / summary.profiled_ms == pytest.approx(1.0)
    assert "nn.Module: Net" not in summary.regions and "Net.fc" in summary.modules
