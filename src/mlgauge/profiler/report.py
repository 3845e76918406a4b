"""A capture's files turned into one summary, keeping whatever part of them is readable.

A missing or unreadable oneDNN log (no primitive ran, or the build does not print verbose lines)
is a warning, not a failure: the trace alone still gives the op breakdown. A log without
timestamps cannot be joined to the trace and is summarised on its own. A joined log also gives
a Chrome/Perfetto trace with the primitives merged in next to the ops that ran them.
"""

from __future__ import annotations

from mlgauge.errors import DataError
from mlgauge.profiler.attribute import attribute
from mlgauge.profiler.capture import Capture
from mlgauge.profiler.chrome import export_merged_trace
from mlgauge.profiler.kineto import load_kineto_trace
from mlgauge.profiler.onednn import OneDnnLogError, load_onednn_log
from mlgauge.profiler.peaks import machine_peaks
from mlgauge.profiler.replay import replay_heavy_ops
from mlgauge.profiler.summary import ProfileSummary, summarize


def analyze_capture(capture: Capture, *, replay_budget_s: float | None = None) -> ProfileSummary:
    """``replay_budget_s``: also replay the heaviest ops alone (profiler/replay.py) within that many
    seconds, for the ideal step time; full captures only (a replay needs the input shapes)."""
    trace = load_kineto_trace(capture.trace_path)
    warnings: list[str] = []
    notes: list[str] = []
    log = attribution = None
    try:
        log = load_onednn_log(capture.onednn_path)
    except OneDnnLogError as exc:
        if capture.summary_only:
            pass
        elif _no_verbose_lines(capture):
            notes.append("no op in these steps ran a oneDNN primitive (on CPU, fp32 matmuls go to MKL or "
                         "OpenBLAS; convolutions and bf16 matmuls go to oneDNN)")  # fmt: skip
        else:
            warnings.append(f"no oneDNN primitives to analyze: {exc}")
    if log is not None:
        try:
            attribution = attribute(log, trace)
        except DataError as exc:
            warnings.append(f"oneDNN primitives not joined to ops: {exc}")
    if attribution is not None:
        try:
            export_merged_trace(capture.trace_path, log, attribution, capture.merged_trace_path)
        except DataError as exc:
            warnings.append(f"no merged trace: {exc}")
    summary = summarize(trace, log, attribution, machine_peaks())
    if replay_budget_s and not capture.summary_only:
        try:
            summary.replay = replay_heavy_ops(trace, budget_s=replay_budget_s).to_dict()
        except DataError as exc:
            warnings.append(f"no replay: {exc}")
    summary.warnings = warnings + summary.warnings
    summary.notes += notes
    return summary


def _no_verbose_lines(capture: Capture) -> bool:
    """The child ran with verbose on, so an empty log means no primitive was created."""
    try:
        text = capture.onednn_path.read_bytes()
    except OSError:
        return False
    return b"onednn_verbose" not in text and b"dnnl_verbose" not in text
