"""Machine ceilings: a quick calibration gives positive, plausible numbers, and the cache round-trips
and survives files that are corrupt, incomplete, implausible or from another machine setup."""

from __future__ import annotations

import json

import pytest
import torch

from mlgauge import paths
from mlgauge.profiler.peaks import (
    GEMM_DTYPES,
    MachinePeaks,
    cache_path,
    llc_bytes,
    load_or_measure,
    machine_peaks,
    measure_peaks,
)


@pytest.fixture(scope="module")
def quick() -> MachinePeaks:
    return measure_peaks(quick=True)


def test_quick_calibration_is_plausible(quick):
    assert quick.quick and quick.threads == torch.get_num_threads()
    assert set(quick.gemm_gflops) | set(quick.unavailable) == set(GEMM_DTYPES)
    assert not set(quick.gemm_gflops) & set(quick.unavailable)
    assert "float32" in quick.gemm_gflops  # every CPU build multiplies float32
    assert 0.1 < quick.copy_gbs < 10_000 and 0.1 < quick.triad_gbs < 10_000
    # Even a small float32 product does more GFLOP/s than a tenth of the GB/s memory delivers.
    assert quick.gemm_gflops["float32"] > 0.1 * quick.triad_gbs
    assert quick.gemm_gflops["float32"] < 1_000_000  # a petaFLOP/s CPU: a timing bug
    for dtype, gflops in quick.gemm_gflops.items():
        assert gflops > 0 and quick.ridge[dtype] == pytest.approx(gflops / quick.triad_gbs)
        assert quick.gemm_sizes[dtype] >= 128


def test_peak_for_a_dtype_without_gemm_falls_back_to_float32(quick):
    assert quick.peak_gflops("int64") == quick.gemm_gflops["float32"]


def test_last_level_cache_size_is_read_or_absent():
    size = llc_bytes()
    assert size is None or 64 * 2**10 <= size <= 4 * 2**30


def test_quick_mode_does_not_touch_the_cache():
    path = cache_path()
    assert path.parent == paths.cache_dir() / "profiler" and f"-{torch.get_num_threads()}t-" in path.name
    before = path.stat().st_mtime_ns if path.exists() else None
    assert machine_peaks(quick=True).quick
    assert (path.stat().st_mtime_ns if path.exists() else None) == before


def _counting(peaks: MachinePeaks, calls: list):
    def measure() -> MachinePeaks:
        calls.append(1)
        return peaks

    return measure


def test_cache_round_trips_and_refresh_remeasures(quick, tmp_path):
    path, calls = tmp_path / "profiler" / "peaks.json", []
    first = load_or_measure(path, _counting(quick, calls))
    again = load_or_measure(path, _counting(quick, calls))
    assert calls == [1] and again == first == quick  # the second came from the file
    assert MachinePeaks.from_dict(json.loads(path.read_text())) == quick
    load_or_measure(path, _counting(quick, calls), refresh=True)
    assert len(calls) == 2


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "",
        '{"schema": 1}',
        "[1, 2, 3]",
        "BAD_TRIAD",
        "OTHER_THREADS",
        "OLD_SCHEMA",
    ],
)
def test_a_bad_cache_file_is_remeasured_not_an_error(quick, tmp_path, content):
    record = quick.to_dict()
    if content == "BAD_TRIAD":
        content = json.dumps({**record, "triad_gbs": -3.0})
    elif content == "OTHER_THREADS":  # measured under another thread count: not this setup's ceiling
        content = json.dumps({**record, "threads": record["threads"] + 7})
    elif content == "OLD_SCHEMA":
        content = json.dumps({**record, "schema": 0})
    path, calls = tmp_path / "peaks.json", []
    path.write_text(content)
    assert load_or_measure(path, _counting(quick, calls)) == quick and calls == [1]
    assert MachinePeaks.from_dict(json.loads(path.read_text())) == quick  # and the file is whole again
