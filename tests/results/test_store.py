"""The results database: exact round trips, filters, append-only history, atomic batches, clear errors.

Tests taking ``location``, ``store`` or ``raw`` run twice: on a SQLite file and on a
PostgreSQL database (see conftest.py); the others are about SQLite files.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from mlgauge.errors import ConfigError, OutputError
from mlgauge.results import store as store_module
from mlgauge.results.record import Metric, ResultRecord
from mlgauge.results.store import SCHEMA_VERSION, Migration, ResultStore, open_store


def make_record(
    *,
    task: str = "resnet50",
    scenario: str = "Offline",
    mode: str = "performance",
    backend: str = "torch",
    run_id: str = "run-a",
    created_at: str = "2025-01-01T10:00:00+00:00",
    record_id: str | None = None,
) -> ResultRecord:
    extra = {"record_id": record_id} if record_id is not None else {}
    performance = mode == "performance"
    return ResultRecord(
        task=task,
        benchmark="mlperf-inference",
        dataset="synthetic",
        scenario=scenario,
        mode=mode,
        style="quick",
        backend=backend,
        backend_info={"version": "2.13.0", "device": "cpu", "threads": 4},
        log_dir=f"/tmp/logs/{run_id}/{task}-{scenario}",
        settings={"effective_min_duration_ms": {"value": 60000, "source": "rules"}},
        system={"cpu_model": "AMD EPYC", "cpu_logical_cores": 8, "gpus": []},
        metric=Metric("result_samples_per_second", "samples per second", 1234.5, "samples/s", True)
        if performance
        else None,
        validity="VALID" if performance else None,
        invalid_reasons=[],
        latency_ns={"min": 1000, "p50": 2500, "p90": 4000.5, "max": 9000} if performance else {},
        early_stopping={"p90": 4100} if performance else {},
        stats={"result_query_count": 24576},
        accuracy=None
        if performance
        else {
            "metric": "top1",
            "value": 0.7612,
            "unit": "fraction",
            "samples": 50000,
            "passed": True,
            "target": {"reference": 0.7646, "ratio": 0.99},
            "details": {},
        },
        loadgen_warnings=["min_query_count not met"] if not performance else [],
        harness={"batch_size": 8, "workers": 2},
        run_id=run_id,
        created_at=created_at,
        **extra,
    )


# The schema the first mlgauge release wrote (version 1 in the SQLite header, no
# version table). Files made by it must keep opening: never edit this copy.
LEGACY_DDL_V1 = """
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
    """


@pytest.fixture
def store(location):
    with ResultStore(location) as s:
        yield s


def _scalar(engine, sql: str):
    with engine.connect() as conn:
        return conn.execute(text(sql)).scalar()


# -- both backends ---------------------------------------------------------


def test_schema_version_is_recorded(store: ResultStore, raw) -> None:
    assert _scalar(raw, "SELECT COUNT(*) FROM mlgauge_schema") == 1
    assert _scalar(raw, "SELECT version FROM mlgauge_schema") == SCHEMA_VERSION == 4
    assert _scalar(raw, "SELECT COUNT(*) FROM results") == 0


def test_reopening_keeps_records(location) -> None:
    record = make_record()
    with ResultStore(location) as s:
        s.add(record)
    with ResultStore(location) as s:
        assert s.query() == [record]
        assert s.count() == 1


def test_round_trip_is_exact_for_performance_and_accuracy(store: ResultStore) -> None:
    perf = make_record(created_at="2025-01-01T10:00:00+00:00")
    acc = make_record(mode="accuracy", created_at="2025-01-01T10:05:00+00:00")
    store.add(perf)
    store.add(acc)
    got = store.query()
    assert got == [acc, perf]
    assert got[1].metric == Metric(
        "result_samples_per_second", "samples per second", 1234.5, "samples/s", True
    )
    assert got[0].accuracy_passed is True
    assert got[1].to_json() == perf.to_json()


def test_indexed_columns_are_filled(store: ResultStore, raw) -> None:
    store.add_many([make_record(record_id="p1"), make_record(mode="accuracy", record_id="a1")])
    with raw.connect() as conn:
        rows = {
            r[0]: tuple(r[1:])
            for r in conn.execute(
                text(
                    "SELECT record_id, metric_key, metric_value, metric_unit, validity, accuracy_value, "
                    "accuracy_passed FROM results"
                )
            )
        }
    assert rows["p1"] == ("result_samples_per_second", 1234.5, "samples/s", "VALID", None, None)
    assert rows["a1"] == (None, None, None, None, 0.7612, 1)


def test_query_is_newest_first_with_filters_and_limit(store: ResultStore) -> None:
    records = [
        make_record(task="resnet50", scenario="Offline", run_id="r1", created_at="2025-01-01T10:00:00+00:00"),
        make_record(
            task="resnet50", scenario="SingleStream", run_id="r1", created_at="2025-01-01T10:01:00+00:00"
        ),
        make_record(
            task="bert",
            scenario="Offline",
            backend="onnxruntime",
            run_id="r2",
            created_at="2025-01-02T09:00:00+00:00",
        ),
        make_record(
            task="bert",
            scenario="Offline",
            mode="accuracy",
            backend="onnxruntime",
            run_id="r2",
            created_at="2025-01-02T09:00:00+00:00",
        ),
        make_record(task="bert", scenario="Server", run_id="r3", created_at="2025-01-03T09:00:00+00:00"),
    ]
    store.add_many(records[:4])
    # Same second: the later insert counts as newer.
    assert store.query() == [records[3], records[2], records[1], records[0]]
    assert store.query(task="resnet50") == [records[1], records[0]]
    assert store.query(scenario="Offline") == [records[3], records[2], records[0]]
    assert store.query(task="resnet50", scenario="Offline") == [records[0]]
    assert store.query(mode="accuracy") == [records[3]]
    assert store.query(backend="onnxruntime", mode="performance") == [records[2]]
    assert store.query(run_id="r1") == [records[1], records[0]]
    assert store.query(limit=2) == [records[3], records[2]]
    assert store.query(limit=0) == []
    assert store.query(task="nope") == []
    store.add(records[4])
    assert store.query(run_ids=["r1", "r3"]) == [records[4], records[1], records[0]]
    assert store.query(run_ids=["r3", "r2"], scenario="Offline") == [records[3], records[2]]
    assert store.query(run_ids=["r1", "r2"], run_id="r2", limit=1) == [records[3]]
    assert store.query(run_ids=[]) == []


def test_last_run_id_and_runs(store: ResultStore) -> None:
    assert store.last_run_id() is None
    assert store.runs() == []
    store.add_many(
        [
            make_record(
                task="resnet50", scenario="Offline", run_id="r1", created_at="2025-01-01T10:00:00+00:00"
            ),
            make_record(task="bert", scenario="Server", run_id="r1", created_at="2025-01-01T10:02:00+00:00"),
            make_record(
                task="resnet50", scenario="Offline", run_id="r1", created_at="2025-01-01T10:03:00+00:00"
            ),
            make_record(task="bert", scenario="Offline", run_id="r2", created_at="2025-01-03T08:00:00+00:00"),
        ]
    )
    assert store.last_run_id() == "r2"
    assert store.runs() == [
        {
            "run_id": "r2",
            "created_at": "2025-01-03T08:00:00+00:00",
            "n": 1,
            "tasks": ["bert"],
            "scenarios": ["Offline"],
        },
        {
            "run_id": "r1",
            "created_at": "2025-01-01T10:00:00+00:00",
            "n": 3,
            "tasks": ["bert", "resnet50"],
            "scenarios": ["Offline", "Server"],
        },
    ]
    assert [r["run_id"] for r in store.runs(limit=1)] == ["r2"]


@pytest.mark.parametrize(
    "sql",
    ["UPDATE results SET metric_value = 1.0", "UPDATE results SET record_json = '{}'", "DELETE FROM results"],
)
def test_history_cannot_be_rewritten(store: ResultStore, raw, sql: str) -> None:
    store.add(make_record())
    with raw.connect() as conn, pytest.raises(DBAPIError, match="append-only"):
        conn.execute(text(sql))
    assert store.count() == 1
    assert store.query()[0].metric.value == 1234.5


def test_add_many_is_all_or_nothing(store: ResultStore) -> None:
    store.add(make_record(record_id="existing"))
    first = make_record(record_id="dup")
    second = make_record(record_id="dup", task="bert")
    with pytest.raises(OutputError, match="nothing was written") as info:
        store.add_many([first, make_record(record_id="fresh"), second])
    assert info.value.hint and "append-only" in info.value.hint
    assert store.count() == 1
    assert [r.record_id for r in store.query()] == ["existing"]
    # The store stays usable after the failed batch.
    store.add(first)
    assert store.count() == 2


def test_adding_a_stored_record_again_fails(store: ResultStore) -> None:
    record = make_record()
    store.add(record)
    with pytest.raises(OutputError):
        store.add(record)
    assert store.count() == 1


def test_newer_schema_in_the_version_table_is_a_config_error(location, raw) -> None:
    ResultStore(location).close()
    with raw.begin() as conn:
        conn.execute(text("UPDATE mlgauge_schema SET version = :v"), {"v": SCHEMA_VERSION + 1})
    with pytest.raises(ConfigError, match="newer mlgauge") as info:
        ResultStore(location)
    assert f"schema {SCHEMA_VERSION + 1}" in str(info.value)
    assert "Upgrade" in (info.value.hint or "")


def test_new_migrations_apply_in_order_and_keep_records(location, raw, monkeypatch) -> None:
    record = make_record()
    with ResultStore(location) as s:
        s.add(record)
    step = Migration(
        statements=("CREATE INDEX results_created_at ON results (created_at)",),
        sqlite=("CREATE TABLE only_sqlite (x INTEGER)",),
        postgresql=("CREATE TABLE only_postgresql (x INTEGER)",),
    )
    monkeypatch.setattr(store_module, "MIGRATIONS", [*store_module.MIGRATIONS, step])
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with ResultStore(location) as s:
        assert s.query() == [record]
    dialect = "sqlite" if isinstance(location, Path) else "postgresql"
    assert _scalar(raw, "SELECT version FROM mlgauge_schema") == SCHEMA_VERSION + 1
    assert _scalar(raw, f"SELECT COUNT(*) FROM only_{dialect}") == 0
    other = "postgresql" if dialect == "sqlite" else "sqlite"
    with raw.connect() as conn, pytest.raises(DBAPIError):
        conn.execute(text(f"SELECT COUNT(*) FROM only_{other}"))


def test_two_stores_share_one_database(location) -> None:
    # Two processes (here: two connections) opening a fresh database must not both migrate.
    with ResultStore(location) as a, ResultStore(location) as b:
        a.add(make_record(record_id="from-a", created_at="2025-01-01T10:00:00+00:00"))
        b.add(make_record(record_id="from-b", created_at="2025-01-01T10:01:00+00:00"))
        assert [r.record_id for r in a.query()] == ["from-b", "from-a"]
        assert b.count() == 2


def test_fresh_database_opened_by_many_at_once(location, raw) -> None:
    # Each thread has its own connections, like separate processes; the barrier lines them up
    # so they all find an empty database and race to create the tables.
    openers = 6
    barrier = threading.Barrier(openers)
    errors: list[BaseException] = []

    def open_and_add(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            with ResultStore(location) as s:
                s.add(make_record(record_id=f"t{i}"))
        except BaseException as exc:  # collected: a thread's exception would otherwise be lost
            errors.append(exc)

    threads = [threading.Thread(target=open_and_add, args=(i,)) for i in range(openers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert _scalar(raw, "SELECT COUNT(*) FROM mlgauge_schema") == 1
    assert _scalar(raw, "SELECT COUNT(*) FROM results") == openers


def test_open_store_uses_the_default_database(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLGAUGE_HOME", str(tmp_path / "home"))
    for db in (None, ""):
        with open_store(db) as s:
            assert s.path == tmp_path / "home" / "data" / "results.db"
            assert s.location == str(s.path)
    assert (tmp_path / "home" / "data" / "results.db").is_file()


# -- SQLite files ----------------------------------------------------------


def test_creates_parent_folder_and_sets_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "results.db"
    with open_store(str(path)) as s:
        assert s.path == path and s.location == str(path)
    assert path.is_file()
    with sqlite3.connect(path) as conn:
        # Older mlgauge versions read only this header: it stays in step with the version table.
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert {
        "results",
        "mlgauge_schema",
        "results_run_id",
        "results_task_scenario",
        "results_no_update",
        "results_no_delete",
    } <= names


def test_sqlite_url_opens_the_file(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    with ResultStore(f"sqlite:///{path}") as s:
        s.add(make_record())
        assert s.path == path
    with ResultStore(path) as s:
        assert s.count() == 1


def test_legacy_file_is_carried_forward(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = [
        make_record(record_id="old1", created_at="2024-05-01T10:00:00+00:00"),
        make_record(record_id="old2", mode="accuracy", created_at="2024-05-01T10:01:00+00:00"),
    ]
    conn = sqlite3.connect(path)
    conn.executescript(LEGACY_DDL_V1)
    conn.execute("PRAGMA user_version = 1")
    for r in old:
        conn.execute(
            "INSERT INTO results (record_id, run_id, created_at, task, scenario, mode, record_json) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (r.record_id, r.run_id, r.created_at, r.task, r.scenario, r.mode, r.to_json()),
        )
    conn.commit()
    conn.close()
    new = make_record(record_id="new", created_at="2025-01-01T10:00:00+00:00")
    with ResultStore(path) as s:
        assert s.query() == [old[1], old[0]]
        s.add(new)
    with ResultStore(path) as s:
        assert [r.record_id for r in s.query()] == ["new", "old2", "old1"]
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM mlgauge_schema").fetchall() == [(SCHEMA_VERSION,)]
        # The old file's triggers still guard its history.
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM results WHERE record_id = 'old1'")


def test_newer_schema_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ConfigError, match="newer mlgauge") as info:
        ResultStore(path)
    assert "Upgrade" in (info.value.hint or "")
    assert str(path) in str(info.value)


def test_garbage_file_is_an_output_error(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    path.write_bytes(b"this is not sqlite at all \x00\xff" * 200)
    with pytest.raises(OutputError, match="not an mlgauge results database") as info:
        ResultStore(path)
    assert str(path) in str(info.value)
    assert path.read_bytes().startswith(b"this is not sqlite")


def test_foreign_sqlite_database_is_an_output_error(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE something (x INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(OutputError, match="not an mlgauge results database"):
        ResultStore(path)
    with sqlite3.connect(path) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["something"]


def test_unwritable_location_is_an_output_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    path = blocker / "sub" / "results.db"
    with pytest.raises(OutputError) as info:
        ResultStore(path)
    assert str(path) in str(info.value)
    assert info.value.hint
    with pytest.raises(OutputError, match="cannot write the results database"):
        open_store(path)
