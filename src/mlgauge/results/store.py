"""The embedded results database: every record ever measured, append-only, in one SQLite file.

Design choices, so a later PostgreSQL/SQLAlchemy backend can share the schema:

* plain column types (INTEGER, TEXT, REAL) and named ``:param`` placeholders,
  which both sqlite3 and SQLAlchemy's ``text()`` understand;
* no SQLite-only functions in queries (aggregation of lists happens in Python);
* the full record is kept as JSON next to the indexed columns, so a record can
  be rebuilt exactly even after new columns are added.

History can never be rewritten: triggers abort any UPDATE or DELETE.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from mlgauge.errors import ConfigError, OutputError, UsageError
from mlgauge.results.record import ResultRecord

# Each entry upgrades the schema by one version; entry i brings a database to
# version i + 1. Never edit a released entry: append a new one instead.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE results (
        id INTEGER PRIMARY KEY,
        record_id TEXT UNIQUE NOT NULL,
        run_id TEXT,
        created_at TEXT,
        task TEXT,
        benchmark TEXT,
        dataset TEXT,
        scenario TEXT,
        mode TEXT,
        style TEXT,
        backend TEXT,
        metric_key TEXT,
        metric_value REAL,
        metric_unit TEXT,
        validity TEXT,
        accuracy_value REAL,
        accuracy_passed INTEGER,
        log_dir TEXT,
        record_json TEXT NOT NULL
    );
    CREATE INDEX results_run_id ON results (run_id);
    CREATE INDEX results_task_scenario ON results (task, scenario);
    CREATE TRIGGER results_no_update BEFORE UPDATE ON results
    BEGIN
        SELECT RAISE(ABORT, 'mlgauge results are append-only: UPDATE is not allowed');
    END;
    CREATE TRIGGER results_no_delete BEFORE DELETE ON results
    BEGIN
        SELECT RAISE(ABORT, 'mlgauge results are append-only: DELETE is not allowed');
    END;
    """,
]

SCHEMA_VERSION: int = len(MIGRATIONS)

# Concurrent benchmark processes share one file; writers wait for the lock
# rather than failing with "database is locked".
_LOCK_TIMEOUT_S = 60.0

_COLUMNS = (
    "record_id",
    "run_id",
    "created_at",
    "task",
    "benchmark",
    "dataset",
    "scenario",
    "mode",
    "style",
    "backend",
    "metric_key",
    "metric_value",
    "metric_unit",
    "validity",
    "accuracy_value",
    "accuracy_passed",
    "log_dir",
    "record_json",
)

_INSERT = f"INSERT INTO results ({', '.join(_COLUMNS)}) VALUES ({', '.join(':' + c for c in _COLUMNS)})"


def _split_statements(script: str) -> list[str]:
    """Split a migration script into single statements.

    ``executescript`` cannot be used: it commits any open transaction first, and
    migrations must run inside the one transaction that holds the write lock.
    Trigger bodies contain ``;``, so split only where SQLite agrees a statement is complete.
    """
    statements: list[str] = []
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    if buffer.strip(" \n\t;"):
        statements.append(buffer.strip())
    return [s for s in statements if s.strip(" \n\t;")]


def _row(record: ResultRecord) -> dict[str, object]:
    metric = record.metric
    accuracy = record.accuracy
    passed = record.accuracy_passed
    accuracy_value = accuracy.get("value") if accuracy is not None else None
    return {
        "record_id": record.record_id,
        "run_id": record.run_id,
        "created_at": record.created_at,
        "task": record.task,
        "benchmark": record.benchmark,
        "dataset": record.dataset,
        "scenario": record.scenario,
        "mode": record.mode,
        "style": record.style,
        "backend": record.backend,
        "metric_key": metric.key if metric is not None else None,
        "metric_value": float(metric.value) if metric is not None else None,
        "metric_unit": metric.unit if metric is not None else None,
        "validity": record.validity,
        "accuracy_value": float(accuracy_value) if accuracy_value is not None else None,
        "accuracy_passed": None if passed is None else int(passed),
        "log_dir": record.log_dir,
        "record_json": record.to_json(),
    }


class ResultStore:
    """An append-only store of :class:`ResultRecord` in a SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"cannot create the folder for the results database: {exc.strerror or exc}",
                hint="Choose a results path in a writable folder",
                path=self.path,
            ) from exc
        try:
            # isolation_level=None: transactions are begun and ended explicitly,
            # so batch inserts and migrations are atomic on every Python version.
            self._conn = sqlite3.connect(self.path, timeout=_LOCK_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as exc:
            raise OutputError(
                f"cannot open the results database: {exc}",
                hint="Check that the folder exists and is writable",
                path=self.path,
            ) from exc
        try:
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    def _rollback(self) -> None:
        # SQLite already rolls back by itself after some errors (disk full, I/O);
        # a second ROLLBACK would then hide the original error.
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    # -- schema -------------------------------------------------------------

    def _user_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"the results database was created by a newer mlgauge (schema {version}, "
                f"this version knows up to {SCHEMA_VERSION})",
                hint="Upgrade mlgauge, or use a different results database",
                path=self.path,
            )

    def _not_ours(self, exc: Exception | None = None) -> OutputError:
        detail = f": {exc}" if exc is not None else ""
        return OutputError(
            f"the file is not an mlgauge results database{detail}",
            hint="Point mlgauge at a different results file, or move this one away",
            path=self.path,
        )

    def _migrate(self) -> None:
        try:
            version = self._user_version()
        except sqlite3.OperationalError as exc:  # locked past the timeout, unreadable, ...
            raise OutputError(
                f"cannot read the results database: {exc}",
                hint="Check that the file is readable and not held by another program",
                path=self.path,
            ) from exc
        except sqlite3.DatabaseError as exc:  # SQLITE_NOTADB: "file is not a database"
            raise self._not_ours(exc) from exc
        self._check_version(version)
        if version == SCHEMA_VERSION:
            return  # the common case needs no write lock, so read-only copies still open
        try:
            # IMMEDIATE takes the write lock before the version is re-read, so two
            # processes opening a fresh file do not both try to create the tables.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                version = self._user_version()
                self._check_version(version)
                if version == 0:
                    tables = self._conn.execute(
                        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'"
                    ).fetchone()[0]
                    if tables:
                        raise self._not_ours()
                for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
                    for statement in _split_statements(script):
                        self._conn.execute(statement)
                    # PRAGMA takes no parameters; target is an int we computed.
                    self._conn.execute(f"PRAGMA user_version = {int(target)}")
                self._conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        except sqlite3.DatabaseError as exc:
            raise OutputError(
                f"cannot prepare the results database: {exc}",
                hint="Check that the file and its folder are writable and not used by another tool",
                path=self.path,
            ) from exc

    # -- writing ------------------------------------------------------------

    def add(self, record: ResultRecord) -> None:
        """Store one record."""
        self.add_many([record])

    def add_many(self, records: Sequence[ResultRecord]) -> None:
        """Store records all or nothing: one failing record leaves no rows behind."""
        rows = [_row(r) for r in records]
        if not rows:
            return
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(_INSERT, rows)
                self._conn.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        except sqlite3.IntegrityError as exc:
            raise OutputError(
                f"cannot store results, nothing was written: {exc}",
                hint="Each record_id can be stored once; results are append-only and never replaced",
                path=self.path,
            ) from exc
        except sqlite3.DatabaseError as exc:
            raise OutputError(
                f"cannot store results, nothing was written: {exc}",
                hint="Check that the results database and its folder are writable and the disk is not full",
                path=self.path,
            ) from exc

    # -- reading ------------------------------------------------------------

    def _read(self, sql: str, params: dict[str, object] | None = None) -> list[tuple]:
        try:
            return self._conn.execute(sql, params or {}).fetchall()
        except sqlite3.DatabaseError as exc:
            raise OutputError(
                f"cannot read the results database: {exc}",
                hint="The file may be damaged; restore it from a backup or start a new one",
                path=self.path,
            ) from exc

    def query(
        self,
        *,
        task: str | None = None,
        scenario: str | None = None,
        mode: str | None = None,
        run_id: str | None = None,
        backend: str | None = None,
        limit: int | None = None,
    ) -> list[ResultRecord]:
        """Records matching every given filter, newest first."""
        filters = {"task": task, "scenario": scenario, "mode": mode, "run_id": run_id, "backend": backend}
        params: dict[str, object] = {k: v for k, v in filters.items() if v is not None}
        sql = "SELECT record_json FROM results"
        if params:
            sql += " WHERE " + " AND ".join(f"{k} = :{k}" for k in params)
        # id breaks ties between records created in the same second.
        sql += " ORDER BY created_at DESC, id DESC"
        if limit is not None:
            if limit < 0:
                raise UsageError(f"limit must be 0 or more, got {limit}", hint="Pass a non-negative limit")
            sql += " LIMIT :limit"
            params["limit"] = int(limit)
        records = []
        for (text,) in self._read(sql, params):
            try:
                records.append(ResultRecord.from_dict(json.loads(text)))
            except (ValueError, TypeError) as exc:
                raise OutputError(
                    f"a stored result record cannot be read: {exc}",
                    hint="The results database may be damaged; restore it from a backup",
                    path=self.path,
                ) from exc
        return records

    def last_run_id(self) -> str | None:
        """The run_id of the newest record that has one, or None when there is none."""
        rows = self._read(
            "SELECT run_id FROM results WHERE run_id IS NOT NULL AND run_id <> '' "
            "ORDER BY created_at DESC, id DESC LIMIT 1"
        )
        return rows[0][0] if rows else None

    def runs(self, limit: int = 20) -> list[dict]:
        """One summary per run_id, newest run first.

        Each dict has ``run_id``, ``created_at`` (of the run's first record),
        ``n`` (number of records), and the sorted distinct ``tasks`` and ``scenarios``.
        """
        if limit < 0:
            raise UsageError(f"limit must be 0 or more, got {limit}", hint="Pass a non-negative limit")
        heads = self._read(
            "SELECT run_id, MIN(created_at) AS first_at, COUNT(*) AS n, MAX(id) AS last_id "
            "FROM results GROUP BY run_id ORDER BY first_at DESC, last_id DESC LIMIT :limit",
            {"limit": int(limit)},
        )
        if not heads:
            return []
        # Lists are gathered here rather than with group_concat/string_agg,
        # which differ between SQLite and PostgreSQL.
        names = {f"r{i}": head[0] for i, head in enumerate(heads)}
        pairs = self._read(
            "SELECT DISTINCT run_id, task, scenario FROM results "
            f"WHERE run_id IN ({', '.join(':' + k for k in names)})",
            names,
        )
        tasks: dict[str, set[str]] = {}
        scenarios: dict[str, set[str]] = {}
        for run, task, scenario in pairs:
            tasks.setdefault(run, set()).add(task)
            scenarios.setdefault(run, set()).add(scenario)
        return [
            {
                "run_id": run,
                "created_at": first_at,
                "n": int(n),
                "tasks": sorted(t for t in tasks.get(run, ()) if t is not None),
                "scenarios": sorted(s for s in scenarios.get(run, ()) if s is not None),
            }
            for run, first_at, n, _ in heads
        ]

    def count(self) -> int:
        """How many records are stored."""
        return int(self._read("SELECT COUNT(*) FROM results")[0][0])

    # -- lifetime -----------------------------------------------------------

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
