"""FLOPs, transcendentals and compulsory bytes of PyTorch ops, from what torch.profiler records.

With ``record_shapes=True`` every ``cpu_op`` event carries "Input Dims" (one shape per argument, []
for non-tensors), "Input type" (a C++ dtype name; "Scalar", "ScalarList" or "" for non-tensors) and,
in PyTorch 2.1+, "Concrete Inputs" (printed scalar arguments: "[1, 1]", "True", "6") and "Input
Strides". Outputs are not recorded, so each rule derives the output from the inputs.

Bytes are compulsory traffic: each tensor input read once (an expanded input, stride 0, counts only
its distinct elements) and each output written once, at its dtype's size. Real DRAM traffic differs
(a convolution's weights stay in cache; write-allocate doubles some stores): it is the model a
roofline states, not a measurement.

A composite op and the op it calls get the same cost (conv2d -> convolution -> mkldnn_convolution,
linear -> addmm), so count one level and pair the cost with that op's inclusive time. GEMM and
convolution FLOPs follow torch.utils.flop_counter (2 per multiply-accumulate, bias adds not counted);
the other weights are data in op_costs.toml. An op without a rule, or whose record does not fit its
rule, costs None: never a guess.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

from mlgauge.errors import ConfigError
from mlgauge.profiler.dtypes import TRACE_DTYPES

KINDS = frozenset({"gemm", "conv", "elementwise", "reduction", "normalization", "loss", "copy"})

# "Input type" names (c10's C++ type names) -> (torch dtype name, bytes per element).
_DTYPES = TRACE_DTYPES
_FLOATING = frozenset({"float", "double", "c10::Half", "c10::BFloat16"})
# ScalarType numbers as "Concrete Inputs" prints a dtype argument (c10/core/ScalarType.h order).
_SCALAR_TYPES = {0: "unsigned char", 1: "signed char", 2: "short int", 3: "int", 4: "long int",
                 5: "c10::Half", 6: "float", 7: "double", 9: "c10::complex<float>",
                 10: "c10::complex<double>", 11: "bool", 15: "c10::BFloat16"}  # fmt: skip


@dataclass(frozen=True)
class OpCost:
    flops: int  # transcendentals included, one FLOP each
    transcendentals: int
    bytes: int  # compulsory traffic: inputs read once, outputs written once
    kind: str  # one of KINDS
    dtype: str = "float32"  # the dtype the arithmetic runs in: picks the roofline's peak
    assumed: tuple[str, ...] = ()  # arguments the record lacked, and the value the rule used

    @property
    def intensity(self) -> float | None:
        """FLOPs per byte; None for an op that moves nothing."""
        return self.flops / self.bytes if self.bytes else None


# ------------------------------------------------------------------ the rule table (op_costs.toml)


@dataclass(frozen=True)
class GemmRule:
    a: int
    b: int
    b_transposed: bool = False
    ranks: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "ranks", None if self.ranks is None else tuple(self.ranks))


@dataclass(frozen=True)
class ConvRule:
    input: int
    weight: int
    stride: int | None = None
    padding: int | None = None
    dilation: int | None = None
    groups: int | None = None
    transposed: int | None = None
    output_padding: int | None = None
    always_transposed: bool = False


@dataclass(frozen=True)
class ConvBackwardRule:
    grad_output: int
    input: int
    weight: int
    transposed: int | None = None
    output_mask: int | None = None


@dataclass(frozen=True)
class ElementwiseRule:
    flops: int
    transcendental: int = 0
    out: str = "same"  # "same": the inputs' floating dtype; "bool": a predicate
    kind: str = "elementwise"
    write_only: bool = False
    outputs: int = 1
    dtype_arg: int | None = None


@dataclass(frozen=True)
class ReductionRule:
    flops: int
    dim_arg: int | None = None


@dataclass(frozen=True)
class NormRule:
    x: int
    flops: int
    eval_flops: int | None = None
    training_arg: int | None = None


@dataclass(frozen=True)
class LossRule:
    flops: int
    transcendental: int = 0
    count: int = 0
    out: int = 0
    reduction_arg: int | None = None
    unread: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "unread", tuple(self.unread))


_SECTIONS: dict[str, type] = {
    "gemm": GemmRule, "conv": ConvRule, "conv_backward": ConvBackwardRule, "elementwise": ElementwiseRule,
    "reduction": ReductionRule, "normalization": NormRule, "loss": LossRule,
}  # fmt: skip


@dataclass(frozen=True)
class CostTable:
    rules: dict[str, tuple[str, object]]  # op base name -> (section, rule)
    pow_fast_exponents: dict[float, int]


def parse_cost_table(data: Mapping, source: str = "op_costs.toml") -> CostTable:
    """Typed rules from the TOML's sections; every problem is a ConfigError naming the entry."""
    rules: dict[str, tuple[str, object]] = {}
    for section, cls in _SECTIONS.items():
        for name, entry in data.get(section, {}).items():
            where = f"{source}: [{section}] {name}"
            try:
                rule = cls(**entry)
            except TypeError as exc:
                raise ConfigError(f"{where} is invalid: {exc}", hint="Fix the entry's fields") from None
            if name in rules:
                raise ConfigError(f"{where} repeats an op of [{rules[name][0]}]", hint="Keep one rule per op")
            if getattr(rule, "kind", "elementwise") not in KINDS:
                raise ConfigError(f"{where} has an unknown kind", hint=f"Use one of {sorted(KINDS)}")
            rules[name] = (section, rule)
    fast = {float(k): int(v) for k, v in data.get("pow_fast_exponents", {}).items()}
    return CostTable(rules, fast)


@cache
def cost_table() -> CostTable:
    text = resources.files("mlgauge.profiler").joinpath("op_costs.toml").read_text(encoding="utf-8")
    return parse_cost_table(tomllib.loads(text))


def known_ops() -> frozenset[str]:
    """The ATen names (without "aten::") that have a rule; in-place forms (name + "_") share them."""
    return frozenset(cost_table().rules)


# ------------------------------------------------------------------ reading one record


@dataclass(frozen=True)
class _Tensor:
    shape: tuple[int, ...]
    ctype: str  # "Input type" name
    distinct: int  # elements stored: an expanded (stride-0) dimension holds one

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return _DTYPES[self.ctype][1]

    @property
    def nbytes(self) -> int:
        return self.distinct * self.itemsize


class _Args:
    def __init__(self, dims: Sequence, types: Sequence, concrete: Sequence | None, strides: Sequence | None):
        self.dims, self.types = list(dims), list(types)
        self.concrete = list(concrete) if concrete is not None else None
        self.strides = list(strides) if strides is not None else None

    def tensor(self, i: int | None) -> _Tensor | None:
        if i is None or i >= len(self.types) or self.types[i] not in _DTYPES:
            return None
        shape = tuple(int(d) for d in self.dims[i])
        stride = self.strides[i] if self.strides is not None and i < len(self.strides) else None
        if isinstance(stride, Sequence) and len(stride) == len(shape):
            distinct = math.prod(d for d, s in zip(shape, stride, strict=True) if s != 0)
        else:
            distinct = math.prod(shape)
        return _Tensor(shape, self.types[i], distinct)

    def tensors(self, skip: Sequence[int] = ()) -> list[_Tensor]:
        found = (self.tensor(i) for i in range(len(self.types)) if i not in skip)
        return [t for t in found if t is not None]

    def value(self, i: int | None) -> object | None:
        """A scalar argument as Python data ([1, 1], True, 6, 1e-05, "same"); None when not recorded."""
        if i is None or self.concrete is None or i >= len(self.concrete):
            return None
        text = self.concrete[i]
        if not isinstance(text, str) or not text.strip():
            return None
        try:
            return ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            return text.strip()


def _broadcast(shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...] | None:
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for axis in range(-rank, 0):
        sizes = {s[axis] for s in shapes if len(s) >= -axis} - {1}
        if len(sizes) > 1:
            return None
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def _compute_dtype(tensors: Sequence[_Tensor]) -> str:
    return next((t.ctype for t in tensors if t.ctype in _FLOATING), tensors[0].ctype)


def _cost(flops: int, trans: int, nbytes: int, kind: str, ctype: str, assumed: list[str]) -> OpCost:
    return OpCost(int(flops), int(trans), int(nbytes), kind, _DTYPES[ctype][0], tuple(assumed))


# ------------------------------------------------------------------ GEMM and convolution


def _matmul(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[tuple[int, ...], int] | None:
    """torch.matmul's output shape and FLOPs, 1-D operands and batch broadcasting included."""
    if not a or not b:
        return None
    a2, b2 = ((1, *a) if len(a) == 1 else a), ((*b, 1) if len(b) == 1 else b)
    (m, k), (k2, n) = a2[-2:], b2[-2:]
    batch = _broadcast([a2[:-2], b2[:-2]])
    if k != k2 or batch is None:
        return None
    out = batch + ((m,) if len(a) > 1 else ()) + ((n,) if len(b) > 1 else ())
    return out, 2 * math.prod(batch) * m * n * k


def _gemm(rule: GemmRule, args: _Args, _inplace: bool) -> OpCost | None:
    a, b = args.tensor(rule.a), args.tensor(rule.b)
    if a is None or b is None or (rule.b_transposed and len(b.shape) != 2):
        return None
    if rule.ranks is not None and (len(a.shape), len(b.shape)) != rule.ranks:
        return None  # another overload, or a record that is not this op's
    product = _matmul(a.shape, b.shape[::-1] if rule.b_transposed else b.shape)
    if product is None:
        return None
    out, flops = product
    read = sum(t.nbytes for t in args.tensors())
    return _cost(flops, 0, read + math.prod(out) * a.itemsize, "gemm", a.ctype, [])


def _per_dim(args: _Args, pos: int | None, rank: int, default: int, label: str, assumed: list[str]) -> list:
    """A stride/padding/dilation argument as one value per spatial dimension."""
    value = args.value(pos)
    if value is None:
        if pos is not None:  # the schema has it but the record does not
            assumed.append(f"{label}={default}")
        return [default] * rank
    if isinstance(value, str):  # padding="same" / "valid"
        return [value] * rank
    values = [value] if isinstance(value, int) else list(value)
    if len(values) == 1:
        values *= rank
    if len(values) != rank or not all(isinstance(v, int) for v in values):
        raise ValueError(f"{label} {value!r} does not fit {rank} spatial dimensions")
    return values


def _conv_out(size: int, kernel: int, stride: int, padding: int | str, dilation: int) -> int:
    if padding == "same":  # PyTorch allows "same" with stride 1 only
        return size
    pad = 0 if padding == "valid" else int(padding)
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def _conv(rule: ConvRule, args: _Args, _inplace: bool) -> OpCost | None:
    x, w = args.tensor(rule.input), args.tensor(rule.weight)
    if x is None or w is None or len(x.shape) < 3 or len(x.shape) != len(w.shape):
        return None
    rank, assumed = len(x.shape) - 2, []
    stride = _per_dim(args, rule.stride, rank, 1, "stride", assumed)
    padding = _per_dim(args, rule.padding, rank, 0, "padding", assumed)
    dilation = _per_dim(args, rule.dilation, rank, 1, "dilation", assumed)
    transposed = rule.always_transposed or args.value(rule.transposed) is True
    if rule.transposed is not None and args.value(rule.transposed) is None:
        assumed.append("transposed=False")
    kernel, spatial = w.shape[2:], x.shape[2:]
    if transposed:  # weight is [in, out/groups, k...]
        out_pad = _per_dim(args, rule.output_padding, rank, 0, "output_padding", assumed)
        groups = args.value(rule.groups)
        if not isinstance(groups, int):
            groups = 1
            assumed.append("groups=1")
        dims = zip(spatial, kernel, stride, padding, dilation, out_pad, strict=True)
        out_sp = [(i - 1) * s - 2 * p + d * (k - 1) + op + 1 for i, k, s, p, d, op in dims]
        out_channels, flop_sp = w.shape[1] * groups, spatial
    else:  # weight is [out, in/groups, k...]: groups never enter the FLOPs
        dims = zip(spatial, kernel, stride, padding, dilation, strict=True)
        out_sp = [_conv_out(i, k, s, p, d) for i, k, s, p, d in dims]
        out_channels, flop_sp = w.shape[0], out_sp
    if min(out_sp) <= 0:
        return None
    flops = 2 * x.shape[0] * w.shape[0] * w.shape[1] * math.prod(kernel) * math.prod(flop_sp)
    written = x.shape[0] * out_channels * math.prod(out_sp) * x.itemsize
    return _cost(flops, 0, sum(t.nbytes for t in args.tensors()) + written, "conv", x.ctype, assumed)


def _conv_backward(rule: ConvBackwardRule, args: _Args, _inplace: bool) -> OpCost | None:
    go, x, w = args.tensor(rule.grad_output), args.tensor(rule.input), args.tensor(rule.weight)
    if go is None or x is None or w is None or not len(go.shape) == len(x.shape) == len(w.shape) >= 3:
        return None
    assumed = []
    mask = args.value(rule.output_mask)
    if not (isinstance(mask, list) and len(mask) == 3 and all(isinstance(m, bool) for m in mask)):
        mask = [True, True, True]
        assumed.append("output_mask=[True, True, True]")
    transposed = args.value(rule.transposed) is True
    # One forward's FLOPs, over the spatial size the forward looped over (its output, or for a
    # transposed convolution its input, which is grad_input's shape here).
    sp = x.shape[2:] if transposed else go.shape[2:]
    forward = 2 * x.shape[0] * w.shape[0] * w.shape[1] * math.prod(w.shape[2:]) * math.prod(sp)
    grad_in, grad_w, grad_b = mask
    read = go.nbytes + (w.nbytes if grad_in else 0) + (x.nbytes if grad_w else 0)
    written = (x.numel if grad_in else 0) + (w.numel if grad_w else 0) + (go.shape[1] if grad_b else 0)
    return _cost(forward * (grad_in + grad_w), 0, read + written * x.itemsize, "conv", x.ctype, assumed)


# ------------------------------------------------------------------ per-element families


def _elementwise(rule: ElementwiseRule, args: _Args, inplace: bool) -> OpCost | None:
    tensors = args.tensors()
    shape = _broadcast([t.shape for t in tensors]) if tensors else None
    if shape is None or (inplace and shape != tensors[0].shape):
        return None  # an in-place op writes into its first input and cannot grow it
    n = math.prod(shape)
    code = args.value(rule.dtype_arg)
    target = _SCALAR_TYPES.get(code) if isinstance(code, int) else None
    out_ctype = "bool" if rule.out == "bool" else target or _compute_dtype(tensors)
    read = sum(t.nbytes for t in (tensors[1:] if rule.write_only else tensors))
    written = rule.outputs * n * _DTYPES[out_ctype][1]
    ctype = _compute_dtype(tensors)
    return _cost(rule.flops * n, rule.transcendental * n, read + written, rule.kind, ctype, [])


def _reduction(rule: ReductionRule, args: _Args, _inplace: bool) -> OpCost | None:
    x = args.tensor(0)
    if x is None:
        return None
    assumed, dims = [], args.value(rule.dim_arg)
    if args.concrete is None:
        assumed.append("all dimensions reduced")
    rank = len(x.shape)
    dims = [dims] if isinstance(dims, int) and not isinstance(dims, bool) else dims
    if isinstance(dims, list) and dims and all(isinstance(d, int) for d in dims):
        reduced = {d % rank for d in dims} if rank else set()
        out = math.prod(s for i, s in enumerate(x.shape) if i not in reduced)
    else:  # no dim argument, or [] (every dimension)
        out = 1
    return _cost(rule.flops * x.numel, 0, x.nbytes + out * x.itemsize, "reduction", x.ctype, assumed)


def _normalization(rule: NormRule, args: _Args, _inplace: bool) -> OpCost | None:
    x = args.tensor(rule.x)
    if x is None:
        return None
    flops, assumed = rule.flops, []
    if rule.eval_flops is not None:
        training = args.value(rule.training_arg)
        if isinstance(training, bool):
            flops = rule.flops if training else rule.eval_flops
        else:
            assumed.append("training=True")
    read = sum(t.nbytes for t in args.tensors())
    return _cost(flops * x.numel, 0, read + x.numel * x.itemsize, "normalization", x.ctype, assumed)


def _loss(rule: LossRule, args: _Args, _inplace: bool) -> OpCost | None:
    count, shaped = args.tensor(rule.count), args.tensor(rule.out)
    tensors = args.tensors(skip=rule.unread)
    if count is None or shaped is None or not tensors:
        return None
    flops, assumed, out = rule.flops * count.numel, [], shaped.numel
    if rule.reduction_arg is not None:  # a forward: none (0), mean (1) or sum (2)
        reduction = args.value(rule.reduction_arg)
        if reduction not in (0, 1, 2) or isinstance(reduction, bool):
            reduction = 1
            assumed.append("reduction=mean")
        if reduction:
            flops, out = flops + count.numel, 1
    ctype = _compute_dtype(tensors)
    nbytes = sum(t.nbytes for t in tensors) + out * _DTYPES[ctype][1]
    return _cost(flops, rule.transcendental * count.numel, nbytes, "loss", ctype, assumed)


_HANDLERS: dict[str, Callable[..., OpCost | None]] = {
    "gemm": _gemm, "conv": _conv, "conv_backward": _conv_backward, "elementwise": _elementwise,
    "reduction": _reduction, "normalization": _normalization, "loss": _loss,
}  # fmt: skip


def _fast_pow(rule: ElementwiseRule, args: _Args, table: CostTable) -> ElementwiseRule:
    exponent = args.value(1)  # pow(Tensor, Scalar) only: a tensor exponent takes exp and log
    if args.types[1:2] != ["Scalar"] or not isinstance(exponent, int | float):
        return rule
    flops = table.pow_fast_exponents.get(float(exponent))
    return rule if flops is None else dataclasses.replace(rule, flops=flops, transcendental=0)


def op_cost(
    name: str,
    dims: Sequence,
    types: Sequence,
    concrete: Sequence | None = None,
    strides: Sequence | None = None,
) -> OpCost | None:
    """The cost of one call of ATen op ``name`` ("aten::addmm"), from its recorded "Input Dims",
    "Input type" and, when present, "Concrete Inputs" and "Input Strides". None: no rule for
    this op, or a record that does not fit it (another overload)."""
    if "::" in name and not name.startswith("aten::"):
        return None
    base = name.removeprefix("aten::")
    inplace = base.endswith("_") and not base.endswith("__")
    table = cost_table()
    found = table.rules.get(base[:-1] if inplace else base)
    if found is None or len(dims) != len(types):
        return None
    section, rule = found
    args = _Args(dims, types, concrete, strides)
    if base.removesuffix("_") == "pow":
        rule = _fast_pow(rule, args, table)  # type: ignore[arg-type]
    try:
        return _HANDLERS[section](rule, args, inplace)
    except (TypeError, ValueError, IndexError):
        return None  # a record whose arguments do not have the rule's shapes


def event_cost(name: str, args: Mapping) -> OpCost | None:
    """op_cost for a trace event's ``args`` dict as torch.profiler writes it."""
    dims, types = args.get("Input Dims"), args.get("Input type")
    if not isinstance(dims, Sequence) or not isinstance(types, Sequence):
        return None
    return op_cost(name, dims, types, args.get("Concrete Inputs"), args.get("Input Strides"))
