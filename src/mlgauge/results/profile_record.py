"""What one profile found: where a step's time went, op by op, and which bottlenecks that suggests.

Its own record type beside inference's ResultRecord, training's TrainingRecord and TinyRecord: a
profile measures no MLPerf metric. It keeps the profiler's whole summary (``summary.json``) next to
the machine's roofline ceilings and the bottleneck hints that fired, so the report can redraw every
breakdown and roofline later without the profile folder. The summary's optional parts ("modules",
"shapes", "replay") are kept as they come; readers treat each as possibly absent.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mlgauge.results.json_record import JsonRecord
from mlgauge.results.system import describe_system

PROFILE_RECORD_SCHEMA = 1


@dataclass
class ProfileRecord(JsonRecord):
    target: str  # what was profiled: the command line ("python train.py --bs 8") or "task ssd --train"
    folder: str  # the profile folder: trace, oneDNN log, summary.json
    steps: int  # ProfilerStep windows recorded; 0: the whole command was recorded as one window
    step_ms: float | None  # their mean wall time; None when steps is 0
    coverage: float  # share (0-1) of the profiled time spent inside named PyTorch ops
    # MachinePeaks.to_dict(): {"gemm_gflops": {dtype: GFLOP/s}, "triad_gbs", "copy_gbs", "quick", ...};
    # {} when no peaks were measured (a summary-only capture)
    peaks: dict
    summary: dict  # ProfileSummary.to_dict(), as summary.json holds it
    bottlenecks: list[dict]  # the hints that fired, largest share first: {"title", "advice", "share"}
    system: dict
    warnings: list[str] = field(default_factory=list)  # the capture's and the analysis's
    label: str = ""  # a name the user gave this profile ("baseline", "channels_last")
    mlgauge_version: str = ""
    run_id: str = ""
    record_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))
    schema: int = PROFILE_RECORD_SCHEMA

    @classmethod
    def from_summary(
        cls,
        summary: dict,
        *,
        target: str,
        folder: str | Path,
        peaks: dict | None,
        bottlenecks: list[dict],
        run_id: str,
        label: str = "",
        warnings: list[str] | None = None,
    ) -> ProfileRecord:
        """A record of ``summary`` (ProfileSummary.to_dict()) measured on this machine now.
        ``warnings`` default to the summary's own."""
        from mlgauge import __version__

        return cls(
            target=target, folder=str(folder), steps=int(summary.get("steps") or 0),
            step_ms=summary.get("step_ms"), coverage=float(summary.get("coverage") or 0.0),
            peaks=dict(peaks or {}), summary=summary, bottlenecks=list(bottlenecks), system=describe_system(),
            warnings=list(summary.get("warnings", []) if warnings is None else warnings),
            label=label, mlgauge_version=__version__, run_id=run_id,
        )  # fmt: skip

    @property
    def per_step_unit(self) -> str:
        return "ms/step" if self.steps else "ms"

    def per_step(self, ms: float | None) -> float | None:
        """A time summed over the profiled steps as ms per step (the whole run's ms when steps is 0)."""
        if ms is None:
            return None
        return ms / self.steps if self.steps else ms

    @property
    def ops(self) -> list[dict]:
        """Every op row, largest self time first."""
        return sorted(self.summary.get("ops", []), key=lambda r: r.get("self_ms") or 0.0, reverse=True)

    def roofline_ops(self) -> list[dict]:
        """The ops a log-log roofline can place: FLOPs, bytes and a measured rate all above zero.
        Pure data movement (0 FLOPs: copies, reorders) has no point on a log FLOP/s axis."""
        return [
            r for r in self.ops
            if (r.get("flops") or 0) > 0 and (r.get("bytes") or 0) > 0 and (r.get("achieved_gflops") or 0) > 0
            and (r.get("costed_ms") or 0) > 0
        ]  # fmt: skip

    @property
    def roofs(self) -> dict[str, float]:
        """dtype -> compute roof in GFLOP/s, for each dtype whose GEMM peak was measured."""
        return {k: float(v) for k, v in (self.peaks.get("gemm_gflops") or {}).items() if v}

    @property
    def triad_gbs(self) -> float | None:
        value = self.peaks.get("triad_gbs")
        return float(value) if value else None

    def save(self, folder: Path) -> Path:
        """Write ``profile_record.json`` into the profile folder."""
        return self._write(folder, "profile_record.json")
