"""Backends: the entry-point registry, and torch / ONNX Runtime / null on real small models."""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from mlgauge import backends
from mlgauge.backends import BackendOptions, backend_names, best_backend, get_backend_class, is_installed
from mlgauge.backends.null_backend import NullBackend
from mlgauge.backends.onnxruntime_backend import OnnxRuntimeBackend, export_to_onnx, exported_onnx_path
from mlgauge.backends.torch_backend import TorchBackend
from mlgauge.errors import BackendError, ModelError, UsageError
from mlgauge.tasks.base import ModelSource
from mlgauge.tensors import TensorSpec

INPUT_SHAPE = (3, 8, 8)


def _tiny_module() -> torch.nn.Module:
    gen = torch.Generator().manual_seed(1234)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 8 * 8, 5),
    )
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        module[1].running_mean.copy_(torch.randn(4, generator=gen) * 0.1)
        module[1].running_var.copy_(torch.rand(4, generator=gen) + 0.5)
    return module.eval()


def _tiny_source(cache_key: str = "tiny-test-model", build=_tiny_module) -> ModelSource:
    return ModelSource(name="tiny", inputs=(TensorSpec("input", INPUT_SHAPE),), cache_key=cache_key, build=build)


def _batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *INPUT_SHAPE)).astype(np.float32)


def _expected(batch: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return _tiny_module()(torch.from_numpy(batch)).numpy()


def _onnx_file(path: Path, inputs: list[tuple[str, list]], nodes, initializers=(), out_dims=None) -> Path:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims) for name, dims in inputs],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_dims)],
        initializer=list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _linear_onnx(path: Path, batch_dim, sample_shape=INPUT_SHAPE, seed: int = 5):
    """output = flatten(input) @ W + b, with the batch dimension as given (int = fixed)."""
    features = int(np.prod(sample_shape))
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((features, 5)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "B"], ["output"]),
    ]
    _onnx_file(
        path,
        [("input", [batch_dim, *sample_shape])],
        nodes,
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
        [batch_dim, 5],
    )
    return w, b


# -- registry ------------------------------------------------------------------


def test_backend_names_come_from_entry_points():
    declared = sorted(ep.name for ep in entry_points(group="mlgauge.backends"))
    assert backend_names() == declared
    assert {"null", "onnxruntime", "torch"} <= set(backend_names())


def test_backend_classes_load_by_name():
    assert get_backend_class("torch") is TorchBackend
    assert get_backend_class("onnxruntime") is OnnxRuntimeBackend
    assert get_backend_class("null") is NullBackend
    for name in ("torch", "onnxruntime", "null"):
        assert get_backend_class(name).name == name
        assert is_installed(name)


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(UsageError, match="unknown backend 'tensorrt'") as info:
        get_backend_class("tensorrt")
    for name in ("null", "onnxruntime", "torch"):
        assert name in str(info.value)


def test_best_backend_prefers_onnxruntime():
    assert best_backend() == "onnxruntime"


class _FakeEntryPoint:
    def __init__(self, name, loaded=None, error=None):
        self.name, self._loaded, self._error = name, loaded, error

    def load(self):
        if self._error is not None:
            raise self._error
        return self._loaded


def test_missing_framework_makes_a_backend_uninstalled(monkeypatch):
    class NeedsNothingReal:
        name = "onnxruntime"
        requires = ("mlgauge_test_no_such_module_xyz",)

    fake = {
        "onnxruntime": _FakeEntryPoint("onnxruntime", NeedsNothingReal),
        "torch": _FakeEntryPoint("torch", TorchBackend),
        "broken": _FakeEntryPoint("broken", error=ImportError("no module named broken_dep")),
    }
    monkeypatch.setattr(backends, "_entry_points", lambda: fake)
    with pytest.raises(BackendError, match="needs mlgauge_test_no_such_module_xyz") as info:
        get_backend_class("onnxruntime")
    assert "pip install" in str(info.value)
    with pytest.raises(BackendError, match="cannot be imported"):
        get_backend_class("broken")
    assert not is_installed("onnxruntime")
    assert not is_installed("broken")
    assert best_backend() == "torch"  # falls back down the preference list

    monkeypatch.setattr(backends, "_entry_points", lambda: {"null": _FakeEntryPoint("null", NullBackend)})
    with pytest.raises(BackendError, match="no inference backend"):
        best_backend()


def test_resolved_threads():
    assert BackendOptions().resolved_threads == len(os.sched_getaffinity(0))
    assert BackendOptions(threads=3).resolved_threads == 3
    assert BackendOptions().to_dict() == {"threads": 0, "device": "cpu", "compile": False, "precision": "fp32"}


# -- torch -------------------------------------------------------------------------


def test_torch_backend_matches_the_module():
    backend = TorchBackend(BackendOptions())
    backend.load(_tiny_source())
    batch = _batch(6)
    out = backend.run(batch)
    assert out.shape == (6, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out, _expected(batch), rtol=1e-6, atol=1e-6)
    info = backend.describe()
    assert info["backend"] == "torch"
    assert info["version"] == torch.__version__
    assert info["device"] == "cpu"
    assert info["threads"] == torch.get_num_threads() >= 1
    assert info["compile"] is False


def test_torch_backend_refuses_onnx_files(tmp_path):
    source = ModelSource(name="x", inputs=(TensorSpec("input", INPUT_SHAPE),), cache_key="k", onnx_path=tmp_path / "m.onnx")
    with pytest.raises(ModelError, match="ONNX file") as info:
        TorchBackend(BackendOptions()).load(source)
    assert "onnxruntime" in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_torch_backend_cuda_without_gpu():
    with pytest.raises(BackendError, match="cuda"):
        TorchBackend(BackendOptions(device="cuda")).load(_tiny_source())


def test_torch_backend_unknown_device():
    with pytest.raises(BackendError, match="unknown device 'tpu'"):
        TorchBackend(BackendOptions(device="tpu")).load(_tiny_source())


# -- ONNX Runtime --------------------------------------------------------------------


@pytest.fixture(scope="module")
def ort_backend():
    backend = OnnxRuntimeBackend(BackendOptions())
    backend.load(_tiny_source("tiny-ort-export"))
    return backend


def test_onnxruntime_matches_torch(ort_backend):
    batch = _batch(5, seed=1)
    out = ort_backend.run(batch)
    assert out.shape == (5, 5)
    np.testing.assert_allclose(out, _expected(batch), atol=1e-4, rtol=1e-4)
    info = ort_backend.describe()
    assert info["backend"] == "onnxruntime"
    assert info["device"] == "cpu"
    assert info["providers"] == ["CPUExecutionProvider"]
    assert info["threads"] == BackendOptions().resolved_threads
    assert info["model_file"] == str(exported_onnx_path(_tiny_source("tiny-ort-export")))


@pytest.mark.parametrize("n", [1, 3, 17])
def test_onnxruntime_dynamic_batch(ort_backend, n):
    batch = _batch(n, seed=n)
    out = ort_backend.run(batch)
    assert out.shape == (n, 5)
    np.testing.assert_allclose(out, _expected(batch), atol=1e-4, rtol=1e-4)


def test_onnx_export_is_cached_under_the_home(ort_backend, mlgauge_home):
    source = _tiny_source("tiny-ort-export")
    path = exported_onnx_path(source)
    assert path.is_file()
    assert path.is_relative_to(mlgauge_home / "cache" / "onnx")
    assert "tiny-ort-export" in path.name and torch.__version__ in path.name
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".export-")]  # no temp leftovers
    exported = onnx.load(str(path))
    assert [i.name for i in exported.graph.input] == ["input"]
    assert exported.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    mtime = path.stat().st_mtime_ns

    def must_not_build():
        raise AssertionError("export_to_onnx rebuilt a cached model")

    assert export_to_onnx(_tiny_source("tiny-ort-export", build=must_not_build)) == path
    again = OnnxRuntimeBackend(BackendOptions())
    again.load(_tiny_source("tiny-ort-export", build=must_not_build))
    assert path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.run(_batch(2)), ort_backend.run(_batch(2)))


def test_onnx_export_failure_is_a_model_error():
    class Unexportable(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("this module cannot be traced")

    source = _tiny_source("tiny-unexportable", build=lambda: Unexportable().eval())
    with pytest.raises(ModelError, match="exporting tiny to ONNX failed"):
        export_to_onnx(source)
    assert not exported_onnx_path(source).exists()


def test_fixed_batch_onnx_runs_in_padded_chunks(tmp_path):
    path = tmp_path / "fixed4.onnx"
    w, b = _linear_onnx(path, 4)
    source = ModelSource(name="fixed", inputs=(TensorSpec("input", INPUT_SHAPE),), cache_key="fixed4", onnx_path=path)
    backend = OnnxRuntimeBackend(BackendOptions(threads=1))
    backend.load(source)
    assert backend.describe()["model_file"] == str(path)
    with pytest.raises(Exception):  # noqa: B017 - the session itself only takes batches of 4
        backend._session.run(None, {"input": _batch(1)})
    for n in (1, 4, 9):
        batch = _batch(n, seed=10 + n)
        out = backend.run(batch)
        assert out.shape == (n, 5), n
        np.testing.assert_allclose(out, batch.reshape(n, -1) @ w + b, rtol=1e-4, atol=1e-4)


def test_user_onnx_with_dynamic_batch(tmp_path):
    path = tmp_path / "dyn.onnx"
    w, b = _linear_onnx(path, "N")
    backend = OnnxRuntimeBackend(BackendOptions(threads=1))
    backend.load(ModelSource(name="dyn", inputs=(TensorSpec("input", INPUT_SHAPE),), cache_key="dyn", onnx_path=path))
    batch = _batch(7)
    np.testing.assert_allclose(backend.run(batch), batch.reshape(7, -1) @ w + b, rtol=1e-4, atol=1e-4)


def test_corrupt_onnx_file(tmp_path):
    path = tmp_path / "broken.onnx"
    path.write_bytes(np.random.default_rng(3).bytes(2048))
    source = ModelSource(name="x", inputs=(TensorSpec("input", INPUT_SHAPE),), cache_key="x", onnx_path=path)
    with pytest.raises(ModelError, match="ONNX Runtime cannot load") as info:
        OnnxRuntimeBackend(BackendOptions()).load(source)
    assert str(path) in str(info.value)


def test_onnx_with_the_wrong_input_size(tmp_path):
    path = tmp_path / "big.onnx"
    _linear_onnx(path, "N", sample_shape=(3, 16, 16))
    source = ModelSource(name="x", inputs=(TensorSpec("input", INPUT_SHAPE),), cache_key="x", onnx_path=path)
    with pytest.raises(ModelError, match="expects input 'input' of shape") as info:
        OnnxRuntimeBackend(BackendOptions()).load(source)
    assert "16" in str(info.value) and str(path) in str(info.value)


def test_onnx_with_the_wrong_rank(tmp_path):
    path = tmp_path / "flat.onnx"
    _linear_onnx(path, "N", sample_shape=(192,))
    source = ModelSource(name="x", inputs=(TensorSpec("input", INPUT_SHAPE),), cache_key="x", onnx_path=path)
    with pytest.raises(ModelError, match="expects input 'input' of shape"):
        OnnxRuntimeBackend(BackendOptions()).load(source)


def test_onnx_with_two_inputs(tmp_path):
    path = _onnx_file(
        tmp_path / "two.onnx",
        [("a", ["N", *INPUT_SHAPE]), ("b", ["N", *INPUT_SHAPE])],
        [helper.make_node("Add", ["a", "b"], ["output"])],
        out_dims=["N", *INPUT_SHAPE],
    )
    source = ModelSource(name="x", inputs=(TensorSpec("input", INPUT_SHAPE),), cache_key="x", onnx_path=path)
    with pytest.raises(ModelError, match="has 2 inputs"):
        OnnxRuntimeBackend(BackendOptions()).load(source)


def test_onnxruntime_cuda_without_provider(tmp_path):
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("needs an ONNX Runtime without CUDA")
    path = tmp_path / "dyn.onnx"
    _linear_onnx(path, "N")
    source = ModelSource(name="x", inputs=(TensorSpec("input", INPUT_SHAPE),), cache_key="x", onnx_path=path)
    with pytest.raises(BackendError, match="no CUDA provider"):
        OnnxRuntimeBackend(BackendOptions(device="cuda")).load(source)


def test_onnxruntime_unknown_device(tmp_path):
    path = tmp_path / "dyn.onnx"
    _linear_onnx(path, "N")
    source = ModelSource(name="x", inputs=(TensorSpec("input", INPUT_SHAPE),), cache_key="x", onnx_path=path)
    with pytest.raises(BackendError, match="unknown device 'tpu'"):
        OnnxRuntimeBackend(BackendOptions(device="tpu")).load(source)


# -- null --------------------------------------------------------------------------------


def test_null_backend():
    backend = NullBackend(BackendOptions())
    backend.load(_tiny_source())
    out = backend.run(_batch(7))
    assert out.shape == (7, 1) and out.dtype == np.float32
    assert not out.any()
    assert backend.run(_batch(0)).shape == (0, 1)
    info = backend.describe()
    assert info["backend"] == "null" and info["model"] == "tiny" and info["device"] == "none"


def test_null_backend_runs_one_instance():
    # Its whole path is Python under the GIL, so a second instance would only contend.
    assert NullBackend.default_workers == 1
    assert NullBackend.default_max_batch == 512
