"""mlgauge: fair, reproducible ML performance measurement, the MLPerf way.

The public API is the names below; everything else is implementation. Names
are resolved lazily so that ``import mlgauge`` stays cheap in worker processes.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "plan_inference": "mlgauge.inference",
    "run_inference": "mlgauge.inference",
    "prepare": "mlgauge.inference",
    "ResultRecord": "mlgauge.results.record",
    "Metric": "mlgauge.results.record",
    "ResultStore": "mlgauge.results.store",
    "describe_system": "mlgauge.results.system",
    "get_task": "mlgauge.tasks",
    "task_names": "mlgauge.tasks",
    "backend_names": "mlgauge.backends",
    "inference_rules": "mlgauge.rules",
    "MlgaugeError": "mlgauge.errors",
    "UsageError": "mlgauge.errors",
    "ConfigError": "mlgauge.errors",
    "DataError": "mlgauge.errors",
    "ModelError": "mlgauge.errors",
    "BackendError": "mlgauge.errors",
    "OutputError": "mlgauge.errors",
    "WorkerError": "mlgauge.errors",
    "RunError": "mlgauge.errors",
}

__all__ = ["__version__", *sorted(_API)]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'mlgauge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
