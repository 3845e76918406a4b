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
from mlgauge.tensors import Batch, batch_len, batch_slice, pad_to

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
    example = model.example(2)
    args = tuple(torch.from_numpy(a) for a in (example.values() if isinstance(example, dict) else [example]))
    names = [spec.name for spec in model.inputs]
    output_names = [spec.name for spec in model.outputs] or ["output"]
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
                args,
                input_names=names,
                output_names=output_names,
                dynamic_shapes=tuple({0: torch.export.Dim.DYNAMIC} for _ in args),
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
        if self.options.precision == "int8":
            path = self._quantized(path, model)
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
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._check_inputs(path, model)
        # A model exported with a fixed batch size runs in chunks of that size.
        first = self._session.get_inputs()[0].shape[0]
        self._fixed_batch = first if isinstance(first, int) and first > 0 else None
        self._path = path

    def _quantized(self, path: Path, model: ModelSource) -> Path:
        from mlgauge.backends.onnx_quantize import quantize_onnx

        if model.calibration is None:
            raise BackendError(
                f"{model.name} has no calibration data for INT8 quantization",
                hint="Use --precision fp32, or a task that provides a calibration split",
            )
        return quantize_onnx(path, model.calibration(), [spec.name for spec in model.inputs])

    def _check_inputs(self, path: Path, model: ModelSource) -> None:
        got = {i.name: list(i.shape) for i in self._session.get_inputs()}
        want = {spec.name: ["batch", *spec.shape] for spec in model.inputs}
        if len(got) != len(want) or (len(want) > 1 and set(got) != set(want)):
            raise ModelError(
                f"{path} has {len(got)} inputs {got}; this task feeds {len(want)}: {want}",
                hint="Use a model exported for this task (same input names, count and layout)",
            )
        for (name, shape), spec in zip(got.items(), model.inputs, strict=True):
            if len(want) > 1:
                spec = next(s for s in model.inputs if s.name == name)
            fixed = [d if isinstance(d, int) else None for d in shape[1:]]
            if len(shape) != len(spec.shape) + 1 or any(f is not None and f != e for f, e in zip(fixed, spec.shape, strict=False)):
                raise ModelError(
                    f"{path} expects input '{name}' of shape {shape}, but this task's samples are {['batch', *spec.shape]}",
                    hint="Use a model exported for this task's input size and layout (NCHW for images)",
                )

    def _feed(self, batch: Batch) -> dict:
        if isinstance(batch, dict):
            return batch
        return {self._inputs[0]: batch}

    def _run(self, batch: Batch):
        outs = self._session.run(None, self._feed(batch))
        return outs[0] if len(outs) == 1 else tuple(outs)

    def run(self, batch: Batch):
        n = batch_len(batch)
        if self._fixed_batch is None or n == self._fixed_batch:
            return self._run(batch)
        k = self._fixed_batch
        outs = [self._run(pad_to(batch_slice(batch, start, start + k), k)) for start in range(0, n, k)]
        if isinstance(outs[0], tuple):
            return tuple(np.concatenate(parts)[:n] for parts in zip(*outs, strict=True))
        return np.concatenate(outs)[:n]

    def describe(self) -> dict:
        import onnxruntime as ort

        return {
            "backend": self.name,
            "version": ort.__version__,
            "device": "cuda" if self._session.get_providers()[0] == "CUDAExecutionProvider" else "cpu",
            "providers": self._session.get_providers(),
            "threads": self.options.resolved_threads,
            "precision": self.options.precision,
            "model_file": str(self._path),
        }
