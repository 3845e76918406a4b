"""The bert-99 / bert-99.9 task: responses, scoring, the trained stand-in on real backends, the SQuAD path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mlgauge.backends.base import BackendOptions
from mlgauge.backends.model_files import onnx_input_names
from mlgauge.backends.null_backend import NullBackend
from mlgauge.backends.onnxruntime_backend import OnnxRuntimeBackend
from mlgauge.backends.torch_backend import TorchBackend
from mlgauge.data import synthetic_spans
from mlgauge.data.squad import INPUT_NAMES, FeatureConfig, create_features, load_tokenizer, read_squad
from mlgauge.errors import DataError, ModelError, UsageError
from mlgauge.models.bert import BertConfig, BertForQuestionAnswering, small_config
from mlgauge.rules import QualityTarget, standin_rules
from mlgauge.tasks.base import Workload
from mlgauge.tasks.question_answering import (
    MLPERF_ONNX_INPUT_NAMES,
    BertTask,
    make_squad_score,
    qa_postprocess,
    standin_init,
)

OPTIONS = BackendOptions(threads=1)


def _responses(workload: Workload, backend) -> dict[int, np.ndarray]:
    """Every sample through backend -> postprocess, flattened as the accuracy log returns them."""
    backend.load(workload.model)
    n = workload.dataset.total_count
    out = {}
    for first in range(0, n, 128):
        idx = list(range(first, min(n, first + 128)))
        post = workload.postprocess(backend.run(workload.dataset.load(idx)))
        assert post.dtype == workload.response_dtype
        out.update({i: post[j].reshape(-1) for j, i in enumerate(idx)})
    return out


# -- responses and scoring --------------------------------------------------------------------


def test_postprocess_interleaves_start_and_end_like_mlperf():
    start = np.arange(6, dtype=np.float64).reshape(2, 3)
    end = -np.arange(6, dtype=np.float32).reshape(2, 3)
    out = qa_postprocess((start, end))
    assert out.shape == (2, 3, 2) and out.dtype == np.float32
    # accuracy-squad.py reads a response as reshape(-1, 2): column 0 start, column 1 end.
    np.testing.assert_array_equal(out[1].reshape(-1), [3, -3, 4, -4, 5, -5])
    np.testing.assert_array_equal(qa_postprocess(out), out)
    with pytest.raises(ModelError, match="start and end logits"):
        qa_postprocess(np.zeros((2, 3), np.float32))
    with pytest.raises(ModelError, match="start and end logits"):
        qa_postprocess((np.zeros((2, 3)), np.zeros((2, 4))))


def test_score_rejects_responses_of_the_wrong_length(tmp_path):
    tokenizer = load_tokenizer(synthetic_spans.write_vocab(tmp_path / "vocab.txt"))
    examples = read_squad(synthetic_spans.write_split(tmp_path / "val.json", 2, "val"))
    feats = create_features(examples, tokenizer, FeatureConfig(128, 64, 16))
    score = make_squad_score(examples, feats, QualityTarget("F1", "%", 90.0, 0.99))
    with pytest.raises(ModelError, match="has 128 values; expected 256"):
        score({0: np.zeros(128, np.float32)})
    result = score({0: np.zeros(256, np.float32)})  # question 1 unanswered: scores 0
    assert result.metric == "F1" and result.unit == "%" and result.samples == 1
    assert result.details["questions"] == 2 and result.details["answered"] == 1


def test_benchmarks_share_one_standin():
    a, b = BertTask("bert-99"), BertTask("bert-99.9")
    assert (a.name, b.name) == ("bert-99", "bert-99.9")
    assert BertTask().name == "bert-99"
    assert a.rules_round == b.rules_round == "v6.0"
    assert "99% F1" in a.title and "99.9% F1" in b.title and "SQuAD v1.1" in a.title
    assert a.standin_dir == b.standin_dir and a.standin_dir.parent.name == "bert-synthetic"
    with pytest.raises(UsageError, match="unknown BERT benchmark 'bert-98'") as info:
        BertTask("bert-98")
    assert "bert-99.9" in str(info.value)


def test_standin_workload_before_prepare_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MLGAUGE_HOME", str(tmp_path))
    task = BertTask("bert-99.9")
    assert not task.is_prepared()
    with pytest.raises(DataError, match="not prepared") as info:
        task.workload()
    assert "mlgauge prepare bert-99.9" in str(info.value)


# -- the prepared stand-in ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(mlgauge_home) -> dict:
    return BertTask("bert-99").prepare()


def test_prepared_meta_is_calibrated_against_both_targets(prepared):
    for bench in ("bert-99", "bert-99.9"):
        target = standin_rules()[bench].quality
        assert target.metric == "F1" and target.unit == "%"
        assert prepared["val_f1_trained"] > target.threshold + 2  # margin for other machines' arithmetic
        assert prepared["val_f1_untrained"] < target.threshold - 40
        assert standin_rules()[bench].conf["Server"]["target_latency"] == 130
    assert standin_rules()["bert-99"].quality.threshold == pytest.approx(0.9 * 99.13)
    assert standin_rules()["bert-99.9"].quality.threshold == pytest.approx(0.95 * 99.13)
    assert prepared["task"] == "bert" and prepared["val_questions"] == prepared["val_features"] == 1024
    assert BertTask("bert-99.9").is_prepared()
    assert BertTask("bert-99.9").prepare() == prepared  # cached: the second call does no work


def test_standin_workload_shape(prepared):
    workload = BertTask("bert-99.9").workload()
    assert workload.task == workload.benchmark == "bert-99.9"
    assert workload.dataset.label == "synthetic"
    assert workload.dataset.total_count == workload.dataset.performance_count == 1024
    assert [(s.name, s.shape, s.dtype) for s in workload.model.inputs] == [(n, (128,), "int64") for n in INPUT_NAMES]
    assert [(s.name, s.shape, s.dtype) for s in workload.model.outputs] == [
        ("start_logits", (128,), "float32"), ("end_logits", (128,), "float32")
    ]
    batch = workload.dataset.load([0, 7])
    assert list(batch) == list(INPUT_NAMES) and all(a.shape == (2, 128) and a.dtype == np.int64 for a in batch.values())
    assert workload.response_dtype == np.float32
    assert workload.quality == standin_rules()["bert-99.9"].quality
    assert workload.model.cache_key.startswith("bert-synthetic-")
    assert workload.model.cache_key == BertTask("bert-99").workload().model.cache_key

    small = BertTask("bert-99").workload(count=100)
    assert small.dataset.total_count == small.dataset.performance_count == 100
    assert len(small.dataset.ground_truth()) == 100


@pytest.fixture(scope="module")
def trained_responses(prepared) -> dict[str, dict[int, np.ndarray]]:
    workload = BertTask("bert-99").workload()
    return {b.name: _responses(workload, b(OPTIONS)) for b in (TorchBackend, OnnxRuntimeBackend)}


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
@pytest.mark.parametrize("bench", ["bert-99", "bert-99.9"])
def test_trained_standin_passes(prepared, trained_responses, backend, bench):
    result = BertTask(bench).workload().score(trained_responses[backend])
    assert result.value == pytest.approx(prepared["val_f1_trained"], abs=0.2)
    assert result.details["exact_match"] == pytest.approx(prepared["val_exact_match_trained"], abs=0.3)
    assert result.samples == 1024 and result.details["answered"] == 1024
    assert result.passed


def test_torch_and_onnxruntime_logits_agree(trained_responses):
    for i in (0, 511, 1023):
        np.testing.assert_allclose(trained_responses["torch"][i], trained_responses["onnxruntime"][i], atol=1e-4)


@pytest.fixture(scope="module")
def untrained_weights(prepared, tmp_path_factory) -> Path:
    torch.manual_seed(123)
    model = BertForQuestionAnswering(small_config(len(synthetic_spans.vocab_tokens())))
    standin_init(model)
    path = tmp_path_factory.mktemp("untrained") / "untrained.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.mark.parametrize("backend", [TorchBackend, OnnxRuntimeBackend], ids=["torch", "onnxruntime"])
def test_untrained_standin_fails(untrained_weights, backend):
    workload = BertTask("bert-99").workload(weights_path=untrained_weights)
    assert workload.model.cache_key != BertTask("bert-99").workload().model.cache_key
    result = workload.score(_responses(workload, backend(OPTIONS)))
    assert result.value < 40.0
    assert not result.passed


def test_null_backend_zeros_score_without_error(prepared):
    workload = BertTask("bert-99").workload(count=64)
    responses = _responses(workload, NullBackend(OPTIONS))
    assert all(r.shape == (256,) and not r.any() for r in responses.values())
    result = workload.score(responses)
    assert result.samples == 64 and result.details["answered"] == 64
    assert 0.0 <= result.value < 20.0 and not result.passed


def test_standin_with_mismatched_weights_fails_at_build(prepared, tmp_path):
    path = tmp_path / "large-vocab.pt"
    torch.save(BertForQuestionAnswering(small_config(400)).state_dict(), path)
    workload = BertTask("bert-99").workload(weights_path=path)
    with pytest.raises(ModelError, match="does not fit the model") as info:
        workload.model.build()
    assert str(path) in str(info.value)


# -- the real benchmark (SQuAD layout) -------------------------------------------------------------

TINY = BertConfig(vocab_size=len(synthetic_spans.vocab_tokens()), hidden_size=16, num_layers=1, num_heads=1,
                  intermediate_size=32, max_position=512)


@pytest.fixture
def squad_dir(tmp_path) -> Path:
    """A SQuAD v1.1-layout folder: dev-v1.1.json (5 questions) and vocab.txt."""
    folder = tmp_path / "squad"
    folder.mkdir()
    synthetic_spans.write_split(folder / "dev-v1.1.json", 5, "val")
    synthetic_spans.write_vocab(folder / "vocab.txt")
    return folder


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    state = dict(BertForQuestionAnswering(TINY).state_dict())
    state["bert.pooler.dense.weight"] = torch.zeros(16, 16)  # as transformers checkpoints carry it
    state["bert.pooler.dense.bias"] = torch.zeros(16)
    path = tmp_path_factory.mktemp("weights") / "pytorch_model.bin"
    torch.save(state, path)
    return path


def test_squad_with_torch_weights(squad_dir, tiny_weights):
    for bench, fraction in (("bert-99", 0.99), ("bert-99.9", 0.999)):
        workload = BertTask(bench).workload(dataset_path=squad_dir, weights_path=tiny_weights)
        assert workload.benchmark == bench
        assert workload.quality.reference == 90.874 and workload.quality.fraction == fraction
    assert workload.dataset.label == "squad-v1.1"
    assert workload.dataset.total_count == workload.dataset.performance_count == 5
    assert [s.shape for s in workload.model.inputs] == [(384,)] * 3
    assert workload.model.cache_key.startswith("bert-torch-")
    model = workload.model.build()
    assert not model.training and model.config == TINY
    result = workload.score(_responses(workload, TorchBackend(OPTIONS)))
    assert result.samples == 5 and result.details["questions"] == 5 and not result.passed
    # The JSON file itself, with vocab.txt beside it, works too.
    same = BertTask().workload(dataset_path=squad_dir / "dev-v1.1.json", weights_path=tiny_weights, count=2)
    assert same.dataset.total_count == 2
    np.testing.assert_array_equal(same.dataset.load([1])["input_ids"], workload.dataset.load([1])["input_ids"])


def _export(path: Path, names: tuple[str, ...]) -> Path:
    torch.manual_seed(0)
    model = BertForQuestionAnswering(TINY).eval()
    example = tuple(torch.zeros(2, 384, dtype=torch.int64) for _ in names)
    program = torch.onnx.export(
        model, example, input_names=list(names), output_names=["start", "end"],
        dynamic_shapes=tuple({0: torch.export.Dim.DYNAMIC} for _ in names), opset_version=18, dynamo=True,
    )
    program.save(str(path))
    return path


def test_squad_with_mlperfs_onnx_input_names(squad_dir, tmp_path):
    path = _export(tmp_path / "model.onnx", MLPERF_ONNX_INPUT_NAMES)
    assert onnx_input_names(path) == list(MLPERF_ONNX_INPUT_NAMES)
    workload = BertTask("bert-99").workload(dataset_path=squad_dir, weights_path=path)
    assert workload.model.onnx_path == path and workload.model.build is None
    assert tuple(s.name for s in workload.model.inputs) == MLPERF_ONNX_INPUT_NAMES
    assert list(workload.dataset.load([0])) == list(MLPERF_ONNX_INPUT_NAMES)
    result = workload.score(_responses(workload, OnnxRuntimeBackend(OPTIONS)))
    assert result.samples == 5 and result.details["answered"] == 5


def test_onnx_input_names_of_other_files(tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(bytes(range(256)) * 4)
    assert onnx_input_names(garbage) is None
    (tmp_path / "empty.onnx").write_bytes(b"")
    assert onnx_input_names(tmp_path / "empty.onnx") is None
    assert onnx_input_names(tmp_path / "missing.onnx") is None


def test_squad_needs_weights(squad_dir):
    with pytest.raises(ModelError, match="needs weights") as info:
        BertTask().workload(dataset_path=squad_dir)
    assert "--weights" in str(info.value)


def test_squad_missing_files(squad_dir, tiny_weights, tmp_path):
    with pytest.raises(DataError, match="does not exist") as info:
        BertTask().workload(dataset_path=tmp_path / "nowhere", weights_path=tiny_weights)
    assert "dev-v1.1.json" in str(info.value)
    (squad_dir / "vocab.txt").unlink()
    with pytest.raises(DataError, match="vocab.txt does not exist"):
        BertTask().workload(dataset_path=squad_dir, weights_path=tiny_weights)


def test_squad_with_non_bert_weights(squad_dir, tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, path)
    workload = BertTask().workload(dataset_path=squad_dir, weights_path=path)
    with pytest.raises(ModelError, match="not a BertForQuestionAnswering state dict") as info:
        workload.model.build()
    assert str(path) in str(info.value)


def test_standin_calibration_comes_from_its_own_split(prepared):
    """INT8 calibration inputs: the model's input names, and never a validation question."""
    workload = BertTask("bert-99").workload()
    calibration = workload.model.calibration()
    assert list(calibration) == list(INPUT_NAMES)
    assert calibration["input_ids"].shape[0] >= 64
    assert calibration["input_ids"].shape[1] == workload.dataset.sample_shape[0]
    val = {tuple(row) for row in workload.dataset.load(range(workload.dataset.total_count))["input_ids"].tolist()}
    assert not any(tuple(row) in val for row in calibration["input_ids"].tolist())
