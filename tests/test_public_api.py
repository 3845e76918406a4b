"""The public API is small and named in one place."""

from __future__ import annotations

import subprocess
import sys

import mlgauge

EXPECTED = {
    "__version__",
    "plan_inference",
    "run_inference",
    "prepare",
    "ResultRecord",
    "Metric",
    "ResultStore",
    "describe_system",
    "get_task",
    "task_names",
    "backend_names",
    "inference_rules",
    "MlgaugeError",
    "UsageError",
    "ConfigError",
    "DataError",
    "ModelError",
    "BackendError",
    "OutputError",
    "WorkerError",
    "RunError",
}


def test_all_names_the_public_api():
    assert set(mlgauge.__all__) == EXPECTED


def test_every_public_name_resolves():
    for name in mlgauge.__all__:
        assert getattr(mlgauge, name) is not None


def test_errors_share_one_base():
    for name in ("UsageError", "ConfigError", "DataError", "ModelError", "BackendError", "OutputError", "WorkerError", "RunError"):
        assert issubclass(getattr(mlgauge, name), mlgauge.MlgaugeError)


def test_import_is_cheap():
    # Worker processes import mlgauge first; the heavy frameworks must wait until needed.
    code = "import sys, mlgauge; print(sorted(m for m in ('torch', 'onnxruntime', 'mlperf_loadgen') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
