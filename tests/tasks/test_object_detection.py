"""The retinanet task: MLPerf response layout, COCO mAP scoring, stand-in on torch and onnxruntime, real path."""

from __future__ import annotations

import json
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
from mlgauge.data.coco import ground_truth_from_boxes
from mlgauge.errors import DataError, ModelError, RunError
from mlgauge.models.retinanet import RetinaNet, SmallRetinaNet, box_iou, encode_boxes, retinanet_decoder
from mlgauge.rules import QualityTarget, inference_rules, standin_rules
from mlgauge.tasks.base import Workload
from mlgauge.tasks.object_detection import (
    DetectionPostprocess,
    RetinaNetTask,
    make_map_score,
    small_retinanet,
    split_head_outputs,
)

TARGET = QualityTarget(metric="mAP", unit="%", reference=50.0, fraction=1.0)


def _evaluate(workload: Workload, backend_cls) -> object:
    """Run the workload's model over its dataset the way a benchmark does, and score the decoded log."""
    backend = backend_cls(BackendOptions(threads=1))
    backend.load(workload.model)
    n = workload.dataset.total_count
    predictions = {}
    for start in range(0, n, 128):
        indices = list(range(start, min(n, start + 128)))
        responses = workload.postprocess(backend.run(workload.dataset.load(indices)))
        assert len(responses) == len(indices)
        for i, response in zip(indices, responses, strict=True):
            assert response.dtype == workload.response_dtype and response.shape[1:] == (7,)
            predictions[i] = np.ascontiguousarray(response).reshape(-1)  # flat, as the accuracy log gives it
    return workload.score(predictions)


# -- responses ----------------------------------------------------------------------------


def _one_detection(model, loc: int, label: int, box: list[float], logit: float = 2.0):
    anchors = np.concatenate(model.anchors())
    cls = np.full((1, len(anchors), model.num_classes), -12.0, dtype=np.float32)
    reg = np.zeros((1, len(anchors), 4), dtype=np.float32)
    cls[0, loc, label] = logit
    reg[0, loc] = encode_boxes(np.array([box], np.float32), anchors[[loc]])[0]
    return cls, reg


def test_postprocess_writes_mlperf_rows():
    model = SmallRetinaNet()
    post = DetectionPostprocess(model.decoder(), model.image_size)
    cls, reg = _one_detection(model, 5 * 12 * 9 + 5 * 9 + 4, 2, [12.0, 24.0, 60.0, 48.0])
    responses = post((np.repeat(cls, 2, 0), np.repeat(reg, 2, 0)), indices=[7, 9])
    assert isinstance(responses, list) and len(responses) == 2
    row = responses[1]
    assert row.dtype == np.float32 and row.shape == (1, 7)
    # [image_idx, ymin, xmin, ymax, xmax, score, label], coordinates relative to the 96 px input.
    expected = [9, 24 / 96, 12 / 96, 48 / 96, 60 / 96, 1 / (1 + math.exp(-2)), 2]
    np.testing.assert_allclose(row[0], expected, rtol=1e-5)
    assert responses[0][0, 0] == 7
    assert post((cls, reg))[0][0, 0] == -1  # without indices the slot is marked unknown
    empty = post((np.full_like(cls, -12.0), reg))
    assert empty[0].shape == (0, 7)


def test_head_outputs_are_recognised_in_either_order():
    cls, box = np.zeros((2, 10, 5), np.float32), np.ones((2, 10, 4), np.float32)
    got = split_head_outputs((box, cls), 10)
    assert got[0] is cls and got[1] is box
    with pytest.raises(ModelError, match="returned 3 outputs") as info:
        split_head_outputs((box, cls, cls[:, 0]), 10)
    assert "NMS" in info.value.hint
    with pytest.raises(ModelError, match=r"returned 1 outputs"):
        split_head_outputs(cls, 10)
    with pytest.raises(ModelError, match=r"cls_logits output has shape \(2, 10, 5\), not \(batch, 12"):
        split_head_outputs((cls, box), 12)


# -- scoring -----------------------------------------------------------------------------------

SIZES = [(200, 100), (64, 64), (300, 500)]  # (width, height): responses are relative, truth in pixels
BOXES = [
    np.array([[10, 10, 60, 50], [100, 20, 180, 90]], np.float32),
    np.array([[5, 5, 40, 30]], np.float32),
    np.array([[30, 40, 230, 400]], np.float32),
]
LABELS = [np.array([0, 1]), np.array([0]), np.array([2])]


@pytest.fixture(scope="module")
def truth():
    return ground_truth_from_boxes(SIZES, BOXES, LABELS, ("a", "b", "c"))


def _responses(shift: float = 0.0, skip: tuple[int, ...] = (), image_idx=None) -> dict[int, np.ndarray]:
    out = {}
    for i, ((w, h), boxes, labels) in enumerate(zip(SIZES, BOXES, LABELS, strict=True)):
        rows = []
        for (x1, y1, x2, y2), label in zip(boxes, labels, strict=True):
            dx = shift * (x2 - x1)
            idx = i if image_idx is None else image_idx
            rows.append([idx, y1 / h, (x1 + dx) / w, y2 / h, (x2 + dx) / w, 0.9, label])
        out[i] = np.zeros(0, np.float32) if i in skip else np.asarray(rows, np.float32).reshape(-1)
    return out


def test_perfect_detections_score_100(truth):
    result = make_map_score(truth, TARGET)(_responses())
    assert result.metric == "mAP" and result.unit == "%"
    assert result.value == pytest.approx(100.0)
    assert result.samples == 3 and result.passed
    assert result.details["detections"] == 4 and result.details["image_idx_mismatches"] == 0


def test_shifted_detections_score_lower_exactly(truth):
    # Shifting each box by f of its width gives IoU (1 - f) / (1 + f) = 0.52: a match at the 0.5 IoU
    # threshold only, so mAP@[.5:.95] is 1 of its 10 thresholds: 10%.
    f = 0.48 / 1.52
    result = make_map_score(truth, TARGET)(_responses(shift=f))
    assert result.value == pytest.approx(10.0)
    assert result.details["mAP@0.5"] == pytest.approx(100.0)
    assert result.details["mAP@0.75"] == pytest.approx(0.0)
    assert not result.passed


def test_images_answered_with_nothing_still_count(truth):
    # Class 0 has two boxes (images 0 and 1); image 1 answers nothing, so class 0 reaches recall 1/2 at
    # precision 1: 51 of COCO's 101 recall points. Classes 1 and 2 are perfect: (51/101 + 1 + 1) / 3.
    result = make_map_score(truth, TARGET)(_responses(skip=(1,)))
    assert result.samples == 3
    assert result.value == pytest.approx(100 * (51 / 101 + 2) / 3)
    only_two = make_map_score(truth, TARGET)({k: v for k, v in _responses().items() if k != 1})
    assert only_two.value == pytest.approx(100.0)  # an image that was never queried is not scored


def test_score_edge_cases(truth):
    score = make_map_score(truth, TARGET)
    assert score({}).value == 0.0 and score({}).samples == 0
    nothing = score({0: np.zeros(0, np.float32), 2: np.zeros(0, np.float32)})
    assert nothing.value == 0.0 and nothing.samples == 2
    assert score(_responses(image_idx=0)).details["image_idx_mismatches"] == 2
    with pytest.raises(RunError, match="qsl_idx 1 has 8 values"):
        score({1: np.zeros(8, np.float32)})
    with pytest.raises(RunError, match="qsl_idx 3, outside the 3 samples"):
        score({3: np.zeros(7, np.float32)})
    remapped = make_map_score(truth, TARGET, label_to_category=lambda label: (label + 1) % 3)
    assert remapped(_responses()).value == pytest.approx(0.0)


# -- the synthetic stand-in -------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(mlgauge_home) -> dict:
    return RetinaNetTask().prepare()


def test_workload_before_prepare_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MLGAUGE_HOME", str(tmp_path))
    task = RetinaNetTask()
    assert not task.is_prepared()
    with pytest.raises(DataError, match="not prepared") as info:
        task.workload()
    assert "mlgauge prepare retinanet" in str(info.value)


def test_prepared_meta_is_calibrated_against_the_target(prepared):
    target = standin_rules()["retinanet"].quality
    assert target.threshold == pytest.approx(0.9 * 76.4)
    assert prepared["task"] == "retinanet"
    assert prepared["train_samples"] == 2000 and prepared["val_samples"] == 512
    assert prepared["val_map_trained"] > target.threshold
    assert prepared["val_map_untrained"] == 0.0
    assert RetinaNetTask().prepare() == prepared  # cached


def test_standin_workload_shape(prepared):
    workload = RetinaNetTask().workload()
    assert workload.task == "retinanet" and workload.benchmark == "retinanet"
    assert workload.dataset.label == "synthetic"
    assert workload.dataset.total_count == 512 and workload.dataset.performance_count == 64
    assert workload.dataset.load([0, 3]).shape == (2, 3, 96, 96)
    assert workload.response_dtype == np.float32
    assert workload.quality == standin_rules()["retinanet"].quality
    assert [(s.name, s.shape) for s in workload.model.outputs] == [("cls_logits", (1701, 3)), ("bbox_regression", (1701, 4))]
    assert workload.model.inputs[0].shape == (3, 96, 96)
    assert workload.model.calibration().shape == (64, 3, 96, 96)
    small = RetinaNetTask().workload(count=100)
    assert small.dataset.total_count == 100 and len(small.dataset.ground_truth()) == 100
    assert small.dataset.ground_truth().dataset["images"] == workload.dataset.ground_truth().dataset["images"][:100]


@pytest.mark.parametrize("backend", [TorchBackend, OnnxRuntimeBackend], ids=["torch", "onnxruntime"])
def test_prepared_model_passes(prepared, backend):
    result = _evaluate(RetinaNetTask().workload(), backend)
    assert result.samples == 512
    assert result.value == pytest.approx(prepared["val_map_trained"], abs=0.3)
    assert result.passed


@pytest.fixture(scope="module")
def untrained_weights(prepared, tmp_path_factory) -> Path:
    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("untrained") / "untrained.pt"
    torch.save(small_retinanet().state_dict(), path)
    return path


@pytest.mark.parametrize("backend", [TorchBackend, OnnxRuntimeBackend], ids=["torch", "onnxruntime"])
def test_untrained_model_fails(untrained_weights, backend):
    workload = RetinaNetTask().workload(weights_path=untrained_weights, count=128)
    assert workload.model.cache_key != RetinaNetTask().workload().model.cache_key
    result = _evaluate(workload, backend)
    assert result.value < 1.0
    assert not result.passed


def test_null_backend_zeros_postprocess_and_score(prepared):
    workload = RetinaNetTask().workload(count=8)
    result = _evaluate(workload, NullBackend)
    assert result.samples == 8 and result.details["detections"] == 8 * 300
    assert not result.passed
    # The full model's output size too: every anchor scores 0.5, and the top ones survive NMS.
    full = DetectionPostprocess(retinanet_decoder(max_detections=300), (800, 800))
    zeros = (np.zeros((1, 120_087, 264), np.float32), np.zeros((1, 120_087, 4), np.float32))
    (response,) = full(zeros)
    assert response.shape == (300, 7) and np.isfinite(response).all()


def test_mismatched_weights_fail_at_build(prepared, tmp_path):
    state = small_retinanet().state_dict()
    state["head.classification_head.cls_logits.bias"] = torch.zeros(9 * 4)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(ModelError, match="does not fit the model") as info:
        RetinaNetTask().workload(weights_path=path).model.build()
    assert str(path) in str(info.value)


# -- the real dataset path ------------------------------------------------------------------------

REAL_SIZES = {"0001eeaf4aed83f9.jpg": (640, 480), "000595fe6fee6369.jpg": (300, 500)}
REAL_BOXES = {"0001eeaf4aed83f9.jpg": [([64, 48, 256, 240], 0), ([400, 100, 600, 460], 263)],
              "000595fe6fee6369.jpg": [([30, 50, 270, 450], 17)]}  # fmt: skip


@pytest.fixture
def openimages(tmp_path) -> Path:
    root = tmp_path / "openimages"
    (root / "annotations").mkdir(parents=True)
    (root / "validation" / "data").mkdir(parents=True)
    images, annotations = [], []
    for i, (name, (w, h)) in enumerate(REAL_SIZES.items()):
        Image.new("RGB", (w, h), (90, 120, 200)).save(root / "validation" / "data" / name)
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
        for (x1, y1, x2, y2), cat in REAL_BOXES[name]:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": cat,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0})  # fmt: skip
    categories = [{"id": c, "name": f"class{c}"} for c in range(264)]
    data = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations" / "openimages-mlperf.json").write_text(json.dumps(data))
    return root


def test_real_workload_needs_weights_and_the_layout(openimages, tmp_path):
    with pytest.raises(ModelError, match="needs weights"):
        RetinaNetTask().workload(dataset_path=openimages)
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not checked until a backend loads it")
    with pytest.raises(DataError, match="annotation file .*annotations/openimages-mlperf.json does not exist") as info:
        RetinaNetTask().workload(dataset_path=tmp_path, weights_path=onnx)
    assert "validation/data" in info.value.hint
    bad = tmp_path / "bad.pt"
    torch.save({"backbone.body.conv1.weight": torch.zeros(1)}, bad)
    with pytest.raises(ModelError, match="has no RetinaNet classification head"):
        RetinaNetTask().workload(dataset_path=openimages, weights_path=bad)


def test_real_workload_with_onnx_weights(openimages, tmp_path):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not checked until a backend loads it")
    workload = RetinaNetTask().workload(dataset_path=openimages, weights_path=onnx)
    assert workload.benchmark == "retinanet"
    assert workload.quality == inference_rules("v6.0").benchmark("retinanet").quality
    assert workload.quality.threshold == pytest.approx(0.99 * 37.55)
    assert workload.dataset.label == "openimages-mlperf"
    assert workload.dataset.total_count == 2 and workload.dataset.performance_count == 2
    assert workload.model.onnx_path == onnx and workload.model.build is None
    assert [(s.name, s.shape) for s in workload.model.outputs] == [
        ("cls_logits", (120_087, 264)), ("bbox_regression", (120_087, 4)),
    ]  # fmt: skip
    batch = workload.dataset.load([1])
    assert batch.shape == (1, 3, 800, 800) and batch.dtype == np.float32
    np.testing.assert_allclose(batch[0, :, 400, 400], [90 / 255, 120 / 255, 200 / 255], atol=2.5 / 255)  # JPEG


def test_real_responses_score_against_original_image_sizes(openimages, tmp_path):
    """Head outputs that decode to the ground-truth boxes, resized to 800x800, score 100%."""
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"x")
    workload = RetinaNetTask().workload(dataset_path=openimages, weights_path=onnx)
    decoder = workload.postprocess.decoder
    anchors = np.concatenate(decoder.level_anchors)
    predictions = {}
    for i, (name, (w, h)) in enumerate(REAL_SIZES.items()):
        cls = np.full((1, len(anchors), 264), -12.0, dtype=np.float32)
        reg = np.zeros((1, len(anchors), 4), dtype=np.float32)
        for (x1, y1, x2, y2), cat in REAL_BOXES[name]:
            box = np.array([[x1 * 800 / w, y1 * 800 / h, x2 * 800 / w, y2 * 800 / h]], np.float32)
            loc = int(box_iou(box, anchors).argmax())
            cls[0, loc, cat] = 3.0
            reg[0, loc] = encode_boxes(box, anchors[[loc]])[0]
        (response,) = workload.postprocess((cls, reg), indices=[i])
        assert response.shape == (len(REAL_BOXES[name]), 7)
        predictions[i] = response.reshape(-1)
    result = workload.score(predictions)
    assert result.value == pytest.approx(100.0)
    assert result.samples == 2 and result.passed and result.details["image_idx_mismatches"] == 0


def test_real_workload_loads_a_legacy_layout_state_dict(openimages, tmp_path):
    torch.manual_seed(0)
    state = RetinaNet().state_dict()
    # MLPerf's reference checkpoint predates torchvision 0.13: no ".0" inside FPN blocks and head towers.
    legacy = {}
    for key, value in state.items():
        for i in range(4):
            key = key.replace(f"fpn.inner_blocks.{i}.0.", f"fpn.inner_blocks.{i}.")
            key = key.replace(f"fpn.layer_blocks.{i}.0.", f"fpn.layer_blocks.{i}.")
            key = key.replace(f"_head.conv.{i}.0.", f"_head.conv.{2 * i}.")
        legacy[key] = value
    assert "head.regression_head.conv.6.weight" in legacy
    path = tmp_path / "retinanet.pth"
    torch.save(legacy, path)
    workload = RetinaNetTask().workload(dataset_path=openimages, weights_path=path)
    assert workload.model.onnx_path is None and workload.model.cache_key.startswith("retinanet-torch-")
    model = workload.model.build()
    assert not model.training
    torch.testing.assert_close(
        model.state_dict()["head.regression_head.conv.3.0.weight"], state["head.regression_head.conv.3.0.weight"]
    )
