"""The stand-in segmenter: full-resolution logits, MobileNet blocks inside, pinned size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mlgauge.models.mobilenet import InvertedResidual
from mlgauge.models.segmentation import MobileSegmenter


def _param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def model() -> MobileSegmenter:
    torch.manual_seed(0)
    return MobileSegmenter(num_classes=5).eval()


@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (1, 3, 32, 48)])
def test_logits_have_the_input_resolution(model, shape):
    with torch.no_grad():
        out = model(torch.randn(*shape))
    assert out.shape == (shape[0], 5, shape[2], shape[3])
    assert torch.isfinite(out).all()


def test_class_count_sets_the_classifier_width():
    with torch.no_grad():
        out = MobileSegmenter(num_classes=32).eval()(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 32, 64, 64)


def test_parameter_count_is_pinned(model):
    # Pinned so that an accidental architecture change (which invalidates prepared weights) is noticed.
    assert _param_count(model) == 40_709


def test_encoder_is_built_from_inverted_residuals_with_depthwise_convs(model):
    blocks = [m for m in model.modules() if isinstance(m, InvertedResidual)]
    assert len(blocks) == 5
    for block in blocks:
        depthwise = [c for c in block.modules() if isinstance(c, nn.Conv2d) and c.groups > 1]
        assert len(depthwise) == 1
        assert depthwise[0].groups == depthwise[0].in_channels == depthwise[0].out_channels


def test_every_pixel_sees_global_context(model):
    # The image-level branch (global pooling) lets a change in one corner move the logits in the far corner,
    # beyond the receptive field of the local path.
    x = torch.randn(1, 3, 64, 64)
    y = x.clone()
    y[:, :, :8, :8] += 5.0
    with torch.no_grad():
        far_a, far_b = model(x)[..., -4:, -4:], model(y)[..., -4:, -4:]
    assert not torch.allclose(far_a, far_b)
