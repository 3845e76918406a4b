"""The mobiledet task: TFLite SSD outputs and raw heads to MLPerf rows, COCO 2017, the stand-in."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from ai_edge_litert import schema_py_generated as fb
from ai_edge_litert.tools import flatbuffer_utils
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from mlgauge.backends.base import BackendOptions
from mlgauge.backends.litert_backend import LiteRtBackend
from mlgauge.backends.null_backend import NullBackend
from mlgauge.backends.onnxruntime_backend import OnnxRuntimeBackend
from mlgauge.backends.torch_backend import TorchBackend
from mlgauge.errors import DataError, ModelError
from mlgauge.models.mobiledet import ssdlite_mobiledet_320
from mlgauge.models.retinanet import encode_boxes
from mlgauge.rules import inference_rules, standin_rules
from mlgauge.tasks.mobile_detection import (
    MobileDetPostprocess,
    MobileDetTask,
    preprocess_mobiledet,
    small_mobiledet,
    ssd_responses,
)
from mlgauge.tasks.object_detection import DetectionPostprocess

OPTIONS = BackendOptions(threads=1)


def _evaluate(workload, backend_cls, batch: int = 128):
    """Every sample through backend -> postprocess(outputs, qsl indices) -> flat responses -> score."""
    backend = backend_cls(OPTIONS)
    backend.load(workload.model)
    n = workload.dataset.total_count
    predictions = {}
    for start in range(0, n, batch):
        indices = list(range(start, min(n, start + batch)))
        responses = workload.postprocess(backend.run(workload.dataset.load(indices)), indices)
        assert len(responses) == len(indices)
        for i, response in zip(indices, responses, strict=True):
            assert response.dtype == workload.response_dtype and response.shape[1:] == (7,)
            assert (response[:, 0] == i).all()
            predictions[i] = np.ascontiguousarray(response).reshape(-1)  # flat, as the accuracy log gives it
    return workload.score(predictions)


# -- TFLite SSD outputs -> responses ---------------------------------------------------------------

BOXES = np.zeros((2, 5, 4), np.float32)
BOXES[0, :3] = [[0.1, 0.2, 0.5, 0.6], [0.3, 0.3, 0.9, 0.8], [0.0, 0.0, 1.0, 1.0]]
BOXES[1, 0] = [0.2, 0.2, 0.4, 0.4]
CLASSES = np.array([[17, 0, 5, 0, 0], [3, 0, 0, 0, 0]], np.float32)
SCORES = np.array([[0.9, 0.4, 0.3, 0, 0], [0.8, 0, 0, 0, 0]], np.float32)


def test_ssd_outputs_become_mlperf_rows():
    # Image 0 reports 2 of its 5 slots, image 1 none: slots past num_detections are not read.
    responses = ssd_responses((BOXES, CLASSES, SCORES, np.array([2.0, 0.0], np.float32)), indices=[7, 9])
    assert [r.shape for r in responses] == [(2, 7), (0, 7)] and responses[0].dtype == np.float32
    # [image_idx, ymin, xmin, ymax, xmax, score, class + 1]: coco.cc's layout and its offset 1.
    np.testing.assert_allclose(
        responses[0], [[7, 0.1, 0.2, 0.5, 0.6, 0.9, 18], [7, 0.3, 0.3, 0.9, 0.8, 0.4, 1]]
    )
    plain = ssd_responses(
        (BOXES, CLASSES, SCORES, np.array([[1.0], [1.0]], np.float32)), label_offset=0
    )  # (B, 1) counts
    np.testing.assert_allclose(plain[1], [[-1, 0.2, 0.2, 0.4, 0.4, 0.8, 3]])


def test_malformed_ssd_outputs_are_model_errors():
    counts = np.array([2.0, 0.0], np.float32)
    with pytest.raises(ModelError, match=r"shapes \[\(2, 5\), \(2, 5\), \(2,\), \(2,\)\]; none is .*boxes"):
        ssd_responses((CLASSES, SCORES, counts, counts))
    with pytest.raises(ModelError, match=r"outputs have shapes \[\(2, 5, 4\), \(2, 5\), \(2, 4\), \(2,\)\]"):
        ssd_responses((BOXES, CLASSES, SCORES[:, :4], counts))
    with pytest.raises(
        ModelError, match=r"num_detections output holds \[6.0, 0.0\], not counts between 0 and 5"
    ):
        ssd_responses((BOXES, CLASSES, SCORES, np.array([6.0, 0.0], np.float32)))
    with pytest.raises(ModelError, match="num_detections output holds"):
        ssd_responses((BOXES, CLASSES, SCORES, np.array([np.nan, 0.0], np.float32)))


def test_postprocess_takes_raw_heads_or_ssd_outputs():
    model = small_mobiledet()
    post = MobileDetPostprocess(DetectionPostprocess(model.decoder(), model.image_size), label_offset=1)
    anchors = np.concatenate(model.anchors())
    cls = np.full((1, len(anchors), 3), -12.0, np.float32)
    reg = np.zeros((1, len(anchors), 4), np.float32)
    loc = 5 * 12 * 9 + 5 * 9 + 4  # level 0, row 5, column 5, anchor 4
    cls[0, loc, 2] = 2.0
    reg[0, loc] = encode_boxes(np.array([[12.0, 24.0, 60.0, 48.0]], np.float32), anchors[[loc]])[0]
    (row,) = post((cls, reg), [4])
    expected = [4, 24 / 96, 12 / 96, 48 / 96, 60 / 96, 1 / (1 + np.exp(-2.0)), 3]  # class 2 + offset 1
    np.testing.assert_allclose(row[0], expected, rtol=1e-5)
    ssd = post((BOXES, CLASSES, SCORES, np.array([1.0, 1.0], np.float32)), [0, 1])
    np.testing.assert_allclose(ssd[1][0, 6], 4.0)


def test_preprocessing_resizes_to_320_without_keeping_the_aspect():
    """A ramp image makes each output pixel name its source position: TFLite's bilinear resize
    (no aligned corners, no half-pixel centres) samples x = j * 160/320 and y = i * 100/320."""
    pixels = np.zeros((100, 160, 3), np.uint8)
    pixels[..., 0] = np.arange(160)[None, :]
    pixels[..., 1] = np.arange(100)[:, None]
    pixels[..., 2] = 255
    out = preprocess_mobiledet(Image.fromarray(pixels))
    assert out.shape == (320, 320, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, :319, 0], (np.arange(319) * 0.5 - 127.5) / 127.5, atol=1e-6)
    np.testing.assert_allclose(out[:317, 0, 1], (np.arange(317) * 0.3125 - 127.5) / 127.5, atol=1e-6)
    np.testing.assert_allclose(out[..., 2], 1.0)
    np.testing.assert_array_equal(
        preprocess_mobiledet(Image.fromarray(pixels), layout="NCHW"), out.transpose(2, 0, 1)
    )


# -- the real dataset path (COCO 2017 layout) ---------------------------------------------------

# Both images hold the same objects at the same relative places, so one fixed set of detections fits both.
TRUE_REL = [
    ([0.1, 0.2, 0.5, 0.6], 0),
    ([0.3, 0.3, 0.9, 0.8], 17),
]  # (ymin, xmin, ymax, xmax), class = category - 1
SIZES = {"000000000139.jpg": (640, 480), "000000000285.jpg": (300, 500)}  # width, height


@pytest.fixture
def coco(tmp_path) -> Path:
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    (root / "val2017").mkdir()
    images, annotations = [], []
    for i, (name, (w, h)) in enumerate(SIZES.items()):
        Image.new("RGB", (w, h), (90, 120, 200)).save(root / "val2017" / name)
        images.append({"id": 139 + i, "file_name": name, "width": w, "height": h})
        for (y1, x1, y2, x2), cls in TRUE_REL:
            bbox = [x1 * w, y1 * h, (x2 - x1) * w, (y2 - y1) * h]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": 139 + i,
                    "category_id": cls + 1,
                    "bbox": bbox,
                    "iscrowd": 0,
                }
            )
    categories = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 90, "name": "toothbrush"}]
    (root / "annotations" / "instances_val2017.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return root


# The fixed detections: the two true objects, then a confident false one that num_detections (2) excludes.
FIXED_BOXES = np.array([[b for b, _ in TRUE_REL] + [[0.6, 0.0, 0.9, 0.3]]], np.float32)  # (1, 3, 4)
FIXED_CLASSES = np.array([[0, 17, 0]], np.float32)
FIXED_SCORES = np.array([[0.9, 0.8, 0.95]], np.float32)
FIXED_COUNT = np.array([2.0], np.float32)


def _ssd_tflite(path: Path) -> Path:
    """A .tflite with TFLite_Detection_PostProcess's outputs: the fixed detections plus 0 * mean(image)."""
    f32, i32, op, opt = fb.TensorType.FLOAT32, fb.TensorType.INT32, fb.BuiltinOperator, fb.BuiltinOptions
    model, sub = fb.ModelT(), fb.SubGraphT()
    model.version, model.buffers, model.operatorCodes, sub.tensors, sub.operators = (
        3,
        [fb.BufferT()],
        [],
        [],
        [],
    )

    def tensor(name, shape, dtype=f32, data=None) -> int:
        t = fb.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), dtype, 0
        if data is not None:
            model.buffers.append(fb.BufferT())
            model.buffers[-1].data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            t.buffer = len(model.buffers) - 1
        sub.tensors.append(t)
        return len(sub.tensors) - 1

    def operator(code, ins, outs, options_type, options) -> None:
        codes = [c.builtinCode for c in model.operatorCodes]
        if code not in codes:
            model.operatorCodes.append(fb.OperatorCodeT())
            model.operatorCodes[-1].builtinCode, model.operatorCodes[-1].deprecatedBuiltinCode = code, code
            codes.append(code)
        o = fb.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs, o.builtinOptionsType, o.builtinOptions = (
            codes.index(code),
            ins,
            outs,
            options_type,
            options,
        )
        sub.operators.append(o)

    image = tensor("normalized_input_image_tensor", [1, 320, 320, 3])
    mean, zero = tensor("mean", [1]), tensor("zero", [1])
    reducer = fb.ReducerOptionsT()
    operator(
        op.MEAN,
        [image, tensor("axes", [3], i32, np.array([1, 2, 3], np.int32))],
        [mean],
        opt.ReducerOptions,
        reducer,
    )
    operator(
        op.MUL,
        [mean, tensor("z", [1], f32, np.zeros(1, np.float32))],
        [zero],
        opt.MulOptions,
        fb.MulOptionsT(),
    )
    outputs = []
    for k, value in enumerate((FIXED_BOXES, FIXED_CLASSES, FIXED_SCORES, FIXED_COUNT)):
        out = tensor("TFLite_Detection_PostProcess" + (f":{k}" if k else ""), value.shape)
        operator(
            op.ADD, [tensor(f"c{k}", value.shape, f32, value), zero], [out], opt.AddOptions, fb.AddOptionsT()
        )
        outputs.append(out)
    sub.inputs, sub.outputs = [image], outputs
    model.subgraphs = [sub]
    path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    return path


def _ssd_onnx(path: Path) -> Path:
    """The same fixed detections from an NCHW ONNX model with a dynamic batch."""
    consts = {
        "cb": FIXED_BOXES, "cc": FIXED_CLASSES, "cs": FIXED_SCORES, "cn": FIXED_COUNT,
        "zero": np.zeros(1, np.float32), "s3": np.array([-1, 1, 1]), "s2": np.array([-1, 1]),
    }  # fmt: skip
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["z1"]),
        helper.make_node("Reshape", ["z1", "s3"], ["z3"]),
        helper.make_node("Reshape", ["z1", "s2"], ["z2"]),
        helper.make_node("Add", ["z3", "cb"], ["boxes"]),
        helper.make_node("Add", ["z2", "cc"], ["classes"]),
        helper.make_node("Add", ["z2", "cs"], ["scores"]),
        helper.make_node("Add", ["z1", "cn"], ["num"]),
    ]
    graph = helper.make_graph(
        nodes,
        "ssd",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 320, 320])],
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
            for n in ("boxes", "classes", "scores", "num")
        ],
        initializer=[numpy_helper.from_array(v, k) for k, v in consts.items()],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_coco_with_the_official_tflite_layout(coco, tmp_path):
    path = _ssd_tflite(tmp_path / "mobiledet_qat.tflite")
    workload = MobileDetTask().workload(dataset_path=coco, weights_path=path)
    rule = inference_rules("mobile-v6.0").benchmark("mobiledet")
    assert workload.benchmark == "mobiledet" and workload.quality == rule.quality
    assert workload.quality.threshold == pytest.approx(0.95 * 28.5)
    assert workload.dataset.label == "coco-2017" and workload.dataset.total_count == 2
    assert workload.model.tflite_path == path and workload.model.build is None
    assert workload.model.inputs[0].shape == (320, 320, 3)  # NHWC, as TFLite takes it
    assert [s.name for s in workload.model.outputs][3] == "num_detections"
    batch = workload.dataset.load([1])
    assert batch.shape == (1, 320, 320, 3)
    np.testing.assert_allclose(
        batch[0, 160, 160], (np.array([90, 120, 200]) - 127.5) / 127.5, atol=3 / 127.5
    )  # JPEG
    # The fixed detections are the truth of both images (scaled to their sizes): 100%, the false one excluded.
    result = _evaluate(workload, LiteRtBackend)
    assert result.samples == 2 and result.details["detections"] == 4
    assert result.value == pytest.approx(100.0) and result.passed
    assert workload.model.calibration().shape == (2, 320, 320, 3)


def test_coco_with_an_onnx_ssd_model_in_nchw(coco, tmp_path):
    path = _ssd_onnx(tmp_path / "mobiledet.onnx")
    workload = MobileDetTask().workload(dataset_path=coco, weights_path=path, count=1)
    assert workload.model.onnx_path == path and workload.model.inputs[0].shape == (3, 320, 320)
    assert len(workload.model.outputs) == 4 and workload.dataset.total_count == 1
    full = MobileDetTask().workload(dataset_path=coco, weights_path=path)
    result = _evaluate(full, OnnxRuntimeBackend)  # one batch of 2: the count output is (2,)
    assert result.value == pytest.approx(100.0)
    null = _evaluate(full, NullBackend)  # zeros: num_detections 0, nothing reported
    assert null.details["detections"] == 0 and null.value == 0.0 and null.samples == 2


def test_coco_with_pytorch_weights_decodes_raw_heads(coco, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "ssdlite_mobiledet_320.pt"
    torch.save(ssdlite_mobiledet_320(num_classes=90).state_dict(), path)
    workload = MobileDetTask().workload(dataset_path=coco, weights_path=path)
    assert workload.model.build is not None and workload.model.inputs[0].shape == (3, 320, 320)
    assert [(s.name, s.shape) for s in workload.model.outputs] == [
        ("cls_logits", (3234, 90)),
        ("bbox_regression", (3234, 4)),
    ]
    # Untrained: the focal prior keeps every score under the threshold, so nothing is reported.
    assert _evaluate(workload, TorchBackend).details["detections"] == 0
    # Hand-made head outputs that decode to image 0's objects score 100% on it (classes + 1 = category ids).
    decoder = workload.postprocess.raw.decoder
    anchors = np.concatenate(decoder.level_anchors)
    cls = np.full((1, len(anchors), 90), -12.0, np.float32)
    reg = np.zeros((1, len(anchors), 4), np.float32)
    for loc, ((y1, x1, y2, x2), c) in zip((1_000, 2_000), TRUE_REL, strict=True):
        cls[0, loc, c] = 3.0
        reg[0, loc] = encode_boxes(np.array([[x1, y1, x2, y2]], np.float32) * 320, anchors[[loc]])[0]
    (response,) = workload.postprocess((cls, reg), [0])
    np.testing.assert_allclose(response[:, 6], [1, 18])
    assert workload.score({0: response.reshape(-1)}).value == pytest.approx(100.0)


def test_coco_model_file_errors(coco, tmp_path):
    with pytest.raises(ModelError, match="needs a model file"):
        MobileDetTask().workload(dataset_path=coco)
    bad = tmp_path / "resnet.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(ModelError, match=r"resnet\.pt has no MobileDetector class predictor"):
        MobileDetTask().workload(dataset_path=coco, weights_path=bad)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage")
    with pytest.raises(ModelError, match=r"broken\.onnx is not a readable ONNX model"):
        MobileDetTask().workload(dataset_path=coco, weights_path=broken)
    pte = tmp_path / "mobiledet.pte"
    pte.write_bytes(b"checked when the backend loads it")
    workload = MobileDetTask().workload(dataset_path=coco, weights_path=pte)
    assert workload.model.pte_path == pte and workload.model.inputs[0].shape == (3, 320, 320)
    with pytest.raises(
        DataError, match=r"annotation file .*annotations/instances_val2017\.json does not exist"
    ) as info:
        MobileDetTask().workload(dataset_path=tmp_path, weights_path=pte)
    assert "val2017" in info.value.hint


# -- the synthetic stand-in ------------------------------------------------------------------------


def test_workload_before_prepare_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MLGAUGE_HOME", str(tmp_path))
    task = MobileDetTask()
    assert not task.is_prepared()
    with pytest.raises(DataError, match="not prepared") as info:
        task.workload()
    assert "mlgauge prepare mobiledet" in str(info.value)


@pytest.fixture(scope="module")
def prepared(mlgauge_home) -> dict:
    return MobileDetTask().prepare()


def test_prepared_meta_is_calibrated_against_the_target(prepared):
    rule = standin_rules()["mobiledet"]
    assert rule.quality.threshold == pytest.approx(0.9 * 78.27)
    assert (
        prepared["task"] == "mobiledet"
        and prepared["train_samples"] == 2000
        and prepared["val_samples"] == 512
    )
    assert prepared["val_map_trained"] > rule.quality.threshold + 3  # margin for other machines' arithmetic
    assert prepared["val_map_untrained"] == 0.0
    assert MobileDetTask().prepare() == prepared  # cached


def test_standin_workload_shape(prepared):
    workload = MobileDetTask().workload()
    assert workload.task == workload.benchmark == "mobiledet" and MobileDetTask.rules_round == "mobile-v6.0"
    assert workload.dataset.label == "synthetic"
    assert workload.dataset.total_count == 512 and workload.dataset.performance_count == 256
    batch = workload.dataset.load([0, 3])
    assert (
        batch.shape == (2, 3, 96, 96) and -1.0 <= batch.min() < -0.5 and 0.5 < batch.max() <= 1.0
    )  # [-1, 1]
    assert workload.response_dtype == np.float32
    assert workload.quality == standin_rules()["mobiledet"].quality
    assert [(s.name, s.shape) for s in workload.model.outputs] == [
        ("cls_logits", (1701, 3)),
        ("bbox_regression", (1701, 4)),
    ]
    calibration = workload.model.calibration()
    assert calibration.shape == (64, 3, 96, 96) and calibration.min() >= -1.0
    small = MobileDetTask().workload(count=100)
    assert small.dataset.total_count == 100 and len(small.dataset.ground_truth()) == 100


@pytest.mark.parametrize("backend", [TorchBackend, OnnxRuntimeBackend], ids=["torch", "onnxruntime"])
def test_prepared_model_passes(prepared, backend):
    result = _evaluate(MobileDetTask().workload(), backend)
    assert result.samples == 512
    assert result.value == pytest.approx(prepared["val_map_trained"], abs=0.3)
    assert result.passed


@pytest.fixture(scope="module")
def untrained_weights(prepared, tmp_path_factory) -> Path:
    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("untrained") / "untrained.pt"
    torch.save(small_mobiledet().state_dict(), path)
    return path


def test_untrained_model_fails(untrained_weights):
    # torch only: onnxruntime scores it 0% too (measured), and its export would add ~10 s here.
    workload = MobileDetTask().workload(weights_path=untrained_weights, count=64)
    assert workload.model.cache_key != MobileDetTask().workload().model.cache_key
    result = _evaluate(workload, TorchBackend)
    assert result.value < 1.0 and not result.passed


def test_null_backend_zeros_postprocess_and_score(prepared):
    # Zero logits score 0.5 at every anchor: the 100 best after NMS survive, all wrong enough to fail.
    result = _evaluate(MobileDetTask().workload(count=8), NullBackend)
    assert result.samples == 8 and result.details["detections"] == 8 * 100
    assert not result.passed


def test_mismatched_weights_fail_at_build(prepared, tmp_path):
    state = small_mobiledet().state_dict()
    state["cls_heads.0.project.bias"] = torch.zeros(9 * 4)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(ModelError, match="does not fit the model") as info:
        MobileDetTask().workload(weights_path=path).model.build()
    assert str(path) in str(info.value)
