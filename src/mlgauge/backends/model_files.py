"""Reading what a user's model file takes and gives, without running it.

Tasks look at a model file (.onnx, .tflite) before choosing how to feed it:
input names, element types, the image layout. These readers do that cheaply
and turn a damaged file into a one-line ModelError.
"""

from __future__ import annotations

import mmap
import re
from pathlib import Path

from mlgauge.errors import ModelError

# TFLite converters decorate tensor names: "serving_default_input_ids:0" is "input_ids".
_DECORATION = re.compile(r"^(?:serving_default_)?(.*?)(?::\d+)?$")


def plain_tensor_name(name: str) -> str:
    match = _DECORATION.match(name)
    return match.group(1) if match else name


def _varint(buf, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def _messages(buf, start: int, end: int, wanted: int):
    """(start, end) of each length-delimited field number ``wanted`` in a protobuf message."""
    i = start
    while i < end:
        tag, i = _varint(buf, i)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            _, i = _varint(buf, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            size, i = _varint(buf, i)
            if field == wanted:
                yield i, i + size
            i += size
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def onnx_input_names(path: Path) -> list[str] | None:
    """The graph input names of an ONNX file, or None if it cannot be read.

    Walks ModelProto.graph (field 7) -> GraphProto.input (11) -> ValueInfoProto.name (1)
    over a memory map, skipping the weights: MLPerf's BERT file is 1.3 GB and the
    ``onnx`` package would parse all of it.
    """
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            names = []
            for g0, g1 in _messages(buf, 0, len(buf), 7):
                for v0, v1 in _messages(buf, g0, g1, 11):
                    for n0, n1 in _messages(buf, v0, v1, 1):
                        names.append(bytes(buf[n0:n1]).decode("utf-8"))
            return names
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return None


def tflite_io(path: Path) -> tuple[list[tuple[str, int]], list[str]]:
    """((name, TensorType) of each input, output names) of a .tflite file's first subgraph, in file order."""
    from ai_edge_litert import schema_py_generated as fb

    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            if buf[4:8] != b"TFL3":
                raise ValueError("no TFL3 identifier")
            graph = fb.Model.GetRootAs(buf, 0).Subgraphs(0)
            inputs = [graph.Tensors(graph.Inputs(i)) for i in range(graph.InputsLength())]
            outputs = [graph.Tensors(graph.Outputs(i)) for i in range(graph.OutputsLength())]
            # Names as the LiteRT backend matches them ("serving_default_input_ids:0" -> "input_ids").
            return (
                [(plain_tensor_name(t.Name().decode("utf-8")), t.Type()) for t in inputs],
                [plain_tensor_name(t.Name().decode("utf-8")) for t in outputs],
            )
    except (OSError, ValueError, IndexError, AttributeError, UnicodeDecodeError) as exc:
        raise ModelError(
            f"{path} is not a readable TFLite model ({type(exc).__name__}: {exc})",
            hint="Give a .tflite file written by a TFLite/LiteRT converter",
        ) from None


def onnx_io(path: Path) -> tuple[list[tuple[str, int]], list[str]]:
    """((name, elem_type) of each graph input, output names), read without the external weights."""
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # protobuf and onnx raise several types for a damaged file
        raise ModelError(
            f"{path} is not a readable ONNX model: {type(exc).__name__}",
            hint="Check that the file is a complete .onnx model",
        ) from None
    initializers = {init.name for init in graph.initializer}  # older exporters list weights as inputs
    inputs = [(i.name, i.type.tensor_type.elem_type) for i in graph.input if i.name not in initializers]
    return inputs, [o.name for o in graph.output]


def model_file_layout(path: Path, what: str) -> str:
    """"NHWC" or "NCHW": the image layout a ``.tflite``/``.onnx`` model file takes.

    TFLite models are NHWC. For ONNX the first graph input decides: a last
    dimension of 3 (channels) means NHWC, anything else NCHW.
    """
    suffix = path.suffix.lower()
    if suffix == ".tflite":
        return "NHWC"
    if suffix != ".onnx":
        raise ModelError(
            f"{what} runs from a .tflite or .onnx file, not {path.name}",
            hint="Pass --weights with MLPerf Mobile's official .tflite file or an ONNX export of it",
        )
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # protobuf and onnx raise several types for a damaged file
        raise ModelError(
            f"{path} is not a readable ONNX model: {type(exc).__name__}",
            hint="Check that the file is a complete .onnx model",
        ) from None
    initializers = {init.name for init in graph.initializer}  # older exporters list weights as inputs
    inputs = [i for i in graph.input if i.name not in initializers]
    if not inputs:
        raise ModelError(f"ONNX model {path} has no inputs", hint="Export the model with its image input")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise ModelError(
            f"ONNX model {path} takes a {len(dims)}-d input '{inputs[0].name}'; {what} needs a batch of images",
            hint="Use a model whose input is (batch, 3, H, W) or (batch, H, W, 3)",
        )
    return "NHWC" if dims[3] == 3 else "NCHW"
