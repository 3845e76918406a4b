"""One real capture shared by the profiler tests: a small conv forward + backward under
torch.profiler with oneDNN verbose on, run in a subprocess so that oneDNN's stdout goes to a file
rather than into pytest."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# fp32 NCHW 2x16x28x28 with 32 3x3 filters goes through aten::mkldnn_convolution on PyTorch 2.13
# (smaller convs can fall back to aten::thnn_conv2d, which oneDNN never sees).
CONV_SCRIPT = """
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


@pytest.fixture(scope="session")
def conv_capture(tmp_path_factory) -> tuple[Path, Path]:
    """(trace.json, the oneDNN verbose log) of CONV_SCRIPT; read them, never write them."""
    folder = tmp_path_factory.mktemp("conv_capture")
    trace_path, log_path = folder / "trace.json", folder / "verbose.log"
    # oneDNN reads these once, when it loads: they must be in the environment before torch is imported.
    env = {**os.environ, "ONEDNN_VERBOSE": "1", "ONEDNN_VERBOSE_TIMESTAMP": "1"}
    with log_path.open("w") as out:
        done = subprocess.run([sys.executable, "-c", CONV_SCRIPT, str(trace_path)], stdout=out,
                              stderr=subprocess.PIPE, text=True, env=env, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return trace_path, log_path
