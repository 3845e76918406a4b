"""The SSD-style mobile detectors: parameter counts, feature maps, anchors, head order, the focal prior."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mlgauge.models.mobiledet import (
    FusedInvertedResidual,
    MobileDetector,
    SSDLitePredictor,
    small_mobiledet,
    ssd_anchor_sizes,
    ssdlite_mobiledet_320,
)


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_small_model_parameter_count():
    """Every conv is bias-free with a BatchNorm (2 parameters per channel) except the predictors' 1x1 outputs.

    * stem 3x3 3->16: 432 + 32 = 464
    * fused 16->16 (x2, stride 2): 3x3 16->32 4,608 + 64, 1x1 32->16 512 + 32 = 5,216
    * fused 16->24 (x4, stride 2): 9,216 + 128 + 1,536 + 48 = 10,928; fused 24->24: 20,736 + 192 + 2,304 + 48
      = 23,280
    * inverted 24->48 (x4, stride 2): 2,304 + 192, depthwise 864 + 192, 4,608 + 96 = 8,256;
      48->48: 9,216 + 384,
      1,728 + 384, 9,216 + 96 = 21,024
    * inverted 48->64 (x4, stride 2): 9,216 + 384, 1,728 + 384, 12,288 + 128 = 24,128
    * per map of c channels (24, 48, 64): two depthwise 3x3 + BN (11c each), 1x1 to 9 anchors x 3 classes
      (27c + 27) and to 9 x 4 deltas (36c + 36): 85c + 63, so 85 * 136 + 3 * 63 = 11,749
    """
    model = small_mobiledet()
    assert _params(model.stem) == 464
    assert [_params(s) for s in model.stages] == [5_216, 10_928 + 23_280, 8_256 + 21_024, 24_128]
    assert _params(model.cls_heads) + _params(model.box_heads) == 11_749
    assert _params(model) == 105_045


def test_small_model_shapes_and_anchors():
    model = small_mobiledet().eval()
    assert model.feature_sizes() == [(12, 12), (6, 6), (3, 3)]
    anchors = model.anchors()
    assert [len(a) for a in anchors] == [9 * 144, 9 * 36, 9 * 9]
    with torch.no_grad():
        cls, box = model(torch.zeros(2, 3, 96, 96))
    assert cls.shape == (2, 1701, 3) and box.shape == (2, 1701, 4)
    assert model.decoder().num_anchors == 1701
    # The focal-loss prior: an untrained model scores every anchor near 0.01, under the 0.05 threshold.
    with torch.no_grad():
        scores = torch.sigmoid(model(torch.rand(2, 3, 96, 96) * 2 - 1)[0])
    assert float(scores.max()) < 0.05 and float(scores.mean()) == pytest.approx(0.01, abs=0.003)


def test_coco_layout_320():
    """Six maps at 20..1; heads over 136 + 256 + 512 + 256 + 256 + 128 = 1,544 channels, 6 anchors x
    (90 classes + 4 deltas): 22c + 540c + 540 + 24c + 24 per map = 586 * 1,544 + 6 * 564 = 908,168."""
    model = ssdlite_mobiledet_320().eval()
    assert model.feature_sizes() == [(20, 20), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]
    assert model.decoder().num_anchors == 6 * (400 + 100 + 25 + 9 + 4 + 1) == 3_234
    assert _params(model.cls_heads) + _params(model.box_heads) == 908_168
    assert _params(model) == 4_335_144
    with torch.no_grad():
        cls, box = model(torch.zeros(1, 3, 320, 320))
    assert cls.shape == (1, 3_234, 90) and box.shape == (1, 3_234, 4)


def test_ssd_anchor_scales():
    sizes = ssd_anchor_sizes(320, 6)
    # s_k = 0.2 + 0.15 k; the second scale per map is sqrt(s_k s_k+1), the last one's s_k+1 is 1.
    assert sizes[0] == pytest.approx((64.0, math.sqrt(0.2 * 0.35) * 320))
    assert sizes[5] == pytest.approx((0.95 * 320, math.sqrt(0.95) * 320))
    # anchor_grid rounds the half-sizes; the 1:1 anchor at the top-left cell of the 20x20 map is 64 px wide.
    first = ssdlite_mobiledet_320(num_classes=2).anchors()[0]
    np.testing.assert_array_equal(
        first[2], [-32, -32, 32, 32]
    )  # ratios (0.5, 1, 2) x 2 scales: index 2 is 1:1


def test_predictor_flattens_location_major_then_anchor():
    """Row (r * W + c) * A + a, value k, is channel a * K + k at (r, c): anchor_grid's order."""
    head = SSDLitePredictor(channels=1, anchors=2, values=3)
    head.depthwise = torch.nn.Identity()
    with torch.no_grad():
        head.project.weight.copy_(torch.arange(1, 7, dtype=torch.float32).view(6, 1, 1, 1))
        head.project.bias.zero_()
        x = torch.tensor([[[[0.0, 1.0, 2.0], [10.0, 11.0, 12.0]]]])  # value r * 10 + c
        out = head(x)
    assert out.shape == (1, 2 * 3 * 2, 3)
    for r in range(2):
        for c in range(3):
            for a in range(2):
                row = (r * 3 + c) * 2 + a
                expected = [(a * 3 + k + 1) * (r * 10 + c) for k in range(3)]
                np.testing.assert_allclose(out[0, row].numpy(), expected)


def test_fused_block_residual_and_stride():
    assert FusedInvertedResidual(16, 16).use_residual
    assert not FusedInvertedResidual(16, 16, stride=2).use_residual
    assert not FusedInvertedResidual(16, 24).use_residual
    block = FusedInvertedResidual(8, 8).eval()
    with torch.no_grad():
        torch.nn.init.zeros_(
            block.block[1][1].weight
        )  # zero the projection's BN scale: the block is the identity
        x = torch.randn(1, 8, 5, 5)
        torch.testing.assert_close(block(x), x)
    assert FusedInvertedResidual(8, 16, stride=2)(torch.zeros(1, 8, 6, 6)).shape == (1, 16, 3, 3)


def test_configuration_errors():
    with pytest.raises(ValueError, match="3 feature maps but anchor sizes for 2"):
        MobileDetector(
            3, 96, (("ibn", 4, 16, 1, 2),) * 3, head_stages=3, extra_channels=(), anchor_sizes=((16,), (32,))
        )
    with pytest.raises(ValueError, match="unknown stage kind 'dense'"):
        MobileDetector(
            3, 96, (("dense", 4, 16, 1, 2),), head_stages=1, extra_channels=(), anchor_sizes=((16,),)
        )
