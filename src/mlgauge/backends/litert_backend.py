"""LiteRT (TensorFlow Lite) backend: runs a user-given ``.tflite`` with ``ai_edge_litert``'s Interpreter.

There is no PyTorch -> TFLite path here: that conversion needs ai-edge-torch
(and TensorFlow), which mlgauge does not install. The model comes from
``ModelSource.tflite_path`` and runs on the CPU with LiteRT's default XNNPACK
delegate, ``num_threads`` from ``BackendOptions``.

Inputs are matched to the task's by name (also with the converter's
``serving_default_<name>:0`` decoration), positionally for ai-edge-torch's
``args_<i>`` names, and a single input whatever its name. A sample may come in
the task's layout or, for images, in TFLite's usual NHWC layout of the task's
NCHW sample: then it is transposed on the way in. Quantized (int8/uint8) inputs
are quantized with the model's scale and zero point, quantized outputs
dequantized to float32, integer inputs cast (int64 token ids to int32).

Batch size: a model whose inputs' batch dimension is ``-1`` in the shape
signature has its inputs resized to each batch (re-allocated only when the size
changes); any other model runs in chunks of its fixed batch, the last padded by
repeating its last row. Resizing a fixed batch is not attempted: reshape ops with
baked-in sizes would fail or silently mix samples.

An Interpreter is not thread-safe, so each ``run`` borrows one from a pool
(preferring one already sized for its batch) and a new one, from the same model
bytes, is built only when all are busy. A pool, not one per thread: the
calibration probe's threads leave their interpreters behind for the SUT's
worker threads, so building and XNNPACK's weight packing stay out of the timed run.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from mlgauge.backends.base import BackendOptions
from mlgauge.backends.model_files import plain_tensor_name
from mlgauge.errors import BackendError, ModelError
from mlgauge.tasks.base import ModelSource
from mlgauge.tensors import Batch, TensorSpec, batch_len, batch_slice, pad_to

_TFLITE_MAGIC = b"TFL3"  # the schema's file_identifier, at bytes 4..8
_QUANTIZED = ("int8", "uint8", "int16")
_POSITIONAL = re.compile(r"^args_(\d+)$")


@dataclass(frozen=True)
class _Input:
    spec: TensorSpec
    index: int  # tensor index in the interpreter
    shape: tuple[int, ...]  # per sample, in the model's layout
    dtype: np.dtype
    nhwc: bool  # the task's (C, H, W) sample is fed as (H, W, C)
    scale: float = 0.0  # quantized input: q = round(x / scale) + zero_point
    zero_point: int = 0


@dataclass(frozen=True)
class _Output:
    index: int
    scale: float = 0.0
    zero_point: int = 0


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """LiteRT's C++ logger writes to file descriptor 2 ("INFO: Created TensorFlow Lite XNNPACK delegate").

    Only used in ``load``, which runs before any worker thread.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _matches(shape: tuple[int, ...], want: tuple[int, ...]) -> bool:
    return len(shape) == len(want) and all(d in (-1, w) for d, w in zip(shape, want, strict=True))


def _quantization(detail: dict) -> tuple[float, int]:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return float(scale), int(zero_point)


class LiteRtBackend:
    name: ClassVar[str] = "litert"
    requires: ClassVar[tuple[str, ...]] = ("ai_edge_litert",)

    def __init__(self, options: BackendOptions) -> None:
        self.options = options
        self._lock = threading.Lock()
        self._idle: list[list] = []  # [interpreter, batch size it is allocated for], not in use

    # -- load ------------------------------------------------------------------------------

    def _check_options(self) -> None:
        if self.options.precision not in ("fp32", "int8"):
            raise BackendError(f"unknown precision '{self.options.precision}'", hint="Use fp32 or int8")
        if self.options.precision != "fp32":
            raise BackendError(
                f"precision '{self.options.precision}' quantizes models mlgauge exports; LiteRT runs the .tflite as it is",
                hint="Drop --precision int8 for LiteRT (a quantized .tflite is quantized when it is converted)",
            )
        if self.options.device not in ("cpu", "auto", "cuda"):
            raise BackendError(f"unknown device '{self.options.device}'", hint="Use cpu, cuda or auto")
        if self.options.device == "cuda":
            raise BackendError(
                "the litert backend runs on the CPU (XNNPACK); device 'cuda' was asked for",
                hint="Use --device cpu, or the torch/onnxruntime backend for a GPU",
            )

    def _read_model(self, model: ModelSource) -> bytes:
        if model.tflite_path is None:
            given = model.onnx_path or model.pte_path
            raise ModelError(
                f"the litert backend runs .tflite files, and {model.name} has none"
                + (f" ({given} is not one)" if given else ""),
                hint="Give a .tflite model file; converting a PyTorch model to TFLite needs ai-edge-torch, "
                "which mlgauge does not install (the torch, onnxruntime and executorch backends run it directly)",
            )
        path = Path(model.tflite_path)
        if not path.is_file():
            raise ModelError(f"TFLite model {path} does not exist", hint="Check the path of the .tflite file")
        content = path.read_bytes()
        if content[4:8] != _TFLITE_MAGIC:
            raise ModelError(
                f"{path} is not a TFLite model (no 'TFL3' flatbuffer identifier)",
                hint="Give a .tflite file written by a TFLite/LiteRT converter",
            )
        return content

    def load(self, model: ModelSource) -> None:
        self._check_options()
        self._content = self._read_model(model)
        self._path = Path(model.tflite_path)
        self._model = model
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter_cls = Interpreter
        with _native_stderr_silenced():
            try:
                interpreter = self._new_interpreter()
                self._inputs = self._plan_inputs(interpreter.get_input_details())
                self._outputs = self._plan_outputs(interpreter.get_output_details())
                self._fixed_batch = self._batch_mode(interpreter.get_input_details())
                self._prepare(interpreter, self._fixed_batch or 1)  # unsupported ops fail here
            except (ValueError, RuntimeError) as exc:
                text = str(exc).strip()
                raise ModelError(
                    f"LiteRT cannot load {self._path}: {text.splitlines()[0] if text else type(exc).__name__}",
                    hint="Check that the file is a complete, valid .tflite model whose ops this LiteRT version has",
                ) from None
        self._idle.append([interpreter, self._fixed_batch or 1])

    def _new_interpreter(self):
        return self._interpreter_cls(model_content=self._content, num_threads=self.options.resolved_threads)

    def _match_inputs(self, details: list[dict]) -> list[tuple[TensorSpec, dict]]:
        specs = self._model.inputs
        if len(details) != len(specs):
            raise ModelError(
                f"{self._path} has {len(details)} inputs {[d['name'] for d in details]}; "
                f"this task feeds {len(specs)}: {[s.name for s in specs]}",
                hint="Use a model converted for this task (same inputs)",
            )
        if len(specs) == 1:
            return [(specs[0], details[0])]
        by_name = {plain_tensor_name(d["name"]): d for d in details}
        # Names that collapse to one ("x:0", "x:1") cannot say which tensor is which.
        if len(by_name) == len(details) and all(s.name in by_name for s in specs):
            return [(s, by_name[s.name]) for s in specs]
        positions = {int(m.group(1)): d for name, d in by_name.items() if (m := _POSITIONAL.match(name))}
        if sorted(positions) == list(range(len(specs))):
            return [(s, positions[i]) for i, s in enumerate(specs)]
        raise ModelError(
            f"{self._path}'s inputs are named {sorted(by_name)}; this task feeds {[s.name for s in specs]}",
            hint="Use a model whose input names match the task's (or are args_0, args_1, ... in the task's order)",
        )

    def _plan_inputs(self, details: list[dict]) -> list[_Input]:
        plans = []
        for spec, detail in self._match_inputs(details):
            signature = tuple(int(d) for d in detail.get("shape_signature", detail["shape"]))
            sample = signature[1:]
            nhwc = False
            if not _matches(sample, spec.shape):
                chw = spec.shape
                if len(chw) == 3 and _matches(sample, (chw[1], chw[2], chw[0])):
                    nhwc = True
                else:
                    raise ModelError(
                        f"{self._path} expects input '{detail['name']}' of shape {['batch', *sample]}, "
                        f"but this task's samples are {['batch', *spec.shape]}"
                        + (f" (or {['batch', chw[1], chw[2], chw[0]]} in NHWC)" if len(chw) == 3 else ""),
                        hint="Use a model converted for this task's input size",
                    )
            dtype = np.dtype(detail["dtype"])
            want = np.dtype(spec.dtype)
            scale, zero_point = _quantization(detail)
            quantized = dtype.name in _QUANTIZED and want.kind == "f" and scale > 0
            castable = dtype.kind in "iu" and want.kind in "iu"
            if dtype != want and not quantized and not castable:
                raise ModelError(
                    f"{self._path} expects input '{detail['name']}' as {dtype.name}, but this task feeds {want.name}",
                    hint="Use a model converted for this task's input type",
                )
            shape = (spec.shape[1], spec.shape[2], spec.shape[0]) if nhwc else tuple(spec.shape)
            plans.append(_Input(spec, detail["index"], shape, dtype, nhwc, *((scale, zero_point) if quantized else ())))
        return plans

    def _plan_outputs(self, details: list[dict]) -> list[_Output]:
        declared = [s.name for s in self._model.outputs]
        by_name = {plain_tensor_name(d["name"]): d for d in details}
        if len(declared) == len(details) == len(by_name) and all(n in by_name for n in declared):
            details = [by_name[n] for n in declared]  # TFLite may list outputs out of the function's order
        plans = []
        for detail in details:
            scale, zero_point = _quantization(detail)
            quantized = np.dtype(detail["dtype"]).name in _QUANTIZED and scale > 0
            plans.append(_Output(detail["index"], *((scale, zero_point) if quantized else ())))
        return plans

    def _batch_mode(self, details: list[dict]) -> int | None:
        """None for a resizable batch dimension, else the model's fixed batch size."""
        signatures = [tuple(d.get("shape_signature", d["shape"])) for d in details]
        if all(s and s[0] == -1 for s in signatures):
            return None
        sizes = {int(d["shape"][0]) for d in details}
        if len(sizes) != 1:
            raise ModelError(f"{self._path}'s inputs disagree on the batch size: {sorted(sizes)}", hint="Convert it with one batch size")
        return sizes.pop()

    def _prepare(self, interpreter, n: int) -> None:
        # strict: only dimensions the model declares as -1 may change
        for plan in self._inputs:
            interpreter.resize_tensor_input(plan.index, [n, *plan.shape], strict=True)
        interpreter.allocate_tensors()

    # -- run ---------------------------------------------------------------------------------

    def _acquire(self, n: int) -> list:
        with self._lock:
            for i, entry in enumerate(self._idle):
                if entry[1] == n:
                    return self._idle.pop(i)
            if self._idle:
                return self._idle.pop()
        interpreter = self._new_interpreter()
        self._prepare(interpreter, self._fixed_batch or 1)
        return [interpreter, self._fixed_batch or 1]

    def _release(self, entry: list) -> None:
        with self._lock:
            self._idle.append(entry)

    def _feed(self, plan: _Input, array: np.ndarray) -> np.ndarray:
        if tuple(array.shape[1:]) != tuple(plan.spec.shape):
            raise ModelError(
                f"input '{plan.spec.name}' has samples of shape {list(array.shape[1:])}; the model takes {list(plan.spec.shape)}",
                hint="The task's preprocessing and the model disagree: check the dataset and model files",
            )
        if plan.nhwc:
            array = array.transpose(0, 2, 3, 1)
        if plan.scale:
            info = np.iinfo(plan.dtype)
            array = np.clip(np.rint(array / plan.scale) + plan.zero_point, info.min, info.max)
        return np.ascontiguousarray(array, dtype=plan.dtype)

    def _invoke(self, batch: Batch, n: int) -> list[np.ndarray]:
        arrays = [batch[p.spec.name] for p in self._inputs] if isinstance(batch, dict) else [batch]
        feeds = [self._feed(plan, array) for plan, array in zip(self._inputs, arrays, strict=True)]
        entry = self._acquire(n)
        try:
            interpreter = entry[0]
            if entry[1] != n:
                self._prepare(interpreter, n)
                entry[1] = n
            for plan, array in zip(self._inputs, feeds, strict=True):
                interpreter.set_tensor(plan.index, array)
            interpreter.invoke()
            raw = [interpreter.get_tensor(plan.index) for plan in self._outputs]  # copies
        finally:
            self._release(entry)
        return [
            ((out.astype(np.float32) - plan.zero_point) * plan.scale).astype(np.float32) if plan.scale else out
            for plan, out in zip(self._outputs, raw, strict=True)
        ]

    def run(self, batch: Batch):
        n = batch_len(batch)
        if self._fixed_batch is None and n > 0:
            outs = self._invoke(batch, n)
        else:
            k = self._fixed_batch or 1
            source = batch if n > 0 else self._model.example(1)  # no rows: run one to learn the output shapes
            parts = [self._invoke(pad_to(batch_slice(source, s, s + k), k), k) for s in range(0, max(n, 1), k)]
            outs = [np.concatenate(p)[:n] for p in zip(*parts, strict=True)]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def describe(self) -> dict:
        import ai_edge_litert

        return {
            "backend": self.name,
            "version": ai_edge_litert.__version__,
            "device": "cpu",
            "threads": self.options.resolved_threads,
            "model_file": str(self._path),
            "batch": self._fixed_batch or "dynamic",
            "layout": {p.spec.name: "NHWC" if p.nhwc else "as given" for p in self._inputs},
            "quantized_inputs": [p.spec.name for p in self._inputs if p.scale],
        }
