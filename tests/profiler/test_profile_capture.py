"""A real capture (conftest.conv_capture): its primitives, costs and attribution."""

from __future__ import annotations

from mlgauge.profiler.attribute import attribute
from mlgauge.profiler.costs import event_cost
from mlgauge.profiler.kineto import load_kineto_trace
from mlgauge.profiler.onednn import load_onednn_log

CONV_FLOPS = 2 * 2 * 32 * 28 * 28 * 16 * 3 * 3


def test_real_capture_joins_conv_primitives_to_convolution_ops(conv_capture):
    trace_path, log_path = conv_capture
    log = load_onednn_log(log_path)
    convs = [p for p in log.primitives if p.kind == "convolution"]
    assert {p.direction for p in convs} >= {"forward", "backward_data", "backward_weights"}
    assert all(p.flops == CONV_FLOPS and p.start_ns is not None for p in convs)
    assert log.version and log.version.startswith("3.") and log.warnings == []

    trace = load_kineto_trace(trace_path)
    result = attribute(log, trace)
    conv_ms = sum(a.primitive.exec_time_ms for a in result.items if a.op and "convolution" in a.op.name)
    assert conv_ms >= 0.9 * result.total_ms, result.time_by_op()
    assert {a.region for a in result.items if a.op} == {"conv_step"}
    assert any(a.backward for a in result.items) and any(not a.backward for a in result.items if a.op)
    # the trace's own args (strides, padding) give the cost model the same FLOPs as oneDNN's problem string
    conv_ops = [e for e in trace.ops() if e.name == "aten::convolution"]
    assert conv_ops and event_cost(conv_ops[0].name, conv_ops[0].args).flops == CONV_FLOPS
