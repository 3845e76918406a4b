"""The results table and how a database is brought to the current schema.

SQLite files and PostgreSQL databases get the same schema from one list of migrations:

* plain column types (INTEGER, TEXT, REAL), and queries built with SQLAlchemy Core
  using no dialect-only functions (lists are gathered in Python);
* the full record is kept as JSON next to the indexed columns, so a record can
  be rebuilt exactly even after new columns are added;
* the schema version is kept in the one-row table ``mlgauge_schema``; SQLite files
  made before that table kept it only in the file header (``PRAGMA user_version``)
  and are carried forward.

History can never be rewritten: triggers abort any UPDATE or DELETE (and TRUNCATE on PostgreSQL).

Upgrading runs in one write transaction, so two processes opening a fresh database do
not both create the tables: on SQLite that transaction begins IMMEDIATE (see
:mod:`mlgauge.results.location`), on PostgreSQL it takes an advisory lock.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, column, func, insert, inspect, select, table
from sqlalchemy import update as sql_update
from sqlalchemy.exc import DBAPIError, OperationalError

from mlgauge.errors import ConfigError
from mlgauge.results.location import Database


@dataclass(frozen=True)
class Migration:
    """One schema step: ``statements`` run on every database; the per-dialect
    tuples hold what only that database can express (triggers, sequences)."""

    statements: tuple[str, ...]
    sqlite: tuple[str, ...] = ()
    postgresql: tuple[str, ...] = ()

    def for_dialect(self, name: str) -> tuple[str, ...]:
        return self.statements + getattr(self, name)


# Statement builders the released migrations use: like the migrations, never change what they return.
def _sqlite_append_only(table: str) -> tuple[str, ...]:
    return tuple(
        f"""CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table}
            BEGIN
                SELECT RAISE(ABORT, 'mlgauge results are append-only: {op} is not allowed');
            END"""
        for op in ("UPDATE", "DELETE")
    )


def _postgresql_serial(table: str) -> tuple[str, ...]:
    # INTEGER PRIMARY KEY numbers new rows by itself only in SQLite.
    return (
        f"CREATE SEQUENCE {table}_id_seq OWNED BY {table}.id",
        f"ALTER TABLE {table} ALTER COLUMN id SET DEFAULT nextval('{table}_id_seq')",
    )


def _postgresql_append_only(table: str) -> tuple[str, ...]:
    # Statement-level, so they fire even when no row matches; TRUNCATE skips DELETE triggers.
    return tuple(
        f"""CREATE TRIGGER {table}_no_{op.lower()} BEFORE {op} ON {table} FOR EACH STATEMENT
            EXECUTE FUNCTION mlgauge_results_append_only()"""
        for op in ("UPDATE", "DELETE", "TRUNCATE")
    )


# Entry i brings a database to version i + 1. Never edit a released entry: append a new one.
MIGRATIONS: list[Migration] = [
    Migration(
        statements=(
            """CREATE TABLE results (
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
            )""",
            "CREATE INDEX results_run_id ON results (run_id)",
            "CREATE INDEX results_task_scenario ON results (task, scenario)",
        ),
        sqlite=_sqlite_append_only("results"),
        postgresql=(
            *_postgresql_serial("results"),
            """CREATE FUNCTION mlgauge_results_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION USING
                    MESSAGE = 'mlgauge results are append-only: ' || TG_OP || ' is not allowed';
            END
            $$""",
            *_postgresql_append_only("results"),
        ),
    ),
    # Training runs (time to train): their own table, the same append-only guard.
    Migration(
        statements=(
            """CREATE TABLE training_runs (
                id INTEGER PRIMARY KEY,
                record_id TEXT UNIQUE NOT NULL,
                run_id TEXT,
                run_index INTEGER,
                created_at TEXT,
                benchmark TEXT,
                dataset TEXT,
                division TEXT,
                status TEXT,
                time_to_train_s REAL,
                epochs REAL,
                seed INTEGER,
                log_path TEXT,
                record_json TEXT NOT NULL
            )""",
            "CREATE INDEX training_runs_run_id ON training_runs (run_id)",
        ),
        sqlite=_sqlite_append_only("training_runs"),
        postgresql=(
            *_postgresql_serial("training_runs"),
            # mlgauge_results_append_only() comes from the first migration.
            *_postgresql_append_only("training_runs"),
        ),
    ),
    # MLPerf Tiny runs (one device, one model id, the median of timed windows): their own table,
    # the same append-only guard.
    Migration(
        statements=(
            """CREATE TABLE tiny_runs (
                id INTEGER PRIMARY KEY,
                record_id TEXT UNIQUE NOT NULL,
                run_id TEXT,
                created_at TEXT,
                benchmark TEXT,
                dataset TEXT,
                precision TEXT,
                backend TEXT,
                style TEXT,
                valid INTEGER,
                accuracy_value REAL,
                accuracy_passed INTEGER,
                inferences_per_s REAL,
                energy_uj REAL,
                record_json TEXT NOT NULL
            )""",
            "CREATE INDEX tiny_runs_run_id ON tiny_runs (run_id)",
        ),
        sqlite=_sqlite_append_only("tiny_runs"),
        postgresql=(
            *_postgresql_serial("tiny_runs"),
            # mlgauge_results_append_only() comes from the first migration.
            *_postgresql_append_only("tiny_runs"),
        ),
    ),
    # Profiles (where a step's time goes, op by op): their own table, the same append-only guard.
    Migration(
        statements=(
            """CREATE TABLE profiles (
                id INTEGER PRIMARY KEY,
                record_id TEXT UNIQUE NOT NULL,
                run_id TEXT,
                created_at TEXT,
                target TEXT,
                label TEXT,
                steps INTEGER,
                step_ms REAL,
                coverage REAL,
                folder TEXT,
                record_json TEXT NOT NULL
            )""",
            "CREATE INDEX profiles_run_id ON profiles (run_id)",
        ),
        sqlite=_sqlite_append_only("profiles"),
        postgresql=(
            *_postgresql_serial("profiles"),
            # mlgauge_results_append_only() comes from the first migration.
            *_postgresql_append_only("profiles"),
        ),
    ),
]

SCHEMA_VERSION: int = len(MIGRATIONS)

_VERSION_TABLE = "mlgauge_schema"
# pg_advisory_xact_lock takes a bigint; any fixed number other programs are unlikely to use.
_SCHEMA_LOCK_KEY = zlib.crc32(b"mlgauge.results.schema")

COLUMNS = (
    "record_id", "run_id", "created_at", "task", "benchmark", "dataset", "scenario", "mode", "style",
    "backend", "metric_key", "metric_value", "metric_unit", "validity", "accuracy_value",
    "accuracy_passed", "log_dir", "record_json",
)  # fmt: skip
RESULTS = table("results", column("id"), *(column(c) for c in COLUMNS))
TRAINING_COLUMNS = (
    "record_id", "run_id", "run_index", "created_at", "benchmark", "dataset", "division", "status",
    "time_to_train_s", "epochs", "seed", "log_path", "record_json",
)  # fmt: skip
TRAINING_RUNS = table("training_runs", column("id"), *(column(c) for c in TRAINING_COLUMNS))
TINY_COLUMNS = (
    "record_id", "run_id", "created_at", "benchmark", "dataset", "precision", "backend", "style", "valid",
    "accuracy_value", "accuracy_passed", "inferences_per_s", "energy_uj", "record_json",
)  # fmt: skip
TINY_RUNS = table("tiny_runs", column("id"), *(column(c) for c in TINY_COLUMNS))
PROFILE_COLUMNS = (
    "record_id", "run_id", "created_at", "target", "label", "steps", "step_ms", "coverage", "folder",
    "record_json",
)  # fmt: skip
PROFILES = table("profiles", column("id"), *(column(c) for c in PROFILE_COLUMNS))
_schema = table(_VERSION_TABLE, column("version"))


def prepare(db: Database, migrations: Sequence[Migration] = MIGRATIONS) -> None:
    """Bring ``db`` to the schema ``migrations`` describe, creating it if empty.

    Refuses a database that is not mlgauge's or that a newer mlgauge has upgraded.
    """
    known = len(migrations)
    try:
        with db.transaction() as conn:
            version, tracked = _version(db, conn, known)
    except DBAPIError as exc:
        if db.sqlite and not isinstance(exc, OperationalError):  # "file is not a database"
            raise db.not_ours(exc) from exc
        raise db.fail(  # locked past the timeout, unreadable, no permission, ...
            "cannot read the results database",
            db.hint(
                "Check that the file is readable and not held by another program",
                "Check that the database user may read this database",
            ),
            exc,
        ) from exc
    _check_version(db, version, known)
    if version == known and tracked:
        return  # the common case needs no write lock, so read-only copies still open
    try:
        with db.transaction(write=True) as conn:
            if not db.sqlite:
                # Serialises first-time creation: a second opener waits here, then finds the tables.
                conn.execute(select(func.pg_advisory_xact_lock(_SCHEMA_LOCK_KEY)))
            version, tracked = _version(db, conn, known)
            _check_version(db, version, known)
            _upgrade(conn, migrations, version, tracked)
    except DBAPIError as exc:
        raise db.fail(
            "cannot prepare the results database",
            db.hint(
                "Check that the file and its folder are writable and not used by another tool",
                "Check that the database user may create tables and functions in this database",
            ),
            exc,
        ) from exc


def _check_version(db: Database, version: int, known: int) -> None:
    if version > known:
        raise ConfigError(
            f"the results database was created by a newer mlgauge (schema {version}, "
            f"this version knows up to {known})",
            hint="Upgrade mlgauge, or use a different results database",
            **db.where,
        )


def _version(db: Database, conn: Connection, known: int) -> tuple[int, bool]:
    """The schema version, and whether ``mlgauge_schema`` records it (files from before it do not)."""
    inspector = inspect(conn)
    if inspector.has_table(_VERSION_TABLE):
        version = conn.execute(select(func.max(_schema.c.version))).scalar()
        if version is None:
            raise db.not_ours()
        return int(version), True
    has_results = inspector.has_table("results")
    if not db.sqlite:
        # A shared server database may hold other programs' tables; only a clash is refused.
        if has_results:
            raise db.not_ours()
        return 0, False
    # Files made before the version table kept the version in the SQLite header only.
    legacy = int(conn.exec_driver_sql("PRAGMA user_version").scalar() or 0)
    if legacy > known or (legacy and has_results):
        return legacy, False
    if legacy == 0 and not inspector.get_table_names():
        return 0, False
    raise db.not_ours()


def _upgrade(conn: Connection, migrations: Sequence[Migration], version: int, tracked: bool) -> None:
    if not tracked:
        conn.exec_driver_sql(f"CREATE TABLE {_VERSION_TABLE} (version INTEGER NOT NULL)")
        conn.execute(insert(_schema).values(version=version))
    for target, migration in enumerate(migrations[version:], start=version + 1):
        for statement in migration.for_dialect(conn.dialect.name):
            conn.exec_driver_sql(statement)
        conn.execute(sql_update(_schema).values(version=target))
    if conn.dialect.name == "sqlite":
        # Kept in step: older mlgauge versions read only this header. An int we computed, not input.
        conn.exec_driver_sql(f"PRAGMA user_version = {len(migrations)}")
