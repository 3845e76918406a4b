"""The resnet50 task: post-processing, scoring, safe weight loading, stand-in and real workloads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlgauge.errors import DataError, ModelError, UsageError
from mlgauge.models.resnet import InputScale, ResNet50, SmallResNet
from mlgauge.rules import QualityTarget, standin_rules
from mlgauge.tasks import get_task, task_names
from mlgauge.tasks.base import AccuracyResult, ModelSource, Workload
from mlgauge.tasks.image_classification import TORCHVISION_STD_255, make_top1_score, top1_postprocess
from mlgauge.tasks.weights import load_into, load_state_dict
from mlgauge.training.fit import top1

TARGET = QualityTarget(metric="top1", unit="%", reference=80.0, fraction=0.5)  # threshold 40%


# -- post-processing and scoring ------------------------------------------------


def test_top1_postprocess_is_argmax_as_int32():
    logits = np.array([[0.1, 3.0, -1.0], [5.0, 0.0, 4.9], [0.0, 0.0, 0.5]], dtype=np.float32)
    pred = top1_postprocess(logits)
    assert pred.dtype == np.int32
    np.testing.assert_array_equal(pred, [1, 0, 2])


def test_top1_postprocess_1001_way_drops_the_background_class():
    logits = np.zeros((3, 1001), dtype=np.float32)
    logits[0, 1] = 1  # class 0
    logits[1, 1000] = 1  # class 999
    logits[2, 66] = 1  # class 65
    pred = top1_postprocess(logits)
    assert pred.dtype == np.int32
    np.testing.assert_array_equal(pred, [0, 999, 65])
    # 1000-way logits are not shifted.
    np.testing.assert_array_equal(top1_postprocess(np.eye(1000, dtype=np.float32)[[0, 999]]), [0, 999])


def test_top1_score_exact_value():
    labels = np.array([3, 1, 4, 1, 5, 9, 2, 6], dtype=np.int64)
    score = make_top1_score(labels, TARGET)
    predictions = {
        0: np.array([3], dtype=np.int32),  # right
        7: np.array([6], dtype=np.int32),  # right
        2: np.array([1], dtype=np.int32),  # wrong
        5: np.array([9], dtype=np.int32),  # right
        4: np.array([-1], dtype=np.int32),  # wrong (background)
    }
    result = score(predictions)
    assert isinstance(result, AccuracyResult)
    assert result.metric == "top1" and result.unit == "%"
    assert result.value == pytest.approx(60.0)
    assert result.samples == 5
    assert result.details == {"good": 3, "total": 5}
    assert result.passed  # 60 >= 40
    assert result.to_dict()["target"]["threshold"] == pytest.approx(40.0)
    assert not score({1: np.array([0]), 2: np.array([0])}).passed


def test_top1_score_of_nothing_is_zero():
    result = make_top1_score(np.arange(4), TARGET)({})
    assert result.value == 0.0
    assert result.samples == 0
    assert not result.passed


# -- reading weights safely ----------------------------------------------------


class Payload:
    """Unpickling this would touch a marker file: proof of code execution if it ever appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_load_state_dict_missing_file(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(ModelError, match="does not exist") as info:
        load_state_dict(path)
    assert str(path) in str(info.value)


def test_load_state_dict_garbage_bytes(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelError, match="not a readable PyTorch state dict") as info:
        load_state_dict(path)
    assert str(path) in str(info.value)


def test_load_state_dict_never_unpickles_custom_objects(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    torch.save({"fc.weight": torch.zeros(2), "x": Payload(marker)}, path)
    with pytest.raises(ModelError, match="not a readable PyTorch state dict"):
        load_state_dict(path)
    assert not marker.exists()
    # The file really would run code if loaded unsafely: the check above can fail.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_load_state_dict_plain_and_wrapped(tmp_path):
    state = {"a": torch.arange(3.0), "b.c": torch.ones(2, 2)}
    plain = tmp_path / "plain.pt"
    torch.save(state, plain)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": state, "epoch": 7, "arch": "resnet50"}, wrapped)
    for path in (plain, wrapped):
        got = load_state_dict(path)
        assert sorted(got) == ["a", "b.c"]
        torch.testing.assert_close(got["a"], state["a"])
        torch.testing.assert_close(got["b.c"], state["b.c"])


@pytest.mark.parametrize(
    "obj",
    [
        {"a": torch.zeros(1), "epoch": 3},
        {"state_dict": {"a": torch.zeros(1), "note": "x"}},
        [torch.zeros(1)],
        torch.zeros(3),
    ],
    ids=["non-tensor-value", "wrapped-non-tensor", "list", "bare-tensor"],
)
def test_load_state_dict_rejects_non_state_dicts(tmp_path, obj):
    path = tmp_path / "w.pt"
    torch.save(obj, path)
    with pytest.raises(ModelError, match="state dict of tensors") as info:
        load_state_dict(path)
    assert str(path) in str(info.value)


def test_weights_of_wrong_shape_are_rejected(tmp_path):
    state = SmallResNet().state_dict()
    state["head.weight"] = torch.zeros(11, 128)
    path = tmp_path / "wrong-shape.pt"
    torch.save(state, path)
    with pytest.raises(ModelError, match="does not fit the model") as info:
        load_into(SmallResNet(), load_state_dict(path), path)
    assert str(path) in str(info.value)
    assert "head.weight" in str(info.value)


def test_weights_with_missing_or_extra_keys_are_rejected(tmp_path):
    state = SmallResNet().state_dict()
    del state["stage2.conv1.weight"]
    path = tmp_path / "missing.pt"
    torch.save(state, path)
    with pytest.raises(ModelError, match="1 missing and 0 unexpected") as info:
        load_into(SmallResNet(), load_state_dict(path), path)
    assert "stage2.conv1.weight" in str(info.value)
    assert str(path) in str(info.value)

    state = SmallResNet().state_dict()
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(ModelError, match="0 missing and 1 unexpected"):
        load_into(SmallResNet(), load_state_dict(path), path)


def test_matching_weights_load_and_give_eval_mode(tmp_path):
    torch.manual_seed(1)
    source = SmallResNet()
    path = tmp_path / "ok.pt"
    torch.save(source.state_dict(), path)
    model = load_into(SmallResNet(), load_state_dict(path), path)
    assert not model.training
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source.eval()(x))


# -- the task catalogue ----------------------------------------------------------


def test_unknown_task_lists_the_valid_ones():
    assert "resnet50" in task_names()
    with pytest.raises(UsageError, match="unknown task 'nope'") as info:
        get_task("nope")
    assert "resnet50" in str(info.value)


def test_standin_workload_before_prepare_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MLGAUGE_HOME", str(tmp_path))
    task = get_task("resnet50")
    assert not task.is_prepared()
    with pytest.raises(DataError, match="not prepared") as info:
        task.workload()
    assert "mlgauge prepare resnet50" in str(info.value)


# -- the prepared synthetic stand-in ---------------------------------------------


def _standin_target() -> QualityTarget:
    return standin_rules()["resnet50"].quality


def _evaluate(workload: Workload):
    """Run the workload's model on its whole dataset the way a benchmark would; returns (top1, result)."""
    model = workload.model.build()
    n = workload.dataset.total_count
    images = workload.dataset.load(range(n))
    labels = workload.dataset.ground_truth()
    with torch.no_grad():
        responses = workload.postprocess(model(torch.from_numpy(images)).numpy())
    assert responses.dtype == workload.response_dtype
    result = workload.score({i: responses[i : i + 1] for i in range(n)})
    return top1(model, images, labels), result


def test_prepared_meta_is_calibrated_against_the_target(prepared):
    target = _standin_target()
    assert target.threshold == pytest.approx(0.9 * 95.4)
    assert prepared["task"] == "resnet50"
    assert prepared["train_samples"] == 10_000 and prepared["val_samples"] == 2_048
    assert prepared["val_top1_trained"] > target.threshold
    assert prepared["val_top1_untrained"] < target.threshold
    assert prepared["val_top1_untrained"] < 20.0  # chance is 10%
    task = get_task("resnet50")
    assert task.is_prepared()
    assert task.prepare() == prepared  # cached: the second call does no work


def test_standin_workload_shape(prepared):
    workload = get_task("resnet50").workload()
    assert isinstance(workload, Workload)
    assert workload.task == "resnet50" and workload.benchmark == "resnet50"
    assert workload.dataset.label == "synthetic"
    assert workload.dataset.total_count == 2048
    assert workload.dataset.performance_count == 1024
    assert workload.dataset.sample_shape == (3, 32, 32)
    assert workload.dataset.load([0, 5]).shape == (2, 3, 32, 32)
    assert workload.response_dtype == np.int32
    assert workload.quality == _standin_target()
    assert workload.model.input_shape == (3, 32, 32)
    assert workload.model.build is not None and workload.model.onnx_path is None
    assert workload.model.cache_key.startswith("resnet50-synthetic-")

    small = get_task("resnet50").workload(count=100)
    assert small.dataset.total_count == 100
    assert small.dataset.performance_count == 100
    assert small.dataset.ground_truth().shape == (100,)
    np.testing.assert_array_equal(small.dataset.ground_truth(), workload.dataset.ground_truth()[:100])


def test_standin_model_reproduces_the_prepared_accuracy(prepared):
    workload = get_task("resnet50").workload()
    accuracy, result = _evaluate(workload)
    assert accuracy == pytest.approx(prepared["val_top1_trained"], abs=0.1)  # within 2 of 2048 samples
    assert result.value == pytest.approx(accuracy)
    assert result.samples == 2048
    assert result.passed


def test_untrained_weights_fail_the_target(prepared, tmp_path):
    torch.manual_seed(123)
    path = tmp_path / "untrained.pt"
    torch.save(SmallResNet().state_dict(), path)
    workload = get_task("resnet50").workload(weights_path=path)
    assert workload.model.weights_path == path
    assert workload.model.cache_key != get_task("resnet50").workload().model.cache_key
    accuracy, result = _evaluate(workload)
    assert accuracy < _standin_target().threshold
    assert accuracy < 25.0
    assert result.value == pytest.approx(accuracy)
    assert not result.passed


def test_standin_with_mismatched_weights_fails_at_build(prepared, tmp_path):
    state = SmallResNet().state_dict()
    state["stem.0.weight"] = torch.zeros(16, 3, 3, 3)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    workload = get_task("resnet50").workload(weights_path=path)
    with pytest.raises(ModelError, match="does not fit the model") as info:
        workload.model.build()
    assert str(path) in str(info.value)


# -- the real benchmark (ImageNet layout) ------------------------------------------


@pytest.fixture
def tiny_imagenet(tmp_path) -> Path:
    root = tmp_path / "imagenet"
    root.mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i, (size, label) in enumerate([((300, 260), 65), ((256, 256), 0), ((200, 400), 999)], start=1):
        name = f"ILSVRC2012_val_{i:08d}.JPEG"
        pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / name, quality=90)
        lines.append(f"{name} {label}")
    (root / "val_map.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def resnet50_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "resnet50.pt"
    torch.manual_seed(0)
    torch.save(ResNet50().state_dict(), path)
    return path


def test_imagenet_needs_weights(tiny_imagenet):
    with pytest.raises(ModelError, match="needs weights") as info:
        get_task("resnet50").workload(dataset_path=tiny_imagenet, weights_path=None)
    assert "--weights" in str(info.value)


def test_imagenet_missing_weights_file(tiny_imagenet, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        get_task("resnet50").workload(dataset_path=tiny_imagenet, weights_path=tmp_path / "gone.pt")


def test_imagenet_with_torch_weights(tiny_imagenet, resnet50_weights):
    workload = get_task("resnet50").workload(dataset_path=tiny_imagenet, weights_path=resnet50_weights)
    assert workload.dataset.label == "imagenet"
    assert workload.dataset.total_count == 3
    assert workload.dataset.performance_count == 3
    np.testing.assert_array_equal(workload.dataset.ground_truth(), [65, 0, 999])
    assert workload.quality.threshold == pytest.approx(75.6954)
    assert workload.quality.reference == 76.46 and workload.quality.fraction == 0.99
    assert workload.model.input_shape == (3, 224, 224)
    assert workload.model.onnx_path is None
    assert workload.model.cache_key.startswith("resnet50-torch-")

    model = workload.model.build()
    assert not model.training
    assert isinstance(model[0], InputScale)
    torch.testing.assert_close(model[0].scale.flatten(), torch.tensor(TORCHVISION_STD_255))
    x = torch.from_numpy(workload.dataset.load([0]))
    assert x.shape == (1, 3, 224, 224)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 1000)
    # The weights really are the file's: the net inside matches a fresh load of the state dict.
    reference = ResNet50()
    reference.load_state_dict(torch.load(resnet50_weights, weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(out, reference.eval()(x / model[0].scale))

    assert get_task("resnet50").workload(
        dataset_path=tiny_imagenet, weights_path=resnet50_weights, count=2
    ).dataset.total_count == 2


def test_imagenet_with_1001_class_torch_weights(tiny_imagenet, tmp_path):
    path = tmp_path / "resnet50-1001.pth"
    torch.save({"state_dict": ResNet50(num_classes=1001).state_dict()}, path)
    workload = get_task("resnet50").workload(dataset_path=tiny_imagenet, weights_path=path)
    model = workload.model.build()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 224, 224))
    assert out.shape == (1, 1001)
    assert workload.postprocess(out.numpy()).shape == (1,)


def test_imagenet_with_onnx_weights(tiny_imagenet, tmp_path):
    path = tmp_path / "resnet50_v1.onnx"
    path.write_bytes(b"not parsed until a backend loads it")
    workload = get_task("resnet50").workload(dataset_path=tiny_imagenet, weights_path=path)
    assert isinstance(workload.model, ModelSource)
    assert workload.model.onnx_path == path
    assert workload.model.build is None
    assert workload.model.cache_key.startswith("resnet50-onnx-")
    assert workload.dataset.label == "imagenet"


def test_imagenet_missing_dataset_folder(tmp_path, resnet50_weights):
    with pytest.raises(DataError, match="does not exist"):
        get_task("resnet50").workload(dataset_path=tmp_path / "no-imagenet", weights_path=resnet50_weights)


def test_standin_with_a_missing_weights_file(prepared, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        get_task("resnet50").workload(weights_path=tmp_path / "gone.pt")
