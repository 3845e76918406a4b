"""Every catalogue task end to end: its prepared stand-in, exported to ONNX, driven
by LoadGen in SingleStream and Offline, both modes, scored from the accuracy log.

The unit tests of each task check its parts; this one checks that the parts meet
in a real worker process under the task's own rules round (the MLPerf Mobile
tasks run under rules without MultiStream or Server).
"""

from __future__ import annotations

import json

import pytest

from mlgauge.cli import main
from mlgauge.tasks import get_task, task_names

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("task", task_names())
def test_task_runs_through_loadgen_and_meets_its_stand_in_target(capsys, tmp_path, task):
    argv = [
        "run", "--task", task, "--backend", "onnxruntime", "--scenario", "SingleStream,Offline", "--mode", "both",
        "--count", "96", "--min-duration", "300", "--calibration-s", "0.2", "--json",
        "--db", str(tmp_path / "results.db"), "--output-dir", str(tmp_path / "logs"),
    ]  # fmt: skip
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    records = json.loads(out)["records"]
    seen = {(r["scenario"], r["mode"]) for r in records}
    assert seen == {(s, m) for s in ("SingleStream", "Offline") for m in ("performance", "accuracy")}
    for r in records:
        assert r["dataset"] == "synthetic"
        assert r["settings"]["scenario"] == r["scenario"]
        if r["mode"] == "performance":
            assert r["metric"]["value"] > 0
        else:
            acc = r["accuracy"]
            assert acc["samples"] == 96
            threshold = acc["target"]["threshold"]
            assert acc["passed"], f"{task} {r['scenario']}: {acc['value']:.2f} < target {threshold:.2f}"
            assert acc["value"] >= threshold
    assert get_task(task).is_prepared()
