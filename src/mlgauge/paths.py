"""Where mlgauge keeps data, caches and results.

``MLGAUGE_HOME`` moves everything under one folder (tests and CI use it);
otherwise the platform's user cache and data directories are used.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from pathlib import Path
from secrets import token_hex

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


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically: see :func:`write_bytes_atomic`."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: Path, payload: bytes) -> Path:
    """Write through a temp file and a rename: readers never see half a file, and a failure
    leaves the old file (or none) behind. Raises OSError for the caller to explain."""
    path = Path(path)
    # Named per process and thread, so concurrent writers of one file never share a temp file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(payload)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    return path


def replace_folder(built: Path, target: Path) -> None:
    """Put the finished folder ``built`` at ``target``. A folder cannot be renamed over a
    non-empty one, so an old ``target`` is moved aside first, and back if the swap fails."""
    aside = None
    if target.exists():
        aside = target.parent / f".{target.name}.old-{token_hex(4)}"
        os.rename(target, aside)
    try:
        os.rename(built, target)
    except OSError:
        if aside is not None:
            os.rename(aside, target)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
