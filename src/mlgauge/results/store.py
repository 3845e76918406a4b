"""The results database: every record ever measured, append-only, in SQLite or PostgreSQL.

:class:`ResultStore` stores and reads :class:`ResultRecord` objects; it knows records,
not how they were measured. Records are only ever added, never changed or removed.
Where the database lives and what its driver's errors mean is :mod:`mlgauge.results.location`;
the table and its migrations are :mod:`mlgauge.results.schema`. The names callers use from
those modules are re-exported here, so ``mlgauge.results.store`` stays the one place to import from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from sqlalchemy import func, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.sql import ColumnElement, Select, TableClause

from mlgauge import paths
from mlgauge.errors import OutputError, UsageError
from mlgauge.results.location import Database, is_database_url, mask_password
from mlgauge.results.profile_record import ProfileRecord
from mlgauge.results.record import ResultRecord
from mlgauge.results.schema import MIGRATIONS, SCHEMA_VERSION, Migration, prepare
from mlgauge.results.schema import PROFILES as _profiles
from mlgauge.results.schema import RESULTS as _results
from mlgauge.results.schema import TINY_RUNS as _tiny
from mlgauge.results.schema import TRAINING_RUNS as _training
from mlgauge.results.tiny_record import TinyRecord
from mlgauge.results.training_record import TrainingRecord

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Migration",
    "ResultStore",
    "is_database_url",
    "mask_password",
    "open_store",
]


def open_store(db: str | Path | None) -> ResultStore:
    """The store at ``db`` (a path or URL), or the default file; a new file's folder is made first."""
    location: str | Path = db if db not in (None, "") else paths.default_db_path()
    if not is_database_url(location):
        path = Path(location).expanduser()
        # An existing file is opened as it is, so read-only copies still open.
        if not path.exists():
            paths.ensure_writable_dir(path.parent, "results database")
        location = path
    return ResultStore(location)


def _row(record: ResultRecord) -> dict[str, object]:
    metric, passed = record.metric, record.accuracy_passed
    accuracy_value = (record.accuracy or {}).get("value")
    plain = ("record_id", "run_id", "created_at", "task", "benchmark", "dataset", "scenario", "mode", "style",
             "backend", "validity", "log_dir")  # fmt: skip
    return {name: getattr(record, name) for name in plain} | {
        "metric_key": metric.key if metric is not None else None,
        "metric_value": float(metric.value) if metric is not None else None,
        "metric_unit": metric.unit if metric is not None else None,
        "accuracy_value": float(accuracy_value) if accuracy_value is not None else None,
        "accuracy_passed": None if passed is None else int(passed),
        "record_json": record.to_json(),
    }


def _training_row(record: TrainingRecord) -> dict[str, object]:
    plain = ("record_id", "run_id", "run_index", "created_at", "benchmark", "dataset", "division", "status",
             "time_to_train_s", "epochs", "seed", "log_path")  # fmt: skip
    return {name: getattr(record, name) for name in plain} | {"record_json": record.to_json()}


def _tiny_row(record: TinyRecord) -> dict[str, object]:
    plain = ("record_id", "run_id", "created_at", "benchmark", "dataset", "precision", "backend", "style")
    value, passed = record.accuracy.get("value"), record.accuracy.get("passed")
    speed, energy = record.inferences_per_s, record.energy_uj
    return {name: getattr(record, name) for name in plain} | {
        "valid": int(record.valid),
        "accuracy_value": None if value is None else float(value),
        "accuracy_passed": None if passed is None else int(passed),
        "inferences_per_s": None if speed is None else float(speed),
        "energy_uj": None if energy is None else float(energy),
        "record_json": record.to_json(),
    }


def _profile_row(record: ProfileRecord) -> dict[str, object]:
    plain = ("record_id", "run_id", "created_at", "target", "label", "folder")
    step_ms = record.step_ms
    return {name: getattr(record, name) for name in plain} | {
        "steps": int(record.steps),
        "step_ms": None if step_ms is None else float(step_ms),
        "coverage": float(record.coverage),
        "record_json": record.to_json(),
    }


class ResultStore:
    """An append-only store of :class:`ResultRecord` in a SQLite file or a PostgreSQL database.

    ``location`` is a path or a URL; ``self.location`` is it for display (password
    masked) and ``self.path`` the SQLite file, None for PostgreSQL.
    """

    def __init__(self, location: str | Path) -> None:
        self._db = Database(location)
        self.path = self._db.path
        self.location = self._db.location
        try:
            # MIGRATIONS is looked up here at open time, so a longer list set on this module applies.
            prepare(self._db, MIGRATIONS)
        except BaseException:
            self._db.dispose()
            raise

    @property
    def _sqlite(self) -> bool:
        return self._db.sqlite

    # -- writing ------------------------------------------------------------

    def add(self, record: ResultRecord) -> None:
        """Store one record."""
        self.add_many([record])

    def add_many(self, records: Sequence[ResultRecord]) -> None:
        """Store records all or nothing: one failing record leaves no rows behind."""
        self._insert(_results, [_row(r) for r in records])

    def add_training(self, record: TrainingRecord) -> None:
        """Store one training run as soon as it ends, so a later failure in its set loses nothing."""
        self._insert(_training, [_training_row(record)])

    def add_tiny(self, record: TinyRecord) -> None:
        """Store one MLPerf Tiny run (one benchmark on one device), all or nothing."""
        self._insert(_tiny, [_tiny_row(record)])

    def add_profile(self, record: ProfileRecord) -> None:
        """Store one profile (its summary, peaks and bottlenecks), all or nothing."""
        self._insert(_profiles, [_profile_row(record)])

    def _insert(self, into, rows: list[dict[str, object]]) -> None:
        if not rows:
            return
        try:
            with self._db.transaction(write=True) as conn:
                conn.execute(insert(into), rows)
        except IntegrityError as exc:
            raise self._db.fail(
                "cannot store results, nothing was written",
                "Each record_id can be stored once; results are append-only and never replaced",
                exc,
            ) from exc
        except DBAPIError as exc:
            raise self._db.fail(
                "cannot store results, nothing was written",
                self._db.hint(
                    "Check that the results database and its folder are writable and the disk is not full",
                    "Check that the database server is up and the user may insert into 'results'",
                ),
                exc,
            ) from exc

    # -- reading ------------------------------------------------------------

    def _read(self, statement: Select) -> list[tuple]:
        try:
            with self._db.transaction() as conn:
                return [tuple(row) for row in conn.execute(statement)]
        except DBAPIError as exc:
            raise self._db.fail(
                "cannot read the results database",
                self._db.hint(
                    "The file may be damaged; restore it from a backup or start a new one",
                    "Check that the database server is up and the user may read 'results'",
                ),
                exc,
            ) from exc

    def _created_at(self, of: TableClause = _results) -> ColumnElement:
        # Timestamps sort as text; PostgreSQL's locale collations may skip punctuation, "C" compares bytes.
        return of.c.created_at if self._sqlite else of.c.created_at.collate("C")

    def query(
        self,
        *,
        task: str | None = None,
        scenario: str | None = None,
        mode: str | None = None,
        run_id: str | None = None,
        backend: str | None = None,
        limit: int | None = None,
        run_ids: Sequence[str] | None = None,
    ) -> list[ResultRecord]:
        """Records matching every given filter, newest first; ``run_ids`` matches any of several runs."""
        c = _results.c
        statement = select(c.record_json)
        filters = {"task": task, "scenario": scenario, "mode": mode, "run_id": run_id, "backend": backend}
        for name, value in filters.items():
            if value is not None:
                statement = statement.where(c[name] == value)
        if run_ids is not None:
            wanted = [run_ids] if isinstance(run_ids, str) else list(run_ids)
            statement = statement.where(c.run_id.in_(wanted))
        # id breaks ties between records created in the same second.
        statement = statement.order_by(self._created_at().desc(), c.id.desc())
        if limit is not None:
            if limit < 0:
                raise UsageError(f"limit must be 0 or more, got {limit}", hint="Pass a non-negative limit")
            statement = statement.limit(int(limit))
        records = []
        for (text,) in self._read(statement):
            try:
                records.append(ResultRecord.from_dict(json.loads(text)))
            except (ValueError, TypeError) as exc:
                raise OutputError(
                    f"a stored result record cannot be read: {exc}",
                    hint="The results database may be damaged; restore it from a backup",
                    **self._db.where,
                ) from exc
        return records

    def query_training(
        self, *, run_id: str | None = None, benchmark: str | None = None, limit: int | None = None
    ) -> list[TrainingRecord]:
        """Training runs matching the filters, in the order they were stored (a set's run order)."""
        filters = {"run_id": run_id, "benchmark": benchmark}
        return self._query_runs(_training, TrainingRecord, "training", limit, **filters)

    def query_tiny(
        self, *, run_id: str | None = None, benchmark: str | None = None, limit: int | None = None
    ) -> list[TinyRecord]:
        """MLPerf Tiny runs matching the filters, in the order they were stored."""
        return self._query_runs(_tiny, TinyRecord, "tiny", limit, run_id=run_id, benchmark=benchmark)

    def query_profiles(
        self, *, run_id: str | None = None, target: str | None = None, limit: int | None = None
    ) -> list[ProfileRecord]:
        """Profiles matching the filters, in the order they were stored."""
        return self._query_runs(_profiles, ProfileRecord, "profile", limit, run_id=run_id, target=target)

    def _query_runs(
        self,
        of: TableClause,
        kind: type[TrainingRecord] | type[TinyRecord] | type[ProfileRecord],
        name: str,
        limit: int | None,
        **filters: str | None,
    ) -> list:
        c = of.c
        statement = select(c.record_json)
        for column, value in filters.items():
            if value is not None:
                statement = statement.where(c[column] == value)
        statement = statement.order_by(c.id)
        if limit is not None:
            statement = statement.limit(max(0, int(limit)))
        try:
            return [kind.from_dict(json.loads(text)) for (text,) in self._read(statement)]
        except (ValueError, TypeError) as exc:
            raise OutputError(
                f"a stored {name} record cannot be read: {exc}",
                hint="The results database may be damaged; restore it from a backup",
                **self._db.where,
            ) from exc

    def training_sets(self, limit: int = 20) -> list[dict]:
        """One summary per training set, newest first: ``run_id``, ``created_at`` (its first run), ``n``."""
        return self._sets(_training, limit)

    def tiny_sets(self, limit: int = 20) -> list[dict]:
        """One summary per MLPerf Tiny run id, newest first: ``run_id``, ``created_at`` (its first record), ``n``."""
        return self._sets(_tiny, limit)

    def profile_sets(self, limit: int = 20) -> list[dict]:
        """One summary per profile run id, newest first: ``run_id``, ``created_at`` (its first), ``n``."""
        return self._sets(_profiles, limit)

    def _sets(self, of: TableClause, limit: int) -> list[dict]:
        first = func.min(self._created_at(of)).label("first_at")
        statement = (
            select(of.c.run_id, first, func.count().label("n"))
            .group_by(of.c.run_id)
            # The newest row breaks ties between sets begun in the same millisecond.
            .order_by(first.desc(), func.max(of.c.id).desc())
            .limit(max(0, int(limit)))
        )
        return [{"run_id": run, "created_at": at, "n": int(n)} for run, at, n in self._read(statement)]

    def last_run_id(self) -> str | None:
        """The run_id of the newest record that has one, or None when there is none."""
        c = _results.c
        rows = self._read(
            select(c.run_id)
            .where(c.run_id.is_not(None), c.run_id != "")
            .order_by(self._created_at().desc(), c.id.desc())
            .limit(1)
        )
        return rows[0][0] if rows else None

    def runs(self, limit: int = 20) -> list[dict]:
        """One summary per run_id, newest run first.

        Each dict has ``run_id``, ``created_at`` (of the run's first record),
        ``n`` (number of records), and the sorted distinct ``tasks`` and ``scenarios``.
        """
        if limit < 0:
            raise UsageError(f"limit must be 0 or more, got {limit}", hint="Pass a non-negative limit")
        c = _results.c
        first_at = func.min(self._created_at()).label("first_at")
        last_id = func.max(c.id).label("last_id")
        heads = self._read(
            select(c.run_id, first_at, func.count().label("n"), last_id)
            .group_by(c.run_id)
            .order_by(first_at.desc(), last_id.desc())
            .limit(int(limit))
        )
        if not heads:
            return []
        # Lists are gathered here rather than with group_concat/string_agg,
        # which differ between SQLite and PostgreSQL.
        run_list = [head[0] for head in heads]
        pairs = self._read(select(c.run_id, c.task, c.scenario).distinct().where(c.run_id.in_(run_list)))
        tasks: dict[str, set[str]] = {}
        scenarios: dict[str, set[str]] = {}
        for run, task, scenario in pairs:
            tasks.setdefault(run, set()).add(task)
            scenarios.setdefault(run, set()).add(scenario)
        return [
            {
                "run_id": run,
                "created_at": first,
                "n": int(n),
                "tasks": sorted(t for t in tasks.get(run, ()) if t is not None),
                "scenarios": sorted(s for s in scenarios.get(run, ()) if s is not None),
            }
            for run, first, n, _ in heads
        ]

    def count(self) -> int:
        """How many records are stored."""
        return int(self._read(select(func.count()).select_from(_results))[0][0])

    # -- lifetime -----------------------------------------------------------

    def close(self) -> None:
        self._db.dispose()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
