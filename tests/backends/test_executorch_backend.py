"""The ExecuTorch backend: XNNPACK-lowered exports against the torch backend, INT8, caching, user .pte files.

Exports cost seconds each, so the module shares a handful of them: the tiny
conv model at batch sizes 1 and 4 (FP32) and 1 (INT8), the two-input model at 1
and 4; the user-file tests reuse those cached programs.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading

import numpy as np
import pytest
import torch

from mlgauge.backends.base import BackendOptions
from mlgauge.backends.executorch_backend import ExecuTorchBackend, calibration_digest, exported_pte_path
from mlgauge.backends.torch_backend import TorchBackend
from mlgauge.errors import BackendError, ModelError
from mlgauge.tasks.base import ModelSource
from mlgauge.tensors import TensorSpec

INPUT_SHAPE = (3, 8, 8)
# XNNPACK's float32 kernels sum in another order than torch's: measured max difference ~1e-6
ATOL = 1e-4
CALIBRATION = np.random.default_rng(100).standard_normal((64, *INPUT_SHAPE)).astype(np.float32)


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


class TwoInTwoOut(torch.nn.Module):
    """(a, b) -> (fc_a(a) + fc_b(b), relu(fc_g(a)))."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(7)
        self.fc_a, self.fc_b, self.fc_g = torch.nn.Linear(6, 3), torch.nn.Linear(4, 3), torch.nn.Linear(6, 2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)

    def forward(self, a, b):
        return self.fc_a(a) + self.fc_b(b), torch.relu(self.fc_g(a))


TWO_INPUTS = (TensorSpec("a", (6,)), TensorSpec("b", (4,)))
TWO_OUTPUTS = (TensorSpec("sum", (3,)), TensorSpec("gate", (2,)))


def _tiny_source(cache_key="et-tiny", build=_tiny_module, **kw) -> ModelSource:
    return ModelSource(
        name="tiny", inputs=(TensorSpec("input", INPUT_SHAPE),), cache_key=cache_key, build=build, calibration=lambda: CALIBRATION, **kw
    )


def _two_source(**kw) -> ModelSource:
    kw.setdefault("build", lambda: TwoInTwoOut().eval())
    return ModelSource(name="two", inputs=TWO_INPUTS, outputs=TWO_OUTPUTS, cache_key="et-two", **kw)


def _batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *INPUT_SHAPE)).astype(np.float32)


def _two_batch(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a": rng.standard_normal((n, 6)).astype(np.float32), "b": rng.standard_normal((n, 4)).astype(np.float32)}


def _load(source: ModelSource, **options) -> ExecuTorchBackend:
    backend = ExecuTorchBackend(BackendOptions(**{"threads": 1, **options}))
    backend.load(source)
    return backend


@pytest.fixture(scope="module")
def torch_tiny() -> TorchBackend:
    backend = TorchBackend(BackendOptions(threads=1))
    backend.load(_tiny_source())
    return backend


@pytest.fixture(scope="module")
def fp32() -> ExecuTorchBackend:
    return _load(_tiny_source())


@pytest.fixture(scope="module")
def two() -> ExecuTorchBackend:
    return _load(_two_source())


@pytest.fixture(scope="module")
def torch_two() -> TorchBackend:
    backend = TorchBackend(BackendOptions(threads=1))
    backend.load(_two_source())
    return backend


# -- FP32 against the torch backend ---------------------------------------------------------------


def test_conv_model_matches_torch(fp32, torch_tiny):
    for n in (1, 3):  # batch-size programs 1 and 4 (3 rows padded to 4)
        batch = _batch(n, seed=n)
        out = fp32.run(batch)
        assert out.shape == (n, 5) and out.dtype == np.float32
        np.testing.assert_allclose(out, torch_tiny.run(batch), atol=ATOL, rtol=0)
    info = fp32.describe()
    assert info["backend"] == "executorch" and info["device"] == "cpu" and info["delegate"] == "XnnpackBackend"
    assert info["batch_sizes"] == [1, 4] and info["fixed_batch"] is None and info["precision"] == "fp32"
    assert info["threads"] == 1  # the XNNPACK threadpool, resized from BackendOptions.threads


def test_batches_above_the_largest_program_run_in_chunks(fp32, torch_tiny):
    fp32.max_bucket = 4  # 9 rows -> 4 + 4 + 1: only the programs the previous test made
    try:
        batch = _batch(9, seed=9)
        np.testing.assert_allclose(fp32.run(batch), torch_tiny.run(batch), atol=ATOL, rtol=0)
        assert fp32.describe()["batch_sizes"] == [1, 4]
    finally:
        del fp32.max_bucket
    assert fp32.run(_batch(0)).shape == (0, 5)


def test_two_inputs_two_outputs_match_torch(two, torch_two):
    for n in (1, 4):
        batch = _two_batch(n, seed=n)
        got, want = two.run(batch), torch_two.run(batch)
        assert isinstance(got, tuple) and [o.shape for o in got] == [(n, 3), (n, 2)]
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, atol=ATOL, rtol=0)


def test_concurrent_runs_borrow_pooled_methods(fp32, torch_tiny):
    batches = {n: _batch(n, seed=50 + n) for n in (1, 3, 4)}
    wanted = {n: torch_tiny.run(b) for n, b in batches.items()}
    errors: list[BaseException] = []

    def work(sizes):
        try:
            for _ in range(10):
                for n in sizes:
                    np.testing.assert_allclose(fp32.run(batches[n]), wanted[n], atol=ATOL, rtol=0)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in ((1, 4), (3, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    # instances are pooled, not per thread: at most one per concurrent caller, reused by later threads
    pooled = max(len(v) for v in fp32._idle.values())
    assert 1 <= pooled <= 2
    later = threading.Thread(target=work, args=((1, 3),))
    later.start()
    later.join()
    assert not errors and max(len(v) for v in fp32._idle.values()) == pooled


# -- the export cache -------------------------------------------------------------------------------------


def test_exports_are_cached_and_not_redone(fp32, mlgauge_home):
    path = exported_pte_path(_tiny_source(), 1)
    assert path.is_file() and path.is_relative_to(mlgauge_home / "cache" / "executorch")
    assert path.name.startswith("et-tiny-torch") and torch.__version__ in path.name and path.name.endswith("-fp32-b1.pte")
    assert fp32.describe()["model_file"] == str(path)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".export-")]  # no temp leftovers
    mtime = path.stat().st_mtime_ns

    def must_not_build():
        raise AssertionError("the executorch backend re-exported a cached program")

    again = _load(_tiny_source(build=must_not_build))
    assert path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(again.run(_batch(4, seed=4)), fp32.run(_batch(4, seed=4)))


def test_export_failure_is_a_model_error():
    class Unexportable(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("this module cannot be traced")

    source = _tiny_source("et-unexportable", build=lambda: Unexportable().eval())
    with pytest.raises(ModelError, match="exporting tiny to ExecuTorch .* failed") as info:
        _load(source)
    assert "\n" not in str(info.value) and info.value.hint
    assert not exported_pte_path(source, 1).exists()


# -- INT8 ----------------------------------------------------------------------------------------------------


def test_int8_is_close_to_fp32(fp32):
    int8 = _load(_tiny_source(), precision="int8")
    batch = _batch(1, seed=77)
    reference = fp32.run(batch)
    out = int8.run(batch)
    # Measured over six single samples (static per-tensor activations, per-channel weights): max
    # |int8 - fp32| 0.014 to 0.033 on outputs reaching 1.4 to 3.3 in magnitude; this one: 0.033 of 1.53.
    assert np.abs(out - reference).max() <= 0.05
    assert not np.array_equal(out, reference)  # it did quantize
    info = int8.describe()
    assert info["precision"] == "int8"
    assert f"-int8w-cal{calibration_digest(CALIBRATION)}-b1.pte" in info["model_file"]


def test_int8_without_calibration_data():
    source = ModelSource(name="tiny", inputs=(TensorSpec("input", INPUT_SHAPE),), cache_key="et-nocal", build=_tiny_module)
    with pytest.raises(BackendError, match="needs calibration samples, and tiny provides none") as info:
        _load(source, precision="int8")
    assert "--precision fp32" in str(info.value)
    empty = dataclasses.replace(source, calibration=lambda: CALIBRATION[:0])
    with pytest.raises(BackendError, match="calibration split is empty"):
        _load(empty, precision="int8")


# -- user .pte files ------------------------------------------------------------------------------------------


def test_user_pte_with_a_fixed_batch(two, torch_two, tmp_path):
    two.run(_two_batch(4))  # makes sure the batch-4 program exists
    user = tmp_path / "two-b4.pte"
    shutil.copy(exported_pte_path(_two_source(), 4), user)
    backend = _load(_two_source(build=None, pte_path=user))
    assert backend.describe()["fixed_batch"] == 4 and backend.describe()["model_file"] == str(user)
    for n in (1, 6):  # padded to 4; 4 + 2 padded to 4
        batch = _two_batch(n, seed=30 + n)
        for g, w in zip(backend.run(batch), torch_two.run(batch), strict=True):
            np.testing.assert_allclose(g, w, atol=ATOL, rtol=0)


def test_user_pte_of_the_wrong_shape(fp32, tmp_path):
    user = tmp_path / "tiny.pte"
    shutil.copy(exported_pte_path(_tiny_source(), 1), user)
    source = ModelSource(name="big", inputs=(TensorSpec("input", (3, 16, 16)),), cache_key="k", pte_path=user)
    with pytest.raises(ModelError, match=r"expects input 0 \('input'\) of shape \[1, 3, 8, 8\] float32") as info:
        _load(source)
    assert "['batch', 3, 16, 16]" in str(info.value)
    with pytest.raises(ModelError, match="takes 1 inputs; this task feeds 2"):
        _load(_two_source(build=None, pte_path=user))


def test_missing_and_corrupt_pte_files(fp32, tmp_path):
    with pytest.raises(ModelError, match="does not exist") as info:
        _load(_tiny_source(build=None, pte_path=tmp_path / "nope.pte"))
    assert info.value.hint
    junk = tmp_path / "junk.pte"
    junk.write_bytes(np.random.default_rng(3).bytes(4096))  # would abort the process inside ExecuTorch unchecked
    with pytest.raises(ModelError, match="is not an ExecuTorch program"):
        _load(_tiny_source(build=None, pte_path=junk))
    whole = exported_pte_path(_tiny_source(), 1).read_bytes()
    cut = tmp_path / "cut.pte"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ModelError, match="ExecuTorch cannot load") as info:
        _load(_tiny_source(build=None, pte_path=cut))
    assert str(cut) in str(info.value) and "\n" not in str(info.value)


def test_samples_of_the_wrong_shape_at_run_time(fp32):
    with pytest.raises(ModelError, match=r"samples of shape \[3, 8, 9\]"):
        fp32.run(np.zeros((1, 3, 8, 9), np.float32))


# -- what it refuses ---------------------------------------------------------------------------------------


def test_onnx_or_tflite_files_are_refused(tmp_path):
    source = ModelSource(name="x", inputs=(TensorSpec("input", INPUT_SHAPE),), cache_key="k", onnx_path=tmp_path / "m.onnx")
    with pytest.raises(ModelError, match="runs PyTorch models or .pte files") as info:
        _load(source)
    assert "onnxruntime" in str(info.value)


def test_options_it_cannot_honour(tmp_path):
    user = tmp_path / "m.pte"
    with pytest.raises(BackendError, match="runs as it is"):
        _load(_tiny_source(build=None, pte_path=user), precision="int8")
    with pytest.raises(BackendError, match="unknown precision 'int4'"):
        _load(_tiny_source(), precision="int4")
    with pytest.raises(BackendError, match="CPU"):
        _load(_tiny_source(), device="cuda")
    with pytest.raises(BackendError, match="unknown device 'tpu'"):
        _load(_tiny_source(), device="tpu")
