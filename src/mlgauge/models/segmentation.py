"""A small mobile semantic-segmentation network for the MOSAIC stand-in.

MOSAIC (MLPerf Mobile's segmentation model) is an asymmetric encoder-decoder:
a searched MobileNet-style backbone, a multi-scale context module on the
deepest features and a light decoder that fuses one shallower feature map
before upsampling to the input size. ``MobileSegmenter`` keeps that shape at a
toy scale: inverted-residual encoder to stride 8, a context branch that mixes
the local features with globally pooled ones, a decoder that fuses the
stride-4 features, and bilinear upsampling to full resolution.

The real MOSAIC runs from the official ``.tflite`` (or an ONNX export) given
with ``--weights``; it is not defined in PyTorch here.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mlgauge.models.mobilenet import ConvBNAct, inverted_residual_stages

# (expansion, output channels, repeats, stride, depthwise kernel), as in models.mobilenet:
_LOW_STAGES = ((1, 16, 1, 1, 3), (4, 24, 2, 2, 3))  # after the stride-2 stem: stride 4, 24 channels
_HIGH_STAGES = ((4, 40, 2, 2, 3),)  # stride 8, 40 channels


class MobileSegmenter(nn.Module):
    """Input ``(B, 3, H, W)`` (H, W multiples of 8); output ``(B, num_classes, H, W)`` logits."""

    def __init__(self, num_classes: int = 5, context: int = 48, decoder: int = 32) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, 16, kernel=3, stride=2)
        self.low, low_ch = inverted_residual_stages(16, _LOW_STAGES)
        self.high, high_ch = inverted_residual_stages(low_ch, _HIGH_STAGES)
        # Context: local features plus a global (image-level) summary, MOSAIC's multi-scale encoder in miniature.
        self.local = ConvBNAct(high_ch, context, kernel=1)
        self.global_ = ConvBNAct(high_ch, context, kernel=1)
        # Decoder: fuse the upsampled context with the stride-4 features, refine with a depthwise conv.
        self.skip = ConvBNAct(low_ch, decoder, kernel=1)
        self.fuse = nn.Sequential(
            ConvBNAct(context + decoder, decoder, kernel=1),
            ConvBNAct(decoder, decoder, kernel=3, groups=decoder),
        )
        self.classifier = nn.Conv2d(decoder, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.low(self.stem(x))  # (B, 24, H/4, W/4)
        high = self.high(low)  # (B, 40, H/8, W/8)
        pooled = self.global_(F.adaptive_avg_pool2d(high, 1))  # (B, context, 1, 1)
        ctx = self.local(high) + pooled  # broadcast the image-level summary over every position
        ctx = F.interpolate(ctx, size=low.shape[-2:], mode="bilinear", align_corners=False)
        out = self.fuse(torch.cat([ctx, self.skip(low)], dim=1))
        return F.interpolate(self.classifier(out), size=x.shape[-2:], mode="bilinear", align_corners=False)
