"""Roofline placement on hand numbers: a machine of 100 GFLOP/s and 10 GB/s has its ridge at 10 FLOP/B."""

from __future__ import annotations

import math

import pytest

from mlgauge.profiler.costs import OpCost, op_cost
from mlgauge.profiler.peaks import MachinePeaks
from mlgauge.profiler.roofline import roofline, roofline_point

PEAK, BANDWIDTH = 100.0, 10.0  # GFLOP/s, GB/s


def test_left_of_the_ridge_is_memory_bound():
    # 1 FLOP/B in 0.2 s: the roof there is 1 × 10 GB/s = 10 GFLOP/s; it reached 5.
    p = roofline_point(10**9, 10**9, 0.2, PEAK, BANDWIDTH)
    assert (p.bound, p.intensity, p.ridge) == ("memory", 1.0, 10.0)
    assert p.attainable_gflops == pytest.approx(10.0)
    assert (p.achieved_gflops, p.achieved_gbs) == (pytest.approx(5.0), pytest.approx(5.0))
    assert p.efficiency == pytest.approx(0.5)
    assert p.ideal_s == pytest.approx(0.1)  # the bytes at 10 GB/s; the FLOPs alone would take 0.01 s


def test_right_of_the_ridge_is_compute_bound():
    p = roofline_point(10**10, 10**8, 0.2, PEAK, BANDWIDTH)  # 100 FLOP/B
    assert (p.bound, p.attainable_gflops) == ("compute", 100.0)
    assert p.achieved_gflops == pytest.approx(50.0) and p.efficiency == pytest.approx(0.5)
    assert p.ideal_s == pytest.approx(0.1)  # 1e10 FLOP at 100 GFLOP/s


def test_on_the_ridge_counts_as_compute_and_both_roofs_meet():
    p = roofline_point(10**9, 10**8, 0.01, PEAK, BANDWIDTH)  # exactly 10 FLOP/B
    assert p.bound == "compute"
    assert p.attainable_gflops == pytest.approx(PEAK) == pytest.approx(p.intensity * BANDWIDTH)
    assert p.efficiency == pytest.approx(1.0)


def test_a_copy_is_judged_by_bandwidth():
    p = roofline_point(0, 2 * 10**9, 0.4, PEAK, BANDWIDTH)
    assert (p.bound, p.intensity, p.attainable_gflops, p.achieved_gflops) == ("memory", 0.0, 0.0, 0.0)
    assert p.achieved_gbs == pytest.approx(5.0) and p.efficiency == pytest.approx(0.5)
    assert p.ideal_s == pytest.approx(0.2)


def test_faster_than_the_memory_roof_means_cache_resident_data():
    p = roofline_point(10**6, 10**6, 10**-5, PEAK, BANDWIDTH)  # 100 GB/s against a 10 GB/s roof
    assert p.bound == "memory" and p.efficiency == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("flops", "nbytes", "seconds", "peak", "bw"),
    [(1, 1, 0.0, PEAK, BANDWIDTH), (1, 1, math.nan, PEAK, BANDWIDTH), (1, 1, 1.0, 0.0, BANDWIDTH),
     (0, 0, 1.0, PEAK, BANDWIDTH), (-1, 1, 1.0, PEAK, BANDWIDTH)],
)  # fmt: skip
def test_unplaceable_inputs_raise(flops, nbytes, seconds, peak, bw):
    with pytest.raises(ValueError):
        roofline_point(flops, nbytes, seconds, peak, bw)


def _peaks() -> MachinePeaks:
    return MachinePeaks(
        gemm_gflops={"float32": PEAK, "bfloat16": 4 * PEAK}, copy_gbs=12.0, triad_gbs=BANDWIDTH, threads=2,
        cpu_model="test", torch_version="0", measured_at="2026-01-01T00:00:00+00:00",
    )  # fmt: skip


def test_roofline_uses_the_peak_of_the_ops_dtype_and_triad():
    peaks = _peaks()
    bf16 = roofline(OpCost(10**10, 0, 10**8, "gemm", "bfloat16"), 0.1, peaks)
    assert (bf16.peak_gflops, bf16.bandwidth_gbs, bf16.efficiency) == (400.0, 10.0, pytest.approx(0.25))
    ints = roofline(OpCost(10**6, 0, 10**6, "elementwise", "int64"), 0.1, peaks)
    assert ints.peak_gflops == PEAK  # no integer GEMM peak: float32's
    assert roofline(OpCost(1, 0, 1, "elementwise"), 0.0, peaks) is None  # a 0 µs event
    assert roofline(OpCost(0, 0, 0, "copy"), 1.0, peaks) is None


def test_an_elementwise_loss_sits_left_of_the_ridge():
    # The focal loss's sigmoid over 120,087 anchors × 264 classes in float32: 4 FLOP per 8 B.
    cost = op_cost("aten::sigmoid", [[120087, 264]], ["float"])
    point = roofline(cost, 0.05, _peaks())
    assert point.intensity == pytest.approx(0.5) and point.bound == "memory"
    assert point.ideal_s == pytest.approx(cost.bytes / (BANDWIDTH * 1e9))
