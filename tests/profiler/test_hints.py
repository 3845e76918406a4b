"""The bottleneck hints fire on the shares their rules name, largest first."""

from __future__ import annotations

import pytest

from mlgauge.profiler.hints import hints
from mlgauge.profiler.summary import OpRow, ProfileSummary


def _summary(rows: list[OpRow], *, reorder_ms: float = 0.0, onednn_ms: float = 0.0, op_ms: float = 100.0):
    onednn = {"total_ms": onednn_ms, "reorder_ms": reorder_ms} if onednn_ms else {}
    return ProfileSummary(steps=1, step_ms=100.0, profiled_ms=100.0, op_ms=op_ms, ops=rows, onednn=onednn)


def test_elementwise_ops_and_reorders_fire_with_their_shares():
    rows = [OpRow("aten::mul", 10, 30.0, 0), OpRow("aten::add_", 10, 10.0, 0), OpRow("aten::addmm", 1, 60.0, 0)]
    found = hints(_summary(rows, reorder_ms=5.0, onednn_ms=20.0, op_ms=98.0))
    assert [h.share for h in found] == pytest.approx([0.40, 0.25])  # addmm is not element-wise
    assert found[0].title == "Element-wise ops take 40% of op time" and "fuse" in found[0].advice
    assert "channels_last" in found[1].advice


def test_slow_compute_bound_ops_and_overhead():
    slow = OpRow("aten::mkldnn_convolution", 5, 50.0, 0, bound="compute", efficiency=0.2)
    fast = OpRow("aten::mm", 5, 50.0, 0, bound="compute", efficiency=0.8)
    found = hints(_summary([slow, fast], op_ms=70.0))
    titles = {h.title for h in found}
    assert "Compute-bound ops below 30% of this machine's GEMM peak take 50% of op time " \
           "(largest: aten::mkldnn_convolution)" in titles
    assert "30% of the step runs outside PyTorch ops" in titles


def test_a_clean_profile_gives_no_hint():
    assert hints(_summary([OpRow("aten::mm", 5, 90.0, 0, bound="compute", efficiency=0.9)], op_ms=95.0)) == []
