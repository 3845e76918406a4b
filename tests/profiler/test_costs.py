"""FLOP and byte rules per ATen op: numbers worked out by hand, convolution and GEMM FLOPs against
torch.utils.flop_counter, and argument positions against records the real torch.profiler writes."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from mlgauge.errors import ConfigError
from mlgauge.profiler.costs import KINDS, cost_table, event_cost, known_ops, op_cost, parse_cost_table

F4 = 4  # bytes per float32 element

# aten::convolution as torch.profiler records it: N=2, IC=16, OC=32, 28×28, 3×3, stride 1, pad 1.
CONV_DIMS = [[2, 16, 28, 28], [32, 16, 3, 3], [32], [], [], [], [], [], []]
CONV_TYPES = [
    "float",
    "float",
    "float",
    "ScalarList",
    "ScalarList",
    "ScalarList",
    "Scalar",
    "ScalarList",
    "Scalar",
]
CONV_VALUES = ["", "", "", "[1, 1]", "[1, 1]", "[1, 1]", "False", "[0, 0]", "1"]
CONV_FLOPS = 2 * 2 * 32 * 28 * 28 * 16 * 9
CONV_BYTES = (2 * 16 * 28 * 28 + 32 * 16 * 9 + 32 + 2 * 32 * 28 * 28) * F4  # x, w, bias read; y written


def test_convolution_by_hand():
    cost = op_cost("aten::convolution", CONV_DIMS, CONV_TYPES, CONV_VALUES)
    assert (cost.flops, cost.transcendentals, cost.bytes, cost.kind) == (CONV_FLOPS, 0, CONV_BYTES, "conv")
    assert cost.dtype == "float32" and cost.assumed == ()
    assert cost.intensity == pytest.approx(CONV_FLOPS / CONV_BYTES)


def test_convolution_without_recorded_values_assumes_and_says_so():
    # Only shapes: stride 1, padding 0 -> a 26×26 output; the assumptions travel with the cost.
    cost = op_cost("aten::convolution", CONV_DIMS, CONV_TYPES)
    assert cost.flops == 2 * 2 * 32 * 26 * 26 * 16 * 9
    assert set(cost.assumed) == {"stride=1", "padding=0", "dilation=1", "transposed=False"}


def test_mkldnn_convolution_reads_padding_before_stride_and_groups_from_the_weight():
    # N=1, IC=8, OC=16, 15×15, 3×3, padding 0, stride 2, groups 2 (weight [16, 4, 3, 3]): 7×7 out.
    dims = [[1, 8, 15, 15], [16, 4, 3, 3], [16], [], [], [], []]
    types = ["float", "float", "float", "ScalarList", "ScalarList", "ScalarList", "Scalar"]
    cost = op_cost("aten::mkldnn_convolution", dims, types, ["", "", "", "[0, 0]", "[2, 2]", "[1, 1]", "2"])
    assert cost.flops == 2 * 1 * 16 * 7 * 7 * 4 * 9
    assert cost.bytes == (8 * 15 * 15 + 16 * 4 * 9 + 16 + 16 * 7 * 7) * F4


def test_convolution_backward_is_two_forwards_and_follows_the_output_mask():
    dims = [[2, 32, 28, 28], [2, 16, 28, 28], [32, 16, 3, 3], [], [], [], [], [], [], [], []]
    types = ["float"] * 3 + ["ScalarList"] * 4 + ["Scalar", "ScalarList", "Scalar", "ScalarList"]
    values = ["", "", "", "[32]", "[1, 1]", "[1, 1]", "[1, 1]", "False", "[0, 0]", "1", "[True, True, True]"]
    both = op_cost("aten::convolution_backward", dims, types, values)
    assert both.flops == 2 * CONV_FLOPS
    # grad_output, input and weight read; grad_input, grad_weight and grad_bias written.
    assert both.bytes == (2 * 32 * 784 + 2 * 16 * 784 + 32 * 144 + 2 * 16 * 784 + 32 * 144 + 32) * F4
    first_layer = op_cost("aten::convolution_backward", dims, types, [*values[:-1], "[False, True, True]"])
    assert first_layer.flops == CONV_FLOPS  # no grad_input for an input without requires_grad


def test_addmm_by_hand():
    cost = op_cost("aten::addmm", [[64], [64, 128], [128, 64], [], []], ["float"] * 3 + ["Scalar"] * 2)
    assert (cost.flops, cost.kind) == (2 * 64 * 64 * 128, "gemm")  # bias adds not counted, as flop_counter
    assert cost.bytes == (64 + 64 * 128 + 128 * 64 + 64 * 64) * F4


def test_linear_matmul_shapes_and_bfloat16():
    cost = op_cost("aten::linear", [[8, 16, 32], [24, 32], [24]], ["c10::BFloat16"] * 3)
    assert cost.flops == 2 * 8 * 16 * 24 * 32 and cost.dtype == "bfloat16"
    assert cost.bytes == (8 * 16 * 32 + 24 * 32 + 24 + 8 * 16 * 24) * 2
    broadcast = op_cost("aten::matmul", [[5, 1, 3, 4], [2, 4, 6]], ["float", "float"])
    assert broadcast.flops == 2 * (5 * 2) * 3 * 6 * 4
    assert op_cost("aten::matmul", [[7], [7]], ["float", "float"]).flops == 2 * 7
    assert op_cost("aten::mm", [[4, 5], [6, 7]], ["float", "float"]) is None  # inner sizes differ


def test_elementwise_with_broadcasting():
    cost = op_cost("aten::mul", [[8, 1, 5], [4, 1]], ["float", "float"])  # -> [8, 4, 5]
    assert (cost.flops, cost.transcendentals, cost.kind) == (160, 0, "elementwise")
    assert cost.bytes == (40 + 4 + 160) * F4
    sig = op_cost("aten::sigmoid", [[10, 3]], ["float"])
    assert (sig.flops, sig.transcendentals, sig.bytes) == (4 * 30, 30, 2 * 30 * F4)


def test_inplace_scalars_expanded_inputs_and_predicates():
    inplace = op_cost("aten::add_", [[8, 4, 5], [5], []], ["float", "float", "Scalar"])
    assert inplace.bytes == (160 + 5 + 160) * F4  # the destination is read and written
    assert op_cost("aten::add_", [[5], [8, 4, 5]], ["float", "float"]) is None  # cannot grow in place
    # An expanded scalar (strides 0) is one element in memory.
    div = op_cost("aten::div", [[64, 64], []], ["float", "Scalar"], ["", "4096"], [[0, 0], []])
    assert (div.flops, div.bytes) == (4096, (1 + 4096) * F4)
    where = op_cost("aten::where", [[3, 4], [3, 4], []], ["bool", "float", "float"])
    assert (where.bytes, where.dtype) == (12 * 1 + 12 * F4 + F4 + 12 * F4, "float32")
    assert op_cost("aten::gt", [[10], [10]], ["float", "float"]).bytes == 2 * 10 * F4 + 10  # bool out


def test_pow_fast_exponents_and_copies():
    square = op_cost("aten::pow", [[100], []], ["float", "Scalar"], ["", "2"])
    assert (square.flops, square.transcendentals) == (100, 0)
    general = op_cost("aten::pow", [[100], []], ["float", "Scalar"], ["", "2.5"])
    assert (general.flops, general.transcendentals) == (100, 100)
    to_bf16 = op_cost(
        "aten::_to_copy", [[10], [], [], [], [], [], []], ["float", "Scalar"] + [""] * 5, ["", "15"]
    )
    assert (to_bf16.flops, to_bf16.bytes, to_bf16.kind) == (0, 10 * F4 + 10 * 2, "copy")
    copy = op_cost(
        "aten::copy_", [[64, 64], [64, 64], []], ["float", "float", "Scalar"], None, [[64, 1], [0, 1], []]
    )
    assert copy.bytes == (64 + 64 * 64) * F4  # expanded source read once, destination only written


def test_reductions():
    rows = op_cost(
        "aten::sum", [[3, 4], [], [], []], ["float", "ScalarList", "Scalar", ""], ["", "[1]", "False", ""]
    )
    assert (rows.flops, rows.bytes, rows.kind) == (12, (12 + 3) * F4, "reduction")
    total = op_cost("aten::mean", [[3, 4], []], ["float", ""], ["", ""])
    assert (total.bytes, total.assumed) == ((12 + 1) * F4, ())


BN_DIMS = [[2, 32, 28, 28], [32], [32], [32], [32], [], [], []]
BN_TYPES = ["float"] * 5 + ["Scalar"] * 3


def test_batch_norm_training_and_eval():
    train = op_cost("aten::native_batch_norm", BN_DIMS, BN_TYPES, [""] * 5 + ["True", "0.1", "1e-05"])
    n = 2 * 32 * 28 * 28
    assert (train.flops, train.kind) == (5 * n, "normalization")
    assert train.bytes == (n + 4 * 32 + n) * F4  # x and four per-channel vectors read, y written
    infer = op_cost("aten::native_batch_norm", BN_DIMS, BN_TYPES, [""] * 5 + ["False", "0.1", "1e-05"])
    assert infer.flops == 2 * n  # statistics folded into one scale and shift
    assert op_cost("aten::native_batch_norm", BN_DIMS, BN_TYPES).assumed == ("training=True",)


def test_binary_cross_entropy_with_logits():
    dims, types = [[64, 64], [64, 64], [], [], []], ["float", "float", "", "", "Scalar"]
    mean = op_cost("aten::binary_cross_entropy_with_logits", dims, types, ["", "", "", "", "1"])
    n = 64 * 64
    assert (mean.flops, mean.transcendentals, mean.kind) == (8 * n + n, 2 * n, "loss")
    assert mean.bytes == 2 * n * F4 + F4  # logits and targets read, one number written
    none = op_cost("aten::binary_cross_entropy_with_logits", dims, types, ["", "", "", "", "0"])
    assert (none.flops, none.bytes) == (8 * n, 3 * n * F4)
    grad = op_cost("aten::binary_cross_entropy_with_logits_backward", [[], *dims], ["float", *types])
    assert (grad.flops, grad.bytes) == (7 * n, (1 + 2 * n + n) * F4)


def test_nll_loss_counts_per_target_and_its_backward_does_not_read_self():
    dims = [[], [64, 10], [64], [], [], [], []]
    types = ["float", "float", "long int", "", "Scalar", "Scalar", "float"]
    grad = op_cost("aten::nll_loss_backward", dims, types)
    assert grad.flops == 64 and grad.bytes == F4 + 64 * 8 + F4 + 64 * 10 * F4


@pytest.mark.parametrize(
    ("name", "dims", "types"),
    [
        ("aten::my_custom_op", [[4]], ["float"]),
        ("aten::empty", [[], []], ["ScalarList", "Scalar"]),
        ("AddBackward0", [[]], ["float"]),
        ("quantized::add", [[4], [4]], ["float", "float"]),
        ("aten::mm", [[2, 3, 4], [4, 5]], ["float", "float"]),  # not a matrix: another overload
        ("aten::add", [[4], [5]], ["float", "float"]),  # shapes that do not broadcast
        ("aten::add", [[4], [4]], ["float"]),  # a malformed record
        ("aten::cat", [[[3, 4], [3, 4]], []], ["TensorList", "Scalar"]),  # dtype not recorded
    ],
)
def test_unknown_or_unfit_ops_cost_none(name, dims, types):
    assert op_cost(name, dims, types) is None


def test_the_rule_table_is_sound_and_checked():
    table = cost_table()
    assert {"addmm", "convolution_backward", "sigmoid", "native_batch_norm", "mse_loss"} <= known_ops()
    assert all(getattr(rule, "kind", "elementwise") in KINDS for _, rule in table.rules.values())
    with pytest.raises(ConfigError, match=r"\[elementwise\] foo is invalid"):
        parse_cost_table({"elementwise": {"foo": {"flops": 1, "flop": 2}}})
    with pytest.raises(ConfigError, match="repeats"):
        parse_cost_table({"elementwise": {"mm": {"flops": 1}}, "gemm": {"mm": {"a": 0, "b": 1}}})
    with pytest.raises(ConfigError, match="unknown kind"):
        parse_cost_table({"elementwise": {"foo": {"flops": 1, "kind": "magic"}}})


# ---------------------------------------------------------------- against the real profiler


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> dict:
    """name -> args of the first event of each op, from one real profiled step's Chrome trace."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
    bn = torch.nn.BatchNorm2d(16)
    x = torch.randn(2, 8, 15, 15, requires_grad=True)
    logits, target = torch.randn(32, 10, requires_grad=True), torch.rand(32, 10)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        y = bn(conv(x))
        loss = F.binary_cross_entropy_with_logits(logits * torch.randn(10), target)
        (y.sum() + loss).backward()
    trace = tmp_path_factory.mktemp("trace") / "trace.json"
    prof.export_chrome_trace(str(trace))
    events: dict = {}
    for event in json.loads(trace.read_text())["traceEvents"]:
        if event.get("cat") == "cpu_op":
            events.setdefault(event["name"], event.get("args", {}))
    return events


def test_recorded_convolution_matches_flop_counter(recorded):
    x, conv = torch.randn(2, 8, 15, 15, requires_grad=True), torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
    with FlopCounterMode(display=False) as counter:
        conv(x).sum().backward()
    fwd = event_cost("aten::convolution", recorded["aten::convolution"])
    bwd = event_cost("aten::convolution_backward", recorded["aten::convolution_backward"])
    assert fwd.flops == 2 * 2 * 16 * 8 * 8 * 8 * 9  # 15×15, stride 2, pad 1 -> 8×8
    assert fwd.flops + bwd.flops == counter.get_total_flops()
    # Every level of the dispatch chain that was recorded agrees.
    for name in ("aten::conv2d", "aten::_convolution", "aten::mkldnn_convolution", "aten::thnn_conv2d"):
        if name in recorded:
            assert event_cost(name, recorded[name]).flops == fwd.flops, name


def test_recorded_losses_norms_and_broadcasts(recorded):
    n = 32 * 10
    bce = event_cost(
        "aten::binary_cross_entropy_with_logits", recorded["aten::binary_cross_entropy_with_logits"]
    )
    assert (bce.flops, bce.bytes) == (9 * n, 2 * n * F4 + F4)
    bn = event_cost("aten::native_batch_norm", recorded["aten::native_batch_norm"])
    assert bn.flops == 5 * 2 * 16 * 8 * 8 and bn.assumed == ()
    mul = event_cost("aten::mul", recorded["aten::mul"])  # [32, 10] * [10]
    assert (mul.flops, mul.bytes) == (n, (n + 10 + n) * F4)
