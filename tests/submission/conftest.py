"""The submission tests work on the session's real quick run (tests/conftest.py: quick_run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlgauge.results.record import ResultRecord
from mlgauge.submission.tree import build_tree

SCENARIOS = ["SingleStream", "MultiStream", "Offline"]


@pytest.fixture(scope="session")
def submission_run(quick_run) -> dict:
    return quick_run


@pytest.fixture(scope="session")
def run_records(submission_run) -> list[ResultRecord]:
    return submission_run["records"]


@pytest.fixture(scope="session")
def quick_tree(submission_run, tmp_path_factory) -> Path:
    """The tree exactly as 'mlgauge submit' writes it from the quick run."""
    return build_tree(submission_run["records"], tmp_path_factory.mktemp("quick") / "tree")
