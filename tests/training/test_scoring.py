"""Olympic scoring of N-run sets: numbers worked by hand, and the official summarizer's average."""

from __future__ import annotations

import math

import pytest
from mlperf_logging.result_summarizer.result_summarizer import _compute_olympic_average

from mlgauge.errors import UsageError
from mlgauge.training.scoring import RunOutcome, convergence_points, score_set


def ok(time_s: float, seed: int, epochs: float | None = None) -> RunOutcome:
    return RunOutcome("success", time_s, seed, epochs)


def aborted(seed: int, time_s: float | None = None) -> RunOutcome:
    return RunOutcome("aborted", time_s, seed)


def test_five_runs_drop_fastest_and_slowest():
    runs = [ok(100, 1), ok(120, 2), ok(110, 3), ok(130, 4), ok(90, 5)]
    result = score_set(runs, 5)
    assert result.valid and result.reason is None
    # Sorted 90 100 110 120 130: 90 (run 4) and 130 (run 3) go, (100 + 120 + 110) / 3 = 110.
    assert result.runs_dropped == (3, 4)
    assert result.runs_used == (0, 1, 2)
    assert result.score_s == pytest.approx(110.0)
    assert result.score_min == pytest.approx(110.0 / 60)
    # Spread over all five: deviations -10 10 0 20 -20, sum of squares 1000, / 4 = 250.
    assert result.mean_s == pytest.approx(110.0)
    assert result.stdev_s == pytest.approx(math.sqrt(250))
    assert result.cv == pytest.approx(math.sqrt(250) / 110)
    assert result.seeds_distinct
    assert result.aborted == ()


def test_one_aborted_run_is_the_dropped_slowest():
    runs = [ok(100, 1), aborted(2, time_s=5.0), ok(110, 3), ok(130, 4), ok(90, 5)]
    result = score_set(runs, 5)
    assert result.valid
    assert result.aborted == (1,)
    # The aborted run counts as slowest even though it stopped after 5 s; 90 is the fastest.
    assert result.runs_dropped == (1, 4)
    assert result.score_s == pytest.approx((100 + 110 + 130) / 3)
    assert any("run 1 did not converge" in note for note in result.notes)
    # The spread describes the four converged runs: mean 107.5, squares 56.25 6.25 506.25 306.25.
    assert result.mean_s == pytest.approx(107.5)
    assert result.stdev_s == pytest.approx(math.sqrt(875 / 3))


def test_two_aborted_runs_make_the_set_invalid():
    runs = [ok(100, 1), aborted(2), ok(110, 3), aborted(4), ok(90, 5)]
    result = score_set(runs, 5)
    assert not result.valid
    assert result.score_s is None and result.score_min is None
    assert "2 runs did not converge (runs 1, 3)" in result.reason
    assert "at most 1" in result.reason
    # The spread is still reported for the runs that did converge.
    assert result.mean_s == pytest.approx(100.0)


def test_duplicate_seeds_make_the_set_invalid():
    runs = [ok(100, 7), ok(120, 2), ok(110, 7), ok(130, 4), ok(90, 5)]
    result = score_set(runs, 5)
    assert not result.valid
    assert not result.seeds_distinct
    assert "seed 7 in runs 0 and 2" in result.reason
    assert "seed checker" in result.reason


def test_wrong_run_count_is_invalid_and_every_problem_is_named():
    runs = [ok(100, 1), ok(120, 1), aborted(2), aborted(3)]
    result = score_set(runs, 5)
    assert not result.valid
    assert "4 runs but the rules require exactly 5" in result.reason
    assert "2 runs did not converge" in result.reason
    assert "seed 1 in runs 0 and 1" in result.reason


def test_ten_run_set_matches_the_official_summarizer_average():
    times_s = [612.0, 598.5, 640.25, 605.0, 620.0, 599.75, 633.0, 610.5, 602.0, 615.0]
    runs = [ok(t, seed) for seed, t in enumerate(times_s)]
    result = score_set(runs, 10)
    # The summarizer works in minutes; it sorts the list it is given, so pass a copy.
    official = _compute_olympic_average([t / 60 for t in times_s], 0, 1)
    assert result.score_min == pytest.approx(official)
    # By hand: drop 598.5 and 640.25; the other eight sum to 4897.25.
    assert result.score_s == pytest.approx(4897.25 / 8)


def test_unet3d_style_sets_drop_four_each_end():
    runs = [ok(float(t), t) for t in range(1, 41)]
    result = score_set(runs, 40, dropped_each_end=4)
    # 5..36 remain: their mean is 20.5.
    assert result.score_s == pytest.approx(20.5)
    assert len(result.runs_used) == 32
    four_failed = [aborted(t) if t <= 4 else ok(float(t), t) for t in range(1, 41)]
    assert score_set(four_failed, 40, dropped_each_end=4).valid
    five_failed = [aborted(t) if t <= 5 else ok(float(t), t) for t in range(1, 41)]
    assert not score_set(five_failed, 40, dropped_each_end=4).valid


def test_convergence_points_feed_the_rcp_check():
    runs = [ok(100, 1, 35.0), aborted(2), ok(110, 3, 36.5)]
    assert convergence_points(runs) == [35.0, None, 36.5]


@pytest.mark.parametrize(
    ("status", "time_s"),
    [("failed", 10.0), ("success", None), ("success", -1.0), ("success", math.nan)],
)
def test_bad_outcomes_are_refused(status, time_s):
    with pytest.raises(UsageError):
        RunOutcome(status, time_s, 1)


def test_a_set_must_be_larger_than_what_it_drops():
    with pytest.raises(UsageError, match="at least 3"):
        score_set([ok(1, 1), ok(2, 2)], 2)
