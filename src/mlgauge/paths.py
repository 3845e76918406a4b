"""Where mlgauge keeps data, caches and results.

``MLGAUGE_HOME`` moves everything under one folder (tests and CI use it);
otherwise the platform's user cache and data directories are used.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from mlgauge.errors import OutputError


def home() -> Path | None:
    value = os.environ.get("MLGAUGE_HOME")
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    """Prepared datasets, trained weights, exported models: safe to delete."""
    root = home()
    return root / "cache" if root else Path(platformdirs.user_cache_dir("mlgauge"))


def data_dir() -> Path:
    """The results database and the raw LoadGen logs of every run."""
    root = home()
    return root / "data" if root else Path(platformdirs.user_data_dir("mlgauge"))


def default_db_path() -> Path:
    return data_dir() / "results.db"


def default_runs_dir() -> Path:
    return data_dir() / "runs"


def ensure_writable_dir(path: Path, what: str) -> Path:
    """Create ``path`` if needed and prove it is writable before any work starts."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".mlgauge-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(
            f"cannot write the {what} to {path}: {exc.strerror or exc}",
            hint="Choose a writable directory (--output-dir) or fix its permissions",
        ) from None
    return path
