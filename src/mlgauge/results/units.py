"""Numbers with units as people read them, for every presentation (terminal and HTML)."""

from __future__ import annotations


def format_value(value: float | None, unit: str) -> str:
    """``1.23 ms`` for nanoseconds, ``1,234 samples/s`` for rates; ``-`` for no value."""
    if value is None:
        return "-"
    if unit == "ns":
        for scale, name in ((1e9, "s"), (1e6, "ms"), (1e3, "µs")):
            if value >= scale:
                return f"{value / scale:,.3g} {name}" if value / scale < 100 else f"{value / scale:,.1f} {name}"
        return f"{value:,.0f} ns"
    return f"{value:,.1f} {unit}" if value < 100 else f"{value:,.0f} {unit}"


def format_repeats(values: list[float], unit: str) -> str:
    """One run's value, or repeats as ``median (n=5, lo–hi)`` so the spread is never hidden."""
    if not values:
        return "-"
    if len(values) == 1:
        return format_value(values[0], unit)
    ordered = sorted(values)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return f"{format_value(median, unit)} (n={len(values)}, {format_value(ordered[0], unit)}–{format_value(ordered[-1], unit)})"
