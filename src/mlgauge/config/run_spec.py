"""The typed description of one LoadGen run: everything a worker process needs.

It crosses the process boundary as JSON, so it holds plain values only and
building it has no side effects.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from mlgauge.rules import DEFAULT_ROUND

MODES = ("performance", "accuracy")
PRECISIONS = ("fp32", "int8")
AUDITS = ("TEST01", "TEST04")  # LoadGen compliance tests mlgauge runs


@dataclass(frozen=True)
class RunSpec:
    task: str
    scenario: str
    mode: str
    backend: str
    out_dir: str
    style: str = "quick"
    rules_round: str = DEFAULT_ROUND
    dataset_path: str | None = None
    weights_path: str | None = None
    count: int | None = None
    conf_path: str | None = None  # the user's user.conf
    flags: dict[str, float] = field(default_factory=dict)  # user.conf keys set by CLI flags
    threads: int = 0  # intra-op threads per worker; 0 = per-scenario default
    device: str = "cpu"
    compile: bool = False
    max_batch: int = 0  # 0 = the backend's default (32 for model backends)
    workers: int = 0  # 0 = per-scenario default
    max_wait_ms: float = 1.0
    calibration_s: float = 1.0  # untimed probe of the backend before the test
    raw_after_s: float = 0.0  # Offline/Server: measure raw batched throughput again after the test
    run_id: str = ""
    precision: str = "fp32"  # "int8": post-training quantization, where the backend supports it
    audit: str = ""  # a compliance test (TEST01, TEST04) run through LoadGen's audit.config
    model_options: dict = field(default_factory=dict)  # what changes the task's model (DLRM's embedding)

    def with_(self, **changes) -> RunSpec:
        return replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        return cls(**json.loads(text))

    @property
    def label(self) -> str:
        return f"{self.task} {self.scenario} {self.audit or self.mode}"

    @property
    def out_path(self) -> Path:
        return Path(self.out_dir)
