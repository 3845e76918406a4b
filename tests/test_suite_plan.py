"""Planning a suite: every required task gets a plan; real files go to the tasks they name."""

from __future__ import annotations

from pathlib import Path

from mlgauge.rules import suite
from mlgauge.suite import plan_suite


def test_edge_suite_plans_every_required_task_and_scenario(tmp_path):
    splan = plan_suite("edge", backend="onnxruntime", runs_dir=tmp_path)
    assert splan.unplannable == {}
    assert set(splan.plans) == set(suite("edge").required)
    for task, plan in splan.plans.items():
        assert plan.scenarios == list(suite("edge").required[task])
        assert plan.run_id == splan.run_id  # one suite run, one id
    assert splan.cooldown_s == 0.0  # quick style: no cooldown unless asked


def test_real_dataset_and_weights_go_to_the_named_task_only(tmp_path):
    data = tmp_path / "imagenet"
    data.mkdir()
    weights = tmp_path / "resnet50.onnx"
    weights.write_bytes(b"")
    splan = plan_suite(
        "edge", backend="onnxruntime", runs_dir=tmp_path, datasets={"resnet50": data}, weights={"resnet50": weights}
    )
    assert Path(splan.plans["resnet50"].base.dataset_path) == data.resolve()
    assert Path(splan.plans["resnet50"].base.weights_path) == weights.resolve()
    others = [p.base for t, p in splan.plans.items() if t != "resnet50"]
    assert others and all(b.dataset_path is None and b.weights_path is None for b in others)


def test_mobile_suite_uses_the_mobile_round_and_its_cooldown_in_valid_style(tmp_path):
    splan = plan_suite("mobile", backend="onnxruntime", runs_dir=tmp_path, style="valid")
    assert splan.unplannable == {}
    assert set(splan.plans) == {"mobilenet-v4", "mobiledet", "mosaic", "mobilebert", "edsr"}
    assert splan.cooldown_s == suite("mobile").cooldown_s == 60
    assert {p.base.rules_round for p in splan.plans.values()} == {"mobile-v6.0"}
