"""What every stored record type shares: a dataclass written and read back as JSON."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Self

from mlgauge import paths


class JsonRecord:
    """Mixin for the record dataclasses (inference, training, Tiny)."""

    def to_dict(self) -> dict:
        return asdict(self)  # type: ignore[call-overload]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def _write(self, folder: Path, filename: str) -> Path:
        """The record as indented JSON in ``folder/filename``, atomically (readers never see half a file)."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str)
        return paths.write_text_atomic(Path(folder) / filename, text)

    @classmethod
    def from_dict(cls, data: dict) -> Self:
        """Fields this version knows; keys written by a newer version are left out."""
        known = set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
        return cls(**{k: v for k, v in data.items() if k in known})
