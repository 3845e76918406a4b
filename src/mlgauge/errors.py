"""One exception hierarchy for everything a user can get wrong or a run can hit.

Every error says what is wrong and how to fix it, and carries the context that
failed (task, scenario, backend, file) so the CLI can print one line.
"""

from __future__ import annotations


class MlgaugeError(Exception):
    """Base class. ``str(err)`` is the one line shown to users."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None, **context: object) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.context = {k: v for k, v in context.items() if v is not None}

    def __str__(self) -> str:
        where = ", ".join(f"{k}={v}" for k, v in self.context.items())
        text = f"{self.message} ({where})" if where else self.message
        return f"{text}. {self.hint}" if self.hint else text

    def to_dict(self) -> dict[str, object]:
        return {
            "error": type(self).__name__,
            "message": self.message,
            "hint": self.hint,
            "context": {k: str(v) for k, v in self.context.items()},
        }


class UsageError(MlgaugeError):
    """A name, flag or value given on the command line or in a config is not valid."""


class ConfigError(MlgaugeError):
    """A configuration file (user.conf, rules) is malformed."""


class DataError(MlgaugeError):
    """A dataset is missing, unreadable or in the wrong format."""


class ModelError(MlgaugeError):
    """A model or weights file is missing, corrupt or does not fit the task."""


class BackendError(MlgaugeError):
    """A backend is not installed or cannot run the model."""


class OutputError(MlgaugeError):
    """Results or logs cannot be written."""


class WorkerError(MlgaugeError):
    """A benchmark worker process failed."""


class RunError(MlgaugeError):
    """LoadGen or the system under test failed during a run."""


ERROR_TYPES: dict[str, type[MlgaugeError]] = {
    cls.__name__: cls
    for cls in (
        MlgaugeError,
        UsageError,
        ConfigError,
        DataError,
        ModelError,
        BackendError,
        OutputError,
        WorkerError,
        RunError,
    )
}


def error_from_dict(payload: dict) -> MlgaugeError:
    """Rebuild an error that crossed a process boundary as JSON."""
    cls = ERROR_TYPES.get(str(payload.get("error")), MlgaugeError)
    context = payload.get("context") or {}
    return cls(str(payload.get("message", "unknown error")), hint=payload.get("hint"), **context)


def choice_error(kind: str, given: str, valid: list[str] | tuple[str, ...], **context: object) -> UsageError:
    """The standard error for an unknown name: list what is valid."""
    return UsageError(
        f"unknown {kind} '{given}'",
        hint=f"Valid {kind}s: {', '.join(sorted(valid))}",
        **context,
    )
