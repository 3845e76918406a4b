"""Rebuild one recorded op call from a torch.profiler trace and run it through ``torch.ops``.

The trace's "Input Dims", "Input type", "Concrete Inputs" and "Input Strides" give each argument:
tensors are made at the recorded shape, dtype and strides (stride-0 expanded inputs included) with
made-up values, scalars are parsed from their printed form, and the overload is the one whose
schema the recorded types fit (calling the op packet positionally fails for keyword-only
arguments such as addmm's beta and alpha).
"""

from __future__ import annotations

import ast
import functools
import math
import re
from collections.abc import Mapping, Sequence

import torch

from mlgauge.profiler.dtypes import TRACE_DTYPES

# "Input type" names (c10's C++ type names, as the profiler writes them) -> dtype.
_DTYPES: dict[str, torch.dtype] = {ctype: getattr(torch, name) for ctype, (name, _) in TRACE_DTYPES.items()}
_NON_TENSOR = frozenset({"Scalar", "ScalarList", "TensorList", ""})
# Schema kinds an input recorded as "Scalar" can fill. ScalarType, Layout and MemoryFormat are ints
# in a schema; the profiler prints their enum numbers, which torch.ops accepts as they are.
_SCALAR_KINDS = frozenset({
    "NumberType", "IntType", "SymIntType", "FloatType", "SymFloatType", "BoolType", "SymBoolType",
    "ComplexType", "StringType", "DeviceObjType",
})  # fmt: skip
# A direct registration under one of these means the op runs code of its own.
_KERNEL_KEYS = ("CPU", "CompositeExplicitAutograd", "CompositeExplicitAutogradNonFunctional")
_QUALIFIED = re.compile(r"^(\w+)::(\w+)$")


class UnreplayableOp(Exception):
    """One recorded call cannot be rebuilt or run; ``str(exc)`` says why."""


# ------------------------------------------------------------------ which ops


@functools.cache
def _overloads(name: str) -> tuple[torch._ops.OpOverload, ...]:
    """A qualified op's overloads, ``default`` first; () for names that are not registered ops."""
    match = _QUALIFIED.match(name)  # "AddmmBackward0", "autograd::engine::...": not dispatcher ops
    try:
        packet = getattr(getattr(torch.ops, match[1]), match[2]) if match else None
    except (AttributeError, RuntimeError):
        packet = None
    found = []
    for overload in sorted(packet.overloads() if packet else [], key=lambda o: o != "default"):
        try:
            found.append(getattr(packet, overload))
        except (AttributeError, RuntimeError):
            continue  # TorchScript-only overloads (aten::add_.t) have no dispatcher entry
    return tuple(found)


@functools.cache
def has_kernel(name: str) -> bool:
    """Whether an op ("aten::addmm") runs code of its own rather than only calling other ops.

    Direct registrations are checked, not OpOverload.has_kernel_for_dispatch_key: that one also
    counts torch._decomp's Python decompositions, which would mark aten::native_batch_norm composite.
    """
    for overload in _overloads(name):
        if overload._schema.overload_name.endswith("out"):
            continue
        try:
            if any(torch._C._dispatch_has_kernel_for_dispatch_key(overload.name(), k) for k in _KERNEL_KEYS):
                return True
        except RuntimeError:
            continue
    return False


# ------------------------------------------------------------------ rebuilding one call


def _fill(count: int, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    if dtype.is_complex:
        return torch.randn(count, dtype=dtype, generator=generator)
    if dtype.is_floating_point:
        # Positive and away from 0: sqrt, log and division never make NaN or inf, which take slow
        # paths (sqrt over randn's negatives ran 16x slower than over positives on torch 2.13).
        return torch.rand(count, dtype=dtype, generator=generator).add_(0.5)
    if dtype == torch.bool:
        return torch.randint(0, 2, (count,), generator=generator).bool()
    return torch.zeros(count, dtype=dtype)


def _tensor(shape: object, strides: object, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    """Values at the recorded shape, and at the recorded strides when they fit it (a stride-0
    expanded gradient sends mm down another path than a dense one)."""
    if not isinstance(shape, Sequence) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise UnreplayableOp(f"input shape {shape!r} is not a list of sizes")
    fits = isinstance(strides, Sequence) and len(strides) == len(shape)
    if not fits or not all(isinstance(s, int) and s >= 0 for s in strides):
        return _fill(math.prod(shape), dtype, generator).reshape(shape)
    span = 1 + sum((d - 1) * s for d, s in zip(shape, strides, strict=True)) if all(shape) else 0
    return _fill(span, dtype, generator).as_strided(shape, strides)


def _base_type(jit_type: torch._C.JitType) -> torch._C.JitType:
    return jit_type.getElementType() if jit_type.kind() == "OptionalType" else jit_type


def _fits(argument: torch._C.Argument, recorded: str) -> bool:
    """Whether a schema argument can take an input the profiler recorded with this type."""
    kind = _base_type(argument.type).kind()
    if recorded == "":  # None, or a value the profiler does not print (a Device, a str)
        return argument.type.kind() in ("OptionalType", "DeviceObjType") or argument.has_default_value()
    if recorded in _DTYPES:
        return kind == "TensorType"
    if kind == "ListType":
        holds_tensors = _base_type(_base_type(argument.type).getElementType()).kind() == "TensorType"
        return recorded != "Scalar" and holds_tensors == (recorded == "TensorList")
    return recorded == "Scalar" and kind in _SCALAR_KINDS


def _scalar(text: object) -> object:
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return text.strip()  # padding="same" prints without quotes


class _Inputs:
    """The recorded inputs of one call, each tensor built once and shared across overload tries."""

    def __init__(self, args: Mapping) -> None:
        self.dims, self.types = args.get("Input Dims"), args.get("Input type")
        if not isinstance(self.dims, list) or not isinstance(self.types, list):
            raise UnreplayableOp("no recorded input shapes (profile with record_shapes=True)")
        if len(self.dims) != len(self.types):
            raise UnreplayableOp("Input Dims and Input type differ in length")
        unknown = [t for t in self.types if t not in _DTYPES and t not in _NON_TENSOR]
        if unknown:
            raise UnreplayableOp(f"input type {unknown[0]!r} cannot be rebuilt")
        concrete, strides = args.get("Concrete Inputs"), args.get("Input Strides")
        self.concrete = concrete if isinstance(concrete, list) else []
        self.strides = strides if isinstance(strides, list) and len(strides) == len(self.dims) else None
        self.generator = torch.Generator().manual_seed(0)
        self.list_dtype = next((_DTYPES[t] for t in self.types if t in _DTYPES), torch.float32)
        self._built: dict[int, object] = {}

    def value(self, i: int, argument: torch._C.Argument) -> object:
        recorded, kind = self.types[i], argument.type.kind()
        if recorded == "":
            if kind == "OptionalType" or not argument.has_default_value():
                return torch.device("cpu") if kind == "DeviceObjType" else None
            return argument.default_value  # gelu's approximate="none" is recorded as ""
        if recorded in _DTYPES or recorded == "TensorList":
            if i not in self._built:
                self._built[i] = self._tensors(i)
            return self._built[i]
        value = _scalar(self.concrete[i] if i < len(self.concrete) else None)
        if value is None and kind != "OptionalType":
            raise UnreplayableOp(f"scalar input {i} ({argument.name}) was not recorded")
        as_float = _base_type(argument.type).kind() == "FloatType" and type(value) is int
        return float(value) if as_float else value

    def _tensors(self, i: int) -> object:
        strides = self.strides[i] if self.strides else None
        if self.types[i] != "TensorList":
            return _tensor(self.dims[i], strides, _DTYPES[self.types[i]], self.generator)
        each = strides if isinstance(strides, list) else [None] * len(self.dims[i])
        pairs = zip(self.dims[i], each, strict=False)
        return [_tensor(d, s, self.list_dtype, self.generator) for d, s in pairs]

    def writes_expanded(self, i: int, argument: torch._C.Argument) -> bool:
        """An in-place or out= tensor with a stride-0 dimension: torch refuses to write into it."""
        if argument.alias_info is None or not argument.alias_info.is_write or not self.strides:
            return False
        strides = self.strides[i] if isinstance(self.strides[i], list) else []
        pairs = zip(self.dims[i], strides, strict=False)
        return self.types[i] in _DTYPES and any(s == 0 and d > 1 for d, s in pairs)


def _bind(overload: torch._ops.OpOverload, inputs: _Inputs) -> functools.partial:
    args, kwargs = [], {}
    for i, argument in enumerate(overload._schema.arguments):
        if inputs.writes_expanded(i, argument):
            raise UnreplayableOp(f"in-place write into an expanded (stride-0) view ({argument.name})")
        value = inputs.value(i, argument)
        if argument.kwarg_only:
            kwargs[argument.name] = value
        else:
            args.append(value)
    return functools.partial(overload, *args, **kwargs)


def rebuild_call(name: str, args: Mapping) -> functools.partial:
    """The call a trace event recorded (its name and args dict), rebuilt and run once: calling the
    partial runs the op overload on the rebuilt inputs again.

    Raises UnreplayableOp when the op is not registered, an input cannot be rebuilt, no overload
    takes the recorded inputs, or every overload that does fails when called.
    """
    if not _overloads(name):
        raise UnreplayableOp(f"{name} is not a registered operator")
    inputs = _Inputs(args)
    matching = [
        o for o in _overloads(name)
        if len(o._schema.arguments) == len(inputs.types)
        and all(_fits(a, t) for a, t in zip(o._schema.arguments, inputs.types, strict=True))
    ]  # fmt: skip
    if not matching:
        raise UnreplayableOp(f"no overload of {name} takes inputs typed {inputs.types}")
    failure = ""
    for overload in matching:
        call = _bind(overload, inputs)
        try:
            call()
            return call
        except Exception as exc:  # an op's own error must not end the replay
            failure = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    raise UnreplayableOp(f"call failed: {failure}")


