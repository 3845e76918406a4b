"""What one training run measured: time to train to a quality target, the MLPerf Training way.

Kept apart from inference's ResultRecord because the two answer different questions
(how long to reach a quality vs how fast under a load), but built on the same habits:
the raw facts (every evaluation, the log file, the seed, the configuration) are stored
next to the headline number, so a set can be re-scored later without re-training.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mlgauge.results.json_record import JsonRecord

TRAINING_RECORD_SCHEMA = 1


@dataclass
class TrainingRecord(JsonRecord):
    benchmark: str  # the MLPerf log name: "resnet", "ssd", "dlrm_dcnv2"
    dataset: str  # "synthetic" or the real dataset's name
    division: str  # "closed" (the reference configuration) or "open"
    status: str  # "success" | "aborted" (run_stop's status) | "failed" (the run never logged run_stop)
    reason: str  # why a run was aborted or failed; "" on success
    time_to_train_s: float | None  # run_stop - run_start from the log; None when the run failed
    epochs: float | None  # epochs (or fractions of one) when it stopped
    samples: int | None  # training samples seen, counted over every rank
    seed: int
    quality: dict  # {"metric", "target", "value" (the last evaluation), "higher_is_better"}
    evals: list[dict]  # every evaluation: {"epoch", "samples", "seconds", "value"}
    config: dict  # global batch size, world size, optimizer and its hyperparameters, device
    log_path: str  # the mllog file
    system: dict
    run_id: str = ""  # the N-run set this run belongs to
    run_index: int = 0  # its place in the set, from 0
    record_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))
    schema: int = TRAINING_RECORD_SCHEMA

    @property
    def converged(self) -> bool:
        return self.status == "success"

    def save(self, folder: Path) -> Path:
        """Write ``training_record.json`` next to the log."""
        return self._write(folder, "training_record.json")
