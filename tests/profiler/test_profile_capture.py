"""A real capture: a small conv forward + backward under torch.profiler with oneDNN verbose on,
run in a subprocess so that oneDNN's stdout goes to a file rather than into pytest."""

from __future__ import annotations

import os
import subprocess
import sys

from mlgauge.profiler.attribute import attribute
from mlgauge.profiler.costs import event_cost
from mlgauge.profiler.kineto import load_kineto_trace
from mlgauge.profiler.onednn import load_onednn_log

# fp32 NCHW 2x16x28x28 with 32 3x3 filters goes through aten::mkldnn_convolution on PyTorch 2.13
# (smaller convs can fall back to aten::thnn_conv2d, which oneDNN never sees).
SCRIPT = """
import sys
import torch
from torch.profiler import ProfilerActivity, profile, record_function

torch.manual_seed(0)
conv = torch.nn.Conv2d(16, 32, 3, padding=1)
x = torch.randn(2, 16, 28, 28, requires_grad=True)
with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
    with record_function("conv_step"):
        conv(x).sum().backward()
prof.export_chrome_trace(sys.argv[1])
"""
CONV_FLOPS = 2 * 2 * 32 * 28 * 28 * 16 * 3 * 3


def test_real_capture_joins_conv_primitives_to_convolution_ops(tmp_path):
    trace_path, log_path = tmp_path / "trace.json", tmp_path / "verbose.log"
    # oneDNN reads these once, when it loads: they must be in the environment before torch is imported.
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "ONEDNN_VERBOSE_TIMESTAMP": "1"}
    with log_path.open("w") as out:
        done = subprocess.run([sys.executable, "-c", SCRIPT, str(trace_path)], stdout=out,
                              stderr=subprocess.PIPE, text=True, env=env, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]

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
