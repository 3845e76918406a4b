"""The mobilenet-v4 task: MLPerf Mobile's preprocessing pinned by hand, model files, the stand-in on real backends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image

from mlgauge.backends.base import BackendOptions
from mlgauge.backends.model_files import model_file_layout
from mlgauge.backends.null_backend import NullBackend
from mlgauge.backends.onnxruntime_backend import OnnxRuntimeBackend
from mlgauge.backends.torch_backend import TorchBackend
from mlgauge.data import synthetic_images
from mlgauge.errors import DataError, ModelError
from mlgauge.models.mobilenet import SmallMobileNet
from mlgauge.rules import inference_rules, standin_rules
from mlgauge.tasks.mobile_classification import MobileNetTask, preprocess_mobilenet_v4

# -- preprocessing ----------------------------------------------------------------------------


def test_preprocessing_resizes_the_short_side_to_438_and_crops_the_centre():
    """A ramp image makes every output pixel name its source position.

    200x150 (w x h): 438/200 < 438/150, so the width becomes round(200 * 438/150) = 584 and the
    height 438; the central 384x384 crop starts at column (584-384)/2 = 100 and row (438-384)/2 = 27.
    TFLite's bilinear resize (no aligned corners, no half-pixel centres) samples source x = j * 200/584,
    and a linear ramp interpolates to exactly that position.
    """
    h, w = 150, 200
    pixels = np.zeros((h, w, 3), dtype=np.uint8)
    pixels[..., 0] = np.arange(w)[None, :]  # red = source column, green = source row
    pixels[..., 1] = np.arange(h)[:, None]
    pixels[..., 2] = 255
    out = preprocess_mobilenet_v4(pixels)
    assert out.shape == (384, 384, 3) and out.dtype == np.float32
    cols = (np.arange(384) + 100) * np.float32(200 / 584)
    rows = (np.arange(384) + 27) * np.float32(150 / 438)
    np.testing.assert_allclose(out[0, :, 0], (cols - 127.5) / 127.5, atol=1e-5)
    np.testing.assert_allclose(out[:, 0, 1], (rows - 127.5) / 127.5, atol=1e-5)
    np.testing.assert_allclose(out[..., 2], 1.0, rtol=1e-6)


def test_preprocessing_of_a_wide_image_keeps_the_height_at_438():
    pixels = np.zeros((300, 500, 3), dtype=np.uint8)
    pixels[:, 250:] = 255
    out = preprocess_mobilenet_v4(pixels)
    # Width round(500 * 438/300) = 730, crop from column 173. Source x = j * 500/730 is 249.315 at
    # j = 364 (cropped column 191), a blend of the last dark and first bright pixel, and 250 from j = 365.
    assert out.shape == (384, 384, 3)
    np.testing.assert_allclose(out[:, :191], -1.0)
    np.testing.assert_allclose(out[:, 191], (255 * (364 * 500 / 730 - 249) - 127.5) / 127.5, atol=1e-4)
    np.testing.assert_allclose(out[:, 192:], 1.0, rtol=1e-6)


# -- model files --------------------------------------------------------------------------------


def _classifier_onnx(path: Path, layout: str) -> Path:
    """Mean colour -> 1000 logits: red wins class 65, green class 0, blue class 999."""
    weights = np.zeros((3, 1000), dtype=np.float32)
    weights[0, 65] = weights[1, 0] = weights[2, 999] = 1.0
    shape, axes = (["N", 384, 384, 3], [1, 2]) if layout == "NHWC" else (["N", 3, 384, 384], [2, 3])
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image"], ["mean"], axes=axes, keepdims=0),
            helper.make_node("MatMul", ["mean", "w"], ["logits"]),
        ],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])],
        initializer=[helper.make_tensor("w", TensorProto.FLOAT, [3, 1000], weights.ravel().tolist())],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_model_file_layout(tmp_path):
    assert model_file_layout(_classifier_onnx(tmp_path / "a.onnx", "NHWC"), "X") == "NHWC"
    assert model_file_layout(_classifier_onnx(tmp_path / "b.onnx", "NCHW"), "X") == "NCHW"
    assert model_file_layout(tmp_path / "never-read.tflite", "X") == "NHWC"
    with pytest.raises(ModelError, match=r"X runs from a \.tflite or \.onnx file, not w\.pt"):
        model_file_layout(tmp_path / "w.pt", "X")
    flat = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
    )
    onnx.save(helper.make_model(flat), tmp_path / "flat.onnx")
    with pytest.raises(ModelError, match="takes a 2-d input 'x'"):
        model_file_layout(tmp_path / "flat.onnx", "X")


# -- the real benchmark (ImageNet layout) --------------------------------------------------------


@pytest.fixture
def tiny_imagenet(tmp_path) -> Path:
    root = tmp_path / "imagenet"
    root.mkdir()
    lines = []
    for i, (size, colour, label) in enumerate(
        [((300, 260), (255, 0, 0), 65), ((256, 256), (0, 255, 0), 0), ((200, 400), (0, 0, 255), 7)], start=1
    ):
        name = f"ILSVRC2012_val_{i:08d}.JPEG"
        Image.new("RGB", size, colour).save(root / name, quality=95)
        lines.append(f"{name} {label}")
    (root / "val_map.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_imagenet_with_onnx_models_in_both_layouts(tiny_imagenet, tmp_path, layout):
    path = _classifier_onnx(tmp_path / f"mnv4-{layout}.onnx", layout)
    workload = MobileNetTask().workload(dataset_path=tiny_imagenet, weights_path=path)
    rule = inference_rules("mobile-v6.0").benchmark("mobilenet-v4")
    assert workload.benchmark == "mobilenet-v4" and workload.quality == rule.quality
    assert workload.quality.threshold == pytest.approx(82.68 * 0.98)
    assert workload.dataset.label == "imagenet" and workload.dataset.total_count == 3
    shape = (384, 384, 3) if layout == "NHWC" else (3, 384, 384)
    assert workload.dataset.sample_shape == shape and workload.model.inputs[0].shape == shape
    assert workload.model.onnx_path == path and workload.model.build is None
    assert workload.model.calibration().shape == (3, *shape)

    backend = OnnxRuntimeBackend(BackendOptions(threads=1))
    backend.load(workload.model)
    responses = workload.postprocess(backend.run(workload.dataset.load([0, 1, 2])))
    assert responses.dtype == np.int32
    np.testing.assert_array_equal(responses, [65, 0, 999])
    result = workload.score({i: responses[i : i + 1] for i in range(3)})
    assert result.value == pytest.approx(200 / 3)  # the blue image is labelled 7, not 999
    assert result.details == {"good": 2, "total": 3}


def test_imagenet_with_a_tflite_file_is_nhwc(tiny_imagenet, tmp_path):
    path = tmp_path / "MobileNetV4-Conv-Large-int8-ptq.tflite"
    path.write_bytes(b"not parsed until a backend loads it")
    workload = MobileNetTask().workload(dataset_path=tiny_imagenet, weights_path=path, count=2)
    assert workload.model.tflite_path == path and workload.model.onnx_path is None
    assert workload.model.inputs[0].shape == (384, 384, 3)
    assert workload.model.outputs[0].shape == (1000,)
    assert workload.dataset.total_count == 2
    null = NullBackend(BackendOptions())
    null.load(workload.model)
    responses = workload.postprocess(null.run(workload.dataset.load([0, 1])))
    np.testing.assert_array_equal(responses, [0, 0])
    assert workload.score({0: responses[:1], 1: responses[1:]}).value == pytest.approx(50.0)


def test_imagenet_model_file_errors(tiny_imagenet, tmp_path):
    with pytest.raises(ModelError, match="needs a model file"):
        MobileNetTask().workload(dataset_path=tiny_imagenet)
    pt = tmp_path / "mnv4.pth"
    pt.write_bytes(b"x")
    with pytest.raises(ModelError, match="not mnv4.pth"):
        MobileNetTask().workload(dataset_path=tiny_imagenet, weights_path=pt)
    tflite = tmp_path / "m.tflite"
    tflite.write_bytes(b"x")
    with pytest.raises(DataError, match="does not exist"):
        MobileNetTask().workload(dataset_path=tmp_path / "nope", weights_path=tflite)


# -- the synthetic stand-in ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(mlgauge_home) -> dict:
    return MobileNetTask().prepare()


def _evaluate(workload, backend_cls):
    backend = backend_cls(BackendOptions(threads=1))
    backend.load(workload.model)
    n = workload.dataset.total_count
    predictions = {}
    for start in range(0, n, 256):
        rows = list(range(start, min(n, start + 256)))
        responses = workload.postprocess(backend.run(workload.dataset.load(rows)))
        assert responses.dtype == workload.response_dtype
        predictions.update((i, responses[k : k + 1]) for k, i in enumerate(rows))
    return workload.score(predictions)


def test_prepare_is_calibrated_against_the_standin_target(prepared):
    rule = standin_rules()["mobilenet-v4"]
    assert rule.performance_sample_count == 1024
    assert prepared["task"] == "mobilenet-v4" and prepared["val_samples"] == 2048
    assert prepared["val_top1_trained"] > rule.quality.threshold > prepared["val_top1_untrained"]
    assert prepared["val_top1_untrained"] < 20.0  # chance is 10%
    assert MobileNetTask().is_prepared()
    assert MobileNetTask().prepare() == prepared  # cached


def test_standin_workload_shape(prepared):
    workload = MobileNetTask().workload()
    assert workload.task == "mobilenet-v4" and workload.benchmark == "mobilenet-v4"
    assert workload.dataset.label == "synthetic"
    assert workload.dataset.total_count == 2048 and workload.dataset.performance_count == 1024
    assert workload.model.inputs[0].shape == (3, 32, 32)
    assert workload.model.outputs[0].shape == (10,)
    assert workload.response_dtype == np.int32
    calibration = workload.model.calibration()
    assert calibration.shape == (128, 3, 32, 32) and calibration.dtype == np.float32
    np.testing.assert_array_equal(calibration[:2], synthetic_images.generate([0, 1], "train")[0])
    assert MobileNetTask().workload(count=100).dataset.total_count == 100


@pytest.mark.parametrize("backend_cls", [TorchBackend, OnnxRuntimeBackend], ids=["torch", "onnxruntime"])
def test_prepared_model_meets_the_target(prepared, backend_cls):
    result = _evaluate(MobileNetTask().workload(), backend_cls)
    assert result.passed, result.value
    assert result.value == pytest.approx(prepared["val_top1_trained"], abs=0.2)


@pytest.mark.parametrize("backend_cls", [TorchBackend, OnnxRuntimeBackend], ids=["torch", "onnxruntime"])
def test_untrained_model_fails_the_target(prepared, tmp_path_factory, backend_cls):
    path = tmp_path_factory.getbasetemp() / "mobilenet-untrained.pt"
    if not path.exists():
        torch.manual_seed(123)
        torch.save(SmallMobileNet().state_dict(), path)
    result = _evaluate(MobileNetTask().workload(weights_path=path), backend_cls)
    assert not result.passed
    assert result.value < 25.0


def test_null_backend_zeros_decode_and_score(prepared):
    workload = MobileNetTask().workload(count=50)
    backend = NullBackend(BackendOptions())
    backend.load(workload.model)
    responses = workload.postprocess(backend.run(workload.dataset.load(range(50))))
    np.testing.assert_array_equal(responses, np.zeros(50, dtype=np.int32))
    result = workload.score({i: responses[i : i + 1] for i in range(50)})
    expected = 100.0 * float((workload.dataset.ground_truth() == 0).mean())
    assert result.value == pytest.approx(expected) and not result.passed
