"""One training run's MLPerf log, written through the official ``mlperf_logging.mllog`` API.

Each run gets a private ``MLLogger`` on its own ``logging.Logger`` with one file handler: the
package's singleton (``mllog.config``) adds handlers to one shared logger, so a process that runs
several timed runs would otherwise write every run into every log. Only rank 0 writes; other
ranks get a :class:`NullWriter` that keeps the same clock and writes nothing.

Every method returns the ``time_ms`` it logged, so the caller computes time-to-train from the
very numbers the checker and result summarizer read (``run_stop.time_ms - run_start.time_ms``).
"""

from __future__ import annotations

import itertools
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from mlperf_logging.mllog import constants as C
from mlperf_logging.mllog.mllog import MLLogger

from mlgauge.errors import OutputError, UsageError
from mlgauge.rules.training import TrainingRules

# Trimmed from the ``file`` field mllog adds to every line, so logs name "mlgauge/training/...".
_SOURCE_ROOT = str(Path(__file__).resolve().parents[2])
_logger_ids = itertools.count()


def now_ms() -> int:
    """The clock and rounding mllog stamps lines with by default (``mllog._current_time_ms``)."""
    return int(time.time() * 1e3)


@dataclass(frozen=True)
class Submission:
    """The ``submission_*`` keys: who ran what, where, in which division."""

    benchmark: str  # log name: resnet, ssd, dlrm_dcnv2
    division: str  # closed | open
    org: str = "mlgauge"
    platform: str = "unknown"
    status: str = "onprem"

    def check(self, rules: TrainingRules) -> Submission:
        if self.division not in rules.divisions:
            raise UsageError(
                f"unknown division '{self.division}'", hint=f"Use one of {', '.join(rules.divisions)}"
            )
        if self.status not in rules.submission_statuses:
            raise UsageError(
                f"submission status '{self.status}' is not valid in ruleset {rules.ruleset}",
                hint=f"Use one of {', '.join(rules.submission_statuses)}",
            )
        for field in ("org", "platform"):
            if not getattr(self, field).strip():
                raise UsageError(
                    f"submission {field} is empty", hint="The checker requires a non-empty value"
                )
        return self


class NullWriter:
    """What ranks other than 0 log: nothing, on the same clock."""

    path: Path | None = None

    def _log(self, kind: str, key: str, value=None, metadata=None, time_ms: int | None = None) -> int:
        return now_ms() if time_ms is None else time_ms

    # -- the keys a 4.0.0 training log needs, in the order a run reaches them ---------------
    def cache_clear(self, cleared: bool) -> int:
        # True only when the caller really dropped the OS page cache (it needs root); the checker
        # asks only that the key is there (common.yaml: "'value' in v").
        return self._log("event", C.CACHE_CLEAR, bool(cleared))

    def init_start(self) -> int:
        return self._log("start", C.INIT_START)

    def submission(self, sub: Submission) -> None:
        self._log("event", C.SUBMISSION_BENCHMARK, sub.benchmark)
        self._log("event", C.SUBMISSION_DIVISION, sub.division)
        self._log("event", C.SUBMISSION_ORG, sub.org)
        self._log("event", C.SUBMISSION_PLATFORM, sub.platform)
        self._log("event", C.SUBMISSION_STATUS, sub.status)

    def seed(self, seed: int) -> None:
        # The seed checker wants an integer, unique per (file, line) across a set's runs.
        self._log("event", C.SEED, int(seed))

    def hyperparameters(self, values: dict[str, object]) -> None:
        for key, value in values.items():
            self._log("event", key, value)

    def init_stop(self, time_ms: int | None = None) -> int:
        return self._log("end", C.INIT_STOP, time_ms=time_ms)

    def run_start(self, time_ms: int | None = None) -> int:
        return self._log("start", C.RUN_START, time_ms=time_ms)

    def epoch_start(self, epoch_num: float, samples: int) -> int:
        return self._log("start", C.EPOCH_START, metadata={C.EPOCH_NUM: epoch_num, C.SAMPLES_COUNT: samples})

    def epoch_stop(self, epoch_num: float, samples: int) -> int:
        return self._log("end", C.EPOCH_STOP, metadata={C.EPOCH_NUM: epoch_num, C.SAMPLES_COUNT: samples})

    def eval_start(self, epoch_num: float, samples: int) -> int:
        return self._log("start", C.EVAL_START, metadata={C.EPOCH_NUM: epoch_num, C.SAMPLES_COUNT: samples})

    def eval_accuracy(self, value: float, epoch_num: float, samples: int) -> int:
        # The RCP checker reads epoch_num of the last eval_accuracy as epochs-to-converge.
        return self._log(
            "event",
            C.EVAL_ACCURACY,
            float(value),
            metadata={C.EPOCH_NUM: epoch_num, C.SAMPLES_COUNT: samples},
        )

    def eval_stop(self, epoch_num: float, samples: int) -> int:
        return self._log("end", C.EVAL_STOP, metadata={C.EPOCH_NUM: epoch_num, C.SAMPLES_COUNT: samples})

    def run_stop(self, status: str, samples: int) -> int:
        if status not in (C.SUCCESS, C.ABORTED):
            raise ValueError(f"run_stop status must be success or aborted, not {status!r}")
        return self._log("end", C.RUN_STOP, metadata={C.STATUS: status, C.SAMPLES_COUNT: samples})

    def close(self) -> None:
        pass


class MllogWriter(NullWriter):
    """Writes to ``path`` (created, or truncated) through a private ``MLLogger``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(self.path, mode="w", encoding="utf-8")
        except OSError as exc:
            raise OutputError(
                f"cannot write training log {self.path}: {exc.strerror or exc}",
                hint="Choose a writable output folder",
            ) from None
        handler.setFormatter(logging.Formatter("%(message)s"))
        # A fresh, non-propagating logger per run: nothing leaks to the root logger or to another run.
        logger = logging.getLogger(f"mlgauge.training.mllog.{next(_logger_ids)}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        logger.addHandler(handler)
        self._handler = handler
        self._logger = logger
        # stack offset 2: the file/lineno mllog records is this module's caller of _log, not _log.
        self._mllog = MLLogger(logger=logger, default_stack_offset=2, root_dir=re.escape(_SOURCE_ROOT))

    def _log(self, kind: str, key: str, value=None, metadata=None, time_ms: int | None = None) -> int:
        stamp = now_ms() if time_ms is None else time_ms
        getattr(self._mllog, kind)(key=key, value=value, metadata=metadata, time_ms=stamp)
        return stamp

    def close(self) -> None:
        self._logger.removeHandler(self._handler)
        self._handler.close()


def open_writer(path: Path | None, *, rank: int = 0) -> NullWriter:
    """The writer for one run: a file on rank 0 (when ``path`` is given), nothing elsewhere."""
    if rank != 0 or path is None:
        return NullWriter()
    return MllogWriter(path)
