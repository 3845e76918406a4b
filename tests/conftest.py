"""Test-session setup: every test runs against a private MLGAUGE_HOME, and the
synthetic stand-in is prepared once per session for the tests that need it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import platformdirs
import pytest

_HOME = Path(tempfile.mkdtemp(prefix="mlgauge-test-home-"))


def pytest_configure(config) -> None:
    # Set before any test imports mlgauge.paths users, and inherited by worker processes.
    os.environ["MLGAUGE_HOME"] = str(_HOME)
    # Compiled operators are shared with the machine's own cache, where `make` built them at install.
    from mlgauge.ops.build import OPS_CACHE_ENV

    os.environ.setdefault(OPS_CACHE_ENV, str(Path(platformdirs.user_cache_dir("mlgauge")) / "ops"))


@pytest.fixture(scope="session")
def mlgauge_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def prepared(mlgauge_home) -> dict:
    """The resnet50 synthetic stand-in, prepared (data generated, weights trained) once."""
    from mlgauge.tasks import get_task

    return get_task("resnet50").prepare()


@pytest.fixture(scope="session")
def quick_run(prepared, tmp_path_factory) -> dict:
    """One real quick run shared by the submission and report tests: resnet50 on its
    stand-in, the three edge scenarios in both modes plus the TEST01 and TEST04 audits,
    through mlgauge's own pipeline (LoadGen worker processes, the results database)."""
    from mlgauge import inference
    from mlgauge.results.store import ResultStore

    root = tmp_path_factory.mktemp("quick-run")
    plan = inference.plan_inference(
        task="resnet50",
        scenarios=["SingleStream", "MultiStream", "Offline"],
        backend="onnxruntime",
        style="quick",
        # Shorter than quick's 2 s: these tests are about trees and reports, not the numbers.
        flags={"min_duration": 300},
        calibration_s=0.2,
        audits=["TEST01", "TEST04"],
        runs_dir=root / "logs",
    )
    db = root / "results.db"
    with ResultStore(db) as store:
        records = inference.run_inference(plan, store)
    return {"db": db, "run_id": plan.run_id, "records": records}
