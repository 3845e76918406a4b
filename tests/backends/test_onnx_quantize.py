"""INT8 static quantization of ONNX models: QDQ nodes, closeness to FP32, caching, bad inputs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from mlgauge.backends.base import BackendOptions
from mlgauge.backends.onnx_quantize import quantize_onnx
from mlgauge.backends.onnxruntime_backend import OnnxRuntimeBackend, export_to_onnx
from mlgauge.errors import BackendError, ModelError
from mlgauge.tasks.base import ModelSource
from mlgauge.tensors import TensorSpec

INPUT_SHAPE = (3, 8, 8)


def _conv_module() -> torch.nn.Module:
    gen = torch.Generator().manual_seed(42)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 8 * 8, 5),
    )
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
        module[1].running_var.copy_(torch.rand(8, generator=gen) + 0.5)
    return module.eval()


class TwoInputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.fc_a, self.fc_b = torch.nn.Linear(6, 4), torch.nn.Linear(5, 4)

    def forward(self, a, b):
        return torch.relu(self.fc_a(a) + self.fc_b(b))


def _source(cache_key="oq-conv", build=_conv_module) -> ModelSource:
    return ModelSource(
        name="conv", inputs=(TensorSpec("input", INPUT_SHAPE),), outputs=(TensorSpec("logits", (5,)),), cache_key=cache_key, build=build
    )


def _batch(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *INPUT_SHAPE)).astype(np.float32)


def _session(path):
    backend = OnnxRuntimeBackend(BackendOptions(threads=1))
    backend.load(ModelSource(name="m", inputs=(TensorSpec("input", INPUT_SHAPE),), cache_key="m", onnx_path=path))
    return backend


@pytest.fixture(scope="module")
def conv_fp32():
    return export_to_onnx(_source())


@pytest.fixture(scope="module")
def conv_int8(conv_fp32):
    return quantize_onnx(conv_fp32, _batch(64, seed=1), ["input"])


def test_int8_model_has_qdq_nodes_and_per_channel_weights(conv_fp32, conv_int8):
    assert conv_int8 != conv_fp32 and conv_int8.parent == conv_fp32.parent  # next to the FP32 export
    assert conv_int8.name.startswith(conv_fp32.stem + "-int8-")
    graph = onnx.load(str(conv_int8)).graph
    ops = Counter(node.op_type for node in graph.node)
    assert ops["QuantizeLinear"] >= 3 and ops["DequantizeLinear"] >= ops["QuantizeLinear"]
    assert ops["Conv"] == 2  # still float ops, between Q/DQ pairs: ONNX Runtime fuses them into int8 kernels
    weights = {init.name: init for init in graph.initializer}
    int8_weights = [w for w in weights.values() if w.data_type == TensorProto.INT8 and len(w.dims) == 4]
    assert len(int8_weights) == 2  # both conv weights stored as int8
    conv_scales = [
        numpy_helper.to_array(weights[n.input[1]])
        for n in graph.node
        if n.op_type == "DequantizeLinear" and n.input[0] in {w.name for w in int8_weights}
    ]
    assert [s.shape for s in conv_scales] == [(8,), (8,)]  # one scale per output channel


def _gap(fp32_path, int8_path, batch) -> tuple[float, float, float]:
    """(max |int8 - fp32|, mean |int8 - fp32|, top-1 agreement), the gaps relative to max |fp32|."""
    fp32, int8 = _session(fp32_path).run(batch), _session(int8_path).run(batch)
    scale = float(np.abs(fp32).max())
    diff = np.abs(int8 - fp32)
    return float(diff.max()) / scale, float(diff.mean()) / scale, float((int8.argmax(1) == fp32.argmax(1)).mean())


def test_int8_outputs_are_close_to_fp32(conv_fp32, conv_int8):
    # Samples the calibration saw (inside the observed ranges): measured worst gap 1.9% and mean 0.5% of
    # max |fp32|; 31 of 32 top-1 classes agree (the other sample's two best logits are nearly tied).
    worst, mean, top1 = _gap(conv_fp32, conv_int8, _batch(64, seed=1)[:32])
    assert 0 < worst <= 0.03 and mean <= 0.01 and top1 >= 0.9
    # Held-out samples: a few fall outside the calibrated ranges and are clipped, so the worst case grows
    # (measured 1.4% to 8% of max |fp32| over seeds 2..4) while the mean stays at 0.4-0.5%.
    worst, mean, top1 = _gap(conv_fp32, conv_int8, _batch(32, seed=2))
    assert worst <= 0.15 and mean <= 0.01 and top1 >= 0.9


def test_quantized_model_is_cached(conv_fp32, conv_int8):
    mtime = conv_int8.stat().st_mtime_ns
    # the same samples, split differently, are the same calibration feed: same file, not rewritten
    calibration = _batch(64, seed=1)
    assert quantize_onnx(conv_fp32, [calibration[:32], calibration[32:]], ["input"]) == conv_int8
    assert conv_int8.stat().st_mtime_ns == mtime
    other = quantize_onnx(conv_fp32, _batch(64, seed=5), ["input"])
    assert other != conv_int8 and other.is_file()  # other calibration data, other model
    assert not [p for p in conv_int8.parent.iterdir() if p.name.startswith(".quantize-")]


def test_two_input_model_with_dict_batches():
    source = ModelSource(
        name="two",
        inputs=(TensorSpec("a", (6,)), TensorSpec("b", (5,))),
        outputs=(TensorSpec("out", (4,)),),
        cache_key="oq-two",
        build=lambda: TwoInputs().eval(),
    )
    fp32_path = export_to_onnx(source)
    rng = np.random.default_rng(8)

    def batch(n):
        return {"a": rng.standard_normal((n, 6)).astype(np.float32), "b": rng.standard_normal((n, 5)).astype(np.float32)}

    int8_path = quantize_onnx(fp32_path, [batch(40), batch(24)], ["a", "b"])
    import onnxruntime as ort

    test = batch(16)
    fp32 = ort.InferenceSession(str(fp32_path)).run(None, test)[0]
    int8 = ort.InferenceSession(str(int8_path)).run(None, test)[0]
    # Measured on held-out samples: mean gap 0.4% of max |fp32|, worst 9% where a sample exceeds the calibrated range.
    assert np.abs(int8 - fp32).mean() <= 0.01 * np.abs(fp32).max()
    assert np.abs(int8 - fp32).max() <= 0.15 * np.abs(fp32).max()
    with pytest.raises(BackendError, match="one array, but the model has 2 inputs"):
        quantize_onnx(fp32_path, batch(4)["a"], ["a", "b"])
    with pytest.raises(BackendError, match="calibration batch has inputs"):
        quantize_onnx(fp32_path, {"a": batch(4)["a"]}, ["a", "b"])


def test_fixed_batch_model_gets_padded_calibration_chunks(tmp_path):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((6, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["output"])],
        "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [4, 6])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [4, 3])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "fixed4.onnx"
    onnx.save(model, str(path))
    calibration = rng.standard_normal((10, 6)).astype(np.float32)
    int8_path = quantize_onnx(path, calibration, ["input"])  # fed as 4 + 4 + 2 padded to 4
    import onnxruntime as ort

    x = calibration[4:8]  # inside the calibrated ranges: measured worst gap 0.8% of max |x @ w|
    out = ort.InferenceSession(str(int8_path)).run(None, {"input": x})[0]
    assert 0 < np.abs(out - x @ w).max() <= 0.02 * np.abs(x @ w).max()


def test_bad_inputs(conv_fp32, tmp_path):
    with pytest.raises(BackendError, match="needs calibration samples") as info:
        quantize_onnx(conv_fp32, [], ["input"])
    assert "--precision fp32" in str(info.value)
    with pytest.raises(BackendError, match="needs calibration samples"):
        quantize_onnx(conv_fp32, _batch(0, seed=0), ["input"])
    with pytest.raises(ModelError, match="does not exist"):
        quantize_onnx(tmp_path / "nope.onnx", _batch(4, seed=0), ["input"])
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(np.random.default_rng(3).bytes(2048))
    with pytest.raises(ModelError, match="is not a readable ONNX model") as info:
        quantize_onnx(junk, _batch(4, seed=0), ["input"])
    assert "\n" not in str(info.value) and info.value.hint
    with pytest.raises(ModelError, match=r"has no input\(s\) \['pixels'\]"):
        quantize_onnx(conv_fp32, _batch(4, seed=0), ["pixels"])
