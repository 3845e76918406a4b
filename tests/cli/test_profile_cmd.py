"""'mlgauge profile -- python script.py': a real capture of a small training script, analysed; a
script that fails part-way keeps what was recorded; bad commands are one line."""

from __future__ import annotations

import json

import pytest

from mlgauge.cli import main

SCRIPT = """
import sys
import torch
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(32 * 28 * 28, 10))
opt = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = torch.randn(4, 16, 28, 28), torch.randint(0, 10, (4,))
fail_at = int(sys.argv[1]) if len(sys.argv) > 1 else -1
for step in range(6):
    if step == fail_at:
        raise ValueError("boom")
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
"""


@pytest.fixture
def script(tmp_path):
    path = tmp_path / "train.py"
    path.write_text(SCRIPT)
    return path


def _profile(capsys, tmp_path, *command: str, replay_s: float = 0) -> tuple[int, dict | None, str]:
    code = main(["profile", "--warmup", "1", "--steps", "2", "--out", str(tmp_path / "p"), "--json",
                 "--replay-budget", str(replay_s), "--", *command])  # fmt: skip
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


def test_a_training_script_is_captured_and_its_primitives_joined(capsys, tmp_path, script):
    code, data, _ = _profile(capsys, tmp_path, "python", str(script), replay_s=2)
    assert code == 0 and data["warnings"] == []
    summary = data["summary"]
    assert summary["steps"] == 2 and summary["coverage"] > 0.5
    names = {op["name"] for op in summary["ops"]}
    assert {"aten::mkldnn_convolution", "aten::convolution_backward"} <= names
    conv = next(op for op in summary["ops"] if op["name"] == "aten::mkldnn_convolution")
    # 2 recorded steps, one forward conv each: 2 N OC OH OW IC KH KW FLOPs per call
    assert conv["flops"] == 2 * (2 * 4 * 32 * 28 * 28 * 16 * 9) and conv["bound"] in ("compute", "memory")
    dnn = summary["onednn"]
    assert dnn["attributed_fraction"] >= 0.9 and dnn["by_kind"]["convolution"]["calls"] >= 2  # fwd per step
    assert {"forward", "backward_weights"} <= set(dnn["by_direction"])
    # every module call is named: the conv's forward and its backward (through the autograd sequence number)
    conv_module = summary["modules"]["Sequential.0"]
    assert conv_module["calls"] == 2 and conv_module["forward_ms"] > 0 and conv_module["backward_ms"] > 0
    assert summary["modules"]["Sequential.3"]["backward_ms"] > 0  # the Linear
    total = sum(m["forward_ms"] + m["backward_ms"] for m in summary["modules"].values())
    assert total == pytest.approx(sum(op["self_ms"] for op in summary["ops"]))
    assert {"op": "aten::mkldnn_convolution", "calls": 2} in [{"op": r["op"], "calls": r["calls"]}
                                                              for r in summary["shapes"]]  # fmt: skip
    replayed = {row["op"]: row for row in summary["replay"]["rows"]}
    assert replayed["aten::convolution"]["calls_per_step"] == 1  # one forward conv per step
    assert 0 < summary["replay"]["ideal_step_ms"] <= summary["step_ms"]
    outside = sum(summary["outside_ops"].values()) / summary["profiled_ms"]
    assert summary["coverage"] + outside == pytest.approx(1.0, abs=0.01)
    for name in ("trace.json", "onednn_verbose.log", "summary.json", "capture.json", "trace.onednn.json.gz",
                 "profile_record.json"):  # fmt: skip
        assert (tmp_path / "p" / name).is_file()
    assert main(["results", "--runs", "--json"]) == 0
    assert data["run_id"] in capsys.readouterr().out  # stored, for the report


def test_a_script_that_fails_after_the_recorded_steps_keeps_them(capsys, tmp_path, script):
    code, data, _ = _profile(capsys, tmp_path, str(script), "4")
    assert code == 1
    assert any("the script failed (exit code 1): ValueError: boom" in w for w in data["warnings"])
    assert data["summary"]["steps"] == 2  # what was recorded is analysed, not lost


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ([], "what should be profiled?"),
        (["ls", "-l"], "give a Python script"),
        (["python", "/no/such/script.py"], "no script at /no/such/script.py"),
    ],
)
def test_bad_commands_are_one_line(capsys, tmp_path, command, message):
    code, _, err = _profile(capsys, tmp_path, *command)
    assert code == 2 and err.count("\n") == 1 and message in err


def test_a_task_profile_runs_the_benchmark_training_steps(capsys, tmp_path):
    code = main(["profile", "dlrm_dcnv2", "--variant", "tiny", "--warmup", "1", "--steps", "2",
                 "--out", str(tmp_path / "t"), "--json", "--replay-budget", "0"])  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["warnings"] == []
    summary = data["summary"]
    assert summary["steps"] == 2 and {"aten::addmm", "aten::mm"} <= {op["name"] for op in summary["ops"]}
    assert any(name.endswith("bottom_mlp.layers.0") and m["backward_ms"] > 0 for name, m in summary["modules"].items())
    record = json.loads((tmp_path / "t" / "profile_record.json").read_text())
    assert record["target"] == "dlrm_dcnv2 --train --variant tiny"


@pytest.mark.parametrize(
    ("words", "message"),
    [
        (["nosuch"], "unknown task or training benchmark 'nosuch'"),
        (["bert-99", "--train"], "bert-99 has no training benchmark to profile with --train"),
        (["resnet", "--batch", "4"], "--batch does not apply to a train profile"),
        (["resnet", "--variant", "huge"], "unknown resnet synthetic variant 'huge'"),
        (["resnet", "--fused-focal-loss"], "--fused-focal-loss does not apply to resnet"),
        (["resnet", "--bogus"], "profile resnet does not take --bogus"),
    ],
)
def test_bad_task_profiles_are_one_line(capsys, tmp_path, words, message):
    code = main(["profile", *words, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err
    assert not (tmp_path / "x").exists()


def test_a_script_that_fails_before_any_step_says_so(capsys, tmp_path, script):
    code, _, err = _profile(capsys, tmp_path, str(script), "0")
    assert code != 0 and err.count("\n") == 1
    assert "the profiler wrote no trace" in err and "ValueError: boom" in err


def _summary(folder, step_ms: float, steps: int, ops: dict[str, float], regions: dict[str, float]) -> None:
    folder.mkdir()
    data = {"steps": steps, "step_ms": step_ms, "profiled_ms": step_ms * steps,
            "ops": [{"name": n, "self_ms": ms} for n, ms in ops.items()],
            "regions": {n: {"calls": steps, "ms": ms} for n, ms in regions.items()}}  # fmt: skip
    (folder / "summary.json").write_text(json.dumps(data))


def test_diff_compares_per_step_times_of_two_profiles(capsys, tmp_path):
    _summary(tmp_path / "a", 50.0, 5, {"aten::mul": 100.0, "aten::conv": 50.0, "aten::gone": 5.0}, {"focal_loss": 60.0})
    _summary(tmp_path / "b", 40.0, 10, {"aten::mul": 20.0, "aten::conv": 110.0, "mlgauge::new": 3.0}, {"focal_loss": 10.0})
    assert main(["profile", "diff", str(tmp_path / "a"), str(tmp_path / "b"), "--json"]) == 0
    diff = json.loads(capsys.readouterr().out)
    assert diff["speedup"] == pytest.approx(1.25)
    changes = {op["name"]: (op["before_ms"], op["after_ms"]) for op in diff["ops"]}
    assert changes == {"aten::mul": (20.0, 2.0), "aten::conv": (10.0, 11.0), "aten::gone": (1.0, 0.0),
                       "mlgauge::new": (0.0, 0.3)}  # fmt: skip
    assert diff["ops"][0]["name"] == "aten::mul"  # the largest change first
    assert diff["regions"][0] == {"name": "focal_loss", "before_ms": 12.0, "after_ms": 1.0, "change_ms": -11.0}
    code = main(["profile", "diff", str(tmp_path / "a"), str(tmp_path / "nothing")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no profile at" in err


def test_summary_only_keeps_op_times_and_skips_shapes_and_the_onednn_log(capsys, tmp_path, script):
    code = main(["profile", "--summary-only", "--warmup", "1", "--steps", "2", "--out", str(tmp_path / "s"),
                 "--json", "--", str(script)])  # fmt: skip (a summary-only capture has no shapes: no replay)
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["warnings"] == []
    summary = data["summary"]
    assert summary["steps"] == 2 and summary["onednn"] == {}
    assert all(op["flops"] is None for op in summary["ops"])  # no shapes recorded, so no costs
    assert (tmp_path / "s" / "onednn_verbose.log").read_text().count("onednn_verbose") == 0
