"""PyTorch eager (optionally ``torch.compile``) backend."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from mlgauge.backends.base import BackendOptions
from mlgauge.errors import BackendError, ModelError
from mlgauge.tasks.base import ModelSource
from mlgauge.tensors import Batch


class TorchBackend:
    name: ClassVar[str] = "torch"
    requires: ClassVar[tuple[str, ...]] = ("torch",)

    def __init__(self, options: BackendOptions) -> None:
        self.options = options
        self._model = None

    def _device(self, torch) -> str:
        want = self.options.device
        if want == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if want == "cuda" and not torch.cuda.is_available():
            raise BackendError("device 'cuda' was asked for but torch sees no CUDA GPU", hint="Use --device cpu")
        if want not in ("cpu", "cuda"):
            raise BackendError(f"unknown device '{want}'", hint="Use cpu, cuda or auto")
        return want

    def load(self, model: ModelSource) -> None:
        import torch

        if model.build is None:
            raise ModelError(
                f"the torch backend cannot run {model.onnx_path}: it is an ONNX file",
                hint="Use --backend onnxruntime for ONNX models, or give PyTorch weights",
            )
        if self.options.precision != "fp32":
            raise BackendError(
                f"the torch backend runs fp32 only, not {self.options.precision}",
                hint="Use --backend onnxruntime or --backend executorch for --precision int8",
            )
        torch.set_num_threads(self.options.resolved_threads)
        self._torch = torch
        self.device = self._device(torch)
        module = model.build().to(self.device).eval()
        if self.options.compile:
            module = torch.compile(module)
        self._model = module
        self._input_names = [spec.name for spec in model.inputs]

    def _tensor(self, array: np.ndarray):
        x = self._torch.from_numpy(array)
        return x.to(self.device, non_blocking=True) if self.device != "cpu" else x

    def _numpy(self, out):
        if isinstance(out, (tuple, list)):
            return tuple(self._numpy(o) for o in out)
        out = out.cpu()
        return (out.float() if out.is_floating_point() else out).numpy()

    def run(self, batch: Batch):
        with self._torch.inference_mode():
            if isinstance(batch, dict):  # inputs in the model's call order
                out = self._model(*(self._tensor(batch[name]) for name in self._input_names))
            else:
                out = self._model(self._tensor(batch))
            return self._numpy(out)

    def describe(self) -> dict:
        torch = self._torch
        return {
            "backend": self.name,
            "version": torch.__version__,
            "device": self.device,
            "device_name": torch.cuda.get_device_name() if self.device == "cuda" else None,
            "compile": self.options.compile,
            "threads": torch.get_num_threads(),
        }
