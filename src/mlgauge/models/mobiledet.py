"""SSD-style mobile detectors: MLPerf Mobile's SSD-MobileDet in miniature, and an SSDLite builder at 320x320.

SSD-MobileDet (Xiong et al., 2021) is an SSDLite detector whose backbone was
searched over inverted bottlenecks *and* "fused" ones (a full 3x3 conv in place
of the 1x1 expansion + depthwise pair, faster on DSPs and EdgeTPUs), with
depthwise-separable box predictors on six feature maps (20x20 .. 1x1 at
320x320), sigmoid focal loss and a ``TFLite_Detection_PostProcess`` op at the
end of the official ``.tflite``. :class:`MobileDetector` keeps that shape:

* backbone: a stride-2 stem, fused inverted bottlenecks early and inverted
  bottlenecks (``models.mobilenet.InvertedResidual``) later; its last stages'
  outputs feed the head, and SSDLite "extra" layers (1x1 reduce, 3x3 depthwise
  stride 2, 1x1 expand) add coarser maps;
* head: per feature map, one SSDLite predictor for class logits and one for box
  deltas (3x3 depthwise + BN + ReLU6, then a 1x1 conv), flattened
  location-major like RetinaNet's head;
* everything after the head is RetinaNet's machinery, reused from
  ``models.retinanet``: torchvision-style anchors (:func:`anchor_grid`), the box
  coder, :class:`DetectionDecoder` (sigmoid scores, class-wise NMS) and, for
  training, anchor matching and the focal + smooth-L1 loss. The outputs have
  RetinaNet's layout, ``cls_logits (B, A, C)`` and ``bbox_regression (B, A, 4)``,
  so the detection task's post-processing and training loop take it as is.

Inputs are RGB scaled to [-1, 1] (MLPerf Mobile's ``(x - 127.5) / 127.5``), NCHW;
there is no normalisation inside the model.

:func:`small_mobiledet` is the synthetic stand-in (96x96, 3 classes).
:func:`ssdlite_mobiledet_320` is the 320x320 COCO layout (90 classes, six maps),
for PyTorch weights a user trained on this architecture: there are no
pretrained weights here, and MLPerf's own model runs from its ``.tflite`` (or an
ONNX/ExecuTorch export of it) instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from mlgauge.models.mobilenet import ConvBNAct, inverted_residual_stages
from mlgauge.models.retinanet import DetectionDecoder, anchor_grid

# (kind, expansion, output channels, repeats, stride of the first repeat); kind "fused" or "ibn".
StageSpec = tuple[str, int, int, int, int]

COCO_CLASSES = 90  # TF Object Detection API's COCO label map: category ids 1..90, label = id - 1
COCO_IMAGE_SIZE = 320
ASPECT_RATIOS = (0.5, 1.0, 2.0)


class FusedInvertedResidual(nn.Module):
    """MobileDet's fused inverted bottleneck: a full kxk expansion conv, a linear 1x1 projection."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, expand: int = 4, kernel: int = 3) -> None:
        super().__init__()
        hidden = in_ch * expand
        self.block = nn.Sequential(
            ConvBNAct(in_ch, hidden, kernel=kernel, stride=stride),
            ConvBNAct(hidden, out_ch, kernel=1, act=False),
        )
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


def _stage(in_ch: int, spec: StageSpec) -> tuple[nn.Sequential, int]:
    kind, expand, out_ch, repeats, stride = spec
    if kind == "ibn":
        return inverted_residual_stages(in_ch, ((expand, out_ch, repeats, stride, 3),))
    if kind != "fused":
        raise ValueError(f"unknown stage kind {kind!r}; use 'fused' or 'ibn'")
    blocks = []
    for r in range(repeats):
        blocks.append(FusedInvertedResidual(in_ch, out_ch, stride if r == 0 else 1, expand))
        in_ch = out_ch
    return nn.Sequential(*blocks), in_ch


class ExtraLayer(nn.Sequential):
    """SSDLite's extra feature layer: 1x1 reduce to half, 3x3 depthwise stride 2, 1x1 expand."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        mid = out_ch // 2
        super().__init__(
            ConvBNAct(in_ch, mid, kernel=1),
            ConvBNAct(mid, mid, kernel=3, stride=2, groups=mid),
            ConvBNAct(mid, out_ch, kernel=1),
        )


class SSDLitePredictor(nn.Module):
    """One feature map's predictor: 3x3 depthwise + BN + ReLU6, then a 1x1 conv to ``anchors * values``."""

    def __init__(self, channels: int, anchors: int, values: int, bias: float = 0.0) -> None:
        super().__init__()
        self.depthwise = ConvBNAct(channels, channels, kernel=3, groups=channels)
        self.project = nn.Conv2d(channels, anchors * values, 1)
        nn.init.normal_(self.project.weight, std=0.01)
        nn.init.constant_(self.project.bias, bias)
        self.values = values

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.depthwise(x))
        # (B, A*K, H, W) -> (B, H*W*A, K): location-major, then anchor, as anchor_grid orders the anchors.
        n, _, h, w = y.shape
        return y.view(n, -1, self.values, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, self.values)


class MobileDetector(nn.Module):
    """Input ``(B, 3, H, W)`` in [-1, 1]; outputs ``cls_logits (B, A, C)``, ``bbox_regression (B, A, 4)``.

    ``stages`` build the backbone after a stride-2 stem; the outputs of the last
    ``head_stages`` of them, then ``extra_channels`` SSDLite extra layers, are the
    feature maps. ``anchor_sizes`` gives one tuple of scales (pixels) per map;
    every map has ``len(scales) * len(ASPECT_RATIOS)`` anchors per location.
    """

    def __init__(
        self,
        num_classes: int,
        image_size: int,
        stages: Sequence[StageSpec],
        head_stages: int,
        extra_channels: Sequence[int],
        anchor_sizes: Sequence[Sequence[float]],
        stem: int = 16,
        prior: float = 0.01,
    ) -> None:
        super().__init__()
        self.image_size = (image_size, image_size)
        self.num_classes = num_classes
        self.anchor_sizes = tuple(tuple(s) for s in anchor_sizes)
        self.aspect_ratios = ASPECT_RATIOS
        self.stem = ConvBNAct(3, stem, kernel=3, stride=2)
        built, channels, ch = [], [], stem
        for spec in stages:
            block, ch = _stage(ch, spec)
            built.append(block)
            channels.append(ch)
        self.stages = nn.ModuleList(built)
        self.first_head_stage = len(built) - head_stages
        level_channels = channels[self.first_head_stage :]
        extras = []
        for out_ch in extra_channels:
            extras.append(ExtraLayer(ch, out_ch))
            level_channels.append(out_ch)
            ch = out_ch
        self.extras = nn.ModuleList(extras)
        if len(self.anchor_sizes) != len(level_channels):
            raise ValueError(
                f"{len(level_channels)} feature maps but anchor sizes for {len(self.anchor_sizes)}"
            )
        per_location = [len(s) * len(ASPECT_RATIOS) for s in self.anchor_sizes]
        # Focal-loss prior: every anchor starts at p = 0.01, below the 0.05 score threshold.
        cls_bias = -math.log((1 - prior) / prior)
        self.cls_heads = nn.ModuleList(
            SSDLitePredictor(c, a, num_classes, cls_bias)
            for c, a in zip(level_channels, per_location, strict=True)
        )
        self.box_heads = nn.ModuleList(
            SSDLitePredictor(c, a, 4) for c, a in zip(level_channels, per_location, strict=True)
        )

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        maps = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i >= self.first_head_stage:
                maps.append(x)
        for extra in self.extras:
            x = extra(x)
            maps.append(x)
        return maps

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.features(images)
        cls = torch.cat([head(f) for head, f in zip(self.cls_heads, maps, strict=True)], dim=1)
        box = torch.cat([head(f) for head, f in zip(self.box_heads, maps, strict=True)], dim=1)
        return cls, box

    def feature_sizes(self) -> list[tuple[int, int]]:
        """Each feature map's (height, width), from a shape-only pass (no arithmetic to keep in sync)."""
        with torch.no_grad():
            probe = torch.zeros(1, 3, *self.image_size)
            was_training = self.training
            self.eval()
            sizes = [tuple(int(d) for d in f.shape[-2:]) for f in self.features(probe)]
            self.train(was_training)
        return sizes

    def anchors(self) -> list[np.ndarray]:
        """Per-map anchors (xyxy pixels) in the head's output order."""
        return anchor_grid(self.image_size, self.feature_sizes(), self.anchor_sizes, self.aspect_ratios)

    def decoder(self, **kwargs) -> DetectionDecoder:
        return DetectionDecoder(self.anchors(), self.image_size, **kwargs)


# -- configurations ----------------------------------------------------------------------

# The stand-in: 96x96 input, maps at strides 8, 16, 32 (12x12, 6x6, 3x3).
SMALL_STAGES: tuple[StageSpec, ...] = (
    ("fused", 2, 16, 1, 2),  # 24x24
    ("fused", 4, 24, 2, 2),  # 12x12 (stride 8)
    ("ibn", 4, 48, 2, 2),  # 6x6
    ("ibn", 4, 64, 1, 2),  # 3x3
)
# Scaled-down RetinaNet anchors (16/32/64 px bases, three scales per octave) for objects of ~10..60 px.
SMALL_ANCHOR_SIZES = tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in (16, 32, 64))


def small_mobiledet(num_classes: int = 3, image_size: int = 96) -> MobileDetector:
    """The synthetic stand-in: fused then inverted bottlenecks, three SSDLite maps, 9 anchors per location."""
    return MobileDetector(
        num_classes,
        image_size,
        SMALL_STAGES,
        head_stages=3,
        extra_channels=(),
        anchor_sizes=SMALL_ANCHOR_SIZES,
    )


# 320x320: backbone maps at strides 16 and 32 (20x20, 10x10), then four extra layers (5, 3, 2, 1).
COCO_STAGES: tuple[StageSpec, ...] = (
    ("fused", 1, 16, 1, 1),  # 160x160
    ("fused", 4, 32, 2, 2),  # 80x80
    ("fused", 4, 48, 3, 2),  # 40x40
    ("ibn", 4, 96, 3, 2),  # 20x20 (stride 16)
    ("ibn", 6, 136, 3, 1),
    ("ibn", 6, 256, 3, 2),  # 10x10 (stride 32)
)
COCO_EXTRA_CHANNELS = (512, 256, 256, 128)


def ssd_anchor_sizes(image_size: int, levels: int, min_scale: float = 0.2, max_scale: float = 0.95) -> tuple:
    """SSD's anchor scales in pixels: per map s_k and sqrt(s_k * s_k+1), s_k linear in k over the range."""
    scales = [min_scale + (max_scale - min_scale) * k / (levels - 1) for k in range(levels)] + [1.0]
    return tuple(
        (scales[k] * image_size, math.sqrt(scales[k] * scales[k + 1]) * image_size) for k in range(levels)
    )


def ssdlite_mobiledet_320(num_classes: int = COCO_CLASSES) -> MobileDetector:
    """The 320x320 COCO layout: six maps (20, 10, 5, 3, 2, 1), 6 anchors per location, 3,234 anchors."""
    return MobileDetector(
        num_classes,
        COCO_IMAGE_SIZE,
        COCO_STAGES,
        head_stages=2,
        extra_channels=COCO_EXTRA_CHANNELS,
        anchor_sizes=ssd_anchor_sizes(COCO_IMAGE_SIZE, 6),
        stem=32,
    )
