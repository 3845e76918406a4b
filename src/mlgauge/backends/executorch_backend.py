"""ExecuTorch backend: the PyTorch model lowered to XNNPACK and run by the ExecuTorch runtime.

A PyTorch-defined model goes ``torch.export`` -> (INT8 only: XNNPACK quantizer,
PT2E prepare / calibrate / convert) -> ``to_edge_transform_and_lower`` with the
XNNPACK partitioner -> ``.pte``, cached under ``cache_dir()/executorch`` by
architecture + weights, torch and ExecuTorch versions, precision (INT8 also by
a digest of the calibration samples) and batch size. A user's ``.pte``
(``ModelSource.pte_path``) runs as it is.

Batch size. A ``.pte`` plans its memory for one input shape, and the SUT's
largest batch is not known at load time. Exported models therefore get one
static-batch program per power-of-two batch size, exported on first use (and
cached on disk); a batch of ``n`` runs on the smallest one that holds it,
padded by repeating its last row, and batches above ``max_bucket`` run in
chunks. The harness's batches are mostly powers of two already (SingleStream
1, MultiStream 8, the default max batch 32, the Server batch-cap search), so
they run unpadded, padding never more than doubles the work, and at most
log2(max_bucket) + 1 programs exist. The calibration probe runs batch 1, the
MultiStream query size, the max batch and (Server) each power of two up to the
batch cap before LoadGen starts timing, so those exports stay out of the timed
run; an Offline run's last, partial batch may still export one more size (then
cached for every later run). A bounded dynamic batch (one program) was tried and rejected:
with torch 2.13 + ExecuTorch 1.5.1, torch's fake conv kernel guards
``batch >= 16`` inside XNNPACK's channels-last pass and silently caps the
planned batch at 15; XNNPACK would also reshape its runtime at every change of batch.
A user's ``.pte`` is taken to have the batch size its method metadata states
(the upper bound, for a dynamic one) and runs in padded chunks of it, like
ONNX Runtime's fixed-batch models.

Threads: the XNNPACK threadpool is one per process; its size is set from
``BackendOptions.resolved_threads`` through the runtime's (experimental)
``_unsafe_reset_threadpool``, at load, when nothing runs. Concurrent ``run``
calls are safe: a method's planned memory is reused by every call, so each call
borrows a loaded method from a pool per batch size and loads another (the file
is mmapped: the weights' pages are shared) only when all are busy. A pool, not
one per thread: the calibration probe's threads leave their methods behind for
the SUT's worker threads, so no load lands in the timed run.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np

from mlgauge import paths
from mlgauge.backends.base import BackendOptions
from mlgauge.errors import BackendError, ModelError
from mlgauge.tasks.base import ModelSource
from mlgauge.tensors import Batch, batch_len, batch_slice, pad_to

PRECISIONS = ("fp32", "int8")
MAX_BUCKET = 64  # the largest exported batch (so at most 7 programs: 1, 2, ..., 64); larger batches run in chunks
CALIBRATION_CHUNK = 32  # rows per forward pass while observers collect ranges
# c10::ScalarType codes, as ExecuTorch's TensorInfo.dtype() reports them
_SCALAR_TYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16", 6: "float32", 7: "float64", 11: "bool"}
# A .pte is a flatbuffer with the file identifier "ET" + schema version at bytes 4..8.
# ExecuTorch logs a mismatching identifier raw, and non-UTF-8 bytes in that log line abort the process,
# so the identifier is checked here first.
_PTE_MAGIC = re.compile(rb"ET\d\d")


def executorch_version() -> str:
    from importlib.metadata import version

    return version("executorch")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence exporters and the runtime's loader: they narrate on stdout/stderr, through logging and warnings.

    ExecuTorch's C++ log lines are written through Python's ``sys.stderr``, so this catches them too.
    """
    sink = io.StringIO()
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _bucket(n: int) -> int:
    """The smallest power of two >= n."""
    return 1 << (n - 1).bit_length()


def calibration_digest(batch: Batch) -> str:
    """A short digest of the calibration samples: INT8 programs are only as good as the data they saw."""
    h = hashlib.sha256()
    arrays = batch.items() if isinstance(batch, dict) else [("", batch)]
    for name, array in sorted(arrays, key=lambda kv: kv[0]):
        a = np.ascontiguousarray(array)
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:12]


def exported_pte_path(model: ModelSource, batch: int, precision: str = "fp32", calibration: str | None = None) -> Path:
    import torch

    # "int8w": weighted layers only (the choice made in quantize_pt2e); older files quantized every op.
    tag = precision if calibration is None else f"{precision}w-cal{calibration}"
    name = f"{model.cache_key}-torch{torch.__version__}-et{executorch_version()}-{tag}-b{batch}.pte"
    return paths.cache_dir() / "executorch" / name


def _example_args(model: ModelSource, n: int) -> tuple:
    import torch

    return tuple(torch.from_numpy(spec.empty(n)) for spec in model.inputs)


def _batch_args(model: ModelSource, batch: Batch) -> tuple:
    import torch

    arrays = [batch[spec.name] for spec in model.inputs] if isinstance(batch, dict) else [batch]
    return tuple(torch.from_numpy(np.ascontiguousarray(a, dtype=spec.dtype)) for a, spec in zip(arrays, model.inputs, strict=True))


def quantize_pt2e(module, model: ModelSource, calibration: Batch):
    """INT8 (static, symmetric, per-channel weights) with the XNNPACK quantizer; returns the converted module.

    The graph is captured with a dynamic batch dimension so the quantized module
    can be re-exported at every bucket size with the same quantization parameters.
    """
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    # Batch 2, not 1: torch.export specialises dimensions of size 0 and 1.
    args = _example_args(model, 2)
    dynamic = tuple({0: torch.export.Dim.DYNAMIC} for _ in args)
    captured = torch.export.export(module, args, dynamic_shapes=dynamic).module()
    config = get_symmetric_quantization_config(is_per_channel=True)
    quantizer = XNNPACKQuantizer()
    # Only the layers that carry weights, as for ONNX Runtime (see onnx_quantize.QUANTIZED_OPS):
    # quantizing every add wipes out BERT's masked attention scores (MobileBERT stand-in F1 31%).
    for layer in (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.ConvTranspose2d):
        quantizer.set_module_type(layer, config)
    prepared = prepare_pt2e(captured, quantizer)
    n = batch_len(calibration)
    with torch.no_grad():
        for start in range(0, n, CALIBRATION_CHUNK):
            prepared(*_batch_args(model, batch_slice(calibration, start, start + CALIBRATION_CHUNK)))
    return convert_pt2e(prepared)


def lower_to_pte(module, args: tuple) -> bytes:
    """torch.export at the shapes of ``args`` -> XNNPACK-delegated ExecuTorch program bytes."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    program = torch.export.export(module, args)
    return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".export-", suffix=".pte", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp_name, target)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def check_pte_file(path: Path) -> None:
    """A one-line ModelError for a missing or non-.pte file, before the runtime sees it."""
    if not path.is_file():
        raise ModelError(f"ExecuTorch model {path} does not exist", hint="Check the path of the .pte file")
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or not _PTE_MAGIC.fullmatch(head[4:8]):
        raise ModelError(
            f"{path} is not an ExecuTorch program (no 'ET..' flatbuffer identifier)",
            hint="Give a .pte file written by ExecuTorch's to_executorch()",
        )


class ExecuTorchBackend:
    name: ClassVar[str] = "executorch"
    requires: ClassVar[tuple[str, ...]] = ("executorch",)
    max_bucket: ClassVar[int] = MAX_BUCKET
    # The runtime's Python binding keeps the GIL while a method runs, so a second instance
    # only waits for it: batching scenarios get one instance with every core in XNNPACK's
    # threadpool (measured, small MobileNet, batch 32, 2 cores: two single-threaded instances
    # 18.6k samples/s, one 23.5k with one thread, 24-42k with two; ONNX Runtime 31-39k).
    default_workers: ClassVar[int] = 1

    def __init__(self, options: BackendOptions) -> None:
        self.options = options
        self._pool_lock = threading.Lock()  # guards the pools of idle methods: held for a pop or an append
        self._load_lock = threading.Lock()  # serialises exports and loads: held for seconds
        self._idle: dict[int, list] = {}  # batch size -> loaded (program, method) pairs not in use
        self._paths: dict[int, Path] = {}
        self._module = None
        self._quantized = None
        self._calibration = None
        self._calibration_digest: str | None = None
        self._fixed_batch: int | None = None

    # -- load ----------------------------------------------------------------------------------

    def _check_options(self, model: ModelSource) -> None:
        if self.options.precision not in PRECISIONS:
            raise BackendError(f"unknown precision '{self.options.precision}'", hint="Use fp32 or int8")
        if self.options.device not in ("cpu", "auto", "cuda"):
            raise BackendError(f"unknown device '{self.options.device}'", hint="Use cpu, cuda or auto")
        if self.options.device == "cuda":
            raise BackendError(
                "the executorch backend runs on the CPU (XNNPACK); device 'cuda' was asked for",
                hint="Use --device cpu, or the torch/onnxruntime backend for a GPU",
            )
        if model.pte_path is None and model.build is None:
            given = model.onnx_path or model.tflite_path
            raise ModelError(
                f"the executorch backend runs PyTorch models or .pte files, not {given}",
                hint="Use --backend onnxruntime for .onnx, --backend litert for .tflite, or give a .pte file",
            )
        if model.pte_path is not None and self.options.precision != "fp32":
            raise BackendError(
                f"precision '{self.options.precision}' quantizes models mlgauge exports; {model.pte_path} runs as it is",
                hint="Drop --precision int8 for a .pte file (quantize it when exporting it), or give PyTorch weights",
            )

    def _set_threads(self) -> None:
        from executorch.extension.pybindings import portable_lib

        reset = getattr(portable_lib, "_unsafe_reset_threadpool", None)
        count = getattr(portable_lib, "_threadpool_get_thread_count", None)
        want = self.options.resolved_threads
        # Not exposed by every build: then XNNPACK keeps its default (one thread per core) and describe() says so.
        if reset is not None and (count is None or count() != want):
            reset(want)

    def load(self, model: ModelSource) -> None:
        self._check_options(model)
        self._model = model
        with _quiet():  # importing the runtime pulls in torchao, which logs the kernels it cannot load
            from executorch.runtime import Runtime

            self._runtime = Runtime.get()
            self._set_threads()
        if model.pte_path is not None:
            self._load_user_pte(Path(model.pte_path))
        else:
            if self.options.precision == "int8":
                self._calibration = self._calibration_batch(model)
                self._calibration_digest = calibration_digest(self._calibration)
            self._release(1, self._acquire(1))  # export (or find) and load batch 1 now: failures belong to load

    def _calibration_batch(self, model: ModelSource) -> Batch:
        if model.calibration is None:
            raise BackendError(
                f"INT8 quantization needs calibration samples, and {model.name} provides none",
                hint="Use --precision fp32, or a task that defines a calibration split",
            )
        batch = model.calibration()
        if batch_len(batch) == 0:
            raise BackendError(
                f"INT8 quantization needs calibration samples, and {model.name}'s calibration split is empty",
                hint="Use --precision fp32, or prepare the task's calibration data",
            )
        return batch

    def _load_user_pte(self, path: Path) -> None:
        check_pte_file(path)
        with _quiet():
            try:
                program = self._runtime.load_program(path)
            except Exception as exc:
                raise ModelError(
                    f"ExecuTorch cannot load {path}: {_first_line(exc)}",
                    hint="Check that the file is a complete .pte written by a compatible ExecuTorch version",
                ) from None
        if "forward" not in program.method_names:
            raise ModelError(
                f"{path} has no 'forward' method (it has {sorted(program.method_names)})",
                hint="Export the model's forward method to the .pte",
            )
        self._fixed_batch = self._check_user_inputs(path, program.metadata("forward"))
        self._paths[self._fixed_batch] = path
        self._release(self._fixed_batch, self._acquire(self._fixed_batch))  # loads the method: its failures belong to load

    def _check_user_inputs(self, path: Path, meta) -> int:
        specs = self._model.inputs
        if meta.num_inputs() != len(specs):
            raise ModelError(
                f"{path} takes {meta.num_inputs()} inputs; this task feeds {len(specs)}: {[s.name for s in specs]}",
                hint="Use a .pte exported for this task (same inputs, in the same order)",
            )
        batches = set()
        for i, spec in enumerate(specs):
            info = meta.input_tensor_meta(i)
            sizes = list(info.sizes())
            dtype = _SCALAR_TYPES.get(info.dtype(), f"ScalarType {info.dtype()}")
            if len(sizes) != len(spec.shape) + 1 or tuple(sizes[1:]) != tuple(spec.shape) or dtype != spec.dtype:
                raise ModelError(
                    f"{path} expects input {i} ('{spec.name}') of shape {sizes} {dtype}, "
                    f"but this task's samples are {['batch', *spec.shape]} {spec.dtype}",
                    hint="Use a .pte exported for this task's input size, layout (NCHW for images) and dtype",
                )
            batches.add(sizes[0])
        if len(batches) != 1:
            raise ModelError(f"{path}'s inputs disagree on the batch size: {sorted(batches)}", hint="Export it with one batch size")
        return batches.pop()

    # -- programs, one per batch size -------------------------------------------------------------

    def _export(self, batch: int, target: Path) -> None:
        import torch

        model = self._model
        try:
            with _quiet(), torch.no_grad():
                if self._module is None:
                    self._module = model.build()
                module = self._module
                if self.options.precision == "int8":
                    if self._quantized is None:
                        self._quantized = quantize_pt2e(module, model, self._calibration)
                    module = self._quantized
                data = lower_to_pte(module, _example_args(model, batch))
        except Exception as exc:
            raise ModelError(
                f"exporting {model.name} to ExecuTorch ({self.options.precision}, batch {batch}) failed: {_first_line(exc)}",
                hint="The model must be torch.export-able; try --backend torch to check it runs at all",
            ) from None
        _write_atomically(target, data)

    def _pte(self, batch: int) -> Path:
        path = self._paths.get(batch)
        if path is None:
            path = exported_pte_path(self._model, batch, self.options.precision, self._calibration_digest)
            if not path.is_file():
                self._export(batch, path)
            self._paths[batch] = path
        return path

    def _acquire(self, batch: int) -> tuple:
        """An idle (program, method) for this batch size, loaded (and exported) if none is idle."""
        with self._pool_lock:
            idle = self._idle.setdefault(batch, [])
            if idle:
                return idle.pop()
        # One thread at a time: exports must not race, and _quiet swaps the process-wide sys.stderr.
        with self._load_lock:
            path = self._pte(batch)
            with _quiet():
                try:
                    program = self._runtime.load_program(path)
                    return program, program.load_method("forward")  # the method needs its program alive
                except Exception as exc:
                    raise ModelError(
                        f"ExecuTorch cannot load {path}: {_first_line(exc)}",
                        hint="Delete the cached file to re-export it"
                        if path.is_relative_to(paths.cache_dir())
                        else "Check that the .pte file is complete",
                    ) from None

    def _release(self, batch: int, entry: tuple) -> None:
        with self._pool_lock:
            self._idle[batch].append(entry)

    # -- run -------------------------------------------------------------------------------------

    def _execute(self, batch: Batch, n: int, size: int) -> tuple[np.ndarray, ...]:
        entry = self._acquire(size)
        try:
            outs = entry[1].execute(_batch_args(self._model, pad_to(batch, size)))
        finally:
            self._release(size, entry)
        return tuple(o.numpy()[:n] for o in outs)

    def _check_batch(self, batch: Batch) -> None:
        arrays = [batch[spec.name] for spec in self._model.inputs] if isinstance(batch, dict) else [batch]
        for array, spec in zip(arrays, self._model.inputs, strict=False):
            if tuple(array.shape[1:]) != tuple(spec.shape):
                raise ModelError(
                    f"input '{spec.name}' has samples of shape {list(array.shape[1:])}; the model takes {list(spec.shape)}",
                    hint="The task's preprocessing and the model disagree: check the dataset and model files",
                )

    def run(self, batch: Batch):
        self._check_batch(batch)
        n = batch_len(batch)
        if n == 0:  # nothing to run, but the outputs' per-sample shapes still come from the model
            outs = self._execute(self._model.example(1), 0, self._fixed_batch or 1)
        else:
            cap = self._fixed_batch or self.max_bucket
            parts = []
            for start in range(0, n, cap):
                piece = batch_slice(batch, start, start + cap)
                k = batch_len(piece)
                parts.append(self._execute(piece, k, self._fixed_batch or _bucket(k)))
            outs = parts[0] if len(parts) == 1 else tuple(np.concatenate(p) for p in zip(*parts, strict=True))
        return outs[0] if len(outs) == 1 else outs

    def describe(self) -> dict:
        from executorch.extension.pybindings import portable_lib

        count = getattr(portable_lib, "_threadpool_get_thread_count", None)
        with self._load_lock:
            sizes = sorted(self._paths)
            first = str(self._paths[sizes[0]]) if sizes else None
        return {
            "backend": self.name,
            "version": executorch_version(),
            "device": "cpu",
            "delegate": "XnnpackBackend" if self._fixed_batch is None else "as in the .pte file",
            "precision": self.options.precision,
            "threads": count() if count is not None else "xnnpack default",
            "batch_sizes": sizes,
            "fixed_batch": self._fixed_batch,
            "model_file": first,  # the smallest batch's program; the others differ only in batch size
        }
