"""The edsr task: PSNR by hand, post-processing, the prepared stand-in on torch and onnxruntime,
the real SR-folder path with state-dict / ONNX / TFLite weights."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlgauge.backends.base import BackendOptions
from mlgauge.backends.null_backend import NullBackend
from mlgauge.backends.onnxruntime_backend import OnnxRuntimeBackend
from mlgauge.backends.torch_backend import TorchBackend
from mlgauge.data.sr_pairs import upscale_bicubic
from mlgauge.data.synthetic_sr import generate
from mlgauge.errors import DataError, ModelError, UsageError
from mlgauge.models.edsr import EDSR
from mlgauge.rules import QualityTarget, standin_rules
from mlgauge.tasks.base import Workload
from mlgauge.tasks.super_resolution import (
    PSNR_CAP_DB,
    EdsrTask,
    make_psnr_score,
    make_sr_postprocess,
    psnr,
)

TARGET = QualityTarget(metric="PSNR", unit="dB", reference=30.0, fraction=1.0)


# -- PSNR by hand ------------------------------------------------------------------


def test_identical_images_are_capped_not_infinite():
    image = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    assert psnr(image, image.copy()) == PSNR_CAP_DB == 100.0


def test_uniform_error_of_5_levels():
    hr = np.full((6, 4, 3), 100, dtype=np.uint8)
    sr = hr + np.uint8(5)
    # MSE = 25 -> 10 * log10(255^2 / 25) = 10 * log10(2601)
    assert psnr(sr, hr) == pytest.approx(34.151403521958725, abs=1e-9)
    assert psnr(hr, sr) == pytest.approx(34.151403521958725, abs=1e-9)  # symmetric, no uint8 wrap-around


def test_one_wrong_value_out_of_twelve():
    hr = np.zeros((2, 2, 3), dtype=np.uint8)
    sr = hr.copy()
    sr[1, 0, 2] = 255
    # MSE = 255^2 / 12 -> PSNR = 10 * log10(12), over all pixels AND channels
    assert psnr(sr, hr) == pytest.approx(10.791812460476248, abs=1e-9)


def test_crop_border_ignores_the_edges():
    hr = np.zeros((6, 6, 3), dtype=np.uint8)
    sr = hr.copy()
    sr[0, :, :] = 200  # only the top row differs
    assert psnr(sr, hr, crop_border=2) == PSNR_CAP_DB
    sr[3, 3, 0] = 10  # one value inside the 2x2x3 centre
    assert psnr(sr, hr, crop_border=2) == pytest.approx(10 * math.log10(255**2 / (100 / 12)), abs=1e-9)
    # Without the crop the top row counts: 6*3 values of 200^2 plus one of 10^2, over 108.
    assert psnr(sr, hr) == pytest.approx(10 * math.log10(255**2 / ((18 * 200**2 + 100) / 108)), abs=1e-9)


def test_psnr_shape_mismatch():
    with pytest.raises(ValueError, match="equal shapes"):
        psnr(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 3, 3), np.uint8))


def test_score_is_the_mean_over_images_of_flattened_responses():
    hr = np.zeros((3, 2, 2, 3), dtype=np.uint8)
    exact = hr[0].reshape(-1)
    off_by_5 = (hr[1] + 5).reshape(1, -1)  # shaped as decode_accuracy_log gives it
    one_wrong = hr[2].copy()
    one_wrong[0, 0, 0] = 255
    score = make_psnr_score(hr, (2, 2, 3), TARGET)
    result = score({2: one_wrong.reshape(-1), 0: exact, 1: off_by_5})
    expected = (100.0 + 10 * math.log10(2601) + 10 * math.log10(12)) / 3
    assert result.metric == "PSNR" and result.unit == "dB"
    assert result.value == pytest.approx(expected, abs=1e-9)
    assert result.samples == 3
    assert result.details["capped"] == 1 and result.details["crop_border"] == 0
    assert result.details["min_db"] == pytest.approx(10 * math.log10(12))
    assert result.passed  # 48.3 >= 30
    assert not score({2: one_wrong.reshape(-1)}).passed


def test_score_of_nothing_and_of_a_wrong_size():
    score = make_psnr_score(np.zeros((1, 2, 2, 3), np.uint8), (2, 2, 3), TARGET)
    assert score({}).samples == 0 and not score({}).passed
    with pytest.raises(ModelError, match="has 3 values, not 12"):
        score({0: np.zeros(3, np.uint8)})


# -- post-processing -------------------------------------------------------------------


def test_postprocess_rounds_clips_and_goes_to_hwc():
    out = np.zeros((1, 3, 1, 2), dtype=np.float32)
    out[0, :, 0, 0] = [-3.2, 254.6, 300.0]
    out[0, :, 0, 1] = [1.4, 1.6, 128.0]
    got = make_sr_postprocess("NCHW")(out)
    assert got.dtype == np.uint8 and got.shape == (1, 1, 2, 3)
    np.testing.assert_array_equal(got[0, 0], [[0, 255, 255], [1, 2, 128]])
    nhwc = make_sr_postprocess("NHWC")((out.transpose(0, 2, 3, 1),))  # tuple outputs take the first
    np.testing.assert_array_equal(nhwc, got)


def test_postprocess_rejects_non_images():
    with pytest.raises(ModelError, match="not a batch of RGB images"):
        make_sr_postprocess("NCHW")(np.zeros((2, 4, 8, 8), np.float32))
    with pytest.raises(ModelError, match="not a batch of RGB images"):
        make_sr_postprocess("NHWC")(np.zeros((2, 10), np.float32))


# -- the prepared stand-in -----------------------------------------------------------


@pytest.fixture(scope="module")
def prepared() -> dict:
    return EdsrTask().prepare()


def _backend_psnr(workload: Workload, backend_cls) -> float:
    backend = backend_cls(BackendOptions(threads=1))
    backend.load(workload.model)
    n = workload.dataset.total_count
    responses = workload.postprocess(backend.run(workload.dataset.load(range(n))))
    assert responses.dtype == workload.response_dtype == np.uint8
    result = workload.score({i: responses[i].reshape(-1) for i in range(n)})
    assert result.samples == n
    return result


def test_prepared_meta_brackets_the_target(prepared):
    threshold = standin_rules()["edsr"].quality.threshold
    assert prepared["task"] == "edsr" and prepared["model"] == {"features": 16, "blocks": 2, "scale": 2}
    assert prepared["val_psnr_trained_db"] > threshold + 0.5
    assert prepared["val_psnr_bicubic_db"] < threshold - 0.5
    assert prepared["val_psnr_untrained_db"] < 20.0
    assert EdsrTask().is_prepared()
    assert EdsrTask().prepare() == prepared  # cached


def test_standin_workload_shape(prepared):
    workload = EdsrTask().workload()
    assert workload.task == "edsr" and workload.benchmark == "edsr"
    assert workload.dataset.label == "synthetic"
    assert workload.dataset.total_count == 128 and workload.dataset.performance_count == 128
    assert workload.dataset.load([0, 3]).shape == (2, 3, 32, 32)
    assert workload.model.inputs[0].shape == (3, 32, 32)
    assert workload.model.outputs[0].shape == (3, 64, 64)
    assert workload.quality == standin_rules()["edsr"].quality
    assert workload.model.cache_key.startswith("edsr-synthetic-v1-torch-")
    assert EdsrTask().workload(count=10).dataset.total_count == 10


def test_calibration_is_train_split_inputs(prepared):
    calibration = EdsrTask().workload().model.calibration()
    assert calibration.shape == (64, 3, 32, 32) and calibration.dtype == np.float32
    np.testing.assert_array_equal(calibration, generate(range(64), "train")[0])


@pytest.mark.parametrize("backend_cls", [TorchBackend, OnnxRuntimeBackend], ids=["torch", "onnxruntime"])
def test_trained_model_meets_the_target(prepared, backend_cls):
    result = _backend_psnr(EdsrTask().workload(), backend_cls)
    assert result.value == pytest.approx(prepared["val_psnr_trained_db"], abs=0.01)
    assert result.passed


@pytest.fixture(scope="module")
def untrained_weights(tmp_path_factory) -> Path:
    torch.manual_seed(7)
    path = tmp_path_factory.mktemp("edsr") / "untrained.pt"
    torch.save(EDSR(16, 2, 2).state_dict(), path)
    return path


@pytest.mark.parametrize("backend_cls", [TorchBackend, OnnxRuntimeBackend], ids=["torch", "onnxruntime"])
def test_untrained_model_fails_the_target(prepared, untrained_weights, backend_cls):
    result = _backend_psnr(EdsrTask().workload(weights_path=untrained_weights), backend_cls)
    assert result.value < 20.0
    assert not result.passed


def test_bicubic_upscaling_fails_the_target(prepared):
    workload = EdsrTask().workload()
    lr = workload.dataset.load(range(workload.dataset.total_count)).astype(np.uint8).transpose(0, 2, 3, 1)
    responses = {i: upscale_bicubic(x, 2).reshape(-1) for i, x in enumerate(lr)}
    result = workload.score(responses)
    assert result.value == pytest.approx(prepared["val_psnr_bicubic_db"], abs=1e-3)
    assert not result.passed


def test_null_backend_zeros_postprocess_and_score(prepared):
    workload = EdsrTask().workload(count=4)
    backend = NullBackend(BackendOptions())
    backend.load(workload.model)
    responses = workload.postprocess(backend.run(workload.dataset.load(range(4))))
    assert responses.shape == (4, 64, 64, 3) and not responses.any()
    result = workload.score({i: responses[i].reshape(-1) for i in range(4)})
    assert result.samples == 4 and np.isfinite(result.value) and not result.passed


def test_standin_before_prepare_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MLGAUGE_HOME", str(tmp_path))
    assert not EdsrTask().is_prepared()
    with pytest.raises(DataError, match="mlgauge prepare edsr"):
        EdsrTask().workload()


# -- the real benchmark: an SR folder + user weights ---------------------------------------


@pytest.fixture
def sr_folder(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    for name in ("img1.png", "img2.png"):
        for sub, size in (("LR", (8, 12)), ("HR", (16, 24))):
            (tmp_path / "sr" / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(tmp_path / "sr" / sub / name)
    return tmp_path / "sr"


@pytest.fixture(scope="module")
def f32b5_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("edsr") / "f32b5.pt"
    torch.save(EDSR(32, 5, 2).state_dict(), path)
    return path


def test_real_path_with_a_state_dict(sr_folder, f32b5_weights):
    workload = EdsrTask().workload(dataset_path=sr_folder, weights_path=f32b5_weights)
    assert workload.dataset.label == "snusr" and workload.dataset.total_count == 2
    assert workload.quality.reference == 33.58
    assert workload.quality.threshold == pytest.approx(33.0, abs=1e-4)
    assert workload.model.inputs[0].shape == (3, 8, 12)
    assert workload.model.outputs[0].shape == (3, 16, 24)
    assert workload.model.calibration is None  # no official calibration set; never the scored images
    model = workload.model.build()
    assert (model.features, model.blocks, model.scale) == (32, 5, 2)
    reference = EDSR(32, 5, 2)
    reference.load_state_dict(torch.load(f32b5_weights, weights_only=True))
    x = workload.dataset.load([0, 1])
    with torch.no_grad():
        out = model(torch.from_numpy(x)).numpy()
        torch.testing.assert_close(torch.from_numpy(out), reference.eval()(torch.from_numpy(x)))
    responses = workload.postprocess(out)
    assert responses.shape == (2, 16, 24, 3)
    expected = np.mean([psnr(responses[i], workload.dataset.hr_image(i)) for i in range(2)])
    assert workload.score({i: responses[i].reshape(-1) for i in range(2)}).value == pytest.approx(expected)


def test_real_path_with_onnx_and_tflite_files(sr_folder, tmp_path):
    onnx = tmp_path / "edsr.onnx"
    onnx.write_bytes(b"parsed by the backend, not here")
    workload = EdsrTask().workload(dataset_path=sr_folder, weights_path=onnx)
    assert workload.model.onnx_path == onnx and workload.model.build is None
    assert workload.model.inputs[0].shape == (3, 8, 12)

    tflite = tmp_path / "edsr_f32b5_fp32.tflite"
    tflite.write_bytes(b"parsed by the backend, not here")
    workload = EdsrTask().workload(dataset_path=sr_folder, weights_path=tflite)
    assert workload.model.tflite_path == tflite and workload.model.build is None
    # TFLite is NHWC end to end: samples, declared input and output.
    assert workload.dataset.layout == "NHWC"
    assert workload.dataset.load([0]).shape == (1, 8, 12, 3)
    assert workload.model.inputs[0].shape == (8, 12, 3)
    assert workload.model.outputs[0].shape == (16, 24, 3)
    assert workload.postprocess(np.zeros((1, 16, 24, 3), np.float32)).shape == (1, 16, 24, 3)


def test_real_path_errors(sr_folder, tmp_path, f32b5_weights):
    task = EdsrTask()
    with pytest.raises(ModelError, match="needs weights") as info:
        task.workload(dataset_path=sr_folder)
    assert "edsr_f32b5_fp32.tflite" in info.value.hint
    with pytest.raises(UsageError, match="no edsr benchmark") as info:
        task.workload(dataset_path=sr_folder, weights_path=f32b5_weights, round="v6.0")
    assert "mobile-v6.0" in info.value.hint
    with pytest.raises(ModelError, match="does not exist"):
        task.workload(dataset_path=sr_folder, weights_path=tmp_path / "gone.pt")
    with pytest.raises(DataError, match="does not exist"):
        task.workload(dataset_path=tmp_path / "nothing", weights_path=f32b5_weights)


def test_state_dicts_that_do_not_fit(sr_folder, tmp_path):
    x3 = tmp_path / "x3.pt"
    torch.save(EDSR(8, 1, 3).state_dict(), x3)
    with pytest.raises(ModelError, match="3x EDSR"):
        EdsrTask().workload(dataset_path=sr_folder, weights_path=x3).model.build()
    foreign = tmp_path / "foreign.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, foreign)
    with pytest.raises(ModelError, match="not an EDSR state dict"):
        EdsrTask().workload(dataset_path=sr_folder, weights_path=foreign).model.build()
    broken = EDSR(8, 1, 2).state_dict()
    del broken["body.0.body.2.bias"]
    partial = tmp_path / "partial.pt"
    torch.save(broken, partial)
    with pytest.raises(ModelError, match="does not fit the model"):
        EdsrTask().workload(dataset_path=sr_folder, weights_path=partial).model.build()
