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
from mlgauge.tensors import Batch, TensorSpec


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

    def load(self, indices: Sequence[int]) -> Batch:
        """Preprocessed samples: one ``(len(indices), ...)`` array, or a dict of them
        keyed by model input name for multi-input models."""
        ...

    def ground_truth(self) -> object:
        """What the accuracy metric compares against (labels, boxes, answers ...)."""
        ...


@dataclass(frozen=True)
class ModelSource:
    """How to obtain the model a backend runs.

    ``build`` makes the PyTorch module (weights loaded, eval mode) when the model
    is defined in PyTorch; ``onnx_path``/``tflite_path``/``pte_path`` are set when
    the user gave a ready-made file. ``inputs`` name the model's inputs in call
    order (a single input is fed as an array, several as a dict); ``outputs``
    describe what it returns, per sample. ``cache_key`` identifies architecture
    + weights, for exported-model caches.
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    cache_key: str
    outputs: tuple[TensorSpec, ...] = ()
    build: Callable[[], object] | None = None
    onnx_path: Path | None = None
    tflite_path: Path | None = None
    pte_path: Path | None = None
    weights_path: Path | None = None
    # Samples from the task's calibration split, for INT8 post-training quantization.
    calibration: Callable[[], Batch] | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of the first input, per sample."""
        return self.inputs[0].shape

    def example(self, n: int) -> Batch:
        """A zero batch of ``n`` samples in the model's input layout."""
        if len(self.inputs) == 1:
            return self.inputs[0].empty(n)
        return {spec.name: spec.empty(n) for spec in self.inputs}


@dataclass
class Workload:
    """A task bound to its data and model: everything a benchmark worker needs."""

    task: str
    benchmark: str  # key in the rule data, and the model name in user.conf lines
    dataset: SampleSource
    model: ModelSource
    quality: QualityTarget
    response_dtype: np.dtype
    # (model outputs, the batch's QSL indices) -> responses: one (B, ...) array, or a
    # list of B arrays when sizes vary. Most tasks ignore the indices; detection
    # writes them into its responses as MLPerf's layout asks.
    postprocess: Callable[[object, Sequence[int]], np.ndarray | list[np.ndarray]]
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
