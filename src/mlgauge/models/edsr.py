"""EDSR (Lim et al., "Enhanced Deep Residual Networks for Single Image Super-Resolution", CVPRW 2017).

MLPerf Mobile's super-resolution model is "EDSR F32B5": 32 feature channels,
5 residual blocks, 2x upscaling by sub-pixel convolution (pixel shuffle). The
layout follows the EDSR paper and its reference code: a head convolution, residual
blocks of conv-ReLU-conv with no batch norm (EDSR's main change over SRResNet) and
an optional residual scaling, a body convolution with a global skip, then the
upsampler and a final convolution back to RGB. Parameter names match the
reference code's (``head.0``, ``body.<i>.body.{0,2}``, ``tail.0.0``, ``tail.1``).

Units: input and output are RGB in 0..255 float32, NCHW, as the reference code's
``rgb_range=255`` and as MLPerf Mobile feeds float models ("floating point input
expects data in [0.0, 255.0]", ``flutter/cpp/datasets/snu_sr.cc``). The DIV2K RGB
mean is subtracted on the way in and added back on the way out; it is a fixed
buffer, not a parameter, so parameter counts are the convolutions only.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# The DIV2K training set's mean RGB, in 0..1 units (EDSR reference code, ``common.MeanShift``).
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)
RGB_RANGE = 255.0


def _conv(in_ch: int, out_ch: int, kernel: int = 3) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel, padding=kernel // 2, bias=True)


class ResBlock(nn.Module):
    """conv-ReLU-conv, scaled, plus the identity; no batch norm (it hurts SR: EDSR section 3.1)."""

    def __init__(self, features: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(features, features), nn.ReLU(inplace=True), _conv(features, features))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


class Upsampler(nn.Sequential):
    """One conv to ``r*r`` times the channels + PixelShuffle(r) per factor of 2 (or one of 3)."""

    def __init__(self, scale: int, features: int) -> None:
        layers: list[nn.Module] = []
        if scale & (scale - 1) == 0:  # a power of two: repeated x2 stages
            for _ in range(int(math.log2(scale))):
                layers += [_conv(features, 4 * features), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [_conv(features, 9 * features), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"EDSR upscales by 2, 3 or a power of two, not {scale}")
        super().__init__(*layers)


class EDSR(nn.Module):
    """EDSR. Input ``(B, 3, H, W)`` in 0..255; output ``(B, 3, scale*H, scale*W)`` in 0..255 (unclipped).

    ``res_scale``: the paper scales residuals by 0.1 only in its 256-feature model,
    where training is otherwise unstable; the baseline and small models use 1.0.
    """

    def __init__(self, features: int = 32, blocks: int = 5, scale: int = 2, res_scale: float = 1.0) -> None:
        super().__init__()
        if features < 1 or blocks < 0:
            raise ValueError(f"EDSR needs features >= 1 and blocks >= 0, got {features}, {blocks}")
        self.features, self.blocks, self.scale = features, blocks, scale
        # A constant, not learned: kept out of the state dict so weights files hold the convolutions only.
        self.register_buffer(
            "rgb_mean",
            torch.tensor(DIV2K_RGB_MEAN, dtype=torch.float32).view(1, 3, 1, 1) * RGB_RANGE,
            persistent=False,
        )
        self.head = nn.Sequential(_conv(3, features))
        self.body = nn.Sequential(
            *(ResBlock(features, res_scale) for _ in range(blocks)), _conv(features, features)
        )
        self.tail = nn.Sequential(Upsampler(scale, features), _conv(features, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x - self.rgb_mean)  # (B, F, H, W)
        x = x + self.body(x)  # global skip over the residual blocks
        return self.tail(x) + self.rgb_mean  # (B, 3, scale*H, scale*W)


def edsr_f32b5() -> EDSR:
    """MLPerf Mobile's super-resolution model architecture: 32 features, 5 blocks, x2."""
    return EDSR(features=32, blocks=5, scale=2)


def config_from_state_dict(state: dict) -> dict[str, int]:
    """``features``/``blocks``/``scale`` of the EDSR a state dict was saved from.

    Lets a user's weights of any EDSR size load without naming the size; returns
    what the keys imply, and ``load_into`` then reports any remaining mismatch.
    """
    head = state.get("head.0.weight")
    if head is None or head.ndim != 4:
        raise KeyError("head.0.weight")
    features = int(head.shape[0])
    blocks = 0
    while f"body.{blocks}.body.0.weight" in state:
        blocks += 1
    stages = 0
    while f"tail.0.{2 * stages}.weight" in state:
        stages += 1
    first = state.get("tail.0.0.weight")
    scale = 3 if first is not None and int(first.shape[0]) == 9 * features else 2**max(stages, 1)
    return {"features": features, "blocks": blocks, "scale": scale}
