"""One real quick run shared by the submission tests: resnet50 on its synthetic stand-in,
the three edge scenarios in both modes plus the TEST01 and TEST04 audits, through
mlgauge's own pipeline (LoadGen worker processes, the results database)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlgauge import inference
from mlgauge.results.record import ResultRecord
from mlgauge.results.store import ResultStore
from mlgauge.submission.tree import build_tree

SCENARIOS = ["SingleStream", "MultiStream", "Offline"]


@pytest.fixture(scope="session")
def submission_run(prepared, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("submission-run")
    plan = inference.plan_inference(
        task="resnet50",
        scenarios=SCENARIOS,
        backend="onnxruntime",
        style="quick",
        # Shorter than quick's 2 s: these tests are about the tree, not the numbers.
        flags={"min_duration": 300},
        calibration_s=0.2,
        audits=["TEST01", "TEST04"],
        runs_dir=root / "logs",
    )
    db = root / "results.db"
    with ResultStore(db) as store:
        records = inference.run_inference(plan, store)
    return {"db": db, "run_id": plan.run_id, "records": records}


@pytest.fixture(scope="session")
def run_records(submission_run) -> list[ResultRecord]:
    return submission_run["records"]


@pytest.fixture(scope="session")
def quick_tree(submission_run, tmp_path_factory) -> Path:
    """The tree exactly as 'mlgauge submit' writes it from the quick run."""
    return build_tree(submission_run["records"], tmp_path_factory.mktemp("quick") / "tree")
