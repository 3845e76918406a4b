"""benchdnn-style replay: a real profiled training step, and hand-written traces with known times."""

from __future__ import annotations

import json

import pytest
import torch
from torch.profiler import ProfilerActivity, profile, schedule

from mlgauge.errors import DataError, UsageError
from mlgauge.profiler.kineto import load_kineto_trace, parse_kineto_trace
from mlgauge.profiler.replay import has_kernel, rebuild_call, replay_heavy_ops

# The keys a conv + linear step replays, each once per step: forward conv (conv2d is a composite
# over convolution), its backward, the linear's addmm, and the two GEMMs of addmm's backward.
EXPECTED_KEYS = {
    ("aten::convolution", ((4, 3, 32, 32), (8, 3, 3, 3), (8,), (), (), (), (), (), ())),
    ("aten::convolution_backward", ((4, 8, 30, 30), (4, 3, 32, 32), (8, 3, 3, 3), *[()] * 8)),
    ("aten::addmm", ((10,), (4, 7200), (7200, 10), (), ())),
    ("aten::mm", ((4, 10), (10, 7200))),  # grad_input = grad_out @ W
    ("aten::mm", ((10, 4), (4, 7200))),  # grad_W = grad_out.T @ x
}  # fmt: skip


def _key(op: str, dims: list) -> tuple:
    return op, tuple(tuple(d) for d in dims)


@pytest.fixture(scope="module")
def step_trace(tmp_path_factory):
    """Two profiled training steps (after one skipped and one warm-up) of conv -> relu -> linear."""
    path = tmp_path_factory.mktemp("replay") / "trace.json"
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 30 * 30, 10)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(4, 3, 32, 32)
    with profile(
        activities=[ProfilerActivity.CPU],
        record_shapes=True,
        schedule=schedule(wait=1, warmup=1, active=2),
        on_trace_ready=lambda p: p.export_chrome_trace(str(path)),
    ) as prof:
        for _ in range(4):
            opt.zero_grad()
            # .sum(): its backward expands a scalar, so addmm's backward gets a stride-0 gradient
            model(x).sum().backward()
            opt.step()
            prof.step()
    return path, json.loads(path.read_text())


def _raw_counts(raw: dict) -> tuple[list[dict], dict]:
    """Straight from the JSON: the step windows, and per (name, dims) the durations of calls inside them."""
    events = [e for e in raw["traceEvents"] if e.get("ph") == "X"]
    steps = [e for e in events if e["name"].startswith("ProfilerStep#")]
    calls: dict[tuple, list[float]] = {}
    for e in events:
        if e.get("cat") == "cpu_op" and any(s["ts"] <= e["ts"] < s["ts"] + s["dur"] for s in steps):
            calls.setdefault(_key(e["name"], e["args"].get("Input Dims", [])), []).append(e["dur"])
    return steps, calls


def test_real_step_replays_leaf_kernels_with_their_call_counts(step_trace):
    path, raw = step_trace
    result = replay_heavy_ops(load_kineto_trace(path), top=10, min_share=0.0, budget_s=1.5, threads=1)
    steps, calls = _raw_counts(raw)
    assert result.steps == len(steps) == 2
    assert result.step_ms == pytest.approx(sum(s["dur"] for s in steps) / 2 / 1e3)

    rows = {_key(r.op, r.dims): r for r in result.rows}
    assert set(rows) >= EXPECTED_KEYS, (sorted(rows), result.skipped)
    for key in EXPECTED_KEYS:
        row = rows[key]
        assert row.calls_per_step == len(calls[key]) / 2 == 1
        assert row.traced_ms_per_call == pytest.approx(sum(calls[key]) / len(calls[key]) / 1e3, rel=1e-6)
        assert row.isolated_ms_per_call > 0
        expected_gap = max(0.0, row.traced_ms_per_call - row.isolated_ms_per_call) * row.calls_per_step
        assert row.gap_ms_per_step == pytest.approx(expected_gap)
    # composites and the ops inside a replayed kernel are never rows of their own
    inner = {"aten::linear", "aten::conv2d", "aten::_convolution", "aten::mkldnn_convolution", "aten::copy_"}
    assert not {r.op for r in result.rows} & inner
    assert result.ideal_step_ms <= result.step_ms
    assert result.ideal_step_ms == pytest.approx(result.step_ms - sum(r.gap_ms_per_step for r in result.rows))
    traced = sum(r.traced_ms_per_call * r.calls_per_step for r in result.rows)
    assert result.replayed_share == pytest.approx(traced / result.step_ms)
    assert 0 < result.replayed_share <= 1
    assert json.loads(json.dumps(result.to_dict()))["rows"]


def test_expanded_gradient_is_rebuilt_with_stride_zero(step_trace):
    _, raw = step_trace
    mms = [e for e in raw["traceEvents"] if e.get("name") == "aten::mm"]
    mms = [e for e in mms if [0, 0] in e["args"]["Input Strides"]]
    assert mms, "the sum's backward should hand mm an expanded (stride-0) gradient"
    call = rebuild_call("aten::mm", mms[0]["args"])
    assert call.args[0].stride() == (0, 0) and tuple(call.args[0].shape) == (4, 10)
    assert tuple(call().shape) == (4, 7200)


# Records as torch 2.13 writes them, and what the rebuilt call must return.
RECORDS = [
    # beta and alpha are keyword-only: they must be bound by name
    ("aten::addmm", {"Input Dims": [[3], [2, 4], [4, 3], [], []], "Concrete Inputs": ["", "", "", "1", "1"],
                     "Input type": ["float", "float", "float", "Scalar", "Scalar"]}, (2, 3), torch.float32),
    # dtype 7 is ScalarType::Double as the profiler prints it
    ("aten::_to_copy", {"Input Dims": [[2, 5], [], [], [], [], [], []],
                        "Input type": ["float", "Scalar", "", "", "", "Scalar", ""],
                        "Concrete Inputs": ["", "7", "", "", "", "False", ""]}, (2, 5), torch.float64),
    # approximate="none" (a str) is recorded as '': the schema's default stands in
    ("aten::gelu", {"Input Dims": [[8, 64], []], "Input type": ["c10::BFloat16", ""],
                    "Concrete Inputs": ["", ""]}, (8, 64), torch.bfloat16),
    ("aten::cat", {"Input Dims": [[[2, 3], [2, 3]], []], "Input type": ["TensorList", "Scalar"],
                   "Concrete Inputs": ["", "1"], "Input Strides": [[[3, 1], [3, 1]], []]},
     (2, 6), torch.float32),
]  # fmt: skip


@pytest.mark.parametrize(("name", "args", "shape", "dtype"), RECORDS, ids=[r[0] for r in RECORDS])
def test_recorded_calls_are_rebuilt_with_their_overload(name, args, shape, dtype):
    out = rebuild_call(name, args)()
    assert tuple(out.shape) == shape and out.dtype == dtype


def test_float_inputs_are_positive_so_sqrt_never_makes_nan():
    record = {"Input Dims": [[1000]], "Input type": ["float"], "Concrete Inputs": [""]}
    call = rebuild_call("aten::sqrt", record)
    assert call.args[0].min() >= 0.5 and not call().isnan().any()


# ------------------------------------------------------------------ hand-written traces

BASE = 1_790_857_026_000_000_000


def _op(name, ts, dur, dims, types, concrete=None, strides=None):
    args = {"Input Dims": dims, "Input type": types, "Concrete Inputs": concrete or [""] * len(dims)}
    if strides is not None:
        args["Input Strides"] = strides
    return {"ph": "X", "cat": "cpu_op", "name": name, "pid": 1, "tid": 1, "ts": ts, "dur": dur, "args": args}


def _trace(*ops, step_dur=10_000):
    step = {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#5", "pid": 1, "tid": 1, "ts": 0,
            "dur": step_dur}  # fmt: skip
    return parse_kineto_trace({"baseTimeNanoseconds": BASE, "traceEvents": [step, *ops]})


MM = ([[128, 128], [128, 128]], ["float", "float"])
ADDMM = (
    [[64], [64, 256], [256, 64], [], []],
    ["float", "float", "float", "Scalar", "Scalar"],
    ["", "", "", "1", "1"],
)


def test_unrebuildable_ops_are_skipped_with_reasons_and_gaps_never_go_negative():
    trace = _trace(
        # linear is a composite: only the addmm inside it is replayed; traced at 2.9 ms, far slower than alone
        _op("aten::linear", 100, 3000, [[64, 256], [64, 256], [64]], ["float"] * 3),
        _op("aten::addmm", 110, 2900, *ADDMM),
        # traced at 1 ns a call, faster than any real 128^3 GEMM: isolated > traced must give a 0 gap
        _op("aten::mm", 4000, 0.001, *MM),
        _op("aten::mm", 4010, 0.001, *MM),
        _op("aten::mm", 4100, 900, [[2, 3], [4, 5]], ["float", "float"]),  # fails when called
        _op("aten::mul", 5100, 800, [[2, 3], [2, 3]], ["float", "c10::SomeStruct"]),  # unknown input type
        # in-place into an expanded view
        _op("aten::add_", 6000, 700, [[2, 3], [2, 3], []], ["float", "float", "Scalar"], ["", "", "1"],
            strides=[[0, 1], [3, 1], []]),  # fmt: skip
        _op("aten::add", 7000, 600, [[16, 16], [16, 16], []], ["float", "float", "Scalar"], ["", "", "1"]),
        _op("aten::add", 7700, 500, [[16, 16], [16, 16], []], ["float", "float", "Scalar"], ["", "", "2"]),
        _op("aten::mm", 20_000, 50, *MM),  # after the step window: not counted
    )
    result = replay_heavy_ops(trace, min_share=0.0, budget_s=1.0, threads=1)

    skipped = dict(result.skipped)
    assert set(skipped) == {"aten::mm", "aten::mul", "aten::add_"}
    assert skipped["aten::mm"].startswith("call failed:") and "cannot be multiplied" in skipped["aten::mm"]
    assert "'c10::SomeStruct' cannot be rebuilt" in skipped["aten::mul"]
    assert "expanded (stride-0)" in skipped["aten::add_"]

    assert [(r.op, r.calls_per_step) for r in result.rows] == [
        ("aten::addmm", 1), ("aten::add", 1), ("aten::add", 1), ("aten::mm", 2)
    ]  # fmt: skip
    addmm, mm = result.rows[0], result.rows[-1]
    assert [r.scalars[2] for r in result.rows[1:3]] == ["1", "2"]  # alpha is part of the key
    assert addmm.traced_ms_per_call == pytest.approx(2.9)
    assert 0 < addmm.isolated_ms_per_call < 2.9
    assert addmm.gap_ms_per_step == pytest.approx(2.9 - addmm.isolated_ms_per_call)
    assert mm.traced_ms_per_call == pytest.approx(1e-6) and mm.isolated_ms_per_call > 1e-6
    assert mm.gap_ms_per_step == 0.0

    assert result.steps == 1 and result.step_ms == pytest.approx(10.0)
    gaps = sum(r.gap_ms_per_step for r in result.rows)
    assert result.ideal_step_ms == pytest.approx(10.0 - gaps)
    assert result.replayed_share == pytest.approx((2.9 + 0.6 + 0.5 + 2e-6) / 10.0)


def test_budget_spent_skips_the_remaining_ops():
    trace = _trace(_op("aten::mm", 100, 900, *MM), _op("aten::addmm", 1000, 800, *ADDMM),
                   _op("aten::relu", 2000, 700, [[64, 64]], ["float"]))  # fmt: skip
    result = replay_heavy_ops(trace, min_share=0.0, budget_s=1e-9, threads=1)
    assert len(result.rows) + len(result.skipped) == 3
    assert [op for op, why in result.skipped if "budget" in why][-2:] == ["aten::addmm", "aten::relu"]
    assert result.ideal_step_ms == pytest.approx(result.step_ms - sum(r.gap_ms_per_step for r in result.rows))


def test_heavy_selection_honours_top_and_min_share():
    trace = _trace(_op("aten::relu", 100, 5000, [[64, 64]], ["float"]),
                   _op("aten::mm", 6000, 40, *MM))  # 0.4% of the 10 ms step  # fmt: skip
    kept = replay_heavy_ops(trace, min_share=0.005, budget_s=0.3, threads=1).rows
    assert [r.op for r in kept] == ["aten::relu"]
    trace = _trace(_op("aten::relu", 100, 5000, [[64, 64]], ["float"]), _op("aten::mm", 6000, 900, *MM))
    assert [r.op for r in replay_heavy_ops(trace, top=1, budget_s=0.3, threads=1).rows] == ["aten::relu"]


def test_kernel_ops_are_told_from_composites():
    assert has_kernel("aten::addmm") and has_kernel("aten::convolution")
    assert has_kernel("aten::native_batch_norm")  # has a Python decomposition, but a CPU kernel too
    assert not has_kernel("aten::linear") and not has_kernel("aten::conv2d")
    assert not has_kernel("AddmmBackward0") and not has_kernel("autograd::engine::evaluate_function: X")


def test_bad_settings_and_traces_without_shapes_are_refused():
    trace = _trace(_op("aten::mm", 100, 900, *MM))
    with pytest.raises(UsageError, match="top=0"):
        replay_heavy_ops(trace, top=0)
    with pytest.raises(UsageError, match="min_share=1.5"):
        replay_heavy_ops(trace, min_share=1.5)
    no_shapes = {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 1, "tid": 1, "ts": 0, "dur": 5}
    bare = parse_kineto_trace({"baseTimeNanoseconds": BASE, "traceEvents": [no_shapes]})
    with pytest.raises(DataError, match="record_shapes"):
        replay_heavy_ops(bare)
