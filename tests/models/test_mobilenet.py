"""MobileNet blocks (counted by hand) and the stand-in's small MobileNet (pinned)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mlgauge.models.mobilenet import ConvBNAct, InvertedResidual, SmallMobileNet, inverted_residual_stages

SMALL_MOBILENET_PARAMS = 47_242


def _param_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_inverted_residual_parameter_count_by_hand():
    # expand 16->64 (1x1: 1024 + BN 128), depthwise 3x3 on 64 (576 + BN 128), project 64->16 (1024 + BN 32).
    assert _param_count(InvertedResidual(16, 16, stride=1, expand=4)) == 2912
    # A 5x5 depthwise kernel adds 64 * (25 - 9) weights.
    assert _param_count(InvertedResidual(16, 16, stride=1, expand=4, kernel=5)) == 2912 + 64 * 16
    # expand=1 has no expansion conv: depthwise 16*9 + BN 32, project 16*24 + BN 48.
    assert _param_count(InvertedResidual(16, 24, stride=2, expand=1)) == 144 + 32 + 384 + 48


def test_inverted_residual_layers_and_shortcut():
    block = InvertedResidual(16, 16, stride=1, expand=4)
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(1, 1), (3, 3), (1, 1)]
    assert convs[1].groups == 64  # depthwise: one filter per channel
    assert not isinstance(block.block[-1][-1], nn.ReLU6)  # linear bottleneck: no activation after projecting
    assert block.use_residual
    assert not InvertedResidual(16, 16, stride=2).use_residual
    assert not InvertedResidual(16, 24, stride=1).use_residual

    # With the projection's BatchNorm zeroed, the block's branch is 0 and only the shortcut remains.
    projection_bn = block.block[-1][1]
    nn.init.zeros_(projection_bn.weight)
    nn.init.zeros_(projection_bn.bias)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block.eval()(x), x)


def test_inverted_residual_strides_and_validation():
    with torch.no_grad():
        assert InvertedResidual(8, 12, stride=2).eval()(torch.zeros(1, 8, 16, 16)).shape == (1, 12, 8, 8)
    with pytest.raises(ValueError, match="stride must be 1 or 2"):
        InvertedResidual(8, 8, stride=3)


def test_conv_bn_act_pads_to_same_size():
    layer = ConvBNAct(3, 4, kernel=5)
    assert isinstance(layer[-1], nn.ReLU6)
    assert not isinstance(ConvBNAct(3, 4, act=False)[-1], nn.ReLU6)
    with torch.no_grad():
        assert layer.eval()(torch.zeros(1, 3, 7, 9)).shape == (1, 4, 7, 9)


def test_stage_builder_strides_only_the_first_repeat():
    blocks, channels = inverted_residual_stages(16, ((4, 24, 3, 2, 3),))
    assert channels == 24 and len(blocks) == 3
    depthwise = [[m for m in b.modules() if isinstance(m, nn.Conv2d) and m.groups > 1][0] for b in blocks]
    assert [d.stride for d in depthwise] == [(2, 2), (1, 1), (1, 1)]
    assert [b.use_residual for b in blocks] == [False, True, True]


def test_small_mobilenet_shapes_and_size():
    torch.manual_seed(0)
    model = SmallMobileNet().eval()
    with torch.no_grad():
        assert model(torch.randn(4, 3, 32, 32)).shape == (4, 10)
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 10)  # the head pools: any input size
    # Pinned so that an accidental architecture change (which invalidates prepared weights) is noticed.
    assert _param_count(model) == SMALL_MOBILENET_PARAMS
    assert SmallMobileNet(num_classes=3).classifier.out_features == 3

