"""The backend protocol: load a model, run a batch. Nothing else.

Backends are plug-ins registered under the ``mlgauge.backends`` entry-point
group; a backend module imports its framework lazily (in ``load``), so listing
backends stays cheap.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import ClassVar, Protocol

import numpy as np

from mlgauge.tasks.base import ModelSource


@dataclass(frozen=True)
class BackendOptions:
    threads: int = 0  # intra-op threads; 0 = one per available core
    device: str = "cpu"  # "cpu", "cuda" or "auto"
    compile: bool = False  # torch.compile (torch backend)
    precision: str = "fp32"  # "fp32", or "int8" for post-training quantization where a backend supports it

    @property
    def resolved_threads(self) -> int:
        if self.threads > 0:
            return self.threads
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:
            return os.cpu_count() or 1

    def to_dict(self) -> dict:
        return asdict(self)


class Backend(Protocol):
    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]]  # importable modules it needs, to tell "not installed" early
    default_max_batch: ClassVar[int]  # optional; batching SUTs fall back to 32
    default_workers: ClassVar[int]  # optional; batching SUTs fall back to one instance per core

    def __init__(self, options: BackendOptions) -> None: ...

    def load(self, model: ModelSource) -> None:
        """Prepare the model; raise ModelError/BackendError with a fix on failure."""
        ...

    def run(self, batch: np.ndarray) -> np.ndarray:
        """``(B, *input_shape)`` -> model outputs ``(B, ...)``; thread-safe."""
        ...

    def describe(self) -> dict:
        """Framework version, device, providers, threads: goes into every result record."""
        ...
