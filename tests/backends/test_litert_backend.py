"""The LiteRT backend on real .tflite files, written here with the TFLite flatbuffer schema.

No converter is installed (ai-edge-torch and TensorFlow are not), so the test
models are assembled op by op from ``ai_edge_litert.schema_py_generated``'s
object API, with the torch models' weights (BatchNorm folded into the conv),
and checked against the torch backend.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from ai_edge_litert import schema_py_generated as fb
from ai_edge_litert.tools import flatbuffer_utils

from mlgauge.backends.base import BackendOptions
from mlgauge.backends.litert_backend import LiteRtBackend
from mlgauge.backends.torch_backend import TorchBackend
from mlgauge.errors import BackendError, ModelError
from mlgauge.tasks.base import ModelSource
from mlgauge.tensors import TensorSpec

INPUT_SHAPE = (3, 8, 8)
# float32 kernels in a different order (NHWC conv, folded BatchNorm): a few ulps of the outputs (~1) apart
ATOL = 1e-4
F32, I32, I8 = fb.TensorType.FLOAT32, fb.TensorType.INT32, fb.TensorType.INT8
OP, OPTIONS = fb.BuiltinOperator, fb.BuiltinOptions


# -- the TFLite writer ---------------------------------------------------------------------


class TfliteGraph:
    """One subgraph, built tensor by tensor and op by op, serialised with the schema's object API."""

    def __init__(self) -> None:
        self.tensors: list = []
        self.buffers = [fb.BufferT()]  # buffer 0: the empty buffer of every non-constant tensor
        self.operators: list = []
        self.codes: list[int] = []

    def tensor(self, name, shape, dtype=F32, data=None, signature=None, quant=None) -> int:
        t = fb.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shape), dtype, 0
        if signature is not None:
            t.shapeSignature = list(signature)
        if data is not None:
            buf = fb.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        if quant is not None:
            q = fb.QuantizationParametersT()
            q.scale, q.zeroPoint = [float(quant[0])], [int(quant[1])]
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def const(self, name, array) -> int:
        array = np.asarray(array)
        return self.tensor(name, array.shape, I32 if array.dtype == np.int32 else F32, data=array)

    def op(self, code, inputs, outputs, options_type=0, options=None) -> None:
        if code not in self.codes:
            self.codes.append(code)
        o = fb.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = self.codes.index(code), list(inputs), list(outputs)
        o.builtinOptionsType, o.builtinOptions = options_type, options
        self.operators.append(o)

    def conv_same(self, x, weight_oihw, bias, out, relu=True) -> None:
        opts = fb.Conv2DOptionsT()
        opts.padding, opts.strideW, opts.strideH = fb.Padding.SAME, 1, 1
        opts.dilationWFactor = opts.dilationHFactor = 1
        opts.fusedActivationFunction = fb.ActivationFunctionType.RELU if relu else fb.ActivationFunctionType.NONE
        w = self.const(f"w{len(self.tensors)}", weight_oihw.transpose(0, 2, 3, 1).astype(np.float32))  # TFLite: OHWI
        b = self.const(f"b{len(self.tensors)}", bias.astype(np.float32))
        self.op(OP.CONV_2D, [x, w, b], [out], OPTIONS.Conv2DOptions, opts)

    def dense(self, x, weight, bias, out, relu=False) -> None:
        opts = fb.FullyConnectedOptionsT()
        if relu:
            opts.fusedActivationFunction = fb.ActivationFunctionType.RELU
        w = self.const(f"w{len(self.tensors)}", weight.astype(np.float32))  # TFLite: (out, in), like torch
        b = self.const(f"b{len(self.tensors)}", bias.astype(np.float32))
        self.op(OP.FULLY_CONNECTED, [x, w, b], [out], OPTIONS.FullyConnectedOptions, opts)

    def serialize(self, inputs, outputs) -> bytes:
        sub = fb.SubGraphT()
        sub.tensors, sub.inputs, sub.outputs, sub.operators, sub.name = self.tensors, inputs, outputs, self.operators, "main"
        model = fb.ModelT()
        model.version, model.subgraphs, model.buffers, model.description = 3, [sub], self.buffers, "mlgauge test"
        model.operatorCodes = []
        for code in self.codes:
            oc = fb.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
            model.operatorCodes.append(oc)
        return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


# -- the models, in torch and in TFLite ---------------------------------------------------------


def _tiny_module() -> torch.nn.Module:
    gen = torch.Generator().manual_seed(1234)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 8 * 8, 5),
    )
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        module[1].running_mean.copy_(torch.randn(4, generator=gen) * 0.1)
        module[1].running_var.copy_(torch.rand(4, generator=gen) + 0.5)
    return module.eval()


def _folded_conv(module) -> tuple[np.ndarray, np.ndarray]:
    conv, bn = module[0], module[1]
    scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach()
    w = conv.weight.detach() * scale[:, None, None, None]
    b = (conv.bias.detach() - bn.running_mean) * scale + bn.bias.detach()
    return w.numpy(), b.numpy()


def tiny_tflite(path, batch=-1, layout="NCHW", sample=INPUT_SHAPE):
    """``_tiny_module`` as TFLite: batch -1 = resizable, an int = fixed; NCHW input is transposed inside."""
    module = _tiny_module()
    w, b = _folded_conv(module)
    c, h, wd = sample
    n0 = 1 if batch == -1 else batch
    g = TfliteGraph()
    if layout == "NCHW":
        x = g.tensor("input", [n0, c, h, wd], signature=[batch, c, h, wd])
        x_nhwc = g.tensor("x_nhwc", [n0, h, wd, c])
        g.op(OP.TRANSPOSE, [x, g.const("to_nhwc", np.array([0, 2, 3, 1], np.int32))], [x_nhwc])
    else:
        x = x_nhwc = g.tensor("input", [n0, h, wd, c], signature=[batch, h, wd, c])
    y = g.tensor("y_nhwc", [n0, h, wd, 4])
    g.conv_same(x_nhwc, w, b, y)
    y_nchw = g.tensor("y_nchw", [n0, 4, h, wd])
    g.op(OP.TRANSPOSE, [y, g.const("to_nchw", np.array([0, 3, 1, 2], np.int32))], [y_nchw])  # torch flattens NCHW
    flat = g.tensor("flat", [n0, 4 * h * wd])
    g.op(OP.RESHAPE, [y_nchw, g.const("flat_shape", np.array([-1, 4 * h * wd], np.int32))], [flat])
    out = g.tensor("output", [n0, 5])
    linear = module[4]
    g.dense(flat, linear.weight.detach().numpy(), linear.bias.detach().numpy(), out)
    path.write_bytes(g.serialize([x], [out]))
    return path


class TwoInTwoOut(torch.nn.Module):
    """(a, b) -> (fc_a(a) + fc_b(b), relu(fc_g(a))): two inputs, two outputs."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(7)
        self.fc_a, self.fc_b, self.fc_g = torch.nn.Linear(6, 3), torch.nn.Linear(4, 3), torch.nn.Linear(6, 2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)

    def forward(self, a, b):
        return self.fc_a(a) + self.fc_b(b), torch.relu(self.fc_g(a))


TWO_INPUTS = (TensorSpec("a", (6,)), TensorSpec("b", (4,)))
TWO_OUTPUTS = (TensorSpec("sum", (3,)), TensorSpec("gate", (2,)))


def two_tflite(path, names=("serving_default_a:0", "serving_default_b:0")):
    """``TwoInTwoOut`` with converter-style input names and its outputs listed in reverse order."""
    m = TwoInTwoOut()
    g = TfliteGraph()
    a = g.tensor(names[0], [1, 6], signature=[-1, 6])
    b = g.tensor(names[1], [1, 4], signature=[-1, 4])
    ya, yb = g.tensor("ya", [1, 3]), g.tensor("yb", [1, 3])
    g.dense(a, m.fc_a.weight.detach().numpy(), m.fc_a.bias.detach().numpy(), ya)
    g.dense(b, m.fc_b.weight.detach().numpy(), m.fc_b.bias.detach().numpy(), yb)
    total, gate = g.tensor("StatefulPartitionedCall:0", [1, 3]), g.tensor("StatefulPartitionedCall:1", [1, 2])
    g.op(OP.ADD, [ya, yb], [total], OPTIONS.AddOptions, fb.AddOptionsT())
    g.dense(a, m.fc_g.weight.detach().numpy(), m.fc_g.bias.detach().numpy(), gate, relu=True)
    g.tensors[total].name, g.tensors[gate].name = "sum", "gate"
    path.write_bytes(g.serialize([a, b], [gate, total]))
    return path


def _tiny_source(path=None, **kw) -> ModelSource:
    return ModelSource(name="tiny", inputs=(TensorSpec("input", INPUT_SHAPE),), cache_key="tiny-litert", tflite_path=path, **kw)


def _batch(n: int, seed: int = 0, shape=INPUT_SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


@pytest.fixture(scope="module")
def torch_tiny():
    backend = TorchBackend(BackendOptions(threads=1))
    backend.load(ModelSource(name="tiny", inputs=(TensorSpec("input", INPUT_SHAPE),), cache_key="t", build=_tiny_module))
    return backend


def _litert(source: ModelSource, threads: int = 1) -> LiteRtBackend:
    backend = LiteRtBackend(BackendOptions(threads=threads))
    backend.load(source)
    return backend


# -- outputs match the torch backend ----------------------------------------------------------------


def test_resizable_batch_matches_torch(tmp_path, torch_tiny):
    path = tiny_tflite(tmp_path / "tiny.tflite")
    backend = _litert(_tiny_source(path), threads=2)
    for n in (1, 3, 8, 2):
        batch = _batch(n, seed=n)
        out = backend.run(batch)
        assert out.shape == (n, 5) and out.dtype == np.float32
        np.testing.assert_allclose(out, torch_tiny.run(batch), atol=ATOL, rtol=0)
    info = backend.describe()
    assert info["backend"] == "litert" and info["device"] == "cpu"
    assert info["threads"] == 2 and info["batch"] == "dynamic"
    assert info["model_file"] == str(path) and info["layout"] == {"input": "as given"}


def test_nhwc_model_is_fed_transposed_samples(tmp_path, torch_tiny):
    backend = _litert(_tiny_source(tiny_tflite(tmp_path / "nhwc.tflite", layout="NHWC")))
    assert backend.describe()["layout"] == {"input": "NHWC"}
    batch = _batch(4, seed=11)
    np.testing.assert_allclose(backend.run(batch), torch_tiny.run(batch), atol=ATOL, rtol=0)


def test_fixed_batch_model_runs_in_padded_chunks(tmp_path, torch_tiny):
    backend = _litert(_tiny_source(tiny_tflite(tmp_path / "fixed4.tflite", batch=4)))
    assert backend.describe()["batch"] == 4
    for n in (1, 4, 9):
        batch = _batch(n, seed=20 + n)
        out = backend.run(batch)
        assert out.shape == (n, 5), n
        np.testing.assert_allclose(out, torch_tiny.run(batch), atol=ATOL, rtol=0)
    assert backend.run(_batch(0)).shape == (0, 5)


def test_two_inputs_two_outputs_match_torch(tmp_path):
    path = two_tflite(tmp_path / "two.tflite")
    source = ModelSource(name="two", inputs=TWO_INPUTS, outputs=TWO_OUTPUTS, cache_key="two", tflite_path=path)
    reference = TorchBackend(BackendOptions(threads=1))
    reference.load(ModelSource(name="two", inputs=TWO_INPUTS, outputs=TWO_OUTPUTS, cache_key="two", build=lambda: TwoInTwoOut().eval()))
    backend = _litert(source)
    rng = np.random.default_rng(3)
    for n in (1, 5):
        batch = {"b": rng.standard_normal((n, 4)).astype(np.float32), "a": rng.standard_normal((n, 6)).astype(np.float32)}
        got, want = backend.run(batch), reference.run(batch)
        assert isinstance(got, tuple) and [o.shape for o in got] == [(n, 3), (n, 2)]  # declared order, not the file's
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, atol=1e-5, rtol=0)


def test_positional_input_names_from_ai_edge_torch(tmp_path):
    path = two_tflite(tmp_path / "args.tflite", names=("serving_default_args_0:0", "serving_default_args_1:0"))
    source = ModelSource(name="two", inputs=TWO_INPUTS, outputs=TWO_OUTPUTS, cache_key="two", tflite_path=path)
    a = np.ones((2, 6), np.float32)
    b = np.zeros((2, 4), np.float32)
    m = TwoInTwoOut()
    with torch.no_grad():
        want = m(torch.from_numpy(a), torch.from_numpy(b))[0].numpy()
    np.testing.assert_allclose(_litert(source).run({"a": a, "b": b})[0], want, atol=1e-5, rtol=0)


def test_quantized_input_and_output(tmp_path):
    """int8 in (scale 0.05, zero point 3) -> dequantize -> dense -> quantize (scale 0.02, zp -5) -> int8 out."""
    rng = np.random.default_rng(9)
    w = rng.standard_normal((3, 6)).astype(np.float32) * 0.3
    bias = rng.standard_normal(3).astype(np.float32) * 0.1
    g = TfliteGraph()
    q_in = g.tensor("x", [1, 6], I8, signature=[-1, 6], quant=(0.05, 3))
    x = g.tensor("x_float", [1, 6])
    g.op(OP.DEQUANTIZE, [q_in], [x])
    y = g.tensor("y_float", [1, 3])
    g.dense(x, w, bias, y)
    q_out = g.tensor("y", [1, 3], I8, quant=(0.02, -5))
    g.op(OP.QUANTIZE, [y], [q_out])
    path = tmp_path / "quant.tflite"
    path.write_bytes(g.serialize([q_in], [q_out]))
    backend = _litert(ModelSource(name="q", inputs=(TensorSpec("x", (6,)),), cache_key="q", tflite_path=path))
    assert backend.describe()["quantized_inputs"] == ["x"]
    batch = rng.uniform(-2, 2, (7, 6)).astype(np.float32)
    out = backend.run(batch)
    assert out.dtype == np.float32 and out.shape == (7, 3)
    x_seen = (np.clip(np.rint(batch / 0.05) + 3, -128, 127) - 3) * 0.05
    want = np.clip(np.rint((x_seen @ w.T + bias) / 0.02) - 5, -128, 127)
    np.testing.assert_allclose(out, (want + 5) * 0.02, atol=0.02 + 1e-6)  # one output step


def test_concurrent_runs_borrow_pooled_interpreters(tmp_path, torch_tiny):
    backend = _litert(_tiny_source(tiny_tflite(tmp_path / "tiny.tflite")))
    batches = {n: _batch(n, seed=40 + n) for n in (1, 2, 3, 6)}
    wanted = {n: torch_tiny.run(b) for n, b in batches.items()}
    errors: list[BaseException] = []

    def work(sizes):
        try:
            for _ in range(20):
                for n in sizes:
                    np.testing.assert_allclose(backend.run(batches[n]), wanted[n], atol=ATOL, rtol=0)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in ((1, 6), (3, 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    # instances are pooled, not per thread: at most one per concurrent caller, reused by later threads
    pooled = len(backend._idle)
    assert 1 <= pooled <= 2
    later = threading.Thread(target=work, args=((1, 3),))
    later.start()
    later.join()
    assert not errors and len(backend._idle) == pooled


# -- bad models and options ----------------------------------------------------------------------------


def test_pytorch_model_without_tflite_file():
    with pytest.raises(ModelError, match="runs .tflite files") as info:
        _litert(ModelSource(name="tiny", inputs=(TensorSpec("input", INPUT_SHAPE),), cache_key="k", build=_tiny_module))
    assert "ai-edge-torch" in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_tflite_file(tmp_path):
    with pytest.raises(ModelError, match="does not exist") as info:
        _litert(_tiny_source(tmp_path / "nope.tflite"))
    assert str(tmp_path / "nope.tflite") in str(info.value) and info.value.hint


def test_corrupt_tflite_files(tmp_path):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(np.random.default_rng(3).bytes(2048))
    with pytest.raises(ModelError, match="is not a TFLite model") as info:
        _litert(_tiny_source(junk))
    assert str(junk) in str(info.value) and info.value.hint
    whole = tiny_tflite(tmp_path / "whole.tflite").read_bytes()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(whole[: len(whole) // 3])  # right identifier, truncated body
    with pytest.raises(ModelError, match="LiteRT cannot load") as info:
        _litert(_tiny_source(cut))
    assert "\n" not in str(info.value) and info.value.hint


def test_wrong_input_shape_names_the_expected_one(tmp_path):
    path = tiny_tflite(tmp_path / "big.tflite", sample=(3, 16, 16))
    with pytest.raises(ModelError, match=r"expects input 'input' of shape \['batch', 3, 16, 16\]") as info:
        _litert(_tiny_source(path))
    assert "['batch', 3, 8, 8]" in str(info.value) and "NHWC" in str(info.value)


def test_wrong_input_count_and_names(tmp_path):
    with pytest.raises(ModelError, match="has 1 inputs"):
        _litert(ModelSource(name="two", inputs=TWO_INPUTS, cache_key="k", tflite_path=tiny_tflite(tmp_path / "t.tflite")))
    path = two_tflite(tmp_path / "odd.tflite", names=("left", "right"))
    with pytest.raises(ModelError, match=r"inputs are named \['left', 'right'\]"):
        _litert(ModelSource(name="two", inputs=TWO_INPUTS, cache_key="k", tflite_path=path))


def test_wrong_input_dtype(tmp_path):
    g = TfliteGraph()
    x = g.tensor("ids", [1, 6], I32, signature=[-1, 6])
    y = g.tensor("y", [1, 6], I32)
    g.op(OP.ADD, [x, x], [y], OPTIONS.AddOptions, fb.AddOptionsT())
    path = tmp_path / "int.tflite"
    path.write_bytes(g.serialize([x], [y]))
    with pytest.raises(ModelError, match="expects input 'ids' as int32, but this task feeds float32"):
        _litert(ModelSource(name="x", inputs=(TensorSpec("ids", (6,)),), cache_key="k", tflite_path=path))
    # token ids: int64 samples are cast to the model's int32
    backend = _litert(ModelSource(name="x", inputs=(TensorSpec("ids", (6,), "int64"),), cache_key="k", tflite_path=path))
    out = backend.run(np.arange(12, dtype=np.int64).reshape(2, 6))
    np.testing.assert_array_equal(out, 2 * np.arange(12).reshape(2, 6))


def test_samples_of_the_wrong_shape_at_run_time(tmp_path):
    backend = _litert(_tiny_source(tiny_tflite(tmp_path / "tiny.tflite")))
    with pytest.raises(ModelError, match=r"samples of shape \[3, 8, 9\]"):
        backend.run(np.zeros((2, 3, 8, 9), np.float32))


def test_options_it_cannot_honour(tmp_path):
    source = _tiny_source(tiny_tflite(tmp_path / "tiny.tflite"))
    with pytest.raises(BackendError, match="runs the .tflite as it is"):
        LiteRtBackend(BackendOptions(precision="int8")).load(source)
    with pytest.raises(BackendError, match="unknown precision 'int4'"):
        LiteRtBackend(BackendOptions(precision="int4")).load(source)
    with pytest.raises(BackendError, match="CPU"):
        LiteRtBackend(BackendOptions(device="cuda")).load(source)
    with pytest.raises(BackendError, match="unknown device 'tpu'"):
        LiteRtBackend(BackendOptions(device="tpu")).load(source)
