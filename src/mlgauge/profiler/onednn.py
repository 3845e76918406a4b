"""Parse a oneDNN verbose log (``ONEDNN_VERBOSE=1``) into typed primitive executions.

Format source: oneDNN ``doc/performance_considerations/verbose.md``. Lines start with a
marker (``onednn_verbose``; ``dnnl_verbose`` / ``mkldnn_verbose`` in older releases),
then, since the v1 format, a format version, an optional ms-since-epoch timestamp
(``ONEDNN_VERBOSE_TIMESTAMP=1``), and the API kind. The header's ``template:`` line gives
the column order, which changes with the timestamp, so rows are read by that template.
Only ``exec`` rows carry a run time; creation, dispatch, check and graph rows are counted.

Shapes, FLOPs and bytes come from the row's benchdnn problem description (onednn_problem).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from mlgauge.errors import DataError
from mlgauge.profiler.files import read_bytes
from mlgauge.profiler.onednn_problem import MemoryDesc, describe_problem

__all__ = [
    "Bucket", "MemoryDesc", "OneDnnLog", "OneDnnLogError", "Primitive", "ReorderGroup",
    "load_onednn_log", "parse_onednn_log", "tally",
]  # fmt: skip

KNOWN_MAJOR = 3
_MARKER = re.compile(r"(?:onednn|dnnl|mkldnn)_verbose,")
_VERSION = re.compile(r"(?:oneDNN|DNNL|MKL-DNN)\s+v(\d+)\.(\d+)(?:\.(\d+))?")
_API_KINDS = frozenset({"primitive", "graph", "common", "ukernel", "gemm_api"})
_DEFAULT_TEMPLATE = (
    "operation", "engine", "primitive", "implementation", "prop_kind",
    "memory_descriptors", "attributes", "auxiliary", "problem_desc", "exec_time",
)  # fmt: skip
_DIRECTIONS = {
    "forward_training": "forward", "forward_inference": "forward", "forward_scoring": "forward",
    "forward": "forward", "backward_data": "backward_data", "backward_weights": "backward_weights",
    "backward_bias": "backward_weights", "backward": "backward",
}  # fmt: skip


class OneDnnLogError(DataError):
    """A oneDNN verbose log holds nothing to analyze."""


@dataclass(frozen=True)
class Primitive:
    line: int  # 1-based line number in the log
    timestamp_ms: float | None  # start, ms since the Unix epoch
    start_ns: int | None  # the same timestamp, exact, in ns
    engine: str
    kind: str  # convolution, reorder, matmul, inner_product, pooling, ...
    implementation: str  # jit:avx512_core, brg_conv_fwd:avx512_core_bf16, gemm:jit, ...
    prop_kind: str
    direction: str  # forward, backward_data, backward_weights, backward, none
    memory: tuple[MemoryDesc, ...]
    attributes: dict[str, str]
    auxiliary: dict[str, str]
    problem: str  # benchdnn problem description
    exec_time_ms: float
    shape: dict[str, int]  # problem fields after benchdnn defaults (mb, ic, oc, oh, ... or batch, m, n, k)
    dims: tuple[int, ...] | None  # plain dims for reorders and element-wise kinds
    flops: int | None  # 2 per multiply-add; 0 for reorders; None where not derived
    bytes: int | None  # compulsory traffic: every tensor's size once
    reorder: tuple[str, str] | None  # (source tag, destination tag) for reorders

    @property
    def end_ns(self) -> int | None:
        return None if self.start_ns is None else self.start_ns + round(self.exec_time_ms * 1e6)

    @property
    def converts_format(self) -> bool:
        return self.reorder is not None and self.reorder[0] != self.reorder[1]


@dataclass(frozen=True)
class Bucket:
    calls: int
    time_ms: float


@dataclass(frozen=True)
class ReorderGroup:
    src_tag: str
    dst_tag: str
    src_dtype: str
    dst_dtype: str
    dims: tuple[int, ...] | None
    calls: int
    time_ms: float


@dataclass
class OneDnnLog:
    version: str | None
    isa: str | None
    threads: int | None
    primitives: list[Primitive]
    skipped: int  # verbose rows that are not timed executions, malformed ones included
    warnings: list[str]
    skipped_by: dict[str, int] = field(default_factory=dict)  # operation (create:cache_miss, ...) -> rows
    malformed: int = 0
    runtime: str | None = None

    @property
    def total_ms(self) -> float:
        return sum(p.exec_time_ms for p in self.primitives)

    @property
    def has_timestamps(self) -> bool:
        return any(p.start_ns is not None for p in self.primitives)

    def time_by(self, key: Callable[[Primitive], object]) -> dict:
        """Calls and time per key, largest time first."""
        return tally((key(p), p.exec_time_ms) for p in self.primitives)

    def time_by_kind(self) -> dict[str, Bucket]:
        return self.time_by(lambda p: p.kind)

    def time_by_implementation(self) -> dict[tuple[str, str], Bucket]:
        return self.time_by(lambda p: (p.kind, p.implementation))

    def time_by_direction(self) -> dict[str, Bucket]:
        return self.time_by(lambda p: p.direction)

    def reorders(self) -> list[ReorderGroup]:
        """Reorders grouped by conversion and shape, largest time first."""
        groups: dict[tuple, list[Primitive]] = defaultdict(list)
        for p in self.primitives:
            if p.kind == "reorder" and len(p.memory) >= 2:
                src, dst = p.memory[0], p.memory[1]
                groups[(src.tag, dst.tag, src.dtype, dst.dtype, p.dims)].append(p)
        out = [ReorderGroup(*k, len(v), sum(p.exec_time_ms for p in v)) for k, v in groups.items()]
        return sorted(out, key=lambda g: -g.time_ms)


def tally(items: Iterable[tuple[object, float]]) -> dict:
    """(key, ms) pairs -> Bucket per key, largest time first."""
    calls: dict[object, int] = defaultdict(int)
    times: dict[object, float] = defaultdict(float)
    for key, ms in items:
        calls[key] += 1
        times[key] += ms
    return {k: Bucket(calls[k], times[k]) for k in sorted(times, key=lambda k: -times[k])}


# --- rows ------------------------------------------------------------------------------------


def _memory_desc(token: str) -> MemoryDesc:
    parts = token.split(":")
    if len(parts) >= 6:  # v1: name:dtype:properties:format_kind:tag[:strides]:flags
        strides = ":".join(parts[5:-1]) if len(parts) >= 7 else ""
        return MemoryDesc(parts[0], parts[1], parts[3], parts[4], parts[2], strides, parts[-1])
    head = re.fullmatch(r"(.+?)_((?:f|bf|s|u|f8_e|f4_e)\d+\w*|undef|boolean)", parts[0])
    name, dtype = head.groups() if head else (parts[0], "")
    if len(parts) >= 4:  # v0: name_dtype:properties:format_kind:tag:flags
        return MemoryDesc(name, dtype, parts[2], parts[3], parts[1], "", ":".join(parts[4:]))
    return MemoryDesc(name, dtype, "", "")  # a form this parser does not know: name and dtype only


def _key_values(text: str) -> dict[str, str]:
    pairs = (tok.partition(":") for tok in text.split())
    return {k.removeprefix("attr-"): v for k, _, v in pairs}


def _build_primitive(row: dict[str, str], line: int) -> Primitive:
    """One exec row, already split by the template; raises ValueError when it does not parse."""
    stamp = row.get("timestamp")
    start_ns = int(Decimal(stamp) * 1_000_000) if stamp else None
    exec_ms = float(row["exec_time"])
    if not math.isfinite(exec_ms) or exec_ms < 0:
        raise ValueError("bad exec time")
    kind = row["primitive"].removesuffix("_v2")
    memory = tuple(_memory_desc(t) for t in row.get("memory_descriptors", "").split())
    problem = row.get("problem_desc", "")
    info = describe_problem(kind, problem, memory)
    reorder = (memory[0].tag, memory[1].tag) if kind == "reorder" and len(memory) >= 2 else None
    return Primitive(
        line=line, timestamp_ms=float(stamp) if stamp else None, start_ns=start_ns,
        engine=row["engine"], kind=kind, implementation=row["implementation"],
        prop_kind=row["prop_kind"], direction=_DIRECTIONS.get(row["prop_kind"], "none"),
        memory=memory, attributes=_key_values(row.get("attributes", "")),
        auxiliary=_key_values(row.get("auxiliary", "")), problem=problem, exec_time_ms=exec_ms,
        shape=info.shape, dims=info.dims, flops=info.flops, bytes=info.bytes, reorder=reorder,
    )  # fmt: skip


class _Reader:
    """Line-by-line state: the header seen so far, rows kept, rows skipped."""

    def __init__(self) -> None:
        self.log = OneDnnLog(None, None, None, [], 0, [])
        self.template: tuple[str, ...] | None = None
        self.first_bad: int | None = None
        self.verbose_lines = 0

    def feed(self, number: int, text: str) -> None:
        found = _MARKER.search(text)
        if found is None:
            return
        self.verbose_lines += 1
        tokens = text[found.end() :].rstrip("\r\n").split(",")
        fmt = tokens.pop(0) if re.fullmatch(r"v\d+", tokens[0]) else "v0"
        if fmt not in ("v0", "v1"):
            self._warn_once(f"verbose format {fmt} is newer than the formats this parser knows (v0, v1)")
        stamp = tokens.pop(0) if tokens and _is_number(tokens[0]) else None
        api = tokens.pop(0) if tokens and tokens[0] in _API_KINDS else "primitive"
        if tokens and tokens[0] == "info":
            if api == "primitive":
                self._header(",".join(tokens[1:]))
            return
        operation = tokens[0] if tokens else ""
        if api != "primitive" or operation != "exec":
            self._skip(api if api != "primitive" else operation or "empty")
            return
        self._exec_row(number, stamp, tokens)

    def _exec_row(self, number: int, stamp: str | None, tokens: list[str]) -> None:
        template = self.template or _DEFAULT_TEMPLATE
        columns = [c for c in template if c != "timestamp"]
        try:
            if len(tokens) != len(columns):
                raise ValueError("column count")
            row = dict(zip(columns, tokens, strict=True))
            if stamp is not None:
                row["timestamp"] = stamp
            self.log.primitives.append(_build_primitive(row, number))
        except (ValueError, KeyError, IndexError, InvalidOperation):
            self.log.malformed += 1
            self._skip("malformed")
            self.first_bad = self.first_bad or number

    def _header(self, text: str) -> None:
        if text.startswith(("template:", "prim_template:")):
            self.template = tuple(text.split(":", 1)[1].split(","))
        elif (match := _VERSION.search(text)) and self.log.version is None:
            self.log.version = ".".join(g for g in match.groups() if g is not None)
            if int(match.group(1)) > KNOWN_MAJOR:
                self.log.warnings.append(
                    f"oneDNN v{match.group(1)}.{match.group(2)} is newer than the versions this parser "
                    f"knows ({KNOWN_MAJOR}.x); fields may be misread"
                )
        elif text.startswith("cpu,isa:"):
            self.log.isa = text.split("isa:", 1)[1]
        elif text.startswith("cpu,runtime:"):
            self.log.runtime = text.split("runtime:", 1)[1].split(",")[0]
            if nthr := re.search(r"nthr:(\d+)", text):
                self.log.threads = int(nthr.group(1))

    def _skip(self, reason: str) -> None:
        self.log.skipped += 1
        self.log.skipped_by[reason] = self.log.skipped_by.get(reason, 0) + 1

    def _warn_once(self, message: str) -> None:
        if message not in self.log.warnings:
            self.log.warnings.append(message)

    def finish(self, source: str) -> OneDnnLog:
        log = self.log
        if log.malformed:
            log.warnings.append(
                f"{log.malformed} malformed or truncated exec row(s) skipped; "
                f"the first is line {self.first_bad}"
            )
        if self.verbose_lines and log.version is None:
            log.warnings.append("no version header (the log may start mid-run); assumed the current format")
        if self.verbose_lines and self.template is None and log.primitives:
            log.warnings.append("no template line; assumed the documented default column order")
        if not log.primitives:
            raise _nothing_to_analyze(self, source)
        return log


def _nothing_to_analyze(reader: _Reader, source: str) -> OneDnnLogError:
    if not reader.verbose_lines:
        return OneDnnLogError(
            "no oneDNN verbose lines found", source=source,
            hint="Run with ONEDNN_VERBOSE=1 (DNNL_VERBOSE=1 before oneDNN 3) and capture stdout",
        )  # fmt: skip
    if reader.log.malformed:
        return OneDnnLogError(
            f"every exec row is malformed; the first is line {reader.first_bad}", source=source,
            hint="The log may be truncated or interleaved with other output; capture it again",
        )  # fmt: skip
    return OneDnnLogError(
        f"the log has {reader.verbose_lines} oneDNN lines but no primitive executions", source=source,
        hint="Set ONEDNN_VERBOSE=1 (or profile_exec); PyTorch only logs ops it routes to oneDNN",
    )  # fmt: skip


def _is_number(token: str) -> bool:
    return bool(re.fullmatch(r"\d+(?:\.\d+)?", token))


def parse_onednn_log(text: str | Iterable[str], source: str = "<text>") -> OneDnnLog:
    """Parse a verbose log; lines without the oneDNN marker are ignored.

    Raises OneDnnLogError only when no primitive execution could be read.
    """
    lines = text.splitlines() if isinstance(text, str) else text
    reader = _Reader()
    for number, line in enumerate(lines, start=1):
        reader.feed(number, line)
    return reader.finish(source)


def load_onednn_log(path: str | Path) -> OneDnnLog:
    """Read a verbose log from a file (plain or gzip)."""
    path = Path(path)
    try:
        raw = read_bytes(path)
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise OneDnnLogError(f"cannot read the oneDNN log: {exc}", source=str(path),
                             hint="Check the path and that the file is complete") from exc  # fmt: skip
    return parse_onednn_log(raw.decode("utf-8", errors="replace"), source=str(path))
