"""Test-session setup: every test runs against a private MLGAUGE_HOME, and the
synthetic stand-in is prepared once per session for the tests that need it."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="mlgauge-test-home-"))


def pytest_configure(config) -> None:
    # Set before any test imports mlgauge.paths users, and inherited by worker processes.
    os.environ["MLGAUGE_HOME"] = str(_HOME)


@pytest.fixture(scope="session")
def mlgauge_home() -> Path:
    return _HOME


@pytest.fixture(scope="session")
def prepared(mlgauge_home) -> dict:
    """The resnet50 synthetic stand-in, prepared (data generated, weights trained) once."""
    from mlgauge.tasks import get_task

    return get_task("resnet50").prepare()
