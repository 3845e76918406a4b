"""ONNX Runtime backend: CPU execution provider, CUDA when a GPU is present.

A PyTorch-defined model is exported to ONNX once (torch.export-based exporter,
dynamic batch) and cached by architecture + weights + torch version.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np

from mlgauge import paths
from mlgauge.backends.base import BackendOptions
from mlgauge.errors import BackendError, ModelError
from mlgauge.tasks.base import ModelSource

OPSET = 18


def exported_onnx_path(model: ModelSource) -> Path:
    import torch

    return paths.cache_dir() / "onnx" / f"{model.cache_key}-torch{torch.__version__}-opset{OPSET}.onnx"


def export_to_onnx(model: ModelSource) -> Path:
    """Export once, cache, and return the path; the file appears atomically."""
    target = exported_onnx_path(model)
    if target.is_file():
        return target
    import torch

    module = model.build()
    example = torch.zeros((2, *model.input_shape), dtype=torch.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".export-", suffix=".onnx", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # The exporter narrates every step on stdout/stderr and through logging; a benchmark run should not.
    quiet = io.StringIO()
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                (example,),
                input_names=["input"],
                output_names=["output"],
                dynamic_shapes=({0: torch.export.Dim.DYNAMIC},),
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
            )
            program.save(str(tmp))
        os.replace(tmp, target)
    except Exception as exc:
        raise ModelError(f"exporting {model.name} to ONNX failed: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    finally:
        logging.disable(previous)
        tmp.unlink(missing_ok=True)
    return target


class OnnxRuntimeBackend:
    name: ClassVar[str] = "onnxruntime"
    requires: ClassVar[tuple[str, ...]] = ("onnxruntime",)

    def __init__(self, options: BackendOptions) -> None:
        self.options = options
        self._session = None

    def _providers(self, ort) -> list[str]:
        available = ort.get_available_providers()
        want = self.options.device
        if want == "cuda" and "CUDAExecutionProvider" not in available:
            raise BackendError("device 'cuda' was asked for but ONNX Runtime has no CUDA provider", hint="Use --device cpu or install onnxruntime-gpu")
        if want not in ("cpu", "cuda", "auto"):
            raise BackendError(f"unknown device '{want}'", hint="Use cpu, cuda or auto")
        if want in ("cuda", "auto") and "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]

    def load(self, model: ModelSource) -> None:
        import onnxruntime as ort

        path = model.onnx_path if model.onnx_path is not None else export_to_onnx(model)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.options.resolved_threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        providers = self._providers(ort)  # a device problem is the backend's, not the model file's
        try:
            self._session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(
                f"ONNX Runtime cannot load {path}: {first}",
                hint="Check that the file is a complete, valid ONNX model for this task",
            ) from None
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"{path} has {len(inputs)} inputs; this task feeds exactly one")
        self._input = inputs[0].name
        shape = list(inputs[0].shape)
        expected = list(model.input_shape)
        fixed = [d if isinstance(d, int) else None for d in shape[1:]]
        if len(shape) != len(expected) + 1 or any(f is not None and f != e for f, e in zip(fixed, expected, strict=False)):
            raise ModelError(
                f"{path} expects input shape {shape}, but this task's samples are {['batch', *expected]}",
                hint="Use a model exported for this task's input size and layout (NCHW)",
            )
        # A model exported with a fixed batch size runs in chunks of that size.
        self._fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else None
        self._path = path

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self._fixed_batch is None or len(batch) == self._fixed_batch:
            return self._session.run(None, {self._input: batch})[0]
        n, k = len(batch), self._fixed_batch
        outs = []
        for start in range(0, n, k):
            chunk = batch[start : start + k]
            if len(chunk) < k:
                pad = np.repeat(chunk[-1:], k - len(chunk), axis=0)
                chunk = np.concatenate([chunk, pad])
            outs.append(self._session.run(None, {self._input: chunk})[0])
        return np.concatenate(outs)[:n]

    def describe(self) -> dict:
        import onnxruntime as ort

        return {
            "backend": self.name,
            "version": ort.__version__,
            "device": "cuda" if self._session.get_providers()[0] == "CUDAExecutionProvider" else "cpu",
            "providers": self._session.get_providers(),
            "threads": self.options.resolved_threads,
            "model_file": str(self._path),
        }
