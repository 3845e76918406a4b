"""The model a Tiny device runs, and the inference function the host device serves with any backend.

A device's ``th_results`` prints what the reference firmware prints: the softmax probabilities of
the classifiers, and for ad01 one anomaly score per window (the reconstruction error). Both are
part of the served module, so every backend (ONNX Runtime with or without INT8, PyTorch,
ExecuTorch) computes the same thing from the same bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mlgauge.backends import get_backend_class
from mlgauge.backends.base import Backend, BackendOptions
from mlgauge.tasks.base import ModelSource
from mlgauge.tensors import TensorSpec
from mlgauge.tiny.inputs import InputCodec


class Probabilities(nn.Module):
    """The classifier ending in softmax, as the Keras references do."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=-1)


class AnomalyScore(nn.Module):
    """ad01's score: the mean squared reconstruction error of the standardised window.

    The mean and spread of the training windows are buffers of the module, so the device is sent
    the raw log-mel window as the rules have it and standardises it as the model's first step.
    """

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean.detach().clone().float())
        self.register_buffer("std", std.detach().clone().float())

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.standardise(x)
        return ((self.model(z) - z) ** 2).mean(dim=-1, keepdim=True)


def weights_digest(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def model_source(benchmark: str, served: nn.Module, codec: InputCodec, calibration: np.ndarray) -> ModelSource:
    """What a backend loads; its INT8 quantization calibrates on ``calibration`` (device samples)."""
    served = served.eval()
    return ModelSource(
        name=f"tiny-{benchmark}",
        inputs=(TensorSpec("input", codec.model_shape),),
        outputs=(TensorSpec("output", (-1,)),),
        cache_key=f"tiny-{benchmark}-{weights_digest(served)}",
        build=lambda: served,
        calibration=lambda: codec.to_model(calibration),
    )


def load_backend(name: str, source: ModelSource, precision: str, threads: int = 1) -> Backend:
    """One backend instance for the device: a microcontroller runs one inference at a time, so
    the host device does too, on ``threads`` intra-op threads."""
    backend = get_backend_class(name)(BackendOptions(threads=threads, precision=precision))
    backend.load(source)
    return backend


@dataclass(frozen=True)
class ServedModel:
    """What the host device runs, in the board's two stages: ``prepare`` is th_load_tensor (device
    bytes -> the model's input, once per loaded input, untimed), ``infer`` is th_infer (the timed
    part). Called with bytes it does both, for accuracy runs."""

    prepare: Callable[[bytes], np.ndarray]
    infer: Callable[[np.ndarray], np.ndarray]

    def __call__(self, data: bytes) -> list[float]:
        return self.infer(self.prepare(data)).tolist()


def infer_function(backend: Backend, codec: InputCodec) -> ServedModel:
    """bytes -> the output vector: what th_load_tensor, th_infer and th_results do on a board."""
    return ServedModel(
        prepare=lambda data: codec.to_model(codec.from_bytes(data)),
        infer=lambda x: np.asarray(backend.run(x)).reshape(-1),
    )


def run_batches(backend: Backend, codec: InputCodec, samples: np.ndarray, batch: int = 64) -> np.ndarray:
    """Outputs for many device samples at once: the accuracy run on the host's backend."""
    outs = [np.asarray(backend.run(codec.to_model(samples[i : i + batch]))) for i in range(0, len(samples), batch)]
    return np.concatenate(outs).reshape(len(samples), -1)
