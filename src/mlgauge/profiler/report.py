"""A capture's files turned into one summary, keeping whatever part of them is readable.

A missing or unreadable oneDNN log (no primitive ran, or the build does not print verbose lines)
is a warning, not a failure: the trace alone still gives the op breakdown. A log without
timestamps cannot be joined to the trace and is summarised on its own.
"""

from __future__ import annotations

from mlgauge.errors import DataError
from mlgauge.profiler.attribute import attribute
from mlgauge.profiler.capture import Capture
from mlgauge.profiler.kineto import load_kineto_trace
from mlgauge.profiler.onednn import OneDnnLogError, load_onednn_log
from mlgauge.profiler.peaks import machine_peaks
from mlgauge.profiler.summary import ProfileSummary, summarize


def analyze_capture(capture: Capture) -> ProfileSummary:
    trace = load_kineto_trace(capture.trace_path)
    warnings: list[str] = []
    log = attribution = None
    try:
        log = load_onednn_log(capture.onednn_path)
    except OneDnnLogError as exc:
        if not capture.summary_only:
            warnings.append(f"no oneDNN primitives to analyze: {exc}")
    if log is not None:
        try:
            attribution = attribute(log, trace)
        except DataError as exc:
            warnings.append(f"oneDNN primitives not joined to ops: {exc}")
    summary = summarize(trace, log, attribution, machine_peaks())
    summary.warnings = warnings + summary.warnings
    return summary
