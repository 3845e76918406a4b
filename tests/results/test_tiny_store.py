"""MLPerf Tiny runs in the results database: exact round trips with their indexed columns
filled, on SQLite and PostgreSQL, append-only like every result, found by run selection,
and a database from before Tiny gains the table on open."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import text
from test_store import make_record
from test_training_store import training_record

from mlgauge.errors import OutputError, UsageError
from mlgauge.results.selection import resolve_runs
from mlgauge.results.store import SCHEMA_VERSION, ResultStore
from mlgauge.results.tiny_record import TinyRecord

NOT_MEASURED = "not measured: no energy meter is attached to a host device"


def tiny_record(
    benchmark: str = "kws01",
    *,
    run_id: str = "tiny-a",
    measured: bool = True,
    valid: bool = True,
    created_at: str = "2025-02-01T10:00:00.000+00:00",
    **fields,
) -> TinyRecord:
    # Five windows whose median is 100.0 inferences/s (sorted: 98, 99, 100, 102, 104), so 10.0 ms.
    speeds = [104.0, 98.0, 100.0, 102.0, 99.0]
    energies = [7300.0, 7400.0, 7373.7, 7350.0, 7390.0]  # median 7373.7 µJ
    windows = [
        {"inferences": int(v * 10.5), "seconds": 10.5, "inferences_per_s": v,
         "energy_uj_per_inference": e if measured else None, "meter": "lpm01a" if measured else None}
        for v, e in zip(speeds, energies, strict=True)
    ]  # fmt: skip
    values = dict(
        benchmark=benchmark, dataset="synthetic", precision="int8", backend="onnxruntime",
        backend_info={"version": "1.22.0", "threads": 1},
        device={"url": "tcp://127.0.0.1:5555", "transport": "tcp", "name": "host-sim", "profile": "ULPMark", "model": benchmark},
        style="valid", valid=valid, invalid_reasons=[] if valid else ["accuracy 0.8712 is under the target 0.9000"],
        accuracy={"metric": "top1", "value": 0.9120 if valid else 0.8712, "target": 0.90, "passed": valid,
                  "samples": 1000, "path": "device"},
        performance={"median_inferences_per_s": 100.0, "latency_ms": 10.0, "windows": windows},
        energy={"median_uj_per_inference": 7373.7, "meter": "lpm01a"} if measured else None,
        energy_note="" if measured else NOT_MEASURED,
        model={"source": "trained", "epochs": 2, "seconds": 3.5, "recipe": "quick", "fp32_accuracy": 0.9205,
               "calibration_samples": 100, "cached": False},
        system={"hostname": "box", "cpu_model": "AMD EPYC", "os": "Linux"},
        run_id=run_id, created_at=created_at,
    )  # fmt: skip
    values.update(fields)
    return TinyRecord(**values)


def test_tiny_runs_round_trip_with_their_columns_filled(location, raw):
    runs = [tiny_record("kws01"), tiny_record("ad01", measured=False, valid=False)]
    with ResultStore(location) as store:
        for r in runs:
            store.add_tiny(r)
        assert store.query_tiny() == runs  # every field, in stored order
        assert store.count() == 0 and store.query_training() == []  # separate tables
    with raw.connect() as conn:
        rows = conn.execute(
            text("SELECT record_id, run_id, benchmark, dataset, precision, backend, style, valid, accuracy_value, "
                 "accuracy_passed, inferences_per_s, energy_uj FROM tiny_runs ORDER BY id")
        ).fetchall()  # fmt: skip
    assert [tuple(row) for row in rows] == [
        (runs[0].record_id, "tiny-a", "kws01", "synthetic", "int8", "onnxruntime", "valid", 1, 0.912, 1, 100.0, 7373.7),
        (runs[1].record_id, "tiny-a", "ad01", "synthetic", "int8", "onnxruntime", "valid", 0, 0.8712, 0, 100.0, None),
    ]


def test_tiny_runs_are_append_only(location, raw):
    stored = tiny_record()
    with ResultStore(location) as store:
        store.add_tiny(stored)
    for sql in ("UPDATE tiny_runs SET valid = 0", "DELETE FROM tiny_runs"):
        with pytest.raises(Exception, match="append-only"), raw.begin() as conn:
            conn.execute(text(sql))
    with ResultStore(location) as store:
        assert store.query_tiny() == [stored]  # unchanged
        with pytest.raises(OutputError, match="nothing was written"):
            store.add_tiny(stored)  # the same record_id twice
        assert len(store.query_tiny()) == 1


def test_query_filters_and_sets(tmp_path):
    kws = tiny_record("kws01", run_id="a", created_at="2025-02-01T10:00:00.000+00:00")
    ic = tiny_record("ic01", run_id="a", created_at="2025-02-01T10:05:00.000+00:00")
    later = tiny_record("kws01", run_id="b", created_at="2025-02-02T09:00:00.000+00:00")
    with ResultStore(tmp_path / "r.db") as store:
        for r in (kws, ic, later):
            store.add_tiny(r)
        assert store.query_tiny(run_id="a") == [kws, ic]
        assert store.query_tiny(benchmark="kws01") == [kws, later]
        assert store.query_tiny(run_id="a", benchmark="ic01") == [ic]
        assert store.query_tiny(limit=1) == [kws] and store.query_tiny(limit=-1) == []
        assert store.query_tiny(run_id="c") == []
        assert store.tiny_sets() == [
            {"run_id": "b", "created_at": later.created_at, "n": 1},
            {"run_id": "a", "created_at": kws.created_at, "n": 2},
        ]
        assert store.tiny_sets(limit=1) == store.tiny_sets()[:1]


def test_selection_finds_tiny_runs(tmp_path):
    with ResultStore(tmp_path / "r.db") as store:
        store.add_training(training_record(0, run_id="train-1"))  # created now: the oldest of the three
        store.add(make_record(run_id="inf-1", created_at="2099-01-01T10:00:00+00:00"))
        store.add_tiny(tiny_record(run_id="tiny-1", created_at="2099-01-01T11:00:00.000+00:00"))
        assert resolve_runs(store, "last") == ["tiny-1"]  # newer than the inference run
        assert resolve_runs(store, "last~1") == ["inf-1"]
        assert resolve_runs(store, "last~2") == ["train-1"]
        assert resolve_runs(store, "tiny-1,inf-1") == ["tiny-1", "inf-1"]
        with pytest.raises(UsageError, match="holds 3 runs"):
            resolve_runs(store, "last~3")
        with pytest.raises(UsageError, match="unknown run id 'tiny-2'"):
            resolve_runs(store, "tiny-2")


def test_a_database_from_before_tiny_gains_the_table(tmp_path):
    path = tmp_path / "old.db"
    with ResultStore(path) as store:
        store.add_training(training_record(0))
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE profiles")
    conn.execute("DROP TABLE tiny_runs")  # what a version-2 file looks like
    conn.execute("UPDATE mlgauge_schema SET version = 2")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    with ResultStore(path) as store:
        store.add_tiny(tiny_record())
        assert len(store.query_tiny()) == 1 and len(store.query_training()) == 1
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM mlgauge_schema").fetchall() == [(SCHEMA_VERSION,)] == [(4,)]
    conn.close()
