"""ResNet-50 v1.5 matches torchvision's architecture and names; the stand-in CNN is pinned."""

from __future__ import annotations

import pytest
import torch

from mlgauge.models.resnet import InputScale, ResNet50, SmallResNet

TORCHVISION_RESNET50_PARAMS = 25_557_032  # sum(p.numel() for p in torchvision.models.resnet50().parameters())
BLOCKS = {"layer1": 3, "layer2": 4, "layer3": 6, "layer4": 3}
WIDTHS = {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}


def _bn_keys(prefix: str) -> list[str]:
    return [f"{prefix}.{s}" for s in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]


def _torchvision_resnet50_keys() -> list[str]:
    """torchvision.models.resnet50().state_dict() keys, written out from its layout."""
    keys = ["conv1.weight", *_bn_keys("bn1")]
    for layer, blocks in BLOCKS.items():
        for b in range(blocks):
            p = f"{layer}.{b}"
            for i in (1, 2, 3):
                keys += [f"{p}.conv{i}.weight", *_bn_keys(f"{p}.bn{i}")]
            if b == 0:
                keys += [f"{p}.downsample.0.weight", *_bn_keys(f"{p}.downsample.1")]
    return [*keys, "fc.weight", "fc.bias"]


def _param_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def resnet50() -> ResNet50:
    torch.manual_seed(0)
    return ResNet50().eval()


def test_resnet50_parameter_count_matches_torchvision(resnet50):
    assert _param_count(resnet50) == TORCHVISION_RESNET50_PARAMS


def test_resnet50_state_dict_keys_match_torchvision(resnet50):
    state = resnet50.state_dict()
    expected = _torchvision_resnet50_keys()
    assert len(expected) == 320
    assert sorted(state) == sorted(expected)
    assert state["fc.weight"].shape == (1000, 2048)
    assert state["fc.bias"].shape == (1000,)
    assert state["conv1.weight"].shape == (64, 3, 7, 7)
    assert state["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert state["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
    assert state["layer3.5.bn2.running_var"].shape == (256,)


def test_resnet50_v15_puts_the_stride_on_the_3x3_conv(resnet50):
    assert resnet50.layer1[0].conv2.stride == (1, 1)
    for layer in ("layer2", "layer3", "layer4"):
        first = getattr(resnet50, layer)[0]
        assert first.conv1.stride == (1, 1), layer  # v1 would put stride 2 here
        assert first.conv2.stride == (2, 2), layer
        assert first.conv2.kernel_size == (3, 3)
        assert first.downsample[0].stride == (2, 2), layer
        for block in list(getattr(resnet50, layer))[1:]:
            assert block.conv2.stride == (1, 1)
            assert block.downsample is None


def test_resnet50_spatial_sizes_through_layer2(resnet50):
    seen = {}
    hooks = [
        resnet50.layer2[0].conv1.register_forward_hook(lambda m, i, o: seen.__setitem__("conv1", o.shape)),
        resnet50.layer2[0].conv2.register_forward_hook(lambda m, i, o: seen.__setitem__("conv2", o.shape)),
        resnet50.layer4.register_forward_hook(lambda m, i, o: seen.__setitem__("layer4", o.shape)),
    ]
    try:
        with torch.no_grad():
            out = resnet50(torch.randn(2, 3, 224, 224))
    finally:
        for h in hooks:
            h.remove()
    assert out.shape == (2, 1000)
    assert seen["conv1"] == (2, 128, 56, 56)  # 1x1 conv keeps the resolution
    assert seen["conv2"] == (2, 128, 28, 28)  # the 3x3 conv halves it
    assert seen["layer4"] == (2, 2048, 7, 7)
    assert torch.isfinite(out).all()


def test_resnet50_with_1001_classes():
    model = ResNet50(num_classes=1001).eval()
    assert _param_count(model) == TORCHVISION_RESNET50_PARAMS + 2048 + 1
    assert model.state_dict()["fc.weight"].shape == (1001, 2048)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1001)


def test_input_scale_divides_each_channel():
    scale = InputScale((2.0, 4.0, 0.5))
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2) + 1
    out = scale(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out[:, 0], x[:, 0] / 2.0)
    torch.testing.assert_close(out[:, 1], x[:, 1] / 4.0)
    torch.testing.assert_close(out[:, 2], x[:, 2] * 2.0)
    # A buffer (travels with .to() and the state dict), not a trainable parameter.
    assert list(scale.parameters()) == []
    assert scale.state_dict()["scale"].shape == (1, 3, 1, 1)


def test_small_resnet_shape_and_size():
    torch.manual_seed(0)
    model = SmallResNet().eval()
    assert _param_count(model) == 308_650
    with torch.no_grad():
        assert model(torch.randn(5, 3, 32, 32)).shape == (5, 10)
    wide = SmallResNet(num_classes=7, widths=(8, 16, 32)).eval()
    with torch.no_grad():
        assert wide(torch.randn(2, 3, 32, 32)).shape == (2, 7)
