"""The one result record type: what a single LoadGen run measured, and why it is (in)valid.

A record keeps the raw facts (percentiles, effective settings, the log folder)
next to the headline metric so it can be re-judged later without re-running.
It knows nothing about how it will be shown or stored.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mlgauge.results.json_record import JsonRecord

RECORD_SCHEMA = 1


@dataclass(frozen=True)
class Metric:
    key: str  # the LoadGen detail-log key it came from
    name: str  # human name, e.g. "p90 latency (early stopping)"
    value: float
    unit: str  # "ns", "samples/s"
    higher_is_better: bool


@dataclass
class ResultRecord(JsonRecord):
    task: str
    benchmark: str
    dataset: str  # "synthetic" or the real dataset's name
    scenario: str
    mode: str  # "performance" | "accuracy"
    style: str  # "quick" | "valid"
    backend: str
    backend_info: dict
    log_dir: str
    settings: dict  # effective_* values from the detail log, plus where each came from
    system: dict
    metric: Metric | None = None  # performance mode only
    validity: str | None = None  # "VALID" | "INVALID", performance mode only
    invalid_reasons: list[str] = field(default_factory=list)
    latency_ns: dict = field(default_factory=dict)  # "min", "mean", "max", "p50", "p90", ...
    early_stopping: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)  # other result_* values (query counts, qps ...)
    accuracy: dict | None = None  # AccuracyResult.to_dict(), accuracy mode
    loadgen_errors: list[str] = field(default_factory=list)
    loadgen_warnings: list[str] = field(default_factory=list)
    harness: dict = field(default_factory=dict)  # SUT shape: batch sizes, workers, calibration
    audit: str = ""  # compliance test this run was (TEST01, TEST04), or "" for a normal run
    precision: str = "fp32"  # "int8": the backend quantized the model after training
    model_options: dict = field(default_factory=dict)  # what changed the task's model (DLRM's embedding)
    compliance: dict | None = None  # the audit's verdict: {"test", "passed", "checks": [...]}
    energy: dict | None = None  # {"meter", "joules", "average_watts", ...}; None: no meter measured the run
    run_id: str = ""
    record_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    schema: int = RECORD_SCHEMA

    @property
    def accuracy_passed(self) -> bool | None:
        return None if self.accuracy is None else bool(self.accuracy["passed"])

    def save(self, folder: Path) -> Path:
        """Write ``record.json`` into the run's log folder."""
        return self._write(folder, "record.json")

    @classmethod
    def from_dict(cls, data: dict) -> ResultRecord:
        data = dict(data)
        if data.get("metric") is not None:
            data["metric"] = Metric(**data["metric"])
        return super().from_dict(data)
