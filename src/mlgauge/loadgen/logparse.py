"""Read the files LoadGen writes (``mlperf_log_detail.txt``, ``mlperf_log_accuracy.json``).

Only the machine-readable files are parsed: the summary text is meant for
people and its wording changes between LoadGen versions, while the detail
log's keys are what the MLPerf submission checker reads.

Which key is a scenario's headline metric (``early_stopping_latency_ss``,
``result_completed_samples_per_sec``, ...) is rule data, so callers pass it;
this module only turns the log into plain values.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from mlgauge.errors import RunError

__all__ = [
    "DetailLog",
    "decode_accuracy_log",
    "early_stopping",
    "effective_settings",
    "latency_percentiles",
    "parse_detail_log",
    "read_accuracy_log",
    "result_stats",
    "validity",
]

_MLLOG_PREFIX = ":::MLLOG "

# LoadGen prints non-finite doubles the C++ way (``inf``, ``nan``), which is
# not JSON; a run with a single query divides by zero in its QPS fields.
_NON_FINITE = re.compile(r'("value":\s*)(-?)(inf|nan)\b', re.IGNORECASE)

_SAMPLE_LATENCY = re.compile(r"^result_(min|max|mean)_latency_ns$")
_SAMPLE_PERCENTILE = re.compile(r"^result_(\d+(?:\.\d+)?)_percentile_latency_ns$")
_QUERY_LATENCY = re.compile(r"^result_(min|max|mean)_query_latency_ns$")
_QUERY_PERCENTILE = re.compile(r"^result_(\d+(?:\.\d+)?)_percentile_per_query_latency_ns$")

# result_* keys that validity() interprets; result_stats() leaves them out.
_VALIDITY_KEYS = {
    "result_validity",
    "result_invalid_reason",
    "result_min_duration_met",
    "result_min_queries_met",
    "result_perf_constraints_met",
}

_POWER_TIME_FORMAT = "%m-%d-%Y %H:%M:%S.%f"


@dataclass
class DetailLog:
    """The entries of one ``mlperf_log_detail.txt``.

    ``values`` keeps the last occurrence of each key: a few keys (e.g.
    ``generic_message``) repeat, and for results the last one is the final word.
    """

    values: dict[str, object]
    errors: list[str]
    warnings: list[str]
    path: Path | None = field(default=None, compare=False)


def _loads_entry(text: str) -> dict | None:
    try:
        entry = json.loads(text)
    except json.JSONDecodeError:
        try:
            entry = json.loads(_NON_FINITE.sub(_non_finite_json, text))
        except json.JSONDecodeError:
            return None
    return entry if isinstance(entry, dict) and "key" in entry else None


def _non_finite_json(match: re.Match[str]) -> str:
    word = "NaN" if match.group(3).lower() == "nan" else f"{match.group(2)}Infinity"
    return match.group(1) + word


def parse_detail_log(path: Path) -> DetailLog:
    """Parse ``mlperf_log_detail.txt``; other lines (stdout copies, blanks) are ignored.

    A line that is cut off (a crash mid-write) is skipped rather than fatal, so
    what LoadGen did record stays readable; a file with no entry at all is an error.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise RunError(
            "LoadGen detail log not found",
            hint="Check that the run finished and that log_output.outdir points at this folder",
            file=path,
        ) from None
    except OSError as err:
        raise RunError(f"cannot read LoadGen detail log: {err.strerror}", file=path) from None

    values: dict[str, object] = {}
    errors: list[str] = []
    warnings: list[str] = []
    for line in text.splitlines():
        start = line.find(_MLLOG_PREFIX)
        if start < 0:
            continue
        entry = _loads_entry(line[start + len(_MLLOG_PREFIX) :])
        if entry is None:
            continue
        key = str(entry["key"])
        value = entry.get("value")
        values[key] = value
        metadata = entry.get("metadata") or {}
        if isinstance(metadata, dict):
            if metadata.get("is_error"):
                errors.append(f"{key}: {value}")
            if metadata.get("is_warning"):
                warnings.append(f"{key}: {value}")

    if not values:
        raise RunError(
            "LoadGen detail log has no ':::MLLOG' entries",
            hint="The run probably crashed before LoadGen wrote its log; rerun and check the worker output",
            file=path,
        )
    return DetailLog(values=values, errors=errors, warnings=warnings, path=path)


def _number(value: object) -> float | None:
    # bool is an int subclass, but True is not a latency.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _fmt(value: float) -> str:
    return f"{value:.6f}".rstrip("0").rstrip(".") if value == value else "nan"


def _ms(ns: float) -> str:
    return _fmt(ns / 1e6)


def _percentile_label(number: str) -> str:
    return f"p{float(number):g}"


def _power_span_ms(values: dict[str, object]) -> float | None:
    begin, end = values.get("power_begin"), values.get("power_end")
    if not isinstance(begin, str) or not isinstance(end, str):
        return None
    try:
        span = datetime.strptime(end, _POWER_TIME_FORMAT) - datetime.strptime(begin, _POWER_TIME_FORMAT)
    except ValueError:
        return None
    return span.total_seconds() * 1000.0


def _run_duration_ms(values: dict[str, object]) -> float | None:
    """The time LoadGen compared with min_duration, rebuilt from logged results.

    The detail log has no duration key, but per scenario LoadGen checks a time
    it also divides into a logged rate (results.cc): Offline uses the max
    latency, Server the final query's scheduled time = (samples-1)/scheduled
    rate, SingleStream the final issue time = (samples-1)/QPS with overhead.
    MultiStream logs no rate, so fall back to the power_begin/power_end span.
    """
    scenario = values.get("effective_scenario")
    count = _number(values.get("result_query_count"))
    if scenario == "Offline":
        max_ns = _number(values.get("result_max_latency_ns"))
        if max_ns is not None:
            return max_ns / 1e6
    rate_key = {
        "Server": "result_scheduled_samples_per_sec",
        "SingleStream": "result_qps_with_loadgen_overhead",
    }.get(str(scenario))
    rate = _number(values.get(rate_key)) if rate_key else None
    if count is not None and rate:
        return (count - 1) / rate * 1000.0
    return _power_span_ms(values)


def _shorten(text: str, limit: int = 120) -> str:
    # early_stopping_result is a bullet list flattened into one line.
    text = " ".join(text.replace("*", " ").split())
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _latency_reason(values: dict[str, object]) -> str:
    fraction = _number(values.get("effective_target_latency_percentile"))
    bound = _number(values.get("effective_target_latency_ns"))
    label = _percentile_label(f"{fraction * 100:.2f}") if fraction is not None else "percentile"
    measured = None
    if fraction is not None:
        measured = _number(values.get(f"result_{fraction * 100:.2f}_percentile_latency_ns"))
    text = f"latency: {label}"
    if measured is not None:
        text += f" {_ms(measured)} ms"
    text += " over the"
    if bound is not None:
        text += f" {_ms(bound)} ms"
    return text + " bound"


def validity(log: DetailLog) -> tuple[str, list[str]]:
    """("VALID" | "INVALID", reasons) as LoadGen decided it, with short explanations.

    Each reason starts with a stable id (``min_duration``, ``min_queries``,
    ``latency``, ``early_stopping``, ``loadgen_errors``) followed by ": " and
    the numbers behind it.
    """
    values = log.values
    verdict = values.get("result_validity")
    if verdict not in ("VALID", "INVALID"):
        mode = values.get("effective_test_mode")
        raise RunError(
            "LoadGen detail log has no result_validity",
            hint=(
                "Accuracy-mode runs have no performance result; score the accuracy log instead"
                if mode == "AccuracyOnly"
                else "The run did not reach its summary; rerun and check the worker output"
            ),
            file=log.path,
        )

    reasons: list[str] = []
    if values.get("result_min_duration_met") is False:
        needed = _number(values.get("effective_min_duration_ms"))
        ran = _run_duration_ms(values)
        ran_text = f"ran {_fmt(round(ran, 3))} ms" if ran is not None else "ran too briefly"
        needed_text = f", needed {_fmt(needed)} ms" if needed is not None else ""
        reasons.append(f"min_duration: {ran_text}{needed_text}")
    if values.get("result_min_queries_met") is False:
        queries = _number(values.get("result_query_count"))
        per_query = _number(values.get("effective_samples_per_query")) or 1.0
        min_queries = _number(values.get("effective_min_query_count"))
        min_samples = _number(values.get("effective_min_sample_count"))
        ran_text = (
            f"ran {_fmt(queries)} queries ({_fmt(queries * per_query)} samples)"
            if queries is not None
            else "ran too few queries"
        )
        needs = []
        if min_queries is not None:
            needs.append(f"{_fmt(min_queries)} queries")
        if min_samples is not None:
            needs.append(f"{_fmt(min_samples)} samples")
        reasons.append(f"min_queries: {ran_text}" + (f", needed {' and '.join(needs)}" if needs else ""))
    if values.get("result_perf_constraints_met") is False:
        reasons.append(_latency_reason(values))
    if values.get("early_stopping_met") is False:
        texts = [
            str(values[key])
            for key in ("early_stopping_result", "early_stopping_ttft_result", "early_stopping_tpot_result")
            if values.get(key)
        ]
        reasons.append("early_stopping: " + (_shorten(" ".join(texts)) if texts else "not met"))
    num_errors = _number(values.get("num_errors")) or 0.0
    error_count = max(int(num_errors), len(log.errors))
    if error_count:
        reasons.append(f"loadgen_errors: {error_count}")
    if verdict == "INVALID" and not any(r.split(":", 1)[0] != "loadgen_errors" for r in reasons):
        # A failed check this parser does not know yet; keep LoadGen's own words.
        reasons.append("other: " + _shorten(str(values.get("result_invalid_reason") or "no reason logged")))
    return str(verdict), reasons


def latency_percentiles(log: DetailLog, per_query: bool = False) -> dict[str, float]:
    """Latencies in ns keyed "min", "max", "mean", "p50" ... "p99.9".

    Per sample by default. MultiStream's metric is per *query* (the slowest of
    its samples), logged under separate keys: pass ``per_query=True`` for those.
    """
    stat_re, pct_re = (
        (_QUERY_LATENCY, _QUERY_PERCENTILE) if per_query else (_SAMPLE_LATENCY, _SAMPLE_PERCENTILE)
    )
    out: dict[str, float] = {}
    for key, value in log.values.items():
        number = _number(value)
        if number is None:
            continue
        if match := stat_re.match(key):
            out[match.group(1)] = number
        elif match := pct_re.match(key):
            out[_percentile_label(match.group(1))] = number
    return out


def early_stopping(log: DetailLog) -> dict:
    """All ``early_stopping_*`` entries, full key names kept (they are metric keys)."""
    return {key: value for key, value in log.values.items() if key.startswith("early_stopping_")}


def effective_settings(log: DetailLog) -> dict:
    """The settings LoadGen actually used (``effective_*``), prefix stripped."""
    prefix = "effective_"
    return {key[len(prefix) :]: value for key, value in log.values.items() if key.startswith(prefix)}


def result_stats(log: DetailLog) -> dict:
    """Scalar ``result_*`` entries not covered by validity() or latency_percentiles().

    Query counts, rates (samples/s, QPS) and token statistics land here.
    """
    out: dict[str, object] = {}
    for key, value in log.values.items():
        if not key.startswith("result_") or key in _VALIDITY_KEYS:
            continue
        if any(
            p.match(key) for p in (_SAMPLE_LATENCY, _SAMPLE_PERCENTILE, _QUERY_LATENCY, _QUERY_PERCENTILE)
        ):
            continue
        if isinstance(value, str | int | float | bool):
            out[key] = value
    return out


def read_accuracy_log(path: Path) -> list[tuple[int, bytes]]:
    """(qsl_idx, response bytes) for each entry of ``mlperf_log_accuracy.json``, in file order."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RunError(
            "LoadGen accuracy log not found",
            hint="Check that the run finished and that log_output.outdir points at this folder",
            file=path,
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise RunError(f"cannot read LoadGen accuracy log: {err}", file=path) from None
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as err:
        raise RunError(
            f"LoadGen accuracy log is not valid JSON (line {err.lineno}, column {err.colno})",
            hint="The run was probably cut short while writing it; rerun in accuracy mode",
            file=path,
        ) from None
    if not isinstance(entries, list):
        raise RunError("LoadGen accuracy log is not a JSON array", file=path)

    out: list[tuple[int, bytes]] = []
    for position, entry in enumerate(entries):
        try:
            out.append((int(entry["qsl_idx"]), bytes.fromhex(entry["data"])))
        except (KeyError, TypeError, ValueError) as err:
            raise RunError(
                f"LoadGen accuracy log entry {position} is malformed ({type(err).__name__}: {err})",
                hint="Expected objects with an integer 'qsl_idx' and a hex 'data' string",
                file=path,
            ) from None
    return out


def decode_accuracy_log(path: Path, dtype: np.dtype, per_sample: int = 1) -> dict[int, np.ndarray]:
    """qsl_idx -> response array of ``dtype``, shaped ``(per_sample,)`` or ``(per_sample, k)``.

    ``per_sample`` is how many items one response holds (e.g. detections); the
    values are split evenly among them, and k = 1 is dropped.

    A sample can be answered more than once (performance-mode sampling,
    repeated loadable sets); like the MLPerf accuracy scripts, the first answer wins.
    """
    path = Path(path)
    dtype = np.dtype(dtype)
    if per_sample < 1:
        raise ValueError(f"per_sample must be >= 1, got {per_sample}")
    out: dict[int, np.ndarray] = {}
    for qsl_idx, data in read_accuracy_log(path):
        if qsl_idx in out:
            continue
        if len(data) % dtype.itemsize:
            raise RunError(
                f"accuracy log response for qsl_idx {qsl_idx} has {len(data)} bytes, "
                f"not a multiple of {dtype} ({dtype.itemsize} bytes)",
                hint="Decode with the dtype the SUT wrote its responses in",
                file=path,
            )
        array = np.frombuffer(data, dtype=dtype)
        if array.size % per_sample:
            raise RunError(
                f"accuracy log response for qsl_idx {qsl_idx} has {array.size} values, "
                f"not a multiple of per_sample={per_sample}",
                hint="Check the per_sample count the SUT writes per response",
                file=path,
            )
        rows = array.reshape(per_sample, -1)
        # One value per item collapses to (per_sample,), so a scalar response
        # such as a class id reads back as array([id]) rather than [[id]].
        out[qsl_idx] = rows.reshape(per_sample) if rows.shape[1] == 1 else rows
    return out
