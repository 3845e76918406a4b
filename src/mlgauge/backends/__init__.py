"""Backend registry, read from the ``mlgauge.backends`` entry-point group."""

from __future__ import annotations

import importlib.util
from importlib.metadata import entry_points

from mlgauge.backends.base import Backend, BackendOptions
from mlgauge.errors import BackendError, choice_error

GROUP = "mlgauge.backends"
# When the user names none, the first installed one wins: ONNX Runtime is the
# fastest general CPU path here, torch eager is always present.
PREFERENCE = ("onnxruntime", "torch")

__all__ = ["Backend", "BackendOptions", "backend_names", "best_backend", "get_backend_class", "is_installed"]


def _entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def backend_names() -> list[str]:
    return sorted(_entry_points())


def get_backend_class(name: str) -> type[Backend]:
    eps = _entry_points()
    if name not in eps:
        raise choice_error("backend", name, list(eps))
    try:
        cls = eps[name].load()
    except ImportError as exc:
        raise BackendError(f"backend '{name}' cannot be imported: {exc}") from None
    missing = [m for m in getattr(cls, "requires", ()) if importlib.util.find_spec(m) is None]
    if missing:
        raise BackendError(
            f"backend '{name}' needs {', '.join(missing)}, which is not installed",
            hint=f"Install it (e.g. pip install 'mlgauge[{'onnx' if name == 'onnxruntime' else name}]')",
        )
    return cls


def is_installed(name: str) -> bool:
    if name not in _entry_points():
        return False
    try:
        get_backend_class(name)
    except BackendError:
        return False
    return True


def best_backend() -> str:
    for name in PREFERENCE:
        if name in _entry_points() and is_installed(name):
            return name
    raise BackendError("no inference backend is installed", hint="pip install 'mlgauge[onnx]' or torch")
