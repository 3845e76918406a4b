"""Two profiles side by side: the step time, and each op's self time per step, before and after.

Per-step figures make profiles of different step counts comparable; an op present on one side
only shows as appeared or gone. Ops are listed by how much they changed, largest first.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from mlgauge.errors import DataError

SUMMARY = "summary.json"


@dataclass
class OpChange:
    name: str
    before_ms: float  # self time per step (0: not in that profile's top ops)
    after_ms: float

    @property
    def change_ms(self) -> float:
        return self.after_ms - self.before_ms


@dataclass
class ProfileDiff:
    before: str
    after: str
    before_step_ms: float | None
    after_step_ms: float | None
    ops: list[OpChange]
    regions: list[OpChange]  # record_function regions (a loss, a module), ms per step

    @property
    def speedup(self) -> float | None:
        if not self.before_step_ms or not self.after_step_ms:
            return None
        return self.before_step_ms / self.after_step_ms

    def to_dict(self) -> dict:
        def rows(changes: list[OpChange]) -> list[dict]:
            return [asdict(c) | {"change_ms": c.change_ms} for c in changes]

        return asdict(self) | {"speedup": self.speedup, "ops": rows(self.ops), "regions": rows(self.regions)}


def load_summary(folder: Path) -> dict:
    path = Path(folder) / SUMMARY if Path(folder).is_dir() else Path(folder)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"no profile at {folder}", hint="Give a folder written by 'mlgauge profile --out'") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not a readable profile summary: {exc}", hint="Profile again") from None
    if not isinstance(data, dict) or "ops" not in data or "profiled_ms" not in data:
        raise DataError(f"{path} is not a profile summary", hint="Give a folder written by 'mlgauge profile --out'")
    return data


def _per_step(summary: dict) -> dict[str, float]:
    steps = summary.get("steps") or 1
    return {op["name"]: op["self_ms"] / steps for op in summary["ops"]}


def _changes(a: dict[str, float], b: dict[str, float]) -> list[OpChange]:
    changes = [OpChange(n, a.get(n, 0.0), b.get(n, 0.0)) for n in set(a) | set(b)]
    return sorted(changes, key=lambda c: abs(c.change_ms), reverse=True)


def _regions_per_step(summary: dict) -> dict[str, float]:
    steps = summary.get("steps") or 1
    return {name: v["ms"] / steps for name, v in (summary.get("regions") or {}).items()}


def diff_profiles(before: Path, after: Path) -> ProfileDiff:
    a, b = load_summary(before), load_summary(after)
    return ProfileDiff(
        str(before), str(after), a.get("step_ms"), b.get("step_ms"),
        _changes(_per_step(a), _per_step(b)), _changes(_regions_per_step(a), _regions_per_step(b)),
    )  # fmt: skip
