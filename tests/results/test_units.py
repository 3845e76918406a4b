"""Numbers with units, and repeats with their spread."""

from __future__ import annotations

from mlgauge.results.units import format_repeats, format_value


def test_values_scale_to_readable_units():
    assert format_value(None, "ns") == "-"
    assert format_value(750.0, "ns") == "750 ns"
    assert format_value(2_500.0, "ns") == "2.5 µs"
    assert format_value(1_240_000.0, "ns") == "1.24 ms"
    assert format_value(123_456_789.0, "ns") == "123.5 ms"
    assert format_value(42.25, "samples/s") == "42.2 samples/s"
    assert format_value(8281.4, "samples/s") == "8,281 samples/s"


def test_repeats_give_median_count_and_range():
    assert format_repeats([], "ns") == "-"
    assert format_repeats([2e6], "ns") == "2 ms"
    assert format_repeats([3e6, 1e6, 2e6], "ns") == "2 ms (n=3, 1 ms–3 ms)"
    assert format_repeats([1e6, 2e6, 3e6, 4e6], "ns") == "2.5 ms (n=4, 1 ms–4 ms)"
