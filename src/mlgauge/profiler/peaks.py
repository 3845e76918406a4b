"""This machine's roofline ceilings: GEMM GFLOP/s per dtype and STREAM bandwidth, measured once and cached.

GEMM: torch.mm on square n×n matrices at the current torch thread count, best of a few calls after a
warm-up; n is the largest of 512/1024/2048 whose call fits a time budget at the rate a small probe
showed, so a dtype that torch emulates (float16 on most CPUs runs at a few GFLOP/s) cannot stall the
calibration. A dtype torch.mm refuses is recorded as unavailable with torch's message.

Bandwidth: STREAM's copy (a = b) and triad (a = b + s·c) over float64 arrays four times the
last-level cache, best of N, bytes counted as STREAM counts them: copy moves 2 words per element,
triad 3 (write-allocate reads are not counted). triad is the roofline's memory ceiling.

Results are cached as JSON under cache_dir()/profiler, one file per CPU model, thread count and torch
version. A missing, corrupt or foreign cache file is measured again, never an error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import platform
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

from mlgauge import paths

SCHEMA = 1
GEMM_DTYPES = ("float32", "bfloat16", "float16")
_CACHE_ROOT = Path("/sys/devices/system/cpu/cpu0/cache")
_DEFAULT_ARRAY_BYTES = 256 * 2**20  # when the cache size cannot be read
_MIB = 2**20


@dataclass(frozen=True)
class _Plan:
    probe: int  # n of the probe product that estimates the rate
    sizes: tuple[int, ...]  # candidate n, largest that fits the budget wins
    call_budget_s: float  # one timed GEMM call may take this long
    repeats: int
    stream_repeats: int
    array_bytes: int | None  # None: four times the last-level cache


_FULL = _Plan(probe=256, sizes=(512, 1024, 2048), call_budget_s=0.3, repeats=5, stream_repeats=10,
              array_bytes=None)  # fmt: skip
_QUICK = _Plan(probe=128, sizes=(256,), call_budget_s=0.05, repeats=3, stream_repeats=3,
               array_bytes=8 * _MIB)  # fmt: skip


@dataclass(frozen=True)
class MachinePeaks:
    gemm_gflops: dict[str, float]  # dtype -> best GFLOP/s of torch.mm
    copy_gbs: float  # STREAM copy, GB/s (1e9 bytes)
    triad_gbs: float  # STREAM triad, GB/s: the roofline's bandwidth
    threads: int  # torch.get_num_threads() while measuring
    cpu_model: str
    torch_version: str
    measured_at: str  # ISO 8601, UTC
    gemm_sizes: dict[str, int] = field(default_factory=dict)  # dtype -> n of the timed n×n×n product
    unavailable: dict[str, str] = field(default_factory=dict)  # dtype -> why it has no GEMM peak
    stream_array_bytes: int = 0  # bytes per STREAM array
    quick: bool = False  # small sizes, one repeat: a smoke value, not a ceiling
    schema: int = SCHEMA

    @property
    def ridge(self) -> dict[str, float]:
        """dtype -> ridge point in FLOP/byte: peak FLOP/s ÷ triad bytes/s."""
        return {dtype: gflops / self.triad_gbs for dtype, gflops in self.gemm_gflops.items()}

    def peak_gflops(self, dtype: str) -> float:
        """The GEMM peak of ``dtype``; float32's where that dtype was not measured (integer ops,
        float64, a dtype torch.mm refused)."""
        return self.gemm_gflops.get(dtype, self.gemm_gflops["float32"])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> MachinePeaks:
        """Raises ValueError, TypeError or KeyError for anything that is not a sound record."""
        peaks = cls(**data)
        if peaks.schema != SCHEMA:
            raise ValueError(f"schema {peaks.schema}, expected {SCHEMA}")
        numbers = [peaks.copy_gbs, peaks.triad_gbs, *peaks.gemm_gflops.values()]
        if "float32" not in peaks.gemm_gflops or not all(_positive(v) for v in numbers):
            raise ValueError("a peak is missing, not a number or not positive")
        return peaks


def _positive(value: object) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and math.isfinite(value) and value > 0  # type: ignore[arg-type]


# ------------------------------------------------------------------ what this machine is


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


def llc_bytes() -> int | None:
    """The largest data cache cpu0 reports (its last level), or None where sysfs does not say."""
    sizes = []
    for index in sorted(_CACHE_ROOT.glob("index*")):
        with contextlib.suppress(OSError, ValueError):
            if (index / "type").read_text().strip() == "Instruction":
                continue
            text = (index / "size").read_text().strip().upper()
            scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
            sizes.append(int(text.rstrip("KMG")) * scale)
    return max(sizes) if sizes else None


def _identity() -> tuple[str, int, str]:
    return cpu_model(), torch.get_num_threads(), torch.__version__


def cache_path() -> Path:
    """The cache file for this CPU model, thread count and torch version."""
    model, threads, version = _identity()
    key = f"{model}|{threads}|{version}"
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", f"{model}-{threads}t-torch{version}").strip("-")[:80]
    return paths.cache_dir() / "profiler" / f"peaks-{slug}-{hashlib.sha1(key.encode()).hexdigest()[:8]}.json"


# ------------------------------------------------------------------ measuring


def _best_seconds(fn: Callable[[], object], repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _gemm(dtype: torch.dtype, plan: _Plan) -> tuple[float, int]:
    """(best GFLOP/s, n). Raises RuntimeError or TypeError where torch.mm has no kernel for dtype."""

    def rate(n: int, repeats: int) -> float:
        a, b = torch.rand(n, n).to(dtype), torch.rand(n, n).to(dtype)
        torch.mm(a, b)  # warm-up: oneDNN/MKL pick and JIT their kernel on the first call
        return 2 * n**3 / _best_seconds(lambda: torch.mm(a, b), repeats) / 1e9

    probe = rate(plan.probe, 2)
    fits = [n for n in plan.sizes if 2 * n**3 / (probe * 1e9) <= plan.call_budget_s]
    n = max(fits, default=plan.probe)
    return (probe, n) if n == plan.probe else (rate(n, plan.repeats), n)


def _array_bytes(llc: int | None) -> int:
    # STREAM's rule: each array at least 4x the last-level cache, so no pass is served from cache.
    # Clamped: a VM may report a tiny or a whole-socket cache.
    return min(max(4 * llc, 64 * _MIB), 1024 * _MIB) if llc else _DEFAULT_ARRAY_BYTES


def _stream(array_bytes: int, repeats: int) -> tuple[float, float]:
    """(copy GB/s, triad GB/s) over three float64 arrays of ``array_bytes`` each."""
    n = array_bytes // 8
    a, b, c = (torch.empty(n, dtype=torch.float64) for _ in range(3))
    for array, value in ((a, 0.0), (b, 1.0), (c, 2.0)):
        array.fill_(value)  # touch every page now, so no timed pass pays the page faults
    copy = triad = math.inf
    for _ in range(repeats):  # interleaved, as STREAM runs its kernels
        copy = min(copy, _best_seconds(lambda: a.copy_(b), 1))
        triad = min(triad, _best_seconds(lambda: torch.add(b, c, alpha=3.0, out=a), 1))  # one fused pass
    return 2 * n * 8 / copy / 1e9, 3 * n * 8 / triad / 1e9


def measure_peaks(quick: bool = False) -> MachinePeaks:
    """Measure now (about 3 s on 2 cores; quick: well under a second). Never cached."""
    plan = _QUICK if quick else _FULL
    gflops, sizes, unavailable = {}, {}, {}
    with torch.inference_mode():
        for name in GEMM_DTYPES:
            try:
                gflops[name], sizes[name] = _gemm(getattr(torch, name), plan)
            except (RuntimeError, TypeError) as exc:
                unavailable[name] = f"torch.mm in {name} failed on this CPU: {str(exc).splitlines()[0]}"
        array_bytes = plan.array_bytes or _array_bytes(llc_bytes())
        copy_gbs, triad_gbs = _stream(array_bytes, plan.stream_repeats)
    model, threads, version = _identity()
    return MachinePeaks(
        gemm_gflops=gflops, copy_gbs=copy_gbs, triad_gbs=triad_gbs, threads=threads, cpu_model=model,
        torch_version=version, measured_at=datetime.now(UTC).isoformat(timespec="seconds"),
        gemm_sizes=sizes, unavailable=unavailable, stream_array_bytes=array_bytes, quick=quick,
    )  # fmt: skip


def _read_cache(path: Path) -> MachinePeaks | None:
    try:
        peaks = MachinePeaks.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError):
        return None  # missing, truncated or from another schema: measure again
    return peaks if (peaks.cpu_model, peaks.threads, peaks.torch_version) == _identity() else None


def load_or_measure(path: Path, measure: Callable[[], MachinePeaks], refresh: bool = False) -> MachinePeaks:
    """The peaks cached at ``path`` when they are sound and from this machine, else ``measure()``
    written there atomically. A cache that cannot be written only costs a re-measurement later."""
    cached = None if refresh else _read_cache(path)
    if cached is not None:
        return cached
    peaks = measure()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        paths.write_text_atomic(path, json.dumps(peaks.to_dict(), indent=2) + "\n")
    return peaks


def machine_peaks(refresh: bool = False, *, quick: bool = False) -> MachinePeaks:
    """This machine's ceilings: from the cache, or measured (refresh=True: always measured).
    quick=True measures small sizes once and neither reads nor writes the cache."""
    if quick:
        return measure_peaks(quick=True)
    return load_or_measure(cache_path(), measure_peaks, refresh=refresh)
