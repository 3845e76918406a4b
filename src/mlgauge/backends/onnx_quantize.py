"""INT8 post-training quantization of an ONNX model with ONNX Runtime's static quantizer.

QDQ format (QuantizeLinear/DequantizeLinear pairs around float ops, which
ONNX Runtime fuses into integer kernels; the recommended format for CPU),
symmetric int8 activations and weights, per-channel weights, MinMax ranges
observed over the calibration batches. ORT's optional pre-processing step
(``quant_pre_process``) is not run: the torch exporter's graphs already carry
shapes, and the step fails on some models for no gain here.

The result is cached under ``cache_dir()/onnx`` (next to mlgauge's own exports)
by a digest of the FP32 file and of the calibration samples, and written
atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from mlgauge import paths
from mlgauge.errors import BackendError, ModelError
from mlgauge.tensors import Batch, batch_len, batch_slice, pad_to

CALIBRATION_CHUNK = 32  # rows per calibration forward pass, for models with a dynamic batch

# Only the ops that carry weights. Quantizing every op (the default) also quantizes the
# adds, and BERT's attention adds -10000 to masked scores: one int8 scale over that range
# wipes out the scores (measured, MobileBERT stand-in: F1 99.48 -> 31.9 with every op,
# 99.48 with these; the convolutional stand-ins stay within 0.4 points either way).
QUANTIZED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


def _batches(calibration_batches: Batch | Iterable[Batch]) -> list[Batch]:
    # One (B, ...) array or dict is one batch, not B samples: iterating it would strip the batch dimension.
    if isinstance(calibration_batches, (np.ndarray, dict)):
        return [calibration_batches]
    return list(calibration_batches)


def _feeds(batches: list[Batch], input_names: Sequence[str], fixed_batch: int | None) -> list[dict[str, np.ndarray]]:
    feeds = []
    for batch in batches:
        if isinstance(batch, dict):
            missing = [n for n in input_names if n not in batch]
            if missing:
                raise BackendError(
                    f"calibration batch has inputs {sorted(batch)}; the model needs {list(input_names)}",
                    hint="Calibration samples must come from the task's own loader",
                )
        elif len(input_names) != 1:
            raise BackendError(
                f"calibration batch is one array, but the model has {len(input_names)} inputs {list(input_names)}",
                hint="Give multi-input calibration batches as dicts keyed by input name",
            )
        size = fixed_batch or CALIBRATION_CHUNK
        for start in range(0, batch_len(batch), size):
            piece = batch_slice(batch, start, start + size)
            if fixed_batch:
                piece = pad_to(piece, fixed_batch)
            feeds.append(dict(piece) if isinstance(piece, dict) else {input_names[0]: piece})
    return [{n: np.ascontiguousarray(f[n]) for n in input_names} for f in feeds]


def _digest(fp32_path: Path, feeds: list[dict[str, np.ndarray]]) -> str:
    h = hashlib.sha256()
    with open(fp32_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    for feed in feeds:
        for name in sorted(feed):
            a = feed[name]
            h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
            h.update(a.tobytes())
    return h.hexdigest()[:16]


def quantized_onnx_path(fp32_path: Path, digest: str) -> Path:
    # The op list is part of the name: a different choice of quantized ops is a different model.
    ops = hashlib.sha256(",".join(QUANTIZED_OPS).encode()).hexdigest()[:6]
    return paths.cache_dir() / "onnx" / f"{fp32_path.stem}-int8-ops{ops}-{digest}.onnx"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # The quantizer logs advice ("consider pre-processing") through the root logger and prints progress.
    sink = io.StringIO()
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _fixed_batch(fp32_path: Path, input_names: Sequence[str]) -> int | None:
    """The model's batch size when its first input has a fixed one: calibration must feed exactly that."""
    import onnx

    try:
        model = onnx.load(str(fp32_path), load_external_data=False)
    except Exception as exc:
        raise ModelError(
            f"{fp32_path} is not a readable ONNX model: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
            hint="Check that the file is a complete, valid ONNX model",
        ) from None
    inputs = {i.name: i for i in model.graph.input}
    unknown = [n for n in input_names if n not in inputs]
    if unknown:
        raise ModelError(
            f"{fp32_path} has no input(s) {unknown}; its inputs are {list(inputs)}",
            hint="Use a model exported for this task (same input names)",
        )
    dims = inputs[input_names[0]].type.tensor_type.shape.dim
    return dims[0].dim_value if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None


def quantize_onnx(fp32_path: Path, calibration_batches: Batch | Iterable[Batch], input_names: Sequence[str]) -> Path:
    """Statically quantize ``fp32_path`` to INT8 (QDQ) and return the cached INT8 model's path.

    ``calibration_batches``: one batch or several (a ``(B, ...)`` array, or a
    dict name -> array for multi-input models), from the task's calibration
    split. ``input_names``: the model's inputs, in the order a single array maps to.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    fp32_path = Path(fp32_path)
    if not fp32_path.is_file():
        raise ModelError(f"ONNX model {fp32_path} does not exist", hint="Check the path of the .onnx file")
    batches = [b for b in _batches(calibration_batches) if batch_len(b) > 0]
    if not batches:
        raise BackendError(
            f"INT8 quantization of {fp32_path.name} needs calibration samples, and none were given",
            hint="Use --precision fp32, or a task that defines a calibration split",
        )
    feeds = _feeds(batches, list(input_names), _fixed_batch(fp32_path, input_names))
    target = quantized_onnx_path(fp32_path, _digest(fp32_path, feeds))
    if target.is_file():
        return target

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".quantize-", suffix=".onnx", dir=target.parent)
    os.close(fd)
    try:
        with _quiet():
            quantize_static(
                str(fp32_path),
                tmp_name,
                _Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                op_types_to_quantize=list(QUANTIZED_OPS),
            )
        os.replace(tmp_name, target)
    except Exception as exc:
        text = str(exc).strip()
        raise ModelError(
            f"quantizing {fp32_path.name} to INT8 failed: {type(exc).__name__}: {text.splitlines()[0] if text else ''}",
            hint="Run with --precision fp32; ONNX Runtime's quantizer may not support an operator of this model",
        ) from None
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return target
