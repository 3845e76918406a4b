"""What one MLPerf Tiny benchmark run measured: accuracy, median throughput and energy on one device.

Its own record type, beside inference's ResultRecord and training's TrainingRecord, because a Tiny
result is a different object: one device, one model id, the median of timed windows measured over
the runner<->device protocol rather than LoadGen's queries. The raw windows are kept next to the
medians so a run can be re-judged later.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mlgauge.results.json_record import JsonRecord

TINY_RECORD_SCHEMA = 1


@dataclass
class TinyRecord(JsonRecord):
    benchmark: str  # the model id: kws01, vww01, ic01, ad01
    dataset: str  # "synthetic" or the real dataset's name
    precision: str  # "int8" (post-training quantized) or "fp32"
    backend: str  # what runs the model on the host device ("onnxruntime", "torch" ...), or "device" for a board
    backend_info: dict
    device: dict  # {"url", "transport" ("tcp", "pty", "serial"), "name", "profile", "model"}
    style: str  # "valid" (the rule's windows) or "quick" (shortened, never a valid result)
    valid: bool  # every window met the rule's minimums and the accuracy met the target
    invalid_reasons: list[str]
    # {"metric", "value", "target", "passed", "samples", "path"}: path is "device" (over the protocol)
    # or "host" (the host device's inference function called directly on the same bytes)
    accuracy: dict
    # {"median_inferences_per_s", "latency_ms", "windows": [{"inferences", "seconds", "inferences_per_s",
    #  "energy_uj_per_inference", "meter"}]}
    performance: dict
    # {"median_uj_per_inference", "meter"} from a real meter, or None with energy_note saying why not
    energy: dict | None
    energy_note: str
    # how the model came to be: {"source": "trained"|"weights", "epochs", "seconds", "recipe", "fp32_accuracy",
    #  "calibration_samples", "cached"}
    model: dict
    system: dict
    run_id: str = ""
    record_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))
    schema: int = TINY_RECORD_SCHEMA

    @property
    def inferences_per_s(self) -> float | None:
        return self.performance.get("median_inferences_per_s")

    @property
    def energy_uj(self) -> float | None:
        return None if self.energy is None else self.energy.get("median_uj_per_inference")

    def save(self, folder: Path) -> Path:
        """Write ``tiny_record_<benchmark>.json`` into the run's folder."""
        return self._write(folder, f"tiny_record_{self.benchmark}.json")
