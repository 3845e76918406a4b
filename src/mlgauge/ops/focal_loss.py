"""A fused sigmoid focal loss: torchvision's semantics, one pass over memory forward, one backward.

``sigmoid_focal_loss`` takes the arguments of ``torchvision.ops.sigmoid_focal_loss`` and gives the
same values and gradients. On CPU, float32 and float64 run a C++ kernel (``focal_loss.cpp``): the
forward pass reads logits and targets once and writes the loss (for "sum" and "mean" only its sum),
the backward pass reads them again and writes the gradient times the incoming one, and no autograd
intermediates are kept; the reference formula streams a full anchors x classes tensor through
some 10 element-wise ops forward and 20 backward. Half and bfloat16 compute in float32.
On other devices, or with targets that need a gradient, the same closed form runs as PyTorch
element-wise ops (no custom kernel), still never touching the inputs.

The kernel is compiled on first use with PyTorch's C++ extension builder and cached under
mlgauge's cache directory (``python -m mlgauge.ops`` does it ahead of time); when no
compiler is available the op says so once and uses the element-wise path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mlgauge.errors import UsageError
from mlgauge.ops.build import fused_kernel

REDUCTIONS = ("none", "mean", "sum")


def reference_sigmoid_focal_loss(
    inputs: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "none"
) -> torch.Tensor:
    """torchvision's formula (``torchvision/ops/focal_loss.py``), op for op: the baseline and the oracle."""
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return _reduce(loss, reduction)


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    raise UsageError(
        f"Invalid value for arg 'reduction': '{reduction}'", hint=f"Use one of {', '.join(REDUCTIONS)}"
    )


def _closed_form(x: torch.Tensor, t: torch.Tensor, alpha: float, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The kernel's arithmetic as element-wise ops: (loss, d loss / d x) per element."""
    e = torch.exp(-x.abs())
    inv = 1 / (1 + e)
    small = e * inv
    positive = x >= 0
    p = torch.where(positive, inv, small)
    q = torch.where(positive, small, inv)
    ce = x.clamp(min=0) - x * t + torch.log1p(e)
    m = t * q + (1 - t) * p
    mg = m**gamma
    dmg = gamma * m ** (gamma - 1) if gamma != 0 else torch.zeros_like(m)
    loss = ce * mg
    grad = (p - t) * mg - dmg * ce * p * q * (2 * t - 1)
    if alpha >= 0:
        at = alpha * t + (1 - alpha) * (1 - t)
        loss, grad = loss * at, grad * at
    return loss, grad


class _FusedFocalLoss(torch.autograd.Function):
    """Forward: the loss (or its sum, ``reduce``); backward: the gradient recomputed from the saved
    inputs in one pass, times the incoming gradient. Only references to the inputs are kept."""

    @staticmethod
    def forward(ctx, inputs: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float, reduce: bool):
        work_dtype = inputs.dtype if inputs.dtype in (torch.float32, torch.float64) else torch.float32
        x = inputs.detach().to(work_dtype)
        t = targets.detach().to(work_dtype)
        kernel = fused_kernel() if x.device.type == "cpu" else None
        if kernel is not None:
            loss = kernel.forward(x, t, float(alpha), float(gamma), reduce)
        else:
            loss = _closed_form(x, t, alpha, gamma)[0]
            loss = loss.sum() if reduce else loss
        ctx.save_for_backward(x, t)
        ctx.settings = (float(alpha), float(gamma), inputs.dtype)
        return loss.to(inputs.dtype)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        x, t = ctx.saved_tensors
        alpha, gamma, dtype = ctx.settings
        kernel = fused_kernel() if x.device.type == "cpu" else None
        if kernel is not None:
            grad = kernel.backward(x, t, grad_output.to(x.dtype), alpha, gamma)
        else:
            grad = _closed_form(x, t, alpha, gamma)[1] * grad_output
        return grad.to(dtype), None, None, None, None


def sigmoid_focal_loss(
    inputs: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "none"
) -> torch.Tensor:
    """Focal loss for dense detection (Lin et al., 2017), as ``torchvision.ops.sigmoid_focal_loss``.

    ``inputs``: logits of any shape; ``targets``: the same shape, 1 for positives and 0 for
    negatives (soft targets in [0, 1] work too); ``alpha`` < 0 disables the class weighting;
    ``reduction``: "none", "mean" or "sum". The inputs are never modified.
    """
    if reduction not in REDUCTIONS:
        _reduce(inputs, reduction)  # raises the message torchvision gives
    if inputs.shape != targets.shape:
        raise UsageError(
            f"inputs of shape {tuple(inputs.shape)} and targets of shape {tuple(targets.shape)}",
            hint="Give one target per logit",
        )
    if targets.requires_grad:  # rare: only the reference's autograd gives d loss / d targets
        return reference_sigmoid_focal_loss(inputs, targets, alpha, gamma, reduction)
    loss = _FusedFocalLoss.apply(inputs, targets.to(inputs.dtype), alpha, gamma, reduction != "none")
    return loss / inputs.numel() if reduction == "mean" else loss
