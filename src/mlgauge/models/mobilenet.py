"""MobileNet building blocks and a small MobileNet for the synthetic stand-in.

The blocks are MobileNetV2's inverted residual (1x1 expansion, 3x3 depthwise,
linear 1x1 projection, identity shortcut when shapes allow): the operation mix
that MobileNetV4's "universal inverted bottleneck" and the MOSAIC segmenter's
backbone are built from, and what mobile runtimes (LiteRT, NNAPI, Core ML)
optimise for.

There is deliberately no PyTorch MobileNetV4-Conv-Large here: MLPerf Mobile's
image-classification task runs the official files
(``MobileNetV4-Conv-Large-{fp32,int8-ptq}.tflite``) or a user's ONNX export of
them, which mlgauge loads from the file given with ``--weights``. Only the
stand-in's small network is defined in PyTorch, because it is trained by
``mlgauge prepare``.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvBNAct(nn.Sequential):
    """Conv (no bias: BN follows) + BatchNorm + optional ReLU6, 'same' padding for odd kernels."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1, act: bool = True
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if act:
            # ReLU6 as in MobileNetV1/V2: bounded activations keep int8 quantization ranges small.
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: expand (1x1) -> depthwise kxk (stride) -> project (1x1, linear).

    ``kernel`` 5 is the larger depthwise kernel MobileNetV3/V4 use where cheap receptive field pays.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, expand: int = 4, kernel: int = 3) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        hidden = in_ch * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNAct(in_ch, hidden, kernel=1))
        layers += [
            ConvBNAct(hidden, hidden, kernel=kernel, stride=stride, groups=hidden),  # depthwise
            ConvBNAct(hidden, out_ch, kernel=1, act=False),  # linear bottleneck: no ReLU after projecting
        ]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


# (expansion, output channels, repeats, stride of the first repeat, depthwise kernel), MobileNetV2-style.
Stages = tuple[tuple[int, int, int, int, int], ...]
SMALL_MOBILENET_STAGES: Stages = (
    (1, 16, 1, 1, 3),  # (B, 16, 16, 16) for a 32x32 input
    (4, 24, 2, 2, 3),  # (B, 24, 8, 8)
    (4, 48, 2, 2, 3),  # (B, 48, 4, 4)
)


def inverted_residual_stages(in_ch: int, stages: Stages) -> tuple[nn.Sequential, int]:
    """The blocks of ``stages`` in one Sequential, and the channel count they end with."""
    blocks: list[nn.Module] = []
    for expand, out_ch, repeats, stride, kernel in stages:
        for r in range(repeats):
            blocks.append(InvertedResidual(in_ch, out_ch, stride if r == 0 else 1, expand, kernel))
            in_ch = out_ch
    return nn.Sequential(*blocks), in_ch


class SmallMobileNet(nn.Module):
    """A MobileNetV2-style classifier for the 32x32 synthetic images (or any size: the head pools).

    Input ``(B, 3, H, W)``; output ``(B, num_classes)`` logits.
    """

    def __init__(
        self,
        num_classes: int = 10,
        stem: int = 16,
        stages: Stages = SMALL_MOBILENET_STAGES,
        head: int = 128,
    ) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, stem, kernel=3, stride=2)
        self.features, last = inverted_residual_stages(stem, stages)
        self.head = ConvBNAct(last, head, kernel=1)
        self.classifier = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.features(self.stem(x)))
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
