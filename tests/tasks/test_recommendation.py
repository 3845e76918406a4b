"""The DLRM-v2 task: AUC scoring, the prepared stand-in on real backends, and the MLPerf multi-hot path."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mlgauge.backends import BackendOptions
from mlgauge.backends.null_backend import NullBackend
from mlgauge.backends.onnxruntime_backend import OnnxRuntimeBackend
from mlgauge.backends.torch_backend import TorchBackend
from mlgauge.data.criteo import PlantedClickModel, write_multihot
from mlgauge.errors import DataError, ModelError, UsageError
from mlgauge.models.dlrm import REFERENCE_NUM_EMBEDDINGS, DlrmConfig, DLRMv2
from mlgauge.rules import QualityTarget, standin_rules
from mlgauge.tasks import get_task
from mlgauge.tasks.base import AccuracyResult, Workload
from mlgauge.tasks.recommendation import (
    BENCHMARKS,
    DlrmTask,
    make_auc_score,
    probability_postprocess,
    standin_config,
)
from mlgauge.tensors import batch_slice

TARGET = QualityTarget(metric="AUC", unit="%", reference=80.0, fraction=0.9)  # threshold 72%


# -- post-processing and scoring ------------------------------------------------------------------


def test_postprocess_gives_one_float32_probability_per_sample():
    out = probability_postprocess(np.array([[0.25], [0.5]], dtype=np.float64))
    assert out.dtype == np.float32 and out.shape == (2, 1)
    flat = np.array([0.1, 0.9], dtype=np.float32)
    np.testing.assert_array_equal(probability_postprocess(flat), flat[:, None])
    single = np.array([[0.3]], dtype=np.float32)
    np.testing.assert_array_equal(probability_postprocess((single,)), single)
    with pytest.raises(ModelError, match=r"\(3, 2\) per batch"):
        probability_postprocess(np.zeros((3, 2), dtype=np.float32))


def test_auc_score_exact_value():
    labels = np.array([1, 0, 1, 0, 1, 0, 1], dtype=np.int32)
    score = make_auc_score(labels, TARGET)
    # Positives 0.9, 0.4, 0.6 and negatives 0.5, 0.1 (index 6 is not scored):
    # of the 6 (positive, negative) pairs only (0.4, 0.5) is ordered wrongly -> 5/6.
    result = score({0: np.array([0.9], np.float32), 1: np.array([0.5], np.float32), 2: np.array([0.4], np.float32),
                    3: np.array([0.1], np.float32), 4: np.array([0.6], np.float32)})  # fmt: skip
    assert isinstance(result, AccuracyResult)
    assert result.metric == "AUC" and result.unit == "%"
    assert result.value == pytest.approx(100 * 5 / 6)
    assert result.samples == 5
    assert result.details == {"positives": 3, "negatives": 2}
    assert result.passed  # 83.3 >= 72
    # A tie counts half: positive 0.5 vs negative 0.5, positive 0.5 vs negative 0.2 -> 1.5 / 2.
    tie = score({4: np.array([0.5]), 1: np.array([0.5]), 5: np.array([0.2])})
    assert tie.value == pytest.approx(75.0)
    assert tie.passed  # 75 >= 72
    worse = score({0: np.array([0.3]), 1: np.array([0.5]), 3: np.array([0.2])})  # 1 of 2 pairs right
    assert worse.value == pytest.approx(50.0) and not worse.passed


def test_auc_score_without_both_classes_or_samples_is_zero():
    score = make_auc_score(np.array([1, 1, 0]), TARGET)
    one_class = score({0: np.array([0.9]), 1: np.array([0.2])})
    assert one_class.value == 0.0 and one_class.samples == 2 and "both classes" in one_class.details["note"]
    assert score({}).value == 0.0 and score({}).samples == 0
    nan = score({0: np.array([np.nan]), 2: np.array([0.2])})
    assert nan.value == 0.0 and "non-finite" in nan.details["note"]


# -- the task and its catalogue entries -----------------------------------------------------------


def test_one_class_serves_both_benchmarks():
    a, b = DlrmTask(), DlrmTask("dlrm-v2-99.9")
    assert (a.name, b.name) == BENCHMARKS == ("dlrm-v2-99", "dlrm-v2-99.9")
    assert a.rules_round == "v6.0"
    assert a.cache.dir == b.cache.dir and a.cache.dir.parent.name == "dlrm-v2-synthetic"
    with pytest.raises(UsageError, match="unknown benchmark 'dlrm-v3'"):
        DlrmTask("dlrm-v3")


def test_each_embedding_choice_has_its_own_standin_cache():
    full, qr = DlrmTask(), get_task("dlrm-v2-99", {"embedding": "qr", "compression": 8})
    assert full.cache.name == "dlrm-v2" and qr.embedding.describe() == "qr 8x"
    assert qr.cache.name.startswith("dlrm-v2-qr-") and qr.cache.dir != full.cache.dir
    assert get_task("dlrm-v2-99", {"embedding": "qr", "compression": 4}).cache.dir != qr.cache.dir
    with pytest.raises(UsageError, match="runs on the synthetic stand-in only"):
        qr.workload(dataset_path=Path("/data/criteo"), weights_path=None)


def test_standin_workload_before_prepare_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MLGAUGE_HOME", str(tmp_path))
    task = DlrmTask()
    assert not task.is_prepared()
    with pytest.raises(DataError, match="not prepared") as info:
        task.workload()
    assert "mlgauge prepare dlrm-v2-99" in str(info.value)


def test_standin_targets_and_server_latency():
    rules = standin_rules()
    for name in BENCHMARKS:
        rule = rules[name]
        assert rule.quality.metric == "AUC" and rule.quality.unit == "%"
        assert rule.conf["Server"]["target_latency"] == 60
    assert rules["dlrm-v2-99.9"].quality.threshold > rules["dlrm-v2-99"].quality.threshold


# -- the prepared stand-in -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def dlrm_prepared(mlgauge_home) -> dict:
    return DlrmTask().prepare()


@pytest.fixture(scope="module")
def untrained_weights(tmp_path_factory):
    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("dlrm-weights") / "untrained.pt"
    torch.save(DLRMv2(standin_config()).state_dict(), path)
    return path


def _run(workload: Workload, backend) -> AccuracyResult:
    """Every sample through a backend in batches, as the harness does: postprocess, flatten, score."""
    backend.load(workload.model)
    n = workload.dataset.total_count
    batch = workload.dataset.load(range(n))
    responses = np.concatenate(
        [workload.postprocess(backend.run(batch_slice(batch, i, i + 2048))) for i in range(0, n, 2048)]
    )
    assert responses.dtype == workload.response_dtype and responses.shape == (n, 1)
    return workload.score({i: responses[i].reshape(-1) for i in range(n)})


def test_prepared_meta_is_calibrated_against_the_targets(dlrm_prepared):
    assert dlrm_prepared["task"] == "dlrm-v2"
    assert dlrm_prepared["train_samples"] == 131_072 and dlrm_prepared["val_samples"] == 16_384
    assert DlrmConfig.from_dict(dlrm_prepared["config"]) == standin_config()
    trained, untrained = dlrm_prepared["val_auc_trained"], dlrm_prepared["val_auc_untrained"]
    assert trained < dlrm_prepared["val_auc_oracle"]  # the planted model is the ceiling
    for name in BENCHMARKS:
        threshold = standin_rules()[name].quality.threshold
        assert trained > threshold + 1.0 and untrained < threshold - 10.0
    assert abs(untrained - 50.0) < 8.0
    assert DlrmTask("dlrm-v2-99.9").is_prepared()
    assert DlrmTask("dlrm-v2-99.9").prepare() == dlrm_prepared  # shared cache: no second training


def test_standin_workload_shape(dlrm_prepared):
    workload = DlrmTask("dlrm-v2-99.9").workload()
    assert workload.task == workload.benchmark == "dlrm-v2-99.9"
    assert workload.quality == standin_rules()["dlrm-v2-99.9"].quality
    assert workload.dataset.label == "synthetic"
    assert workload.dataset.total_count == 16_384 and workload.dataset.performance_count == 16_384
    assert [(s.name, s.shape, s.dtype) for s in workload.model.inputs] == [
        ("dense", (13,), "float32"),
        ("sparse", (214,), "int64"),
    ]
    assert [(s.name, s.shape, s.dtype) for s in workload.model.outputs] == [("probability", (1,), "float32")]
    assert workload.response_dtype == np.float32
    assert workload.model.cache_key.startswith("dlrm-v2-synthetic-")
    calibration = workload.model.calibration()
    assert calibration["sparse"].shape == (512, 214)
    small = DlrmTask().workload(count=100)
    assert small.dataset.total_count == 100 and small.dataset.performance_count == 100
    np.testing.assert_array_equal(small.dataset.ground_truth(), workload.dataset.ground_truth()[:100])


@pytest.mark.parametrize("backend_class", [TorchBackend, OnnxRuntimeBackend], ids=["torch", "onnxruntime"])
def test_trained_standin_passes_and_untrained_fails(dlrm_prepared, untrained_weights, backend_class):
    trained = _run(DlrmTask().workload(), backend_class(BackendOptions(threads=1)))
    assert trained.value == pytest.approx(dlrm_prepared["val_auc_trained"], abs=0.01)
    assert trained.samples == 16_384 and trained.passed
    assert DlrmTask("dlrm-v2-99.9").workload().quality.passed(trained.value)

    workload = DlrmTask("dlrm-v2-99.9").workload(weights_path=untrained_weights)
    assert workload.model.cache_key != DlrmTask().workload().model.cache_key
    untrained = _run(workload, backend_class(BackendOptions(threads=1)))
    assert untrained.value < 60.0 and not untrained.passed
    assert not DlrmTask("dlrm-v2-99").workload().quality.passed(untrained.value)


def test_null_backend_zeros_score_as_chance(dlrm_prepared):
    result = _run(DlrmTask().workload(count=3000), NullBackend(BackendOptions()))
    assert result.value == pytest.approx(50.0)  # all scores tie
    assert not result.passed


def test_standin_with_mismatched_weights_fails_at_build(dlrm_prepared, tmp_path):
    state = DLRMv2(standin_config()).state_dict()
    state["embeddings.tables.3.weight"] = torch.zeros(5, 16)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(ModelError, match="does not fit the model") as info:
        DlrmTask().workload(weights_path=path).model.build()
    assert str(path) in str(info.value)


# -- the real benchmark (MLPerf multi-hot layout) --------------------------------------------------

# Within MLPerf's table sizes, which the multi-hot reader checks ids against (feature 5 has 3 rows).
SMALL_TABLES = tuple(min(64, n) for n in REFERENCE_NUM_EMBEDDINGS)
SMALL_WIDTHS = tuple([1, 2, 3] * 8 + [1, 1])


@pytest.fixture(scope="module")
def criteo_folder(tmp_path_factory):
    data = PlantedClickModel(SMALL_TABLES, SMALL_WIDTHS).generate(201, "val")
    starts = np.cumsum([0, *SMALL_WIDTHS])
    sparse = [data.sparse[:, a:b] for a, b in zip(starts[:-1], starts[1:], strict=True)]
    folder = write_multihot(tmp_path_factory.mktemp("criteo") / "multihot", data.dense, sparse, data.labels)
    return folder, data


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(5)
    config = DlrmConfig(SMALL_TABLES, SMALL_WIDTHS, embedding_dim=8, bottom_mlp=(8,), top_mlp=(8, 1), dcn_layers=1, dcn_rank=4)
    return DLRMv2(config).eval()


def test_criteo_folder_with_torch_weights(criteo_folder, small_model, tmp_path):
    folder, data = criteo_folder
    path = tmp_path / "dlrm.pt"
    torch.save(small_model.state_dict(), path)
    workload = DlrmTask().workload(dataset_path=folder, weights_path=path)
    assert workload.dataset.label == "criteo-1tb-multihot"
    assert workload.dataset.total_count == math.ceil(201 / 2) == 101
    assert workload.dataset.performance_count == 101
    assert workload.quality.threshold == pytest.approx(0.99 * 80.31)
    assert [s.shape for s in workload.model.inputs] == [(13,), (sum(SMALL_WIDTHS),)]
    assert workload.model.cache_key.startswith("dlrm-v2-torch-")
    np.testing.assert_array_equal(workload.dataset.ground_truth(), data.labels[:101])

    result = _run(workload, TorchBackend(BackendOptions(threads=1)))
    with torch.no_grad():
        want = small_model(torch.from_numpy(data.dense[:101]), torch.from_numpy(data.sparse[:101])).numpy()
    from sklearn.metrics import roc_auc_score

    assert result.value == pytest.approx(100 * roc_auc_score(data.labels[:101], want.reshape(-1)))
    assert result.samples == 101
    assert DlrmTask("dlrm-v2-99.9").workload(dataset_path=folder, weights_path=path, count=10).dataset.total_count == 10


def test_criteo_folder_with_torchrec_weights(criteo_folder, small_model, tmp_path):
    folder, data = criteo_folder
    names = {"embeddings.tables.": "sparse_arch.embedding_bag_collection.embedding_bags.t_cat_"}
    state = {}
    for key, value in small_model.state_dict().items():
        if key.startswith("embeddings.tables."):
            t = key.split(".")[2]
            key = f"{names['embeddings.tables.']}{t}.weight"
        elif key.startswith("bottom_mlp.layers."):
            _, _, i, p = key.split(".")
            key = f"dense_arch.model._mlp.{i}._linear.{p}"
        elif key.startswith("interaction."):
            _, p, i = key.split(".")
            key = f"inter_arch.crossnet.{p}.{i}"
        elif key.startswith("top_mlp.layers.0."):
            key = "over_arch.model.0._mlp.0._linear." + key.split(".")[-1]
        else:  # the last top layer
            key = "over_arch.model.1." + key.split(".")[-1]
        state["model." + key] = value
    path = tmp_path / "torchrec.pt"
    torch.save(state, path)
    model = DlrmTask().workload(dataset_path=folder, weights_path=path).model.build()
    x = {"dense": torch.from_numpy(data.dense[:7]), "sparse": torch.from_numpy(data.sparse[:7])}
    with torch.no_grad():
        torch.testing.assert_close(model(**x), small_model(**x))


def test_criteo_folder_with_onnx_weights_and_errors(criteo_folder, tmp_path):
    folder, _ = criteo_folder
    onnx = tmp_path / "dlrm.onnx"
    onnx.write_bytes(b"not parsed until a backend loads it")
    workload = DlrmTask().workload(dataset_path=folder, weights_path=onnx)
    assert workload.model.onnx_path == onnx and workload.model.build is None
    assert workload.model.cache_key.startswith("dlrm-v2-onnx-")
    with pytest.raises(ModelError, match="needs weights"):
        DlrmTask().workload(dataset_path=folder)
    with pytest.raises(ModelError, match="does not exist"):
        DlrmTask().workload(dataset_path=folder, weights_path=tmp_path / "gone.pt")
    with pytest.raises(DataError, match="does not exist"):
        DlrmTask().workload(dataset_path=tmp_path / "no-criteo", weights_path=onnx)
