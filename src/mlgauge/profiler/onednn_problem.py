"""benchdnn problem descriptions from oneDNN verbose rows: shapes, FLOPs and compulsory bytes.

Descriptor rules follow benchdnn (``tests/benchdnn/conv/conv_aux.cpp``): ``_`` is ignored,
mb defaults to 2, groups to 1, strides to 1; a missing output size or padding is computed;
a problem that gives only the h axis is square, only the d axis cubic. Matmul problems are
``src_dims:wei_dims`` (``2x64:64x32``), reorders and element-wise kinds plain dims.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Bytes per element; sub-byte types count as fractions (s4/u4/f4 pack two per byte).
DTYPE_BYTES = {
    "f64": 8, "f32": 4, "s32": 4, "tf32": 4, "bf16": 2, "f16": 2, "s8": 1, "u8": 1,
    "f8_e5m2": 1, "f8_e4m3": 1, "e8m0": 1, "boolean": 1, "s4": 0.5, "u4": 0.5, "f4_e2m1": 0.5,
    "f4_e3m0": 0.5,
}  # fmt: skip


@dataclass(frozen=True)
class MemoryDesc:
    name: str  # src, wei, bia, dst, diff_src, ...
    dtype: str  # f32, bf16, ... or "undef" for an absent tensor
    format_kind: str  # blocked, any, undef
    tag: str  # abcd (plain NCHW), acdb (channels-last), aBcd16b (blocked), ...
    properties: str = ""
    strides: str = ""
    flags: str = ""


_FIELD = re.compile(r"([a-z]+)(\d+)")


def _letter_fields(desc: str) -> dict[str, int] | None:
    """benchdnn's ``mb2_ic16oc32_ih28...`` form: '_' is ignored, a trailing ``n<name>`` is a label."""
    out: dict[str, int] = {}
    pos = 0
    while pos < len(desc):
        if desc[pos] == "_":
            pos += 1
            continue
        if desc[pos] == "n":
            break
        match = _FIELD.match(desc, pos)
        if match is None:
            return None
        out[match.group(1)] = int(match.group(2))
        pos = match.end()
    return out or None


def _dims(group: str) -> list[int] | None:
    parts = group.strip().split("x")
    return [int(p) for p in parts] if all(p.isdigit() for p in parts) else None


def _broadcast(*shapes: list[int]) -> list[int]:
    rank = max(len(s) for s in shapes)
    padded = [[1] * (rank - len(s)) + s for s in shapes]
    return [max(col) for col in zip(*padded, strict=True)]


_AXIS_DEFAULTS = {"o": 1, "i": 1, "k": 1, "s": 1, "p": 0, "d": 0}


def _window_axes(d: dict[str, int], transposed: bool) -> bool:
    """Fill o/p per spatial axis as benchdnn does (conv_aux.cpp str2desc + sanitize_desc)."""
    for ax in "dhw":
        i, k, s, dil = d.get("i" + ax, 0), d.get("k" + ax, 0), d.get("s" + ax, 1), d.get("d" + ax, 0)
        p = d.get("p" + ax, -1)
        if not (i or k or d.get("o" + ax, 0) or dil or s != 1 or p >= 1):
            continue
        if not i or not k:
            return False
        span = (k - 1) * (dil + 1) + 1
        if not d.get("o" + ax):
            p = max(p, 0)
            d["o" + ax] = (i - 1) * s - 2 * p + span if transposed else (i - span + 2 * p) // s + 1
        elif p < 0:
            o = d["o" + ax]
            p = ((i - 1) * s - o + span) // 2 if transposed else ((o - 1) * s - i + span) // 2
        if d["o" + ax] <= 0:
            return False
        d.update({"s" + ax: s, "d" + ax: dil, "p" + ax: p})
    has = {ax: d.get("o" + ax, 0) > 0 for ax in "dhw"}
    if has["d"] and has["h"] != has["w"]:
        return False
    # A cubic problem gives only d; a square one only h: the missing axes copy them.
    source = "d" if has["d"] and not has["h"] else "h" if has["h"] and not has["w"] else None
    for ax in "hw" if source == "d" else "w" if source == "h" else "":
        d.update({key + ax: d[key + source] for key in _AXIS_DEFAULTS})
    for ax in "dhw":
        for key, value in _AXIS_DEFAULTS.items():
            d.setdefault(key + ax, value)
    return any(has.values())


def _conv(desc: str, transposed: bool = False, pooling: bool = False) -> tuple | None:
    f = _letter_fields(desc)
    if f is None or "ic" not in f or ("oc" not in f and not pooling):
        return None
    d = {"g": 1, "mb": 2, **f}
    d.setdefault("oc", d["ic"])
    # benchdnn rejects these too (str2desc): no groups, channels or strides of zero.
    if min(d["g"], d["ic"], d["oc"], *(d.get("s" + ax, 1) for ax in "dhw")) <= 0:
        return None
    if not _window_axes(d, transposed):
        return None
    sp_in, sp_out, kernel = (math.prod(d[p + ax] for ax in "dhw") for p in "iok")
    src, dst = d["mb"] * d["ic"] * sp_in, d["mb"] * d["oc"] * sp_out
    roles = {"src": src, "dst": dst, "ws": dst}
    flops = None
    if not pooling:
        roles.update(wei=d["oc"] * d["ic"] // d["g"] * kernel, bia=d["oc"])
        # 2 FLOPs per multiply-add over every tap, padding included (benchdnn counts only in-bounds taps).
        flops = 2 * (dst * d["ic"] // d["g"] if not transposed else src * d["oc"] // d["g"]) * kernel
    return d, None, flops, roles


def _matmul(desc: str) -> tuple | None:
    groups = desc.split(":")
    src, wei = (_dims(g) for g in groups[:2]) if len(groups) >= 2 else (None, None)
    if not src or not wei or len(src) < 2 or len(wei) < 2:
        return None
    m, k, n = src[-2], src[-1], wei[-1]
    batch = math.prod(_broadcast(src[:-2], wei[:-2])) if len(src) + len(wei) > 4 else 1
    roles = {"src": math.prod(src), "wei": math.prod(wei), "dst": batch * m * n, "bia": n}
    return {"batch": batch, "m": m, "n": n, "k": k}, None, 2 * batch * m * n * k, roles


def _channels(desc: str) -> dict[str, int] | None:
    """mb/ic plus spatial id/ih/iw with benchdnn's square and cube defaults."""
    f = _letter_fields(desc)
    if f is None or "ic" not in f:
        return None
    d = {"mb": 2, **f}
    if "ih" in d and "iw" not in d and "id" not in d:
        d["iw"] = d["ih"]
    if "id" in d and "ih" not in d and "iw" not in d:
        d["ih"] = d["iw"] = d["id"]
    for ax in "dhw":
        d.setdefault("i" + ax, 1)
    d["spatial"] = d["id"] * d["ih"] * d["iw"]
    return d


def _inner_product(desc: str) -> tuple | None:
    d = _channels(desc)
    if d is None or "oc" not in d:
        return None
    mb, ic, oc, sp = d["mb"], d["ic"], d["oc"], d["spatial"]
    roles = {"src": mb * ic * sp, "wei": oc * ic * sp, "bia": oc, "dst": mb * oc}
    return d, None, 2 * mb * oc * ic * sp, roles


def _normalization(desc: str) -> tuple | None:
    dims = _dims(desc)
    if dims:  # layer/group norm print plain dims; statistics are per row
        n, stats, chan = math.prod(dims), math.prod(dims[:-1]), dims[-1]
        return {}, tuple(dims), None, {"src": n, "dst": n, "stats": stats, "mean": stats, "var": stats,
                                       "scale": chan, "shift": chan}  # fmt: skip
    d = _channels(desc)
    if d is None:
        return None
    n, ic = d["mb"] * d["ic"] * d["spatial"], d["ic"]
    roles = {"src": n, "dst": n, "ws": n, **dict.fromkeys(("stats", "mean", "var", "scale", "shift"), ic)}
    return d, None, None, roles


def _plain(desc: str) -> tuple | None:
    """Reorders and element-wise kinds: ``2x16x28x28`` or ``src0:src1`` dims groups."""
    groups = [_dims(g) for g in desc.split(":")]
    if not groups or any(g is None for g in groups):
        return None
    roles = {f"src{i}": math.prod(g) for i, g in enumerate(groups)}
    roles.update({"*": roles["src0"], "src": roles["src0"], "dst": math.prod(_broadcast(*groups))})
    return {}, tuple(groups[0]), None, roles


_PROBLEMS: dict[str, Callable[[str], tuple | None]] = {
    "convolution": _conv,
    "deconvolution": lambda s: _conv(s, transposed=True),
    "pooling": lambda s: _conv(s, pooling=True),
    "matmul": _matmul,
    "inner_product": _inner_product,
    "batch_normalization": _normalization,
    "layer_normalization": _normalization,
    "group_normalization": _normalization,
    "lrn": _normalization,
}


def _problem_bytes(memory: Sequence[MemoryDesc], roles: dict[str, int]) -> int | None:
    total = 0.0
    for md in memory:
        if md.dtype in ("undef", ""):
            continue
        base = md.name.removeprefix("diff_")
        idx = re.fullmatch(r"src_?(\d+)", base)
        elems = roles.get(f"src{idx.group(1)}" if idx else base, roles.get("*"))
        if elems is None or md.dtype not in DTYPE_BYTES:
            return None
        total += elems * DTYPE_BYTES[md.dtype]
    return math.ceil(total)


@dataclass(frozen=True)
class Problem:
    shape: dict[str, int]  # fields after defaults (mb, ic, oc, oh, ...; batch, m, n, k for matmul)
    dims: tuple[int, ...] | None  # plain dims for reorders and element-wise kinds
    flops: int | None  # 2 per multiply-add; 0 for reorders; None where not derived
    bytes: int | None  # compulsory traffic: every present tensor read or written once


def describe_problem(kind: str, problem: str, memory: Sequence[MemoryDesc]) -> Problem:
    """Shapes, FLOPs and bytes of one primitive; fields that cannot be derived are empty or None."""
    try:
        parsed = _PROBLEMS.get(kind, _plain)(problem)
    except (ArithmeticError, ValueError):  # a descriptor damaged in a way the checks above missed
        parsed = None
    if parsed is None:
        return Problem({}, None, 0 if kind == "reorder" else None, None)
    shape, dims, flops, roles = parsed
    return Problem(shape, dims, 0 if kind == "reorder" else flops, _problem_bytes(memory, roles))
