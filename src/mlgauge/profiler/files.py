"""Reading the profiler's input files, plain or gzip-compressed (told by content, not by name)."""

from __future__ import annotations

import gzip
from pathlib import Path

GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when gzip; raises OSError, EOFError or gzip.BadGzipFile."""
    raw = Path(path).read_bytes()
    return gzip.decompress(raw) if raw[:2] == GZIP_MAGIC else raw
