"""'mlgauge rcp build|check' on stored training sets: points are each converged run's last
evaluation epoch, and the verdicts are the RCP module's (itself checked against the official
rcp_checker in tests/training/test_rcp.py)."""

from __future__ import annotations

import json

from mlgauge.cli import main
from mlgauge.results.store import ResultStore
from mlgauge.results.training_record import TrainingRecord
from mlgauge.training import rcp


def _run(set_id: str, index: int, epoch: float | None, batch: int = 128) -> TrainingRecord:
    converged = epoch is not None
    evals = [{"epoch": e, "samples": 0, "seconds": 0.0, "value": 0.9} for e in range(1, int(epoch or 3) + 1)]
    return TrainingRecord(
        benchmark="resnet", dataset="synthetic", division="open", status="success" if converged else "aborted",
        reason="", time_to_train_s=10.0 if converged else None, epochs=epoch, samples=None, seed=100 * index + len(set_id),
        quality={"metric": "top1", "target": 0.95, "value": 0.96, "higher_is_better": True}, evals=evals,
        config={"global_batch_size": batch, "variant": "default", "ruleset": "4.0.0", "opt_name": "sgd"},
        log_path="", system={}, run_id=set_id, run_index=index,
    )  # fmt: skip


def _db(tmp_path, sets: dict[str, list]) -> str:
    db = tmp_path / "r.db"
    with ResultStore(db) as store:
        for set_id, epochs in sets.items():
            for i, e in enumerate(epochs):
                store.add_training(_run(set_id, i, e))
    return str(db)


REFERENCE = [5, 6, 5, 6, 6, 5, 6, 7, 5, 6]  # 10 = 2N points for resnet's N = 5


def test_build_then_check(tmp_path, capsys):
    db = _db(tmp_path, {"ref-a": REFERENCE[:5], "ref-b": REFERENCE[5:], "fast": [3, 3, 4, 3, None], "same": [6, 5, 6, 6, 5]})
    out = tmp_path / "rcps.json"
    assert main(["rcp", "build", "ref-a,ref-b", "-o", str(out), "--db", db, "--json"]) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["name"] == "resnet_ref_128"
    assert sorted(rcp.load_rcps(out)["resnet_ref_128"]["Epochs to converge"]) == sorted(REFERENCE)

    assert main(["rcp", "check", "fast", "--rcps", str(out), "--db", db, "--json"]) == 1
    fast = json.loads(capsys.readouterr().out)
    expected = rcp.check_runs(rcp.load_rcps(out), 128, [3, 3, 4, 3, None], runs_per_set=5)
    assert (fast["passed"], fast["outcome"]) == (expected.passed, expected.outcome) == (False, "RCP found")
    assert fast["suspiciously_fast"]

    assert main(["rcp", "check", "same", "--rcps", str(out), "--db", db]) == 0
    assert "RCP found" in capsys.readouterr().out


def test_too_few_points_and_mixed_configurations_are_refused(tmp_path, capsys):
    db = _db(tmp_path, {"small": [5, 6, 5, 6, 6]})
    assert main(["rcp", "build", "small", "-o", str(tmp_path / "r.json"), "--db", db]) == 2
    assert "10" in capsys.readouterr().err
    with ResultStore(tmp_path / "r.db") as store:
        store.add_training(_run("small", 5, 6, batch=256))
    assert main(["rcp", "check", "small", "--rcps", str(tmp_path / "r.json"), "--db", db]) == 2
    assert "mixes configurations" in capsys.readouterr().err
