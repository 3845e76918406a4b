"""RetinaNet: parameter counts, torchvision key layout, anchors, box coding, NMS, decoding, loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mlgauge.models.retinanet import (
    ANCHOR_SIZES,
    FrozenBatchNorm2d,
    RetinaNet,
    SmallRetinaNet,
    anchor_grid,
    batched_nms,
    box_iou,
    decode_boxes,
    encode_boxes,
    match_anchors,
    nms,
    retinanet_decoder,
    retinanet_feature_sizes,
    retinanet_loss,
    top_k_indices,
)


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# -- parameter counts and layout ---------------------------------------------------


@pytest.fixture(scope="module")
def full_model() -> RetinaNet:
    torch.manual_seed(0)
    return RetinaNet().eval()


def test_resnet50_variant_matches_torchvisions_published_count():
    # torchvision's RetinaNet_ResNet50_FPN_Weights.COCO_V1 lists num_params = 34,014,999
    # (FrozenBatchNorm tensors are buffers, so they are not counted).
    model = RetinaNet(num_classes=91, groups=1, base_width=64)
    assert _params(model) == 34_014_999


def test_full_model_parameter_count(full_model):
    """37,060,652, derived independently of this module:

    * ResNeXt50-32x4d: torchvision publishes 25,028,904 parameters; minus its fc
      (2048 * 1000 + 1000 = 2,049,000) and minus the BatchNorm affine terms that
      become frozen buffers (2 * 34,112 channels = 68,224) leaves 22,911,680.
    * FPN on C3..C5 (512, 1024, 2048 channels) to 256: laterals 3,584 * 256 + 3 * 256
      = 918,272; 3x3 outputs 3 * 590,080 = 1,770,240; P6 and P7 2 * 590,080
      = 1,180,160; together 3,868,672 (also inside torchvision's 34,014,999).
    * Heads: 8 tower convs 8 * 590,080 = 4,720,640; cls_logits 256 * 9 * (9 * 264)
      + 9 * 264 = 5,476,680; bbox_reg 256 * 9 * 36 + 36 = 82,980; together 10,280,300.
    The same sums with the ResNet-50 trunk (23,454,912) and 91 classes give
    torchvision's 34,014,999, checked above.
    """
    assert _params(full_model.backbone.body) == 25_028_904 - 2_049_000 - 68_224
    assert _params(full_model.backbone.fpn) == 3_868_672
    assert _params(full_model.head) == 10_280_300
    assert _params(full_model) == 37_060_652


def test_small_model_parameter_count():
    """Trunk (bias-free 3x3 convs + BatchNorm): 464 + 13,952 + 34,752 + 64,768 + 138,624 = 252,560;
    FPN at 48 channels: laterals 208 * 48 + 144 = 10,128, outputs 3 * 20,784 = 62,352;
    heads: 2 x (20,736 conv + 96 GroupNorm), cls_logits 48 * 9 * 27 + 27, bbox_reg 48 * 9 * 36 + 36."""
    model = SmallRetinaNet()  # the stand-in: 48 channels, one GroupNorm conv per head tower
    assert _params(model.backbone.body) == 252_560
    assert _params(model.backbone.fpn) == 72_480
    assert _params(model.head) == 41_664 + 11_691 + 15_588
    assert _params(model) == 393_983


def test_state_dict_uses_torchvision_names(full_model):
    keys = list(full_model.state_dict())
    assert len(keys) == 301
    assert keys[:5] == [
        "backbone.body.conv1.weight",
        "backbone.body.bn1.weight",
        "backbone.body.bn1.bias",
        "backbone.body.bn1.running_mean",
        "backbone.body.bn1.running_var",
    ]
    for key in (
        "backbone.body.layer1.0.downsample.0.weight",
        "backbone.body.layer4.2.bn3.running_var",
        "backbone.fpn.inner_blocks.2.0.weight",
        "backbone.fpn.layer_blocks.0.0.bias",
        "backbone.fpn.extra_blocks.p6.weight",
        "backbone.fpn.extra_blocks.p7.bias",
        "head.classification_head.conv.3.0.weight",
        "head.classification_head.cls_logits.bias",
        "head.regression_head.conv.0.0.bias",
        "head.regression_head.bbox_reg.weight",
    ):
        assert key in keys
    assert not [k for k in keys if "num_batches_tracked" in k or "image_mean" in k]
    state = full_model.state_dict()
    assert state["head.classification_head.cls_logits.weight"].shape == (9 * 264, 256, 3, 3)
    assert state["backbone.body.layer2.0.conv2.weight"].shape == (256, 8, 3, 3)  # 32 groups of 8 channels
    assert state["head.classification_head.cls_logits.bias"][0].item() == pytest.approx(-math.log(99))


def _to_legacy(state: dict, tower_convs: int) -> dict:
    """Rename to the torchvision < 0.13 layout that MLPerf's reference checkpoint uses."""
    out = {}
    for key, value in state.items():
        for i in range(3):
            for kind in ("inner_blocks", "layer_blocks"):
                key = key.replace(f"fpn.{kind}.{i}.0.", f"fpn.{kind}.{i}.")
        for i in range(tower_convs):
            key = key.replace(f"_head.conv.{i}.0.", f"_head.conv.{2 * i}.")
        out[key] = value
    return out


def test_legacy_layout_and_batchnorm_counters_load():
    torch.manual_seed(3)
    source = SmallRetinaNet(channels=16, head_convs=2, group_norm=0).eval()  # the old layout had no norm
    legacy = _to_legacy(source.state_dict(), 2)
    assert "backbone.fpn.inner_blocks.0.weight" in legacy
    assert "head.classification_head.conv.2.weight" in legacy
    target = SmallRetinaNet(channels=16, head_convs=2, group_norm=0)
    result = target.load_state_dict(legacy, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        for a, b in zip(source(x), target.eval()(x), strict=True):
            torch.testing.assert_close(a, b)

    bn = FrozenBatchNorm2d(4)
    state = {"weight": torch.full((4,), 2.0), "bias": torch.ones(4), "running_mean": torch.zeros(4),
             "running_var": torch.ones(4), "num_batches_tracked": torch.tensor(7)}  # fmt: skip
    bn.load_state_dict(state)
    y = bn(torch.ones(1, 4, 1, 1))
    torch.testing.assert_close(y, torch.full((1, 4, 1, 1), 2.0 / math.sqrt(1 + 1e-5) + 1.0))


# -- anchors --------------------------------------------------------------------------


def test_feature_sizes_and_anchor_count_at_800():
    assert ANCHOR_SIZES == ((32, 40, 50), (64, 80, 101), (128, 161, 203), (256, 322, 406), (512, 645, 812))
    assert retinanet_feature_sizes((800, 800)) == [(100, 100), (50, 50), (25, 25), (13, 13), (7, 7)]
    assert retinanet_decoder().num_anchors == 9 * (100**2 + 50**2 + 25**2 + 13**2 + 7**2) == 120_087


def test_cell_anchors_hand_computed():
    # Half-sizes for ratio r (h/w) and scale s: w = s / sqrt(r), h = s * sqrt(r), rounded; ratio-major order.
    (level,) = anchor_grid((16, 16), [(2, 2)], [(32, 40, 50)], (0.5, 1.0, 2.0))
    first = level[:9].tolist()
    assert first == [
        [-23, -11, 23, 11], [-28, -14, 28, 14], [-35, -18, 35, 18],
        [-16, -16, 16, 16], [-20, -20, 20, 20], [-25, -25, 25, 25],
        [-11, -23, 11, 23], [-14, -28, 14, 28], [-18, -35, 18, 35],
    ]  # fmt: skip
    # Then the next location along x (stride 16 // 2 = 8), then the next row.
    np.testing.assert_array_equal(level[9:18], level[:9] + [8, 0, 8, 0])
    np.testing.assert_array_equal(level[18:27], level[:9] + [0, 8, 0, 8])
    assert level.shape == (2 * 2 * 9, 4)


def test_anchor_strides_use_integer_division():
    # torchvision: stride = image_size // feature_size, so P6 (13x13 at 800) steps 61 px, P7 (7x7) 114.
    levels = anchor_grid((800, 800), retinanet_feature_sizes(), ANCHOR_SIZES, (0.5, 1.0, 2.0))
    p6, p7 = levels[3], levels[4]
    assert p6[9, 0] - p6[0, 0] == 61
    assert p7[9 * 7, 1] - p7[0, 1] == 114


def test_model_outputs_match_its_anchors():
    torch.manual_seed(0)
    model = RetinaNet(image_size=(64, 64)).eval()
    with torch.no_grad():
        cls, box = model(torch.rand(2, 3, 64, 64))
    assert cls.shape == (2, sum(len(a) for a in model.anchors()), 264)
    assert box.shape == (2, cls.shape[1], 4)
    small = SmallRetinaNet()
    assert small.feature_sizes() == [(12, 12), (6, 6), (3, 3)]
    with torch.no_grad():
        cls, box = small(torch.rand(3, 3, 96, 96))
    assert cls.shape == (3, 1701, 3) and box.shape == (3, 1701, 4)


# -- box coding, IoU, NMS --------------------------------------------------------------


def test_encode_then_decode_gives_the_boxes_back():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 700, size=(500, 2))
    anchors = np.concatenate([xy, xy + rng.uniform(8, 300, size=(500, 2))], axis=1).astype(np.float32)
    centre = (anchors[:, :2] + anchors[:, 2:]) / 2 + rng.normal(0, 10, size=(500, 2))
    size = (anchors[:, 2:] - anchors[:, :2]) * np.exp(rng.normal(0, 0.5, size=(500, 2)))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1).astype(np.float32)
    for weights in ((1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)):
        deltas = encode_boxes(boxes, anchors, weights)
        np.testing.assert_allclose(decode_boxes(deltas, anchors, weights), boxes, rtol=0, atol=2e-3)
    np.testing.assert_allclose(decode_boxes(np.zeros((500, 4)), anchors), anchors, atol=1e-4)


def test_decode_hand_computed_and_clamped():
    anchor = np.array([[10, 20, 30, 60]], dtype=np.float32)  # centre (20, 40), size 20 x 40
    got = decode_boxes(np.array([[0.5, -0.25, math.log(2), 0.0]], dtype=np.float32), anchor)
    np.testing.assert_allclose(got, [[10.0, 10.0, 50.0, 50.0]], atol=1e-5)  # centre (30, 30), size 40 x 40
    huge = decode_boxes(np.array([[0, 0, 100.0, 100.0]], dtype=np.float32), anchor)
    np.testing.assert_allclose(huge[0, 2] - huge[0, 0], 20 * 1000 / 16, rtol=1e-5)  # dw clamped at log(1000/16)


def test_box_iou_hand_computed():
    a = np.array([[0, 0, 10, 10]], dtype=np.float32)
    b = np.array([[5, 5, 15, 15], [10, 10, 20, 20], [0, 0, 10, 10]], dtype=np.float32)
    np.testing.assert_allclose(box_iou(a, b), [[25 / 175, 0.0, 1.0]])


def test_nms_hand_computed():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 5]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], dtype=np.float32)
    # Box 3 first. IoU(3, 0) = 50 / 100 = 0.5: not above 0.5, so box 0 stays. IoU(3, 1) = 36 / 114.
    # Box 0 then drops box 1 (IoU 81 / 119 = 0.68); box 2 overlaps nothing.
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [3, 0, 2])
    # At 0.49, box 3 drops box 0 instead, so box 1 (IoU 0.32 with box 3) survives.
    np.testing.assert_array_equal(nms(boxes, scores, 0.49), [3, 1, 2])
    np.testing.assert_array_equal(nms(boxes, scores, 0.5, max_keep=2), [3, 0])
    np.testing.assert_array_equal(nms(boxes[:0], scores[:0], 0.5), np.zeros(0, dtype=np.int64))


def test_batched_nms_only_suppresses_within_a_label():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [1, 1, 11, 11], [700, 700, 800, 800]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], dtype=np.float32)
    labels = np.array([0, 1, 0, 263])
    np.testing.assert_array_equal(batched_nms(boxes, scores, labels, 0.5), [0, 1, 3])


def test_top_k_indices_prefers_low_indices_among_ties():
    values = np.array([3, 1, 3, 2, 3, 0], dtype=np.float32)
    assert sorted(top_k_indices(values, 2).tolist()) == [0, 2]
    assert sorted(top_k_indices(values, 4).tolist()) == [0, 2, 3, 4]
    assert sorted(top_k_indices(np.zeros(10, np.float32), 3, chunk=2).tolist()) == [0, 1, 2]
    assert sorted(top_k_indices(values, 10).tolist()) == list(range(6))


def test_match_anchors_hand_computed():
    anchors = np.array([[0, 0, 10, 10], [0, 0, 10, 8], [0, 0, 10, 4.5], [50, 50, 60, 60], [100, 100, 104, 104]], np.float32)
    gt = np.array([[0, 0, 10, 10], [100, 100, 110, 110]], dtype=np.float32)
    # IoUs with gt 0: 1.0, 0.8, 0.45 (ignored band 0.4..0.5), 0; anchor 4 overlaps gt 1 by 16 / 100
    # only, but it is gt 1's best anchor, so it is claimed anyway (low-quality match).
    np.testing.assert_array_equal(match_anchors(gt, anchors), [0, 0, -2, -1, 1])
    np.testing.assert_array_equal(match_anchors(gt[:0], anchors), [-1] * 5)


# -- decoding head outputs ---------------------------------------------------------------


def test_decoder_scores_filters_and_suppresses():
    model = SmallRetinaNet()
    decoder = model.decoder()
    anchors = np.concatenate(model.anchors())
    cls = np.full((len(anchors), 3), -10.0, dtype=np.float32)
    box = np.zeros((len(anchors), 4), dtype=np.float32)
    loc = 5 * 12 + 5  # P3 row 5, column 5: anchors well inside the 96x96 image
    a, overlapping = loc * 9 + 3, loc * 9 + 4  # ratio 1 at scales 16 and 20: IoU 256 / 400
    assert box_iou(anchors[[a]], anchors[[overlapping]])[0, 0] > 0.5
    cls[a, 1] = 3.0
    cls[overlapping, 1] = 2.0  # same class, overlapping: suppressed
    cls[overlapping, 2] = 1.0  # other class: kept
    cls[5, 0] = math.log(0.04 / 0.96)  # score 0.04, under the 0.05 threshold: dropped
    det = decoder(cls, box)
    np.testing.assert_array_equal(det.labels, [1, 2])
    np.testing.assert_allclose(det.scores, [1 / (1 + math.exp(-3)), 1 / (1 + math.exp(-1))], rtol=1e-6)
    np.testing.assert_allclose(det.boxes[0], anchors[a], atol=1e-5)
    assert det.boxes.min() >= 0 and det.boxes.max() <= 96  # clipped to the image


def test_decoder_keeps_the_best_per_level_and_caps_the_total():
    model = SmallRetinaNet()
    anchors = np.concatenate(model.anchors())
    cls = np.zeros((len(anchors), 3), dtype=np.float32)  # everything scores 0.5: the degenerate case
    box = np.zeros((len(anchors), 4), dtype=np.float32)
    det = model.decoder(topk_candidates=50, max_detections=30)(cls, box)
    assert len(det.scores) == 30
    assert det.boxes.dtype == np.float32 and det.labels.dtype == np.int64


# -- loss --------------------------------------------------------------------------------------


def test_retinanet_loss_hand_computed():
    cls_logits = torch.zeros(1, 3, 2)
    bbox = torch.tensor([[[0.5, 0.0, 0.0, 0.0], [9.0, 9, 9, 9], [9.0, 9, 9, 9]]])
    cls_targets = torch.tensor([[1, -1, -2]])  # positive (class 1), background, ignored
    box_targets = torch.zeros(1, 3, 4)
    focal, smooth_l1 = retinanet_loss(cls_logits, bbox, cls_targets, box_targets)
    # Every logit is 0 (p = 0.5): a focal term is alpha_t * ln 2 * 0.5^2. Anchor 0: class 1 is positive
    # (alpha 0.25), class 0 negative (0.75); anchor 1: two negatives; anchor 2 is ignored.
    per = math.log(2) * 0.25
    assert focal.item() == pytest.approx(per * (0.25 + 0.75 + 2 * 0.75), rel=1e-6)
    # Only the positive anchor regresses: |0.5| >= beta = 1/9, so 0.5 - beta / 2.
    assert smooth_l1.item() == pytest.approx(0.5 - 1 / 18, rel=1e-6)
