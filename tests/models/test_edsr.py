"""EDSR: parameter counts, pixel-shuffle shapes, input units, config read back from weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mlgauge.models.edsr import DIV2K_RGB_MEAN, EDSR, config_from_state_dict, edsr_f32b5


def conv_params(c_in: int, c_out: int, k: int = 3) -> int:
    return c_in * c_out * k * k + c_out


def edsr_params(features: int, blocks: int, scale: int) -> int:
    """The EDSR paper's layout counted by hand: head, blocks, body conv, upsampler, tail."""
    stages = {2: [4], 3: [9], 4: [4, 4]}[scale]
    return (
        conv_params(3, features)
        + blocks * 2 * conv_params(features, features)
        + conv_params(features, features)
        + sum(conv_params(features, r * features) for r in stages)
        + conv_params(features, 3)
    )


def test_f32b5_parameter_count():
    model = edsr_f32b5()
    expected = edsr_params(32, 5, 2)
    # 896 + 5*18,496 + 9,248 + 36,992 + 867
    assert expected == 140_483
    assert sum(p.numel() for p in model.parameters()) == expected
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected


@pytest.mark.parametrize(("features", "blocks", "scale"), [(16, 2, 2), (8, 0, 3), (8, 1, 4), (64, 16, 2)])
def test_other_sizes_follow_the_formula(features, blocks, scale):
    model = EDSR(features, blocks, scale)
    assert sum(p.numel() for p in model.parameters()) == edsr_params(features, blocks, scale)


def test_no_batch_norm_and_pixel_shuffle_upsampler():
    model = edsr_f32b5()
    kinds = {type(m) for m in model.modules()}
    assert not any(issubclass(k, nn.modules.batchnorm._BatchNorm) for k in kinds)
    shuffles = [m for m in model.modules() if isinstance(m, nn.PixelShuffle)]
    assert [m.upscale_factor for m in shuffles] == [2]
    assert len([m for m in model.body if m.__class__.__name__ == "ResBlock"]) == 5


@pytest.mark.parametrize(("scale", "shape"), [(2, (2, 3, 10, 14)), (3, (1, 3, 10, 14)), (4, (1, 3, 5, 7))])
def test_output_is_scale_times_the_input(scale, shape):
    model = EDSR(8, 1, scale).eval()
    with torch.no_grad():
        out = model(torch.rand(*shape) * 255)
    assert out.shape == (shape[0], 3, shape[2] * scale, shape[3] * scale)


def test_pixel_shuffle_places_channels_as_sub_pixels():
    # PixelShuffle(2): channel c*4 + 2*i + j of the input becomes pixel (2y+i, 2x+j) of channel c.
    x = torch.arange(1 * 8 * 2 * 3, dtype=torch.float32).view(1, 8, 2, 3)
    out = nn.PixelShuffle(2)(x)
    assert out.shape == (1, 2, 4, 6)
    assert out[0, 1, 2 * 1 + 1, 2 * 2 + 0] == x[0, 1 * 4 + 2 * 1 + 0, 1, 2]


def test_zero_weights_give_the_mean_image_in_0_255_units():
    # With every convolution zero, only the mean shift is left: the DIV2K mean times 255, everywhere.
    model = EDSR(8, 1, 2).eval()
    for p in model.parameters():
        nn.init.zeros_(p)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 4, 4) * 255)
    expected = torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1) * 255
    torch.testing.assert_close(out, expected.expand(1, 3, 8, 8))
    assert "rgb_mean" not in model.state_dict()  # a constant, not a weight


def test_residual_scaling_scales_the_block_output():
    torch.manual_seed(0)
    a, b = EDSR(8, 1, 2, res_scale=1.0), EDSR(8, 1, 2, res_scale=0.1)
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 8, 5, 5)
    block_a, block_b = a.body[0], b.body[0]
    with torch.no_grad():
        torch.testing.assert_close(block_b(x) - x, 0.1 * (block_a(x) - x))


def test_reference_parameter_names():
    names = set(edsr_f32b5().state_dict())
    for key in ("head.0.weight", "body.0.body.0.weight", "body.4.body.2.bias", "body.5.weight", "tail.0.0.weight", "tail.1.bias"):
        assert key in names


@pytest.mark.parametrize(("features", "blocks", "scale"), [(32, 5, 2), (16, 2, 2), (8, 3, 3), (8, 0, 4)])
def test_config_read_back_from_a_state_dict(features, blocks, scale):
    state = EDSR(features, blocks, scale).state_dict()
    assert config_from_state_dict(state) == {"features": features, "blocks": blocks, "scale": scale}


def test_config_of_a_foreign_state_dict_is_a_key_error():
    with pytest.raises(KeyError):
        config_from_state_dict({"fc.weight": torch.zeros(2, 2)})


def test_bad_arguments():
    with pytest.raises(ValueError, match="upscales by"):
        EDSR(8, 1, 5)
    with pytest.raises(ValueError, match="features"):
        EDSR(0, 1, 2)
