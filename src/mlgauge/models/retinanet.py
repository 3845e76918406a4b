"""RetinaNet: MLPerf's object-detection model (ResNeXt50-32x4d + FPN, 264 OpenImages
classes, 800x800 input) and a small variant for the synthetic stand-in.

Parameter names follow torchvision's ``retinanet_resnet50_fpn`` layout
(``backbone.body.*``, ``backbone.fpn.*``, ``head.classification_head.*``,
``head.regression_head.*``), so a state dict saved from torchvision's model or
from MLPerf's reference (``vision/classification_and_detection/python/models/resnext50``,
which uses the older torchvision key layout) loads as it is.

The module returns the raw head outputs only: ``cls_logits (B, A, C)`` and
``bbox_regression (B, A, 4)``. Anchors, box decoding, score filtering and NMS
are numpy (:class:`DetectionDecoder`), with torchvision's semantics, so an ONNX
export holds no data-dependent control flow. The box functions here are
generic (any anchors, any box-coder weights) for other detectors to reuse.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

OPENIMAGES_CLASSES = 264  # MLPerf's OpenImages subset (categories 0..263 in openimages-mlperf.json)
IMAGE_SIZE = (800, 800)
# torchvision/MLPerf RetinaNet: 3 scales per octave x 3 aspect ratios = 9 anchors per location.
ASPECT_RATIOS = (0.5, 1.0, 2.0)
ANCHOR_SIZES = tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in (32, 64, 128, 256, 512))
# torchvision's ImageNet normalisation, applied inside the model: MLPerf feeds RGB / 255.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
# torchvision's BoxCoder clamps dw/dh so exp() cannot overflow (detection/_utils.py).
BBOX_XFORM_CLIP = math.log(1000.0 / 16)


# -- numpy box operations (xyxy boxes in pixels) ---------------------------------


def anchor_grid(
    image_size: tuple[int, int],
    feature_sizes: Sequence[tuple[int, int]],
    sizes: Sequence[Sequence[float]],
    aspect_ratios: Sequence[float],
) -> list[np.ndarray]:
    """torchvision ``AnchorGenerator`` anchors, one ``(H*W*len(sizes)*len(ratios), 4)`` array per level.

    Order matches the head's output: location-major (row, then column), then
    aspect ratio, then scale. Strides are ``image_size // feature_size`` with
    integer division, as torchvision computes them (800 px and a 13x13 P6 give 61).
    """
    ratios = np.asarray(aspect_ratios, dtype=np.float32)
    out = []
    for (fh, fw), scales in zip(feature_sizes, sizes, strict=True):
        scales = np.asarray(scales, dtype=np.float32)
        h_ratios = np.sqrt(ratios)
        w_ratios = 1.0 / h_ratios
        ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
        hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
        base = np.round(np.stack([-ws, -hs, ws, hs], axis=1) / 2).astype(np.float32)
        stride_h, stride_w = image_size[0] // fh, image_size[1] // fw
        sy, sx = np.meshgrid(
            np.arange(fh, dtype=np.float32) * stride_h, np.arange(fw, dtype=np.float32) * stride_w, indexing="ij"
        )
        shifts = np.stack([sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel()], axis=1)
        out.append((shifts[:, None, :] + base[None, :, :]).reshape(-1, 4))
    return out


def encode_boxes(
    boxes: np.ndarray, anchors: np.ndarray, weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0)
) -> np.ndarray:
    """Regression targets (dx, dy, dw, dh) that turn ``anchors`` into ``boxes`` (torchvision BoxCoder)."""
    wx, wy, ww, wh = weights
    aw = anchors[:, 2] - anchors[:, 0]
    ah = anchors[:, 3] - anchors[:, 1]
    ax = anchors[:, 0] + 0.5 * aw
    ay = anchors[:, 1] + 0.5 * ah
    bw = boxes[:, 2] - boxes[:, 0]
    bh = boxes[:, 3] - boxes[:, 1]
    bx = boxes[:, 0] + 0.5 * bw
    by = boxes[:, 1] + 0.5 * bh
    return np.stack(
        [wx * (bx - ax) / aw, wy * (by - ay) / ah, ww * np.log(bw / aw), wh * np.log(bh / ah)], axis=1
    ).astype(np.float32)


def decode_boxes(
    deltas: np.ndarray,
    anchors: np.ndarray,
    weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    clip: float = BBOX_XFORM_CLIP,
) -> np.ndarray:
    """Inverse of :func:`encode_boxes`: xyxy boxes from regression outputs (torchvision ``decode_single``)."""
    wx, wy, ww, wh = (np.float32(w) for w in weights)
    deltas = np.asarray(deltas, dtype=np.float32)
    aw = anchors[:, 2] - anchors[:, 0]
    ah = anchors[:, 3] - anchors[:, 1]
    ax = anchors[:, 0] + np.float32(0.5) * aw
    ay = anchors[:, 1] + np.float32(0.5) * ah
    dx, dy = deltas[:, 0] / wx, deltas[:, 1] / wy
    dw = np.minimum(deltas[:, 2] / ww, np.float32(clip))
    dh = np.minimum(deltas[:, 3] / wh, np.float32(clip))
    cx, cy = dx * aw + ax, dy * ah + ay
    half_w, half_h = np.float32(0.5) * np.exp(dw) * aw, np.float32(0.5) * np.exp(dh) * ah
    return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU ``(len(a), len(b))`` of xyxy boxes (areas without torchvision's old +1)."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (area_a[:, None] + area_b[None, :] - inter)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int | None = None) -> np.ndarray:
    """Greedy non-maximum suppression; indices kept, highest score first.

    A box is dropped when its IoU with a kept, higher-scoring box is greater
    than ``iou_threshold`` (torchvision ``ops.nms``). Stopping at ``max_keep``
    is exact: later boxes can never displace earlier kept ones.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    order = np.argsort(-np.asarray(scores), kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    keep: list[int] = []
    limit = len(order) if max_keep is None else max_keep
    while order.size and len(keep) < limit:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(iou > iou_threshold)]  # NaN (two empty boxes) is not "greater": kept, as in torchvision
    return np.asarray(keep, dtype=np.int64)


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float, max_keep: int | None = None
) -> np.ndarray:
    """NMS within each label only (torchvision ``batched_nms``), as one pass.

    Shifting each label's boxes into their own disjoint coordinate range makes
    boxes of different labels never overlap; float64 keeps the shift exact.
    """
    if len(boxes) == 0:
        return np.zeros(0, dtype=np.int64)
    boxes = np.asarray(boxes, dtype=np.float64)
    span = float(boxes.max() - min(boxes.min(), 0.0)) + 1.0
    shifted = boxes + (np.asarray(labels, dtype=np.float64) * span)[:, None]
    return nms(shifted, scores, iou_threshold, max_keep)


def top_k_indices(values: np.ndarray, k: int, chunk: int = 1 << 20) -> np.ndarray:
    """Indices of the ``k`` largest of a 1-D array, unordered; among equal values the lowest indices.

    ``np.partition`` on the values (not ``argpartition``) plus a chunked search for
    ties keeps an all-equal array of millions of values from building index arrays its size.
    """
    n = len(values)
    if n <= k:
        return np.arange(n)
    kth = np.partition(values, n - k)[n - k]
    greater = np.flatnonzero(values > kth)
    parts, need = [greater], k - len(greater)
    for start in range(0, n, chunk):
        if need <= 0:
            break
        ties = np.flatnonzero(values[start : start + chunk] == kth)[:need] + start
        parts.append(ties)
        need -= len(ties)
    return np.concatenate(parts)


@dataclass(frozen=True)
class Detections:
    """One image's detections: xyxy boxes in input-image pixels, scores, class labels."""

    boxes: np.ndarray  # (k, 4) float32
    scores: np.ndarray  # (k,) float32
    labels: np.ndarray  # (k,) int64


class DetectionDecoder:
    """Raw head outputs -> detections, as torchvision's ``RetinaNet.postprocess_detections``.

    Per level: sigmoid scores above ``score_thresh``, the ``topk_candidates``
    best, decoded and clipped to the image; then class-wise NMS over all levels
    and the ``max_detections`` best.
    """

    def __init__(
        self,
        anchors: Sequence[np.ndarray],
        image_size: tuple[int, int],
        *,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        topk_candidates: int = 1000,
        max_detections: int = 300,
        weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    ) -> None:
        self.level_anchors = [np.asarray(a, dtype=np.float32) for a in anchors]
        self.num_anchors = sum(len(a) for a in self.level_anchors)
        self.image_size = image_size
        self.score_thresh = score_thresh
        # sigmoid(x) > t  <=>  x > logit(t): filtering on logits skips ~all sigmoid evaluations.
        self._logit_thresh = math.log(score_thresh / (1.0 - score_thresh))
        self.nms_thresh = nms_thresh
        self.topk_candidates = topk_candidates
        self.max_detections = max_detections
        self.weights = tuple(weights)

    def __call__(self, cls_logits: np.ndarray, bbox_regression: np.ndarray) -> Detections:
        """One image: ``cls_logits (A, C)``, ``bbox_regression (A, 4)``."""
        num_classes = cls_logits.shape[-1]
        height, width = self.image_size
        boxes, scores, labels = [], [], []
        start = 0
        for anchors in self.level_anchors:
            stop = start + len(anchors)
            logits = cls_logits[start:stop].reshape(-1)
            above = logits > self._logit_thresh
            count = int(np.count_nonzero(above))
            if count <= self.topk_candidates:
                candidates = np.flatnonzero(above)
            elif count <= len(logits) // 8:
                passing = np.flatnonzero(above)
                candidates = passing[top_k_indices(logits[passing], self.topk_candidates)]
            else:  # most anchors pass (an untrained model, the null backend's zeros): no huge index array
                candidates = top_k_indices(logits, self.topk_candidates)
            level_scores = (1.0 / (1.0 + np.exp(-logits[candidates].astype(np.float32)))).astype(np.float32)
            anchor_idx = candidates // num_classes
            decoded = decode_boxes(bbox_regression[start:stop][anchor_idx], anchors[anchor_idx], self.weights)
            np.clip(decoded[:, 0::2], 0, width, out=decoded[:, 0::2])
            np.clip(decoded[:, 1::2], 0, height, out=decoded[:, 1::2])
            boxes.append(decoded)
            scores.append(level_scores)
            labels.append(candidates % num_classes)
            start = stop
        all_boxes = np.concatenate(boxes).astype(np.float32)
        all_scores = np.concatenate(scores)
        all_labels = np.concatenate(labels).astype(np.int64)
        keep = batched_nms(all_boxes, all_scores, all_labels, self.nms_thresh, self.max_detections)
        return Detections(all_boxes[keep], all_scores[keep], all_labels[keep])


def match_anchors(
    gt_boxes: np.ndarray, anchors: np.ndarray, fg_iou: float = 0.5, bg_iou: float = 0.4
) -> np.ndarray:
    """Index of the ground-truth box each anchor learns from; -1 background, -2 ignored.

    torchvision's ``Matcher(0.5, 0.4, allow_low_quality_matches=True)``: every
    ground-truth box also claims the anchors that overlap it best, so small or
    oddly shaped boxes still get a positive anchor.
    """
    if len(gt_boxes) == 0:
        return np.full(len(anchors), -1, dtype=np.int64)
    iou = box_iou(np.asarray(gt_boxes, dtype=np.float32), anchors)  # (G, A)
    best = iou.max(axis=0)
    matched = iou.argmax(axis=0).astype(np.int64)
    original = matched.copy()
    matched[best < fg_iou] = -2
    matched[best < bg_iou] = -1
    best_per_gt = iou.max(axis=1, keepdims=True)
    # (A box that overlaps no anchor at all claims nothing, rather than every anchor at IoU 0.)
    _, claimed = np.nonzero((iou == best_per_gt) & (best_per_gt > 0))
    matched[claimed] = original[claimed]
    return matched


# -- PyTorch modules ---------------------------------------------------------------


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine terms, all buffers (torchvision ``FrozenBatchNorm2d``).

    Detection backbones freeze BN; keeping its tensors as buffers means they are
    not parameters, which is how torchvision's published parameter counts treat them.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Checkpoints saved from a trainable BatchNorm2d carry this counter; it means nothing here.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)


class Bottleneck(nn.Module):
    """ResNet/ResNeXt bottleneck, stride on the 3x3 (torchvision v1.5 layout)."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int, groups: int, base_width: int) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        out_ch = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, width, 1, bias=False)
        self.bn1 = FrozenBatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = FrozenBatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_ch, 1, bias=False)
        self.bn3 = FrozenBatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), FrozenBatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNetBody(nn.Module):
    """ResNet/ResNeXt trunk without pooling and classifier; returns C3, C4, C5 (strides 8, 16, 32).

    ``groups=32, base_width=4`` is ResNeXt50-32x4d; ``groups=1, base_width=64`` is ResNet-50.
    """

    def __init__(self, groups: int = 32, base_width: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = FrozenBatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_ch = 64
        stages = []
        for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            stage = []
            for b in range(blocks):
                stage.append(Bottleneck(in_ch, planes, stride if b == 0 else 1, groups, base_width))
                in_ch = planes * Bottleneck.expansion
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels = (512, 1024, 2048)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c3 = self.layer2(self.layer1(x))
        c4 = self.layer3(c3)
        return [c3, c4, self.layer4(c4)]


class LastLevelP6P7(nn.Module):
    """P6 and P7 from P5 (torchvision ``LastLevelP6P7(256, 256)``, as MLPerf's RetinaNet uses)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.p6 = nn.Conv2d(channels, channels, 3, 2, 1)
        self.p7 = nn.Conv2d(channels, channels, 3, 2, 1)
        for conv in (self.p6, self.p7):
            nn.init.kaiming_uniform_(conv.weight, a=1)
            nn.init.constant_(conv.bias, 0)

    def forward(self, p5: torch.Tensor) -> list[torch.Tensor]:
        p6 = self.p6(p5)
        return [p6, self.p7(F.relu(p6))]


def _rename_legacy_keys(state_dict: dict, prefix: str, pairs: list[tuple[str, str]]) -> None:
    for old, new in pairs:
        for kind in ("weight", "bias"):
            key = f"{prefix}{old}.{kind}"
            if key in state_dict:
                state_dict[f"{prefix}{new}.{kind}"] = state_dict.pop(key)


class FeaturePyramid(nn.Module):
    """torchvision ``FeaturePyramidNetwork``: 1x1 laterals, nearest top-down, 3x3 outputs (+ P6/P7)."""

    def __init__(self, in_channels: Sequence[int], out_channels: int, extra_levels: bool = True) -> None:
        super().__init__()
        # Each block is a one-conv Sequential: torchvision >= 0.13 keys ("inner_blocks.0.0.weight").
        self.inner_blocks = nn.ModuleList(nn.Sequential(nn.Conv2d(c, out_channels, 1)) for c in in_channels)
        self.layer_blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, padding=1)) for _ in in_channels
        )
        for m in (*self.inner_blocks, *self.layer_blocks):
            nn.init.kaiming_uniform_(m[0].weight, a=1)
            nn.init.constant_(m[0].bias, 0)
        self.extra_blocks = LastLevelP6P7(out_channels) if extra_levels else None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # torchvision < 0.13 and MLPerf's reference model name the convs without the ".0".
        n = len(self.inner_blocks)
        pairs = [(f"{kind}.{i}", f"{kind}.{i}.0") for kind in ("inner_blocks", "layer_blocks") for i in range(n)]
        _rename_legacy_keys(state_dict, prefix, pairs)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        last = self.inner_blocks[-1](features[-1])
        results = [self.layer_blocks[-1](last)]
        for idx in range(len(features) - 2, -1, -1):
            lateral = self.inner_blocks[idx](features[idx])
            last = lateral + F.interpolate(last, size=lateral.shape[-2:], mode="nearest")
            results.insert(0, self.layer_blocks[idx](last))
        if self.extra_blocks is not None:
            results.extend(self.extra_blocks(results[-1]))
        return results


class _HeadTower(nn.Module):
    """``num_convs`` x (3x3 conv [+ GroupNorm] + ReLU) then a 3x3 predictor, shared over levels.

    Key layout of torchvision >= 0.13 (``Conv2dNormActivation``): ``conv.<i>.0`` is the
    conv; with ``group_norm`` (torchvision's RetinaNet v2 heads) ``conv.<i>.1`` is the norm.
    """

    def __init__(self, channels: int, num_convs: int, out_per_anchor: int, group_norm: int = 0) -> None:
        super().__init__()
        blocks = []
        for _ in range(num_convs):
            if group_norm:
                layers = [nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.GroupNorm(group_norm, channels), nn.ReLU()]
            else:
                layers = [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
            blocks.append(nn.Sequential(*layers))
        self.conv = nn.Sequential(*blocks)
        for block in self.conv:
            nn.init.normal_(block[0].weight, std=0.01)
            if block[0].bias is not None:
                nn.init.constant_(block[0].bias, 0)
        self.out_per_anchor = out_per_anchor

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # torchvision < 0.13 / MLPerf: conv = Sequential(conv, relu, conv, relu, ...) -> conv.<2i>.
        _rename_legacy_keys(state_dict, prefix, [(f"conv.{2 * i}", f"conv.{i}.0") for i in range(len(self.conv))])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _flatten(self, x: torch.Tensor) -> torch.Tensor:
        # (B, A*K, H, W) -> (B, H*W*A, K): location-major, matching the anchor order.
        n, _, h, w = x.shape
        return x.view(n, -1, self.out_per_anchor, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, self.out_per_anchor)


class ClassificationHead(_HeadTower):
    def __init__(
        self, channels: int, num_anchors: int, num_classes: int, num_convs: int = 4, group_norm: int = 0, prior: float = 0.01
    ) -> None:
        super().__init__(channels, num_convs, num_classes, group_norm)
        self.num_classes = num_classes
        self.cls_logits = nn.Conv2d(channels, num_anchors * num_classes, 3, padding=1)
        nn.init.normal_(self.cls_logits.weight, std=0.01)
        # Focal-loss prior: every anchor starts at p = 0.01, below the 0.05 score threshold.
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - prior) / prior))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([self._flatten(self.cls_logits(self.conv(f))) for f in features], dim=1)


class RegressionHead(_HeadTower):
    def __init__(self, channels: int, num_anchors: int, num_convs: int = 4, group_norm: int = 0) -> None:
        super().__init__(channels, num_convs, 4, group_norm)
        self.bbox_reg = nn.Conv2d(channels, num_anchors * 4, 3, padding=1)
        nn.init.normal_(self.bbox_reg.weight, std=0.01)
        nn.init.zeros_(self.bbox_reg.bias)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([self._flatten(self.bbox_reg(self.conv(f))) for f in features], dim=1)


class RetinaNetHead(nn.Module):
    def __init__(self, channels: int, num_anchors: int, num_classes: int, num_convs: int = 4, group_norm: int = 0) -> None:
        super().__init__()
        self.classification_head = ClassificationHead(channels, num_anchors, num_classes, num_convs, group_norm)
        self.regression_head = RegressionHead(channels, num_anchors, num_convs, group_norm)

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.classification_head(features), self.regression_head(features)


class BackboneWithFPN(nn.Module):
    def __init__(self, body: nn.Module, in_channels: Sequence[int], out_channels: int, extra_levels: bool) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramid(in_channels, out_channels, extra_levels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.fpn(self.body(x))


class _Detector(nn.Module):
    """Normalise an RGB/255 image, run backbone + FPN + heads; no anchors or NMS in the graph."""

    image_size: tuple[int, int]
    anchor_sizes: tuple[tuple[float, ...], ...]
    aspect_ratios: tuple[float, ...] = ASPECT_RATIOS

    def _init_normalisation(self) -> None:
        # Not persistent: they are constants, and torchvision state dicts do not hold them.
        self.register_buffer("image_mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (images - self.image_mean) / self.image_std
        return self.head(self.backbone(x))

    def feature_sizes(self) -> list[tuple[int, int]]:
        raise NotImplementedError

    def anchors(self) -> list[np.ndarray]:
        """Per-level anchors for :attr:`image_size`, in the head's output order."""
        return anchor_grid(self.image_size, self.feature_sizes(), self.anchor_sizes, self.aspect_ratios)

    def decoder(self, **kwargs) -> DetectionDecoder:
        return DetectionDecoder(self.anchors(), self.image_size, **kwargs)


def _conv_out(n: int, kernel: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - kernel) // stride + 1


class RetinaNet(_Detector):
    """MLPerf's RetinaNet: ResNeXt50-32x4d + FPN (P3-P7), 9 anchors per location, 800x800 input.

    Input ``(B, 3, 800, 800)`` RGB in 0..1; outputs ``cls_logits (B, 120087, num_classes)``
    and ``bbox_regression (B, 120087, 4)``. ``groups=1, base_width=64`` gives
    torchvision's ``retinanet_resnet50_fpn`` instead.
    """

    def __init__(
        self,
        num_classes: int = OPENIMAGES_CLASSES,
        groups: int = 32,
        base_width: int = 4,
        image_size: tuple[int, int] = IMAGE_SIZE,
    ) -> None:
        super().__init__()
        self.image_size = tuple(image_size)
        self.anchor_sizes = ANCHOR_SIZES
        self.num_classes = num_classes
        body = ResNetBody(groups, base_width)
        self.backbone = BackboneWithFPN(body, body.out_channels, 256, extra_levels=True)
        self.head = RetinaNetHead(256, len(ASPECT_RATIOS) * 3, num_classes)
        self._init_normalisation()

    def feature_sizes(self) -> list[tuple[int, int]]:
        return retinanet_feature_sizes(self.image_size)


def retinanet_feature_sizes(image_size: tuple[int, int] = IMAGE_SIZE) -> list[tuple[int, int]]:
    """P3..P7 sizes of :class:`RetinaNet` for an input size: (100, 100) .. (7, 7) at 800x800."""
    per_dim = []
    for n in image_size:
        s = _conv_out(_conv_out(n, 7, 2, 3), 3, 2, 1)  # stem conv + maxpool: stride 4
        levels = []
        for _ in range(5):  # layer2 .. layer4, then P6, P7: each a 3x3 stride-2 pad-1 step
            s = _conv_out(s, 3, 2, 1)
            levels.append(s)
        per_dim.append(levels)
    return list(zip(per_dim[0], per_dim[1], strict=True))


def retinanet_decoder(image_size: tuple[int, int] = IMAGE_SIZE, **kwargs) -> DetectionDecoder:
    """The full model's decoder without building the model (anchors depend on the input size only)."""
    anchors = anchor_grid(image_size, retinanet_feature_sizes(image_size), ANCHOR_SIZES, ASPECT_RATIOS)
    return DetectionDecoder(anchors, image_size, **kwargs)


class SmallBody(nn.Module):
    """A tiny conv trunk (trainable BN) for the stand-in; returns strides 8, 16, 32."""

    def __init__(self, widths: tuple[int, int, int, int, int] = (16, 32, 48, 64, 96)) -> None:
        super().__init__()

        def conv(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        # One conv at stride 2: full-resolution convs with few channels cost the most time on CPU.
        self.stem = nn.Sequential(*conv(3, widths[0], 2))
        self.layer1 = nn.Sequential(*conv(widths[0], widths[1], 2), *conv(widths[1], widths[1], 1))  # stride 4
        self.layer2 = nn.Sequential(*conv(widths[1], widths[2], 2), *conv(widths[2], widths[2], 1))  # 8
        self.layer3 = nn.Sequential(*conv(widths[2], widths[3], 2), *conv(widths[3], widths[3], 1))  # 16
        self.layer4 = nn.Sequential(*conv(widths[3], widths[4], 2), *conv(widths[4], widths[4], 1))  # 32
        self.out_channels = widths[2:]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c3 = self.layer2(self.layer1(self.stem(x)))
        c4 = self.layer3(c3)
        return [c3, c4, self.layer4(c4)]


class SmallRetinaNet(_Detector):
    """The stand-in detector: tiny trunk, 3-level FPN (strides 8/16/32), RetinaNet heads, 9 anchors.

    GroupNorm in the head towers (as torchvision's RetinaNet v2 heads have) makes it
    trainable from scratch in a few thousand steps; one conv per tower keeps it fast on CPU.
    """

    def __init__(
        self,
        num_classes: int = 3,
        image_size: int = 96,
        channels: int = 48,
        head_convs: int = 1,
        group_norm: int = 8,
        widths: tuple[int, int, int, int, int] = (16, 32, 48, 64, 96),
    ) -> None:
        super().__init__()
        self.image_size = (image_size, image_size)
        # Scaled-down RetinaNet anchors (16/32/64 px bases) for objects of ~10..60 px.
        self.anchor_sizes = tuple((x, int(x * 2 ** (1.0 / 3)), int(x * 2 ** (2.0 / 3))) for x in (16, 32, 64))
        self.num_classes = num_classes
        body = SmallBody(widths)
        self.backbone = BackboneWithFPN(body, body.out_channels, channels, extra_levels=False)
        self.head = RetinaNetHead(channels, len(ASPECT_RATIOS) * 3, num_classes, head_convs, group_norm)
        self._init_normalisation()

    def feature_sizes(self) -> list[tuple[int, int]]:
        sizes = []
        for n in self.image_size:
            s, levels = n, []
            for stride_step in range(5):
                s = _conv_out(s, 3, 2, 1)
                if stride_step >= 2:
                    levels.append(s)
            sizes.append(levels)
        return list(zip(sizes[0], sizes[1], strict=True))


def retinanet_loss(
    cls_logits: torch.Tensor,
    bbox_regression: torch.Tensor,
    cls_targets: torch.Tensor,
    box_targets: torch.Tensor,
    *,
    alpha: float = 0.25,
    gamma: float = 2.0,
    beta: float = 1.0 / 9,
    fused: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Focal loss + smooth-L1, each summed and divided by the number of positive anchors.

    ``cls_targets (B, A)``: class index for positives, -1 background, -2 ignored
    (from :func:`match_anchors`); ``box_targets (B, A, 4)``: :func:`encode_boxes`
    deltas, used only where positive. ``fused`` computes the focal term with
    :func:`mlgauge.ops.sigmoid_focal_loss` (same values, one pass) instead of the
    reference's element-wise formula.
    """
    positive = cls_targets >= 0
    valid = cls_targets >= -1
    num_pos = positive.sum().clamp(min=1).float()
    onehot = torch.zeros_like(cls_logits)
    onehot[positive] = F.one_hot(cls_targets[positive], cls_logits.shape[-1]).to(cls_logits.dtype)
    logits, target = cls_logits[valid], onehot[valid]
    # A named region, so a profile shows the focal loss's share of a step (forward; its backward
    # ops carry their forward op's name).
    with torch.profiler.record_function("focal_loss"):
        if fused:
            from mlgauge.ops import sigmoid_focal_loss

            focal = sigmoid_focal_loss(logits, target, alpha, gamma, reduction="sum") / num_pos
        else:
            p = torch.sigmoid(logits)
            ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            p_t = p * target + (1 - p) * (1 - target)
            alpha_t = alpha * target + (1 - alpha) * (1 - target)
            focal = (alpha_t * ce * (1 - p_t) ** gamma).sum() / num_pos
    box = F.smooth_l1_loss(bbox_regression[positive], box_targets[positive], beta=beta, reduction="sum") / num_pos
    return focal, box
