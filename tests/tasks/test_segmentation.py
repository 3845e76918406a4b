"""The mosaic task: mIoU pinned by hand, response decoding, the stand-in on real backends, the ADE20K path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from mlgauge.backends.base import BackendOptions
from mlgauge.backends.null_backend import NullBackend
from mlgauge.backends.onnxruntime_backend import OnnxRuntimeBackend
from mlgauge.backends.torch_backend import TorchBackend
from mlgauge.data import synthetic_segmentation as scenes
from mlgauge.errors import DataError, ModelError
from mlgauge.models.segmentation import MobileSegmenter
from mlgauge.rules import QualityTarget, inference_rules, standin_rules
from mlgauge.tasks.segmentation import (
    MosaicTask,
    class_ids_postprocess,
    class_iou,
    confusion_matrix,
    make_miou_score,
    mean_iou,
)

TARGET = QualityTarget(metric="mIoU", unit="%", reference=80.0, fraction=0.5)  # threshold 40%


# -- the metric ------------------------------------------------------------------------------


def test_mean_iou_against_a_hand_computed_confusion_matrix():
    truth = np.array([0, 0, 1, 1, 2, 2, 255])
    pred = np.array([0, 1, 1, 1, 2, 0, 2])
    conf = confusion_matrix(pred, truth, num_classes=3, ignore_label=255)
    # rows = truth, columns = prediction (+ a last column for out-of-range ids); the 255 pixel is dropped.
    np.testing.assert_array_equal(conf, [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0]])
    # Independent route: scikit-learn's confusion matrix of the same pixels.
    np.testing.assert_array_equal(conf[:, :3], sk_confusion_matrix(truth[:6], pred[:6], labels=[0, 1, 2]))
    # IoU = TP / (truth + predicted - TP): 1/(2+2-1), 2/(2+3-2), 1/(2+1-1).
    np.testing.assert_allclose(class_iou(conf, ignore_label=255), [1 / 3, 2 / 3, 1 / 2])
    assert mean_iou(conf, ignore_label=255) == pytest.approx(50.0)


def test_ignore_label_zero_as_in_the_mobile_app():
    # ADE20K style: 0 is ignored. A class predicted on an ignored pixel is no false positive;
    # predicting 0 (or an id out of range) on a labelled pixel is a miss for its class.
    truth = np.array([0, 0, 1, 1, 2, 2, 2])
    pred = np.array([1, 2, 1, 0, 2, 2, 9])
    conf = confusion_matrix(pred, truth, num_classes=3, ignore_label=0)
    np.testing.assert_array_equal(conf, [[0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 2, 1]])
    iou = class_iou(conf, ignore_label=0)
    assert np.isnan(iou[0])
    np.testing.assert_allclose(iou[1:], [1 / 2, 2 / 3])  # 1/(2+1-1), 2/(3+2-2)
    assert mean_iou(conf, ignore_label=0) == pytest.approx(100 * (1 / 2 + 2 / 3) / 2)


def test_classes_absent_from_truth_and_prediction_are_left_out():
    conf = confusion_matrix(np.array([1, 1]), np.array([1, 1]), num_classes=4, ignore_label=255)
    assert np.isnan(class_iou(conf, 255)[[0, 2, 3]]).all()
    assert mean_iou(conf, 255) == pytest.approx(100.0)
    # A class only predicted (never true) has IoU 0 and counts.
    conf = confusion_matrix(np.array([1, 3]), np.array([1, 1]), num_classes=4, ignore_label=255)
    assert mean_iou(conf, 255) == pytest.approx(100 * (1 / 2 + 0) / 2)
    assert mean_iou(np.zeros((3, 4), dtype=np.int64), 255) == 0.0


def test_score_accumulates_over_samples_and_checks_sizes():
    masks = np.array([[[1, 1], [2, 2]], [[0, 0], [0, 2]]], dtype=np.uint8)
    score = make_miou_score(masks, num_classes=3, ignore_label=0, target=TARGET)
    predictions = {0: np.array([1, 2, 2, 2], dtype=np.uint8), 1: np.array([1, 1, 1, 2], dtype=np.uint8)}
    result = score(predictions)
    # Class 1: TP 1, truth 2, predicted 1 (ignored pixels do not count) -> 1/2. Class 2: TP 3, truth 3, pred 4 -> 3/4.
    assert result.metric == "mIoU" and result.unit == "%"
    assert result.value == pytest.approx(62.5)
    assert result.samples == 2
    assert result.details == {"classes_scored": 2, "class_iou": {"1": 50.0, "2": 75.0}}
    assert result.passed
    with pytest.raises(ModelError, match="sample 1 has 3 class ids, but its mask has 4 pixels"):
        score({1: np.array([1, 1, 1], dtype=np.uint8)})
    assert score({}).value == 0.0


# -- decoding model outputs --------------------------------------------------------------------


def test_postprocess_accepts_logits_in_either_layout_and_class_ids():
    post = class_ids_postprocess(2, 3)
    ids = np.array([[[0, 1, 2], [2, 1, 0]]])  # (1, 2, 3)
    nchw = np.eye(3, dtype=np.float32)[ids].transpose(0, 3, 1, 2)  # one-hot logits (1, 3, 2, 3)
    expected = np.array([[0, 1, 2, 2, 1, 0]], dtype=np.uint8)
    for outputs in (nchw, nchw.transpose(0, 2, 3, 1), ids, ids[..., None], ids[:, None], (nchw, np.zeros(1))):
        out = post(outputs)
        assert out.dtype == np.uint8 and out.flags.c_contiguous
        np.testing.assert_array_equal(out, expected)
    with pytest.raises(ModelError, match=r"output of shape \[1, 3, 4, 4\] does not fit 2x3 inputs"):
        post(np.zeros((1, 3, 4, 4), dtype=np.float32))


# -- the synthetic stand-in -------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(mlgauge_home) -> dict:
    return MosaicTask().prepare()


def _evaluate(workload, backend_cls, n: int = 256):
    backend = backend_cls(BackendOptions(threads=1))
    backend.load(workload.model)
    predictions = {}
    for start in range(0, n, 64):
        rows = list(range(start, min(n, start + 64)))
        responses = workload.postprocess(backend.run(workload.dataset.load(rows)))
        assert responses.dtype == workload.response_dtype and responses.shape == (len(rows), 64 * 64)
        predictions.update(zip(rows, responses, strict=True))
    return workload.score(predictions)


def test_prepare_is_calibrated_against_the_standin_target(prepared):
    target = standin_rules()["mosaic"].quality
    assert standin_rules()["mosaic"].performance_sample_count == 256
    assert prepared["task"] == "mosaic" and prepared["val_samples"] == 512
    assert prepared["val_miou_trained"] > target.threshold > prepared["val_miou_untrained"]
    assert prepared["val_miou_untrained"] < 20.0
    assert MosaicTask().is_prepared()
    assert MosaicTask().prepare() == prepared  # cached


def test_standin_workload_shape(prepared):
    workload = MosaicTask().workload()
    assert workload.task == "mosaic" and workload.benchmark == "mosaic"
    assert workload.dataset.label == "synthetic"
    assert workload.dataset.total_count == 512 and workload.dataset.performance_count == 256
    assert workload.response_dtype == np.uint8
    assert workload.model.inputs[0].shape == (3, 64, 64)
    assert workload.model.outputs[0].shape == (5, 64, 64)
    calibration = workload.model.calibration()
    assert calibration.shape == (128, 3, 64, 64) and calibration.dtype == np.float32
    np.testing.assert_array_equal(calibration[:2], scenes.generate([0, 1], "train")[0])  # the train split
    assert MosaicTask().workload(count=10).dataset.total_count == 10


@pytest.mark.parametrize("backend_cls", [TorchBackend, OnnxRuntimeBackend], ids=["torch", "onnxruntime"])
def test_prepared_model_meets_the_target(prepared, backend_cls):
    result = _evaluate(MosaicTask().workload(), backend_cls)
    assert result.passed, result.value
    assert result.value == pytest.approx(prepared["val_miou_trained"], abs=3.0)  # half of the same split


@pytest.mark.parametrize("backend_cls", [TorchBackend, OnnxRuntimeBackend], ids=["torch", "onnxruntime"])
def test_untrained_model_fails_the_target(prepared, tmp_path_factory, backend_cls):
    path = tmp_path_factory.getbasetemp() / "mosaic-untrained.pt"
    if not path.exists():
        torch.manual_seed(123)
        torch.save(MobileSegmenter(num_classes=5).state_dict(), path)
    result = _evaluate(MosaicTask().workload(weights_path=path), backend_cls)
    assert not result.passed
    assert result.value < 20.0


def test_null_backend_zeros_decode_and_score(prepared):
    workload = MosaicTask().workload(count=8)
    backend = NullBackend(BackendOptions())
    backend.load(workload.model)
    responses = workload.postprocess(backend.run(workload.dataset.load(range(8))))
    assert responses.shape == (8, 64 * 64) and not responses.any()
    result = workload.score(dict(enumerate(responses)))
    assert 0.0 < result.value < 20.0  # all "background": its IoU is its share, the other classes score 0
    assert not result.passed


# -- the real benchmark (ADE20K layout, model files) --------------------------------------------


def _onnx_file(path: Path, nodes, inp, out) -> Path:
    graph = helper.make_graph(nodes, "g", [inp], [out])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture
def onnx_nchw_logits(tmp_path) -> Path:
    """Logits = the normalised RGB values: the brightest channel wins (red 0, green 1, blue 2)."""
    return _onnx_file(
        tmp_path / "nchw.onnx",
        [helper.make_node("Identity", ["image"], ["logits"])],
        helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 512, 512]),
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3, 512, 512]),
    )


@pytest.fixture
def onnx_nhwc_argmax(tmp_path) -> Path:
    """Like MLPerf Mobile's argmax model: NHWC in, (N, 512, 512) class ids out."""
    return _onnx_file(
        tmp_path / "nhwc.onnx",
        [helper.make_node("ArgMax", ["image"], ["ids"], axis=3, keepdims=0)],
        helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 512, 512, 3]),
        helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 512, 512]),
    )


@pytest.fixture
def ade(tmp_path) -> Path:
    root = tmp_path / "ADEChallengeData2016"
    (root / "images" / "validation").mkdir(parents=True)
    (root / "annotations" / "validation").mkdir(parents=True)
    for stem, size, colour, cls in (("a", (40, 40), (0, 255, 0), 1), ("b", (64, 32), (0, 0, 255), 2)):
        Image.new("RGB", size, colour).save(root / "images" / "validation" / f"{stem}.jpg", quality=100)
        ids = np.full((size[1], size[0]), cls, dtype=np.uint8)
        ids[:, :4] = 45  # not one of the top 31 classes: ignored
        Image.fromarray(ids, mode="L").save(root / "annotations" / "validation" / f"{stem}.png")
    return root


def _score_all(workload) -> float:
    backend = OnnxRuntimeBackend(BackendOptions(threads=1))
    backend.load(workload.model)
    responses = workload.postprocess(backend.run(workload.dataset.load(range(workload.dataset.total_count))))
    assert responses.shape == (workload.dataset.total_count, 512 * 512)
    return workload.score(dict(enumerate(responses))).value


def test_ade20k_with_onnx_models_in_both_layouts(ade, onnx_nchw_logits, onnx_nhwc_argmax):
    rule = inference_rules("mobile-v6.0").benchmark("mosaic")
    for path, shape in ((onnx_nchw_logits, (3, 512, 512)), (onnx_nhwc_argmax, (512, 512, 3))):
        workload = MosaicTask().workload(dataset_path=ade, weights_path=path)
        assert workload.dataset.label == "ade20k" and workload.dataset.num_classes == 32
        assert workload.quality == rule.quality and workload.quality.threshold == pytest.approx(57.36)
        assert workload.model.inputs[0].shape == shape
        assert workload.model.onnx_path == path and workload.model.tflite_path is None
        # Green image labelled 1, blue labelled 2: the colour model gets both right -> 100%.
        assert _score_all(workload) == pytest.approx(100.0)
        assert workload.model.calibration().shape == (2, *shape)


def test_ade20k_with_a_tflite_file_is_nhwc(ade, tmp_path):
    path = tmp_path / "mobile_segmenter_r4_quant_argmax_uint8.tflite"
    path.write_bytes(b"not parsed until a backend loads it")
    workload = MosaicTask().workload(dataset_path=ade, weights_path=path)
    assert workload.model.tflite_path == path and workload.model.onnx_path is None
    assert workload.model.inputs[0].shape == (512, 512, 3)
    assert workload.model.outputs[0].shape == (512, 512)
    null = NullBackend(BackendOptions())
    null.load(workload.model)
    responses = workload.postprocess(null.run(workload.dataset.load([0])))
    assert responses.shape == (1, 512 * 512) and not responses.any()
    assert workload.score({0: responses[0]}).value == 0.0


def test_ade20k_model_file_errors(ade, tmp_path):
    with pytest.raises(ModelError, match="needs a model file"):
        MosaicTask().workload(dataset_path=ade)
    with pytest.raises(ModelError, match="does not exist"):
        MosaicTask().workload(dataset_path=ade, weights_path=tmp_path / "gone.tflite")
    pt = tmp_path / "mosaic.pt"
    pt.write_bytes(b"x")
    with pytest.raises(ModelError, match=r"runs from a \.tflite or \.onnx file, not mosaic\.pt"):
        MosaicTask().workload(dataset_path=ade, weights_path=pt)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x00garbage")
    with pytest.raises(ModelError, match="not a readable ONNX model") as info:
        MosaicTask().workload(dataset_path=ade, weights_path=broken)
    assert "broken.onnx" in str(info.value)
    tflite = pt.with_suffix(".tflite")
    tflite.write_bytes(b"x")
    with pytest.raises(DataError, match="does not exist"):
        MosaicTask().workload(dataset_path=tmp_path / "nope", weights_path=tflite)
