"""What a benchmark task is: data as a LoadGen sample library, a model, a metric.

A *Task* is the catalogue entry (``resnet50``). Binding it to a data source gives
a *Workload*: the concrete dataset (real files or the synthetic stand-in), the
model to run on it, the response format and the quality target that applies.
Workers rebuild the workload from plain values (task name, paths), so nothing
here may depend on process state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from mlgauge.rules import QualityTarget


@dataclass(frozen=True)
class AccuracyResult:
    metric: str
    value: float
    unit: str
    samples: int
    target: QualityTarget
    details: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.target.passed(self.value)

    def to_dict(self) -> dict:
        return {
            "metric": self.metric,
            "value": self.value,
            "unit": self.unit,
            "samples": self.samples,
            "passed": self.passed,
            "target": self.target.to_dict(),
            "details": self.details,
        }


@runtime_checkable
class SampleSource(Protocol):
    """Dataset access in the shape LoadGen's QSL needs: load samples by index."""

    label: str  # which data a result used: "synthetic" or the real dataset's name
    total_count: int
    performance_count: int
    sample_shape: tuple[int, ...]
    sample_dtype: np.dtype

    def load(self, indices: Sequence[int]) -> np.ndarray:
        """Preprocessed samples, shape ``(len(indices), *sample_shape)``."""
        ...

    def ground_truth(self) -> np.ndarray:
        """One label per sample index, for the accuracy metric."""
        ...


@dataclass(frozen=True)
class ModelSource:
    """How to obtain the model a backend runs.

    ``build`` makes the PyTorch module (weights loaded, eval mode) when the model
    is defined in PyTorch; ``onnx_path`` is set when the user gave an ONNX file.
    ``cache_key`` identifies architecture + weights, for exported-model caches.
    """

    name: str
    input_shape: tuple[int, ...]  # one sample, without the batch dimension
    cache_key: str
    build: Callable[[], object] | None = None
    onnx_path: Path | None = None
    weights_path: Path | None = None


@dataclass
class Workload:
    """A task bound to its data and model: everything a benchmark worker needs."""

    task: str
    benchmark: str  # key in the rule data, and the model name in user.conf lines
    dataset: SampleSource
    model: ModelSource
    quality: QualityTarget
    response_dtype: np.dtype
    postprocess: Callable[[np.ndarray], np.ndarray]  # model outputs (B, ...) -> responses (B,)
    score: Callable[[dict[int, np.ndarray]], AccuracyResult]  # qsl_idx -> decoded response


class Task(Protocol):
    name: str
    title: str

    def workload(
        self,
        dataset_path: Path | None = None,
        weights_path: Path | None = None,
        count: int | None = None,
        round: str = ...,
    ) -> Workload:
        """Bind to real data (``dataset_path``) or to the prepared synthetic stand-in;
        ``count`` keeps only the first samples."""
        ...

    def is_prepared(self) -> bool:
        """Whether the synthetic stand-in's data and weights are in the cache."""
        ...

    def prepare(self, progress: Callable[[str, float], None] | None = None) -> dict:
        """Generate the synthetic data and train its weights once; returns a summary."""
        ...
