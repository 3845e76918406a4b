"""The real-data path: an ImageNet-format folder and user weights, end to end through LoadGen."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from mlgauge.cli import main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    lines = []
    for i in range(1, 7):
        name = f"ILSVRC2012_val_{i:08d}.JPEG"
        size = (300 + 20 * i, 260 + 10 * i)
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(root / name, quality=90)
        lines.append(f"{name} {i * 7}")
    (root / "val_map.txt").write_text("\n".join(lines) + "\n")
    return root


def _run(capsys, argv):
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)["records"]


def test_torch_state_dict_on_imagenet_folder(capsys, tmp_path, imagenet):
    import torch

    from mlgauge.models.resnet import ResNet50

    torch.manual_seed(0)
    weights = tmp_path / "resnet50.pt"
    torch.save(ResNet50().state_dict(), weights)
    records = _run(
        capsys,
        ["run", "--dataset", str(imagenet), "--weights", str(weights), "--backend", "torch",
         "--scenario", "SingleStream", "--mode", "both", "--min-duration", "200", "--calibration-s", "0.1",
         "--json", "--db", str(tmp_path / "r.db"), "--output-dir", str(tmp_path / "logs")],
    )
    by_mode = {r["mode"]: r for r in records}
    assert by_mode["performance"]["dataset"] == "imagenet"
    assert by_mode["performance"]["metric"]["value"] > 0
    acc = by_mode["accuracy"]["accuracy"]
    assert acc["samples"] == 6
    assert acc["target"]["threshold"] == pytest.approx(75.6954)
    assert acc["passed"] is False  # random weights


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")
def test_user_onnx_with_1001_classes(capsys, tmp_path, imagenet):
    """A user ONNX model in MLPerf's 1001-class layout: class 0 is background, so predictions shift by one."""
    import torch

    class Fixed(torch.nn.Module):
        # Always answers class k+1 in a 1001-way output, i.e. ImageNet class k.
        def forward(self, x):
            logits = torch.zeros(x.shape[0], 1001) + x.mean() * 0
            logits[:, 8] = 1.0
            return logits

    onnx_path = tmp_path / "fixed.onnx"
    torch.onnx.export(Fixed(), (torch.zeros(2, 3, 224, 224),), str(onnx_path), input_names=["input"],
                      output_names=["out"], dynamic_axes={"input": {0: "n"}}, dynamo=False)
    records = _run(
        capsys,
        ["run", "--dataset", str(imagenet), "--weights", str(onnx_path), "--backend", "onnxruntime",
         "--scenario", "Offline", "--mode", "accuracy", "--calibration-s", "0.1",
         "--json", "--db", str(tmp_path / "r.db"), "--output-dir", str(tmp_path / "logs")],
    )
    (record,) = records
    # Labels are 7, 14, ..., 42; the model always says 7: exactly one of six is right.
    assert record["accuracy"]["value"] == pytest.approx(100 / 6)
