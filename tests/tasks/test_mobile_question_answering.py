"""The mobilebert task: model files' inputs and outputs by name or position, int32 samples, SQuAD."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from ai_edge_litert import schema_py_generated as fb
from ai_edge_litert.tools import flatbuffer_utils

from mlgauge.backends.base import BackendOptions
from mlgauge.backends.litert_backend import LiteRtBackend
from mlgauge.backends.null_backend import NullBackend
from mlgauge.backends.onnxruntime_backend import OnnxRuntimeBackend
from mlgauge.backends.torch_backend import TorchBackend
from mlgauge.data import synthetic_spans
from mlgauge.errors import DataError, ModelError
from mlgauge.models.mobilebert import MobileBertConfig, MobileBertForQuestionAnswering, small_config
from mlgauge.rules import inference_rules, standin_rules
from mlgauge.tasks.base import Workload
from mlgauge.tasks.mobile_question_answering import (
    MOBILE_INPUT_NAMES,
    MobileBertTask,
    input_roles,
    logits_postprocess,
    start_first,
)
from mlgauge.tasks.question_answering import standin_init

OPTIONS = BackendOptions(threads=1)
HERE = Path("model.tflite")


def _responses(workload: Workload, backend) -> dict[int, np.ndarray]:
    """Every sample through backend -> postprocess, flattened as the accuracy log returns them."""
    backend.load(workload.model)
    n = workload.dataset.total_count
    out = {}
    for first in range(0, n, 128):
        idx = list(range(first, min(n, first + 128)))
        post = workload.postprocess(backend.run(workload.dataset.load(idx)), idx)
        assert post.dtype == workload.response_dtype and post.shape == (
            len(idx),
            *workload.dataset.sample_shape,
            2,
        )
        out.update({i: post[j].reshape(-1) for j, i in enumerate(idx)})
    return out


# -- model files: which input and output is which ----------------------------------------------------


def test_input_roles_by_name_or_position():
    assert input_roles(["segment_ids", "input_ids", "input_mask"], HERE) == (
        "input_ids",
        "input_mask",
        "segment_ids",
    )
    assert input_roles(["token_type_ids", "attention_mask", "input_ids"], HERE) == (
        "input_ids", "attention_mask", "token_type_ids",
    )  # fmt: skip
    assert input_roles(["ids", "mask", "segment_ids"], HERE) == ("ids", "mask", "segment_ids")
    # Names that say nothing: the app's order (it sets inputs by position).
    assert input_roles(["args_0", "args_1", "args_2"], HERE) == ("args_0", "args_1", "args_2")
    with pytest.raises(ModelError, match=r"model\.tflite has 2 inputs \['a', 'b'\]; MobileBERT takes 3"):
        input_roles(["a", "b"], HERE)


def test_output_order_by_name_or_default():
    assert start_first(["start_logits", "end_logits"], default=False, path=HERE)
    assert not start_first(["end_logits", "start_logits"], default=True, path=HERE)
    assert start_first(["Identity", "Identity_1"], default=True, path=HERE)
    assert not start_first(["Identity", "Identity_1"], default=False, path=HERE)
    with pytest.raises(ModelError, match="has 3 outputs"):
        start_first(["a", "b", "c"], default=True, path=HERE)


def test_postprocess_puts_start_logits_first():
    start, end = np.arange(6, dtype=np.float32).reshape(2, 3), -np.arange(6, dtype=np.float32).reshape(2, 3)
    expected = np.stack([start, end], axis=-1)
    np.testing.assert_array_equal(logits_postprocess(True)((start, end)), expected)
    np.testing.assert_array_equal(
        logits_postprocess(False)((end, start), [0, 1]), expected
    )  # the .tflite's order
    with pytest.raises(ModelError, match="start and end logits"):
        logits_postprocess(False)(np.zeros((2, 3), np.float32))


# -- the prepared stand-in -----------------------------------------------------------------------------


def test_standin_workload_before_prepare_is_a_data_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MLGAUGE_HOME", str(tmp_path))
    assert not MobileBertTask().is_prepared()
    with pytest.raises(DataError, match="not prepared") as info:
        MobileBertTask().workload()
    assert "mlgauge prepare mobilebert" in str(info.value)


@pytest.fixture(scope="module")
def prepared(mlgauge_home) -> dict:
    return MobileBertTask().prepare()


def test_prepared_meta_is_calibrated_against_the_target(prepared):
    target = standin_rules()["mobilebert"].quality
    assert target.metric == "F1" and target.threshold == pytest.approx(0.9 * 99.64)
    assert prepared["val_f1_trained"] > target.threshold + 5  # margin for other machines' arithmetic
    assert prepared["val_f1_untrained"] < target.threshold - 50
    assert prepared["task"] == "mobilebert" and prepared["val_questions"] == prepared["val_features"] == 1024
    assert MobileBertTask().prepare() == prepared  # cached: the second call does no work


def test_standin_workload_shape(prepared):
    workload = MobileBertTask().workload()
    assert workload.task == workload.benchmark == "mobilebert" and MobileBertTask.rules_round == "mobile-v6.0"
    assert workload.dataset.label == "synthetic"
    assert workload.dataset.total_count == workload.dataset.performance_count == 1024
    # MLPerf Mobile's names and dtype: int32 token ids, input mask, segment ids.
    assert [(s.name, s.shape, s.dtype) for s in workload.model.inputs] == [
        (n, (128,), "int32") for n in MOBILE_INPUT_NAMES
    ]
    assert [s.name for s in workload.model.outputs] == ["start_logits", "end_logits"]
    batch = workload.dataset.load([0, 7])
    assert list(batch) == list(MOBILE_INPUT_NAMES) and all(
        a.shape == (2, 128) and a.dtype == np.int32 for a in batch.values()
    )
    assert (
        batch["input_mask"][0, 0] == 1 and batch["segment_ids"][0, 0] == 0 and batch["input_ids"][0, 0] == 2
    )  # [CLS]
    assert workload.quality == standin_rules()["mobilebert"].quality
    small = MobileBertTask().workload(count=100)
    assert small.dataset.total_count == 100 and len(small.dataset.ground_truth()) == 100


@pytest.fixture(scope="module")
def trained_responses(prepared) -> dict[str, dict[int, np.ndarray]]:
    workload = MobileBertTask().workload()
    return {b.name: _responses(workload, b(OPTIONS)) for b in (TorchBackend, OnnxRuntimeBackend)}


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_trained_standin_passes(prepared, trained_responses, backend):
    result = MobileBertTask().workload().score(trained_responses[backend])
    assert result.value == pytest.approx(prepared["val_f1_trained"], abs=0.2)
    assert result.details["exact_match"] == pytest.approx(prepared["val_exact_match_trained"], abs=0.3)
    assert result.samples == 1024 and result.passed


def test_torch_and_onnxruntime_logits_agree(trained_responses):
    for i in (0, 511, 1023):
        np.testing.assert_allclose(
            trained_responses["torch"][i], trained_responses["onnxruntime"][i], atol=1e-4
        )


def test_untrained_standin_fails(prepared, tmp_path):
    torch.manual_seed(123)
    model = MobileBertForQuestionAnswering(small_config(len(synthetic_spans.vocab_tokens())))
    standin_init(model)
    path = tmp_path / "untrained.pt"
    torch.save(model.state_dict(), path)
    workload = MobileBertTask().workload(weights_path=path)
    assert workload.model.cache_key != MobileBertTask().workload().model.cache_key
    result = workload.score(_responses(workload, TorchBackend(OPTIONS)))
    assert result.value < 30.0 and not result.passed


def test_null_backend_zeros_score_without_error(prepared):
    workload = MobileBertTask().workload(count=64)
    responses = _responses(workload, NullBackend(OPTIONS))
    assert all(r.shape == (256,) and not r.any() for r in responses.values())
    result = workload.score(responses)
    assert result.samples == 64 and result.details["answered"] == 64
    assert 0.0 <= result.value < 20.0 and not result.passed


def test_standin_with_mismatched_weights_fails_at_build(prepared, tmp_path):
    path = tmp_path / "large-vocab.pt"
    torch.save(MobileBertForQuestionAnswering(small_config(400)).state_dict(), path)
    with pytest.raises(ModelError, match="does not fit the model") as info:
        MobileBertTask().workload(weights_path=path).model.build()
    assert str(path) in str(info.value)


# -- the real benchmark (SQuAD layout) -----------------------------------------------------------------

VOCAB = len(synthetic_spans.vocab_tokens())
TINY = MobileBertConfig(
    vocab_size=VOCAB, hidden_size=16, intra_bottleneck_size=8, embedding_size=8, num_layers=1,
    num_heads=2, intermediate_size=16, num_feedforward_networks=2, max_position=512,
)  # fmt: skip


@pytest.fixture
def squad_dir(tmp_path) -> Path:
    """A SQuAD v1.1-layout folder: dev-v1.1.json (5 questions) and vocab.txt."""
    folder = tmp_path / "squad"
    folder.mkdir()
    synthetic_spans.write_split(folder / "dev-v1.1.json", 5, "val")
    synthetic_spans.write_vocab(folder / "vocab.txt")
    return folder


def _casts_tflite(path: Path) -> Path:
    """A .tflite shaped like MLPerf Mobile's: three int32 (batch, 384) inputs, in the file as segments, ids,
    mask with converter-decorated names, and two float outputs with names that say nothing, in the app's
    order: "end" = float(mask), "start" = float(ids)."""
    i32, f32 = fb.TensorType.INT32, fb.TensorType.FLOAT32
    model, sub = fb.ModelT(), fb.SubGraphT()
    model.version, model.buffers, sub.tensors, sub.operators = 3, [fb.BufferT()], [], []
    code = fb.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.CAST
    model.operatorCodes = [code]
    names = ("serving_default_segment_ids:0", "serving_default_input_ids:0", "serving_default_input_mask:0")
    for name, dtype in [*((n, i32) for n in names), ("Identity", f32), ("Identity_1", f32)]:
        t = fb.TensorT()
        t.name, t.shape, t.shapeSignature, t.type, t.buffer = name, [1, 384], [-1, 384], dtype, 0
        sub.tensors.append(t)
    for src, dst in ((2, 3), (1, 4)):
        op, options = fb.OperatorT(), fb.CastOptionsT()
        options.inDataType, options.outDataType = i32, f32
        op.opcodeIndex, op.inputs, op.outputs = 0, [src], [dst]
        op.builtinOptionsType, op.builtinOptions = fb.BuiltinOptions.CastOptions, options
        sub.operators.append(op)
    sub.inputs, sub.outputs = [0, 1, 2], [3, 4]
    model.subgraphs = [sub]
    path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    return path


def test_squad_with_a_tflite_file_in_the_apps_layout(squad_dir, tmp_path):
    path = _casts_tflite(tmp_path / "mobilebert_int8_384_nnapi.tflite")
    workload = MobileBertTask().workload(dataset_path=squad_dir, weights_path=path)
    rule = inference_rules("mobile-v6.0").benchmark("mobilebert")
    assert workload.benchmark == "mobilebert" and workload.quality == rule.quality
    assert workload.quality.threshold == pytest.approx(0.93 * 93.08)
    assert workload.dataset.label == "squad-v1.1" and workload.dataset.total_count == 5
    assert workload.model.tflite_path == path and workload.model.build is None
    assert [(s.name, s.shape, s.dtype) for s in workload.model.inputs] == [
        (n, (384,), "int32") for n in MOBILE_INPUT_NAMES
    ]
    assert [s.name for s in workload.model.outputs] == ["Identity", "Identity_1"]
    responses = _responses(workload, LiteRtBackend(OPTIONS))
    batch = workload.dataset.load([3])
    logits = responses[3].reshape(384, 2)
    np.testing.assert_array_equal(logits[:, 0], batch["input_ids"][0])  # start = the second output
    np.testing.assert_array_equal(logits[:, 1], batch["input_mask"][0])
    result = workload.score(responses)
    assert result.samples == 5 and result.details["answered"] == 5 and not result.passed


class _EndFirst(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, input_ids, input_mask, segment_ids):
        start, end = self.inner(input_ids, input_mask, segment_ids)
        return end, start


def test_squad_with_an_onnx_export_named_end_first(squad_dir, tmp_path):
    torch.manual_seed(0)
    inner = MobileBertForQuestionAnswering(TINY).eval()
    example = tuple(torch.zeros(2, 384, dtype=torch.int32) for _ in range(3))
    program = torch.onnx.export(
        _EndFirst(inner).eval(), example,
        input_names=list(MOBILE_INPUT_NAMES), output_names=["end_logits", "start_logits"],
        dynamic_shapes=tuple({0: torch.export.Dim.DYNAMIC} for _ in range(3)), opset_version=18, dynamo=True,
    )  # fmt: skip
    path = tmp_path / "mobilebert.onnx"
    program.save(str(path))
    workload = MobileBertTask().workload(dataset_path=squad_dir, weights_path=path, count=3)
    assert workload.model.onnx_path == path and [s.dtype for s in workload.model.inputs] == ["int32"] * 3
    responses = _responses(workload, OnnxRuntimeBackend(OPTIONS))
    batch = workload.dataset.load([0, 1, 2])
    with torch.no_grad():
        start, end = inner(*(torch.from_numpy(batch[n]) for n in MOBILE_INPUT_NAMES))
    for i in range(3):
        np.testing.assert_allclose(
            responses[i].reshape(384, 2), torch.stack([start[i], end[i]], -1).numpy(), atol=1e-4
        )


def test_squad_with_pytorch_weights(squad_dir, tmp_path):
    torch.manual_seed(0)
    state = dict(MobileBertForQuestionAnswering(TINY).state_dict())
    state["mobilebert.pooler.dense.weight"] = torch.zeros(16, 16)  # as some transformers checkpoints carry it
    path = tmp_path / "pytorch_model.bin"
    torch.save(state, path)
    workload = MobileBertTask().workload(dataset_path=squad_dir, weights_path=path)
    assert [s.dtype for s in workload.model.inputs] == ["int32"] * 3 and workload.model.cache_key.startswith(
        "mobilebert-bin-"
    )
    model = workload.model.build()
    assert (
        not model.training and model.config.hidden_size == 16 and model.config.num_feedforward_networks == 2
    )
    result = workload.score(_responses(workload, TorchBackend(OPTIONS)))
    assert result.samples == 5 and result.details["questions"] == 5
    bad = tmp_path / "resnet.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(ModelError, match="not a MobileBertForQuestionAnswering state dict") as info:
        MobileBertTask().workload(dataset_path=squad_dir, weights_path=bad).model.build()
    assert str(bad) in str(info.value)


def test_squad_model_file_errors(squad_dir, tmp_path):
    with pytest.raises(ModelError, match="needs a model file") as info:
        MobileBertTask().workload(dataset_path=squad_dir)
    assert "--weights" in str(info.value)
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(bytes(range(64)))
    with pytest.raises(ModelError, match=r"junk\.tflite is not a readable TFLite model"):
        MobileBertTask().workload(dataset_path=squad_dir, weights_path=junk)
    pte = tmp_path / "mobilebert.pte"
    pte.write_bytes(b"checked when the backend loads it")
    workload = MobileBertTask().workload(dataset_path=squad_dir, weights_path=pte, count=2)
    assert workload.model.pte_path == pte and [s.dtype for s in workload.model.inputs] == ["int64"] * 3
    assert workload.dataset.load([1])["input_ids"].dtype == np.int64
    (squad_dir / "vocab.txt").unlink()
    with pytest.raises(DataError, match="vocab.txt does not exist"):
        MobileBertTask().workload(dataset_path=squad_dir, weights_path=pte)


def test_standin_calibration_is_int32_in_the_mobile_input_names(prepared):
    calibration = MobileBertTask().workload().model.calibration()
    assert list(calibration) == ["input_ids", "input_mask", "segment_ids"]
    assert all(a.dtype == np.int32 and a.shape[0] >= 64 for a in calibration.values())


def test_int8_onnx_runtime_keeps_the_stand_ins_f1(prepared):
    """Post-training INT8 quantizes the weighted layers only: quantizing the attention's
    masked-score add as well took this model from F1 99.5% to 31.9%."""
    workload = MobileBertTask().workload(count=192)
    fp32 = workload.score(_responses(workload, OnnxRuntimeBackend(OPTIONS))).value
    int8 = workload.score(_responses(workload, OnnxRuntimeBackend(BackendOptions(threads=1, precision="int8")))).value
    assert fp32 > 95
    assert int8 == pytest.approx(fp32, abs=2.0)
