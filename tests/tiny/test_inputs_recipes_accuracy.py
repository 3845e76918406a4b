"""The device-format codecs, the recipes' learning-rate schedules and the Tiny accuracy scoring,
checked against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mlgauge.errors import ConfigError, DataError
from mlgauge.rules.tiny import tiny_rules
from mlgauge.tiny.accuracy import clip_scores, score
from mlgauge.tiny.data import TinySplit
from mlgauge.tiny.inputs import RGB_32, InputCodec, int8_codec_for
from mlgauge.tiny.recipes import _parse, recipe_for


def test_int8_codec_covers_the_range_and_round_trips_within_half_a_step():
    features = np.array([[-51.0, 0.0, 12.75]], dtype=np.float32)
    codec = int8_codec_for(features, (3,), (3,))
    assert codec.scale == pytest.approx(63.75 / 255)  # (12.75 - -51) / 255
    assert codec.zero_point == 76  # -128 + 51 / 0.25
    q = codec.quantize(features)
    assert q.tolist() == [[-128, 76, 127]]
    back = codec.to_model(q)
    assert np.abs(back - features).max() <= codec.scale / 2 + 1e-6
    assert codec.quantize(np.array([[1e6]])).tolist() == [[127]]  # saturates, as TFLite does


def test_rgb_codec_turns_interleaved_bytes_into_planar_unit_floats():
    sample = np.zeros((1, 32, 32, 3), np.uint8)
    sample[0, 0, 1] = (255, 0, 51)  # pixel (row 0, column 1): R, G, B
    x = RGB_32.to_model(RGB_32.from_bytes(sample.tobytes()))
    assert x.shape == (1, 3, 32, 32)
    assert (x[0, 0, 0, 1], x[0, 1, 0, 1], x[0, 2, 0, 1]) == pytest.approx((1.0, 0.0, 0.2))


def test_an_input_of_the_wrong_size_is_refused():
    with pytest.raises(DataError, match="3071 bytes, the model takes 3072"):
        RGB_32.from_bytes(bytes(3071))
    codec = InputCodec("float32", (640,), (640,))
    assert codec.sample_bytes == 2560  # the ad01 window of the rules


def test_reference_recipes_follow_the_reference_schedules():
    kws = recipe_for("kws01", synthetic=False)
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=kws.learning_rate)
    sched = kws.scheduler(opt, steps_per_epoch=10)
    lrs = []
    for _ in range(36 * 10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert (lrs[0], lrs[119], lrs[120], lrs[240], lrs[-1]) == pytest.approx((5e-4, 5e-4, 1e-4, 2e-5, 2e-5))
    ic = recipe_for("ic01", synthetic=False)
    opt = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=ic.learning_rate)
    sched = ic.scheduler(opt, steps_per_epoch=2)
    for _ in range(2 * 3):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.99**3)  # lr 1e-3 * 0.99^epoch


def test_a_recipe_with_an_unknown_schedule_is_a_config_error():
    entry = {"train_samples": 1, "epochs": 1, "batch_size": 1, "learning_rate": 1e-3, "schedule": "cosine"}
    with pytest.raises(ConfigError, match="schedule 'cosine'"):
        _parse({"kws01": {"synthetic": entry}}, "tiny_recipes.toml")


def test_ad_scores_are_averaged_per_clip_and_judged_by_auc():
    groups = np.array([0, 0, 1, 1, 1, 2])
    outputs = np.array([[1.0], [3.0], [0.5], [0.5], [2.0], [4.0]])
    assert clip_scores(outputs, groups, 3).tolist() == pytest.approx([2.0, 1.0, 4.0])
    split = TinySplit(np.zeros((6, 640), np.float32), np.array([0, 0, 1]), groups)
    result = score(tiny_rules().benchmark("ad01"), split, outputs)
    # anomalous clip 2 scores 4.0, above both normal clips: every pair is ordered right
    assert result["value"] == 1.0 and result["passed"] and result["samples"] == 3
    split = TinySplit(np.zeros((6, 640), np.float32), np.array([0, 1, 0]), groups)
    assert score(tiny_rules().benchmark("ad01"), split, outputs)["value"] == 0.0  # clip 1 scores lowest


def test_classifiers_score_top1_against_the_target():
    outputs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    split = TinySplit(np.zeros((4, 96, 96, 3), np.uint8), np.array([0, 1, 1, 1]))
    result = score(tiny_rules().benchmark("vww01"), split, outputs)
    assert result == {"metric": "top1", "value": 0.75, "target": 0.8, "passed": False, "samples": 4}
