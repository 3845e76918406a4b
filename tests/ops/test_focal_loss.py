"""The fused sigmoid focal loss against torchvision's formula: values, gradients (gradcheck in
float64), every reduction, alpha < 0, inputs left untouched, and the element-wise path."""

from __future__ import annotations

import shutil

import pytest
import torch

from mlgauge.errors import UsageError
from mlgauge.ops import focal_loss as fl
from mlgauge.ops import reference_sigmoid_focal_loss, sigmoid_focal_loss
from mlgauge.ops.build import fused_kernel


def _batch(n: int = 3001, c: int = 7, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, c, generator=g, dtype=torch.float64) * 4).to(dtype)  # logits far into both tails
    t = (torch.rand(n, c, generator=g) < 0.05).to(dtype)
    return x, t


needs_compiler = pytest.mark.skipif(
    shutil.which("c++") is None, reason="no C++ compiler: install g++ to build and test the fused kernel"
)


@needs_compiler
def test_the_kernel_is_built_here():
    assert fused_kernel() is not None  # with a compiler present, the fused path is the one tested below


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (-1.0, 2.0), (0.5, 0.0), (0.75, 1.5), (0.25, 3.0)])
def test_values_and_gradients_match_the_reference(reduction, alpha, gamma):
    x, t = _batch()
    exact_x = x.double().requires_grad_()
    exact = reference_sigmoid_focal_loss(exact_x, t.double(), alpha, gamma, reduction)
    exact.sum().backward()
    fused_x = x.clone().requires_grad_()
    fused = sigmoid_focal_loss(fused_x, t, alpha, gamma, reduction)
    fused.sum().backward()
    assert fused.dtype == torch.float32 and fused.shape == exact.shape
    torch.testing.assert_close(fused.double(), exact.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fused_x.grad.double(), exact_x.grad, rtol=1e-4, atol=1e-6)


def test_float32_agrees_with_the_float32_reference_too():
    x, t = _batch(seed=1)
    torch.testing.assert_close(sigmoid_focal_loss(x, t), reference_sigmoid_focal_loss(x, t), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (-1.0, 1.5)])
def test_gradcheck_in_float64(alpha, gamma):
    x, t = _batch(n=40, c=5, dtype=torch.float64, seed=2)
    x = (x / 4).requires_grad_()  # away from |x| of 10+, where finite differences lose the tiny gradients
    assert torch.autograd.gradcheck(lambda v: sigmoid_focal_loss(v, t, alpha, gamma, "sum"), (x,))
    assert torch.autograd.gradcheck(lambda v: sigmoid_focal_loss(v, t, alpha, gamma, "none"), (x,))


def test_inputs_are_never_modified_and_soft_targets_work():
    x, t = _batch(n=500, seed=3)
    t = t * 0.8 + 0.1  # label smoothing
    x0, t0 = x.clone(), t.clone()
    x.requires_grad_()
    sigmoid_focal_loss(x, t, reduction="mean").backward()
    assert torch.equal(x.detach(), x0) and torch.equal(t, t0)
    torch.testing.assert_close(
        sigmoid_focal_loss(x0, t0), reference_sigmoid_focal_loss(x0, t0), rtol=1e-5, atol=1e-6
    )


@needs_compiler
def test_the_elementwise_path_is_the_same_formula():
    x, t = _batch(n=800, dtype=torch.float64, seed=4)
    loss, grad = fl._closed_form(x, t, 0.25, 2.0)
    kernel = fused_kernel()
    torch.testing.assert_close(loss, kernel.forward(x, t, 0.25, 2.0, False), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(loss.sum(), kernel.forward(x, t, 0.25, 2.0, True), rtol=1e-12, atol=1e-15)
    ones = torch.ones(())
    torch.testing.assert_close(grad * 3, kernel.backward(x, t, ones.double() * 3, 0.25, 2.0), rtol=1e-12, atol=1e-15)


def test_a_sum_does_not_depend_on_the_thread_count():
    x, t = _batch(n=40_000, c=9, seed=6)  # 360,000 elements: 11 chunks
    before = torch.get_num_threads()
    try:
        sums = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            sums.append(sigmoid_focal_loss(x, t, reduction="sum"))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(sums[0], sums[1])


def test_half_precision_and_targets_that_need_a_gradient():
    x, t = _batch(n=300, seed=5)
    half = sigmoid_focal_loss(x.bfloat16(), t.bfloat16())
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), reference_sigmoid_focal_loss(x, t), rtol=2e-2, atol=1e-3)
    soft = t.clone().requires_grad_()
    sigmoid_focal_loss(x, soft, reduction="sum").backward()
    assert soft.grad is not None and soft.grad.abs().sum() > 0


def test_bad_arguments_are_refused():
    x, t = _batch(n=4)
    with pytest.raises(UsageError, match="Invalid value for arg 'reduction': 'avg'"):
        sigmoid_focal_loss(x, t, reduction="avg")
    with pytest.raises(UsageError, match="targets of shape"):
        sigmoid_focal_loss(x, t[:2])


def test_retinanet_loss_gives_the_same_values_and_gradients_fused():
    from mlgauge.models.retinanet import retinanet_loss

    g = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 300, 5, generator=g, dtype=torch.float64)
    boxes = torch.randn(2, 300, 4, generator=g, dtype=torch.float64)
    cls = torch.randint(-2, 5, (2, 300), generator=g)  # positives, background (-1), ignored (-2)
    deltas = torch.randn(2, 300, 4, generator=g, dtype=torch.float64)
    results = []
    for fused in (False, True):
        x = logits.clone().requires_grad_()
        focal, box = retinanet_loss(x, boxes, cls, deltas, fused=fused)
        focal.backward()
        results.append((focal.detach(), box.detach(), x.grad))
    for reference, fused in zip(*results, strict=True):
        torch.testing.assert_close(fused, reference, rtol=1e-9, atol=1e-12)
