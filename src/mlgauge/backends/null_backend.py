"""The null backend answers at once: it measures the harness and LoadGen, not a model."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from mlgauge.backends.base import BackendOptions
from mlgauge.tasks.base import ModelSource
from mlgauge.tensors import Batch, batch_len


class NullBackend:
    name: ClassVar[str] = "null"
    requires: ClassVar[tuple[str, ...]] = ()
    # With no model cost, per-batch overhead is all there is: bigger batches measure the harness at its best.
    default_max_batch: ClassVar[int] = 512
    # All of its work is Python under the GIL: a second instance only contends for it.
    default_workers: ClassVar[int] = 1

    def __init__(self, options: BackendOptions) -> None:
        self.options = options

    def load(self, model: ModelSource) -> None:
        self._model_name = model.name
        self._outputs = model.outputs

    def run(self, batch: Batch):
        # Zeros shaped like the model's outputs: any task's post-processing turns them into a (wrong) answer.
        n = batch_len(batch)
        if not self._outputs:
            return np.zeros((n, 1), dtype=np.float32)
        outs = tuple(spec.empty(n) for spec in self._outputs)
        return outs[0] if len(outs) == 1 else outs

    def describe(self) -> dict:
        return {"backend": self.name, "version": "-", "device": "none", "model": self._model_name}
