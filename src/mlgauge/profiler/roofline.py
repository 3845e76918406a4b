"""Where an op sits on this machine's roofline: its cost, its measured time and the machine's peaks.

Attainable GFLOP/s = min(peak, intensity × bandwidth) (Williams, Waterman and Patterson, CACM 2009),
with torch.mm's peak in the op's dtype as the compute roof and STREAM triad as the memory roof. An
op left of the ridge point (intensity < peak ÷ bandwidth) is memory-bound, else compute-bound.

Intensity uses compulsory bytes (costs.py), not measured DRAM traffic, so an op whose tensors sit in
cache can beat the memory roof: an efficiency above 1 says the data came from cache, not that the
measurement is wrong. An op without FLOPs (a copy, a reorder) is judged by bandwidth alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlgauge.profiler.costs import OpCost
from mlgauge.profiler.peaks import MachinePeaks


@dataclass(frozen=True)
class RooflinePoint:
    flops: int
    bytes: int
    seconds: float  # the measured time of one call
    intensity: float  # FLOP/byte; inf for FLOPs without bytes
    peak_gflops: float  # the compute roof used
    bandwidth_gbs: float  # the memory roof used
    attainable_gflops: float  # min(peak, intensity × bandwidth)
    achieved_gflops: float
    achieved_gbs: float
    bound: str  # "compute" or "memory"
    efficiency: float  # achieved ÷ attainable; 0-FLOP ops: achieved GB/s ÷ bandwidth
    ideal_s: float  # max(flops / peak, bytes / bandwidth): the time at the roof

    @property
    def ridge(self) -> float:
        """FLOP/byte where the two roofs meet."""
        return self.peak_gflops / self.bandwidth_gbs


def roofline_point(
    flops: int, nbytes: int, seconds: float, peak_gflops: float, bandwidth_gbs: float
) -> RooflinePoint:
    """Place an op with ``flops`` and ``nbytes`` that ran in ``seconds`` under the two roofs (GFLOP/s,
    GB/s, 1e9 units). Raises ValueError for a time or a roof that is not positive."""
    for label, value in (
        ("seconds", seconds),
        ("peak_gflops", peak_gflops),
        ("bandwidth_gbs", bandwidth_gbs),
    ):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{label} must be a positive number, got {value!r}")
    if flops < 0 or nbytes < 0 or flops == nbytes == 0:
        raise ValueError(f"an op needs FLOPs or bytes to place, got flops={flops}, bytes={nbytes}")
    intensity = flops / nbytes if nbytes else math.inf
    attainable = min(peak_gflops, intensity * bandwidth_gbs)
    achieved_gflops, achieved_gbs = flops / seconds / 1e9, nbytes / seconds / 1e9
    ridge = peak_gflops / bandwidth_gbs
    # A pure copy has an attainable FLOP/s of 0: judge its bytes instead.
    efficiency = achieved_gflops / attainable if flops else achieved_gbs / bandwidth_gbs
    return RooflinePoint(
        flops=flops, bytes=nbytes, seconds=seconds, intensity=intensity, peak_gflops=peak_gflops,
        bandwidth_gbs=bandwidth_gbs, attainable_gflops=attainable, achieved_gflops=achieved_gflops,
        achieved_gbs=achieved_gbs, bound="compute" if intensity >= ridge else "memory",
        efficiency=efficiency, ideal_s=max(flops / (peak_gflops * 1e9), nbytes / (bandwidth_gbs * 1e9)),
    )  # fmt: skip


def roofline(cost: OpCost, seconds: float, peaks: MachinePeaks) -> RooflinePoint | None:
    """``cost`` that took ``seconds`` per call on the machine of ``peaks`` (compute roof: the GEMM
    peak of the op's dtype, float32's where that dtype has none; memory roof: triad). None for a
    call that cannot be placed: no measured time (0 µs events happen) or nothing done."""
    if not (math.isfinite(seconds) and seconds > 0) or cost.flops == cost.bytes == 0:
        return None
    return roofline_point(cost.flops, cost.bytes, seconds, peaks.peak_gflops(cost.dtype), peaks.triad_gbs)
