"""Training runs in the results database: exact round trips in run order, on SQLite and
PostgreSQL, append-only like every result, and old databases gain the table on open."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import text

from mlgauge.results.store import SCHEMA_VERSION, ResultStore
from mlgauge.results.training_record import TrainingRecord


def training_record(run_index: int, status: str = "success", run_id: str = "set-a") -> TrainingRecord:
    converged = status == "success"
    return TrainingRecord(
        benchmark="resnet", dataset="synthetic", division="open", status=status,
        reason="" if converged else "max epochs (12) reached before the target",
        time_to_train_s=41.5 + run_index if converged else 80.0, epochs=8 + run_index, samples=8000 * (8 + run_index),
        seed=1000 + run_index,
        quality={"metric": "top1", "target": 0.85, "value": 0.86 if converged else 0.7, "higher_is_better": True},
        evals=[{"epoch": 4, "samples": 32000, "seconds": 20.0, "value": 0.6}, {"epoch": 8, "samples": 64000, "seconds": 41.0, "value": 0.86}],
        config={"global_batch_size": 128, "world_size": 1, "opt_name": "sgd", "opt_base_learning_rate": 0.1},
        log_path=f"/tmp/set-a/run_{run_index}/mlperf.log", system={"cpu_model": "AMD EPYC"},
        run_id=run_id, run_index=run_index,
    )  # fmt: skip


def test_training_runs_round_trip_in_run_order(location):
    runs = [training_record(0), training_record(1, "aborted"), training_record(2)]
    with ResultStore(location) as store:
        for r in runs:
            store.add_training(r)
        store.add_training(training_record(0, run_id="set-b"))
        got = store.query_training(run_id="set-a")
        assert got == runs  # every field, in the order the set ran
        assert [r.converged for r in got] == [True, False, True]
        assert len(store.query_training(benchmark="resnet")) == 4
        assert store.query_training(benchmark="ssd") == []
        assert store.count() == 0  # inference results are a separate table


def test_training_runs_are_append_only(location, raw):
    stored = training_record(0)
    with ResultStore(location) as store:
        store.add_training(stored)
    for sql in ("UPDATE training_runs SET status = 'success'", "DELETE FROM training_runs"):
        with pytest.raises(Exception, match="append-only"), raw.begin() as conn:
            conn.execute(text(sql))
    with ResultStore(location) as store:
        assert store.query_training() == [stored]  # unchanged


def test_a_database_from_before_training_gains_the_table(tmp_path):
    path = tmp_path / "old.db"
    with ResultStore(path):
        pass
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE training_runs")  # what a version-1 file looks like
    conn.execute("DROP TABLE profiles")
    conn.execute("DROP TABLE tiny_runs")
    conn.execute("UPDATE mlgauge_schema SET version = 1")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with ResultStore(path) as store:
        store.add_training(training_record(0))
        assert len(store.query_training()) == 1
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM mlgauge_schema").fetchall() == [(SCHEMA_VERSION,)] == [(4,)]
    conn.close()
