"""Step boundaries for the profiler: an optimizer step, or a script's own mark.

Training scripts need nothing: ``optimizer.step()`` ends a step. A loop without an optimizer (an
inference script) calls :func:`step_done` after each iteration; outside ``mlgauge profile`` that
call does nothing, so a script may keep it.
"""

from __future__ import annotations

from collections.abc import Callable

_listeners: list[Callable[[], None]] = []


def step_done() -> None:
    """End of one step of the profiled loop."""
    for listener in list(_listeners):
        listener()


def listen(listener: Callable[[], None]) -> Callable[[], None]:
    """Call ``listener`` at every step end; returns the function that stops it."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)
