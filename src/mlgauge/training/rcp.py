"""Reference convergence points (RCPs): build them, store them, check a set of runs against them.

The rules (training_rules.adoc, "RCPs") ask the reference for at least 2N
convergence points per batch size and allow a submission to converge faster
than the reference mean only by what a one-sided two-sample t-test (alpha 0.05)
cannot tell from noise. The arithmetic here follows the official
``mlperf_logging/rcp_checker/rcp_checker.py`` (mlperf-logging 4.1.68) step by
step, quirks included, so a verdict here is the verdict the package checker
gives; each quirk is marked where it happens.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import scipy.stats

from mlgauge.errors import ConfigError, OutputError, UsageError

__all__ = [
    "NOT_CONVERGED",
    "RcpStats",
    "RcpVerdict",
    "build_rcp",
    "check_runs",
    "convergence_key",
    "load_rcps",
    "olympic_mean",
    "prune_rcps",
    "rcp_name",
    "rcp_stats",
    "save_rcps",
]

# The checker's value for a run that did not converge: far slower than anything real.
NOT_CONVERGED = 1e9
_ALPHA = 0.05
# Binary-search stopping width of the minimum acceptable mean, in epochs (or samples).
_TOLERANCE = 0.0001
# rcp_checker.py reads these benchmarks' RCPs under "samples to converge"; all others under
# "Epochs to converge" (even where the unit is a fraction of an epoch, as for dlrm_dcnv2).
_SAMPLES_KEYED = frozenset({"llama2_70b_lora", "flux1"})
# rcp_checker.py drops 4 points at each end for unet3d (40-run sets), 1 for everything else.
_TRIMMED_EACH_END = {"unet3d": 4}


def convergence_key(benchmark: str) -> str:
    """The record key holding the convergence points: "samples to converge" or "Epochs to converge"."""
    return "samples to converge" if benchmark in _SAMPLES_KEYED else "Epochs to converge"


def _trim(benchmark: str) -> int:
    return _TRIMMED_EACH_END.get(benchmark, 1)


def rcp_name(benchmark: str, batch_size: int) -> str:
    """The record name the official files use, e.g. ``resnet_ref_3264``."""
    return f"{benchmark}_ref_{batch_size}"


def olympic_mean(values: Sequence[float], dropped_each_end: int = 1) -> float:
    """Mean after dropping the ``dropped_each_end`` smallest and largest values."""
    ordered = sorted(values)
    kept = ordered[dropped_each_end : len(ordered) - dropped_each_end]
    if not kept:
        raise UsageError(
            f"an olympic mean of {len(ordered)} values dropping {dropped_each_end} at each end is empty",
            hint="Provide more convergence points",
        )
    return float(np.mean(kept))


def build_rcp(
    benchmark: str,
    batch_size: int,
    epochs_to_converge: Sequence[float],
    hyperparams: Mapping[str, object],
    *,
    runs_per_set: int,
    creator: str = "mlgauge",
    platform: str = "",
    precision: str = "fp32",
    when: str | None = None,
) -> dict:
    """One RCP record in the official JSON shape, from converged reference runs.

    The rules ask for at least 2N points (N = ``runs_per_set``); fewer are
    refused, because the statistics the checker derives from them would be too
    loose to catch anything.
    """
    points = [float(p) for p in epochs_to_converge]
    if len(points) < 2 * runs_per_set:
        raise UsageError(
            f"an RCP for {benchmark} needs at least {2 * runs_per_set} convergence points "
            f"(2N, N={runs_per_set}), got {len(points)}",
            hint=f"Run {2 * runs_per_set - len(points)} more converged reference runs at batch size {batch_size}",
            benchmark=benchmark,
        )
    if any(not math.isfinite(p) or p <= 0 for p in points):
        raise UsageError(
            "convergence points must be positive finite numbers",
            hint="Leave runs that did not converge out of an RCP",
            benchmark=benchmark,
        )
    if batch_size <= 0:
        raise UsageError(f"batch size must be positive, got {batch_size}", hint="Give the global batch size")
    return {
        "Benchmark": benchmark,
        "Creator": creator,
        "When": when or date.today().isoformat(),
        "Platform": platform,
        "Precision": precision,
        "BS": int(batch_size),
        "Hyperparams": dict(hyperparams),
        convergence_key(benchmark): points,
    }


def save_rcps(path: str | Path, records: Mapping[str, dict]) -> Path:
    """Write records as ``{name: record}`` JSON, the layout of the official ``rcps_<benchmark>.json``."""
    path = Path(path)
    _validate_all(records, path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(dict(records), out, indent=2)
            out.write("\n")
        os.replace(tmp, path)
    except OSError as err:
        raise OutputError(
            f"cannot write RCP file: {err}", hint="Check the folder is writable", file=path
        ) from err
    return path


def load_rcps(path: str | Path) -> dict[str, dict]:
    """Read an RCP JSON file (ours or an official one) and check every record's shape."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError("RCP file not found", hint="Build one with `mlgauge rcp build`", file=path) from err
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read RCP file: {err}", hint="It must be JSON", file=path) from err
    if not isinstance(raw, dict):
        raise ConfigError(
            "an RCP file must be a JSON object of named records", hint="See rcps_<benchmark>.json"
        )
    _validate_all(raw, path)
    return raw


def _validate_all(records: Mapping[str, object], path: Path) -> None:
    seen: dict[tuple[str, int], str] = {}
    for name, record in records.items():
        _validate(name, record, path)
        key = (record["Benchmark"], record["BS"])
        if key in seen:
            raise ConfigError(
                f"RCP records '{seen[key]}' and '{name}' share batch size {key[1]}",
                hint="Keep one record per batch size; merge their points",
                file=path,
            )
        seen[key] = name


def _validate(name: str, record: object, path: Path) -> None:
    def bad(what: str) -> ConfigError:
        return ConfigError(
            f"RCP record '{name}' {what}", hint="Records need Benchmark, BS and the points", file=path
        )

    if not isinstance(record, dict) or not isinstance(record.get("Benchmark"), str):
        raise bad("has no Benchmark")
    if not isinstance(record.get("BS"), int) or record["BS"] <= 0:
        raise bad("has no positive integer BS")
    points = record.get(convergence_key(record["Benchmark"]))
    if not isinstance(points, list) or not all(isinstance(p, int | float) for p in points):
        raise bad(f"has no numeric '{convergence_key(record['Benchmark'])}' list")
    if len(points) < 2 * _trim(record["Benchmark"]) + 2:
        raise bad(f"has {len(points)} points, too few for its statistics")


@dataclass(frozen=True)
class RcpStats:
    """What the checker derives from one RCP: olympic mean, stdev over all points, the limit."""

    name: str
    benchmark: str
    batch_size: int
    mean: float
    stdev: float
    min_epochs: float
    points: int
    interpolated: bool = False

    @property
    def max_speedup(self) -> float:
        """RCP mean over the minimum acceptable mean: 1.0353 allows converging 3.53% faster."""
        return self.mean / self.min_epochs if self.min_epochs > 0 else math.inf


def rcp_stats(name: str, record: Mapping, runs_per_set: int) -> RcpStats:
    """Statistics of one record, as ``RCP_Checker.compute_rcp_stats`` computes them."""
    benchmark = record["Benchmark"]
    points = sorted(float(p) for p in record[convergence_key(benchmark)])
    trim = _trim(benchmark)
    mean = olympic_mean(points, trim)
    # Quirk kept: the stdev is np.std (population) over ALL points, while the mean drops the ends.
    stdev = float(np.std(points))
    # The reference sample size is the trimmed count; the submission's is N - 2.
    min_epochs = _min_acceptable_mean(mean, stdev, len(points) - 2 * trim, runs_per_set - 2)
    return RcpStats(name, benchmark, int(record["BS"]), mean, stdev, min_epochs, len(points))


def _one_sided_p(subm_mean: float, stdev: float, n_subm: int, ref_mean: float, n_ref: int) -> float:
    t_stat, p_two = scipy.stats.ttest_ind_from_stats(
        subm_mean, stdev, n_subm, ref_mean, stdev, n_ref, equal_var=True
    )
    return p_two / 2 if t_stat < 0 else 1 - p_two / 2


def _min_acceptable_mean(mean: float, stdev: float, n_ref: int, n_subm: int) -> float:
    """The smallest submission mean a one-sided t-test at alpha 0.05 cannot call faster than ``mean``.

    Binary search on [0, mean], as the checker does: anything above the
    reference mean is acceptable anyway. The checker passes the reference's
    count as the first sample's size; with equal variances the test is
    symmetric in the two sizes, so the order does not matter.
    """
    if stdev == 0:
        return mean
    low, high = 0.0, mean
    mid = (low + high) / 2
    while high - low > _TOLERANCE:
        if _one_sided_p(mid, stdev, n_ref, mean, n_subm) > _ALPHA:
            high = mid
        else:
            low = mid
        mid = (low + high) / 2
    return mid


def _interpolate(bs: int, low: RcpStats, high: RcpStats, runs_per_set: int) -> RcpStats:
    frac = (bs - low.batch_size) / (high.batch_size - low.batch_size)
    mean = low.mean + frac * (high.mean - low.mean)
    stdev = low.stdev + frac * (high.stdev - low.stdev)
    # Quirk kept: an interpolated RCP takes 2N as its reference sample size, not 2N - 2.
    min_epochs = _min_acceptable_mean(mean, stdev, 2 * runs_per_set, runs_per_set - 2)
    name = f"{low.benchmark}_interp_{bs}"
    return RcpStats(name, low.benchmark, bs, mean, stdev, min_epochs, 0, interpolated=True)


def _all_stats(records: Mapping[str, Mapping], runs_per_set: int) -> list[RcpStats]:
    # Sorted by batch size; Python's stable sort keeps file order for equal sizes, like the checker's.
    stats = [rcp_stats(name, record, runs_per_set) for name, record in records.items()]
    return sorted(stats, key=lambda s: s.batch_size)


def prune_rcps(records: Mapping[str, Mapping], runs_per_set: int) -> dict[str, dict]:
    """Keep the fastest-convergence frontier over batch size, as ``RCP_Checker._prune_rcps`` does.

    First every record with a smaller batch size than the fastest-converging
    one goes; then, walking up the batch sizes, a record slower than the
    straight line between its neighbours goes. (This is not a full lower convex
    envelope; the checker's own comment says so.)
    """
    kept = _prune(_all_stats(records, runs_per_set), runs_per_set)
    sizes = {s.batch_size for s in kept}
    return {name: dict(record) for name, record in records.items() if record["BS"] in sizes}


def _prune(stats: list[RcpStats], runs_per_set: int) -> list[RcpStats]:
    if not stats:
        return []
    fastest = min(stats, key=lambda s: s.mean)
    frontier = [s for s in stats if s.batch_size >= fastest.batch_size]
    i = 1
    while i < len(frontier) - 1:
        line = _interpolate(frontier[i].batch_size, frontier[i - 1], frontier[i + 1], runs_per_set)
        if frontier[i].mean > line.mean:
            del frontier[i]
            i -= 1
        i += 1
    sizes = {s.batch_size for s in frontier}
    return [s for s in stats if s.batch_size in sizes]


@dataclass(frozen=True)
class RcpVerdict:
    """The outcome of checking one set's convergence against the RCPs.

    ``outcome`` is one of: "RCP found", "RCP Interpolation", "RCP not found but
    slower convergence on smaller batch size", "Missing RCP", "Insufficient
    convergence", "Cannot find any RCPs" (the checker's own words).
    ``scaling_factor`` is what the package checker writes to ``scaling.json``
    and the summarizer multiplies the score by: RCP mean / submission mean when
    a passing set converged faster than the mean, else 1.0.
    """

    passed: bool
    outcome: str
    message: str
    batch_size: int
    points: tuple[float, ...]
    reference: RcpStats | None = None
    submission_mean: float | None = None
    scaling_factor: float = 1.0
    suspiciously_fast: bool = False


def check_runs(
    records: Mapping[str, Mapping],
    batch_size: int,
    converged_epochs: Sequence[float | None],
    *,
    runs_per_set: int | None = None,
    pruned: bool = True,
) -> RcpVerdict:
    """Check a set's epochs (or samples) to converge against RCP records, as ``check_directory`` does.

    ``None`` marks a run that did not converge. ``runs_per_set`` (the rules' N)
    defaults to the number of runs given, which is N for a complete set.
    ``pruned=False`` matches against every record (the checker's "full_rcps").
    """
    n = len(converged_epochs) if runs_per_set is None else runs_per_set
    if n < 3:
        raise UsageError(f"an RCP check needs sets of at least 3 runs, got {n}", hint="Run a full set")
    benchmarks = {record["Benchmark"] for record in records.values()}
    if len(benchmarks) > 1:
        raise UsageError(
            f"RCP records mix benchmarks: {', '.join(sorted(benchmarks))}",
            hint="Pass one benchmark's records",
        )
    benchmark = next(iter(benchmarks), "")
    # The checker reads epoch_num rounded to 3 decimals (samples counts are integers, so unchanged).
    points = tuple(NOT_CONVERGED if p is None else round(float(p), 3) for p in converged_epochs)
    failed = sum(p is None for p in converged_epochs)
    base = {"batch_size": batch_size, "points": points}
    if failed > _trim(benchmark):
        message = f"Insufficient convergence: {failed} runs did not converge, at most {_trim(benchmark)} may"
        return RcpVerdict(False, "Insufficient convergence", message, **base)
    stats = _all_stats(records, n)
    if pruned:
        stats = _prune(stats, n)
    if not stats:
        return RcpVerdict(False, "Cannot find any RCPs", "Cannot find any RCPs", **base)
    exact = next((s for s in stats if s.batch_size == batch_size), None)
    if exact is not None:
        return _evaluate("RCP found", exact, points, base)
    low = next((s for s in reversed(stats) if s.batch_size < batch_size), None)
    high = next((s for s in stats if s.batch_size > batch_size), None)
    if low is not None and high is not None:
        return _evaluate("RCP Interpolation", _interpolate(batch_size, low, high, n), points, base)
    if high is not None:
        # Smaller than every RCP: passing the smallest batch size's (stricter) limit is enough.
        verdict = _evaluate(
            "RCP not found but slower convergence on smaller batch size", stats[0], points, base
        )
        if verdict.passed:
            return verdict
        message = (
            f"Missing RCP, please submit RCP with BS = {batch_size}: the set (olympic mean "
            f"{verdict.submission_mean:g}) is faster than the smallest batch size's RCP allows "
            f"(BS {stats[0].batch_size}, minimum {stats[0].min_epochs:.4f})"
        )
        return RcpVerdict(
            False, "Missing RCP", message, reference=stats[0], submission_mean=verdict.submission_mean, **base
        )
    message = f"Missing RCP, please submit RCP with BS = {batch_size}: it is larger than every RCP's"
    return RcpVerdict(False, "Missing RCP", message, **base)


def _evaluate(outcome: str, ref: RcpStats, points: tuple[float, ...], base: dict) -> RcpVerdict:
    subm_mean = olympic_mean(points, _trim(ref.benchmark))
    limit = ref.mean / ref.max_speedup
    about = (
        f"{outcome} (BS {ref.batch_size}: mean {ref.mean:.4f}, stdev {ref.stdev:.4f}, "
        f"max speedup {ref.max_speedup:.4f}, minimum {limit:.4f}); submission olympic mean {subm_mean:.4f}"
    )
    if subm_mean < limit:
        message = f"{about}: converged suspiciously faster than the reference, RCP test failed"
        return RcpVerdict(
            False, outcome, message, reference=ref, submission_mean=subm_mean, suspiciously_fast=True, **base
        )
    factor = 1.0
    message = f"{about}: RCP test passed"
    if subm_mean < ref.mean:
        factor = ref.mean / subm_mean
        message += (
            f"; faster than the RCP mean but within the allowed speedup, so the score is "
            f"normalized by {ref.mean:.4f} / {subm_mean:.4f} = {factor:.4f}"
        )
    return RcpVerdict(
        True, outcome, message, reference=ref, submission_mean=subm_mean, scaling_factor=factor, **base
    )
