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
