"""Olympic scoring of one N-run training set, as the MLPerf Training rules define it.

Rules (training_rules.adoc, "Benchmark Results"): a benchmark result is the mean
of the run times after dropping the fastest and the slowest run; "a single
non-converging run may be treated as the slowest run and dropped", and "a
benchmark result is invalid if there is more than one non-converging run".
The package checker also wants exactly N result files, and its seed checker
rejects a set in which two runs log the same seed from the same source line,
which a training loop that logs its seed in one place always does.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from mlgauge.errors import UsageError

__all__ = ["RunOutcome", "SetScore", "convergence_points", "score_set"]

SUCCESS = "success"
ABORTED = "aborted"
_STATUSES = (SUCCESS, ABORTED)


@dataclass(frozen=True)
class RunOutcome:
    """How one run of a set ended, read from its mllog ``run_stop`` and ``seed`` lines.

    ``converged_at`` is the epoch (or sample count, for samples-based benchmarks)
    of the last ``eval_accuracy`` before a successful ``run_stop``: the value the
    RCP checker compares. It is ``None`` for an aborted run.
    """

    status: str
    time_to_train_s: float | None
    seed: int
    converged_at: float | None = None

    def __post_init__(self) -> None:
        if self.status not in _STATUSES:
            raise UsageError(
                f"unknown run status '{self.status}'",
                hint=f"A run ends with one of: {', '.join(_STATUSES)} (mllog run_stop metadata.status)",
            )
        if self.status == SUCCESS:
            time_s = self.time_to_train_s
            if time_s is None or not math.isfinite(time_s) or time_s < 0:
                raise UsageError(
                    f"a converged run needs a finite, non-negative time to train, got {time_s!r}",
                    hint="Time to train is run_stop.time_ms - run_start.time_ms, in seconds",
                )

    @property
    def converged(self) -> bool:
        return self.status == SUCCESS


@dataclass(frozen=True)
class SetScore:
    """The olympic score of a set, why it is (in)valid, and the spread it hides.

    Indices refer to the runs in the order given (run order). ``mean_s``,
    ``stdev_s`` and ``cv`` describe every converged run, not only the scored
    ones: the spread is what tells a reader how far to trust the score.
    ``stdev_s`` is the sample standard deviation (n - 1); it is ``None`` with
    fewer than two converged runs.
    """

    valid: bool
    reason: str | None
    score_s: float | None
    runs_required: int
    runs_used: tuple[int, ...]
    runs_dropped: tuple[int, ...]
    aborted: tuple[int, ...]
    seeds_distinct: bool
    mean_s: float | None
    stdev_s: float | None
    cv: float | None
    notes: tuple[str, ...] = ()

    @property
    def score_min(self) -> float | None:
        """The score in minutes, the unit the MLPerf result summarizer reports."""
        return None if self.score_s is None else self.score_s / 60.0


def score_set(runs: Sequence[RunOutcome], runs_per_set: int, *, dropped_each_end: int = 1) -> SetScore:
    """Score a set of runs the MLPerf way.

    ``runs_per_set`` is the benchmark's N from the rules. ``dropped_each_end``
    is 1 for every benchmark but UNet3D (4 of 40 each end, and up to 4
    non-converging runs), which the rules give as its own case.
    """
    _check_shape(runs_per_set, dropped_each_end)
    order = sorted(range(len(runs)), key=lambda i: (_sort_time(runs[i]), i))
    dropped = set(order[:dropped_each_end] + order[len(order) - dropped_each_end :]) if runs else set()
    used = [i for i in range(len(runs)) if i not in dropped]
    aborted = tuple(i for i, run in enumerate(runs) if not run.converged)
    seeds_distinct, seed_problem = _seed_check(runs)
    problems = [
        p
        for p in (
            _count_problem(len(runs), runs_per_set),
            _abort_problem(aborted, dropped_each_end),
            seed_problem,
        )
        if p
    ]
    notes = []
    if aborted and not _abort_problem(aborted, dropped_each_end):
        notes.append(f"run {aborted[0]} did not converge and is dropped as the slowest")
    valid = not problems
    score = statistics.fmean(runs[i].time_to_train_s for i in used) if valid else None
    mean, stdev, cv = _spread([run.time_to_train_s for run in runs if run.converged])
    return SetScore(
        valid=valid,
        reason="; ".join(problems) or None,
        score_s=score,
        runs_required=runs_per_set,
        runs_used=tuple(used),
        runs_dropped=tuple(sorted(dropped)),
        aborted=aborted,
        seeds_distinct=seeds_distinct,
        mean_s=mean,
        stdev_s=stdev,
        cv=cv,
        notes=tuple(notes),
    )


def convergence_points(runs: Sequence[RunOutcome]) -> list[float | None]:
    """Each run's epochs (or samples) to converge, ``None`` where it did not: the RCP check's input."""
    return [run.converged_at if run.converged else None for run in runs]


def _check_shape(runs_per_set: int, dropped_each_end: int) -> None:
    if dropped_each_end < 1 or runs_per_set < 2 * dropped_each_end + 1:
        raise UsageError(
            f"cannot olympic-score sets of {runs_per_set} runs dropping {dropped_each_end} at each end",
            hint="A set needs more runs than it drops: at least 3 when one is dropped at each end",
        )


def _sort_time(run: RunOutcome) -> float:
    # A non-converging run counts as infinitely slow (rules: "may be treated as the slowest run").
    return float(run.time_to_train_s) if run.converged else math.inf


def _count_problem(count: int, runs_per_set: int) -> str | None:
    if count == runs_per_set:
        return None
    return f"the set has {count} runs but the rules require exactly {runs_per_set}"


def _abort_problem(aborted: tuple[int, ...], allowed: int) -> str | None:
    if len(aborted) <= allowed:
        return None
    runs = ", ".join(str(i) for i in aborted)
    return (
        f"{len(aborted)} runs did not converge (runs {runs}); at most {allowed} may, "
        "as the dropped slowest run"
    )


def _seed_check(runs: Sequence[RunOutcome]) -> tuple[bool, str | None]:
    first_use: dict[int, int] = {}
    repeats: list[str] = []
    for index, run in enumerate(runs):
        if run.seed in first_use:
            repeats.append(f"seed {run.seed} in runs {first_use[run.seed]} and {index}")
        else:
            first_use[run.seed] = index
    if not repeats:
        return True, None
    return False, "seeds repeat (" + ", ".join(repeats) + "); the seed checker rejects a set that reuses one"


def _spread(times: list[float | None]) -> tuple[float | None, float | None, float | None]:
    values = [float(t) for t in times if t is not None]
    if not values:
        return None, None, None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None, None
    stdev = statistics.stdev(values)
    return mean, stdev, (stdev / mean if mean > 0 else None)
