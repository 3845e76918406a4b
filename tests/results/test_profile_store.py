"""Profiles in the results database: exact round trips with their indexed columns filled, on
SQLite and PostgreSQL, append-only like every result, found by run selection, and a version-3
database file gains the table on open with its older rows kept."""

from __future__ import annotations

import json
import sqlite3

import pytest
from sqlalchemy import text
from test_store import make_record
from test_tiny_store import tiny_record

from mlgauge import __version__
from mlgauge.errors import OutputError, UsageError
from mlgauge.results.location import Database
from mlgauge.results.profile_record import ProfileRecord
from mlgauge.results.schema import MIGRATIONS, prepare
from mlgauge.results.selection import resolve_runs
from mlgauge.results.store import SCHEMA_VERSION, ResultStore

PEAKS = {"gemm_gflops": {"float32": 100.0, "bfloat16": 250.0}, "triad_gbs": 20.0, "copy_gbs": 18.0, "quick": False}


def op(name: str, calls: int, self_ms: float, flops=None, nbytes=None, bound=None, efficiency=None) -> dict:
    """An OpRow dict; a costed op's whole self time is its costed time, so its rates follow by hand."""
    row = {"name": name, "calls": calls, "self_ms": self_ms, "share": self_ms / 126.0, "flops": flops,
           "bytes": nbytes, "costed_ms": None, "bound": bound, "achieved_gflops": None, "achieved_gbs": None,
           "efficiency": efficiency, "ideal_ms": None}  # fmt: skip
    if flops is not None:
        seconds = self_ms / 1e3
        row |= {"costed_ms": self_ms, "achieved_gflops": flops / seconds / 1e9, "achieved_gbs": nbytes / seconds / 1e9}
    return row


def profile_summary() -> dict:
    """Four 50 ms steps; 126 ms of op self time in 14 ops, four of them costed.

    conv: 2.4 GFLOP over 0.12 GB in 36 ms = 66.67 GFLOP/s at 20 FLOP/byte; mul: 0.1 GFLOP over 1.2 GB in
    24 ms = 4.167 GFLOP/s at 0.0833; addmm: 1.8 GFLOP over 0.06 GB in 18 ms = 100 GFLOP/s at 30; copy_:
    no FLOPs, 0.8 GB in 10 ms (no roofline point). The ten small ops sum to 38 ms.
    """
    ops = [
        op("aten::mkldnn_convolution", 8, 36.0, 2.4e9, 1.2e8, "compute", 2 / 3),
        op("aten::mul", 40, 24.0, 1e8, 1.2e9, "memory", 2.5),
        op("aten::addmm", 12, 18.0, 1.8e9, 6e7, "compute", 1.0),
        op("aten::copy_", 20, 10.0, 0.0, 8e8, "memory", 4.0),
    ] + [op(f"aten::small{i}", 4, ms) for i, ms in enumerate([8, 7, 6, 5, 4, 3, 2, 1.5, 1, 0.5])]
    return {
        "steps": 4, "step_ms": 50.0, "profiled_ms": 200.0, "op_ms": 180.0, "coverage": 0.9, "ops": ops,
        "regions": {"loss": {"calls": 4, "ms": 20.0}},
        "onednn": {
            "version": "v3.12.0", "isa": "Intel AVX-512", "total_ms": 36.0, "reorder_ms": 6.0,
            "by_kind": {"convolution": {"calls": 24, "ms": 30.0}, "reorder": {"calls": 16, "ms": 6.0}},
            "by_direction": {"forward_training": {"calls": 8, "ms": 10.0}, "backward_data": {"calls": 8, "ms": 12.0},
                             "backward_weights": {"calls": 8, "ms": 8.0}, "undef": {"calls": 16, "ms": 6.0}},
            "by_implementation": {}, "reorders": {"abcd -> aBcd16b": {"calls": 16, "ms": 6.0}},
            "attributed_fraction": 0.95, "by_op": {},
        },
        "warnings": ["3 events had no duration"],
        "modules": {"model.backbone": {"forward_ms": 20.0, "backward_ms": 40.0, "calls": 4},
                    "model.head": {"forward_ms": 8.0, "backward_ms": 12.0, "calls": 4}},
        "shapes": [{"op": "aten::mkldnn_convolution", "dims": [[2, 16, 28, 28], [32, 16, 3, 3]], "calls": 8, "ms": 36.0}],
        "replay": {"rows": [
                       {"op": "aten::addmm", "dims": [[10], [4, 72], [72, 10], [], []], "calls_per_step": 3.0,
                        "traced_ms_per_call": 1.5, "isolated_ms_per_call": 0.5, "gap_ms_per_step": 3.0},
                       {"op": "aten::mkldnn_convolution", "dims": [[2, 16, 28, 28], [32, 16, 3, 3]],
                        "calls_per_step": 2.0, "traced_ms_per_call": 4.5, "isolated_ms_per_call": 4.0,
                        "gap_ms_per_step": 1.0}],
                   "skipped": [["aten::nonzero", "its cost depends on the data"]],
                   "ideal_step_ms": 30.0, "step_ms": 50.0},
    }  # fmt: skip


def minimal_summary(name: str = "aten::add") -> dict:
    """What a --summary-only capture of a whole command gives: no steps, peaks, oneDNN or optional keys."""
    return {"steps": 0, "step_ms": None, "profiled_ms": 120.0, "op_ms": 100.0, "coverage": 100 / 120,
            "ops": [op(name, 30, 100.0) | {"share": 1.0}], "regions": {}, "onednn": {}, "warnings": []}  # fmt: skip


def profile_record(
    *, run_id: str = "prof-a", created_at: str = "2025-03-01T10:00:00.000+00:00", minimal: bool = False, **fields
) -> ProfileRecord:
    summary = minimal_summary() if minimal else profile_summary()
    values = dict(
        target="python train.py --batch-size 8", folder="/tmp/runs/profile-a", steps=summary["steps"],
        step_ms=summary["step_ms"], coverage=summary["coverage"], peaks={} if minimal else PEAKS, summary=summary,
        bottlenecks=[] if minimal else [
            {"title": "Element-wise ops take 19% of op time", "advice": "Fuse them (torch.compile)", "share": 0.19}
        ],
        system={"hostname": "box", "cpu_model": "AMD EPYC", "os": "Linux"}, warnings=summary["warnings"],
        label="" if minimal else "baseline", mlgauge_version="0.1.0", run_id=run_id, created_at=created_at,
    )  # fmt: skip
    values.update(fields)
    return ProfileRecord(**values)


def test_profiles_round_trip_with_their_columns_filled(location, raw):
    profiles = [profile_record(), profile_record(minimal=True, label="whole")]
    with ResultStore(location) as store:
        for p in profiles:
            store.add_profile(p)
        assert store.query_profiles() == profiles  # every field, the summary's optional keys too, in stored order
        assert store.count() == 0 and store.query_tiny() == [] and store.query_training() == []
    with raw.connect() as conn:
        rows = conn.execute(
            text("SELECT record_id, run_id, target, label, steps, step_ms, coverage, folder FROM profiles ORDER BY id")
        ).fetchall()
    assert [tuple(row) for row in rows] == [
        (profiles[0].record_id, "prof-a", "python train.py --batch-size 8", "baseline", 4, 50.0, 0.9, "/tmp/runs/profile-a"),
        (profiles[1].record_id, "prof-a", "python train.py --batch-size 8", "whole", 0, None, pytest.approx(100 / 120),
         "/tmp/runs/profile-a"),
    ]  # fmt: skip


def test_profiles_are_append_only(location, raw):
    stored = profile_record()
    with ResultStore(location) as store:
        store.add_profile(stored)
    for sql in ("UPDATE profiles SET steps = 1", "DELETE FROM profiles"):
        with pytest.raises(Exception, match="append-only"), raw.begin() as conn:
            conn.execute(text(sql))
    with ResultStore(location) as store:
        assert store.query_profiles() == [stored]  # unchanged
        with pytest.raises(OutputError, match="nothing was written"):
            store.add_profile(stored)  # the same record_id twice
        assert len(store.query_profiles()) == 1


def test_query_filters_sets_and_selection(tmp_path):
    first = profile_record(run_id="a", created_at="2099-01-01T10:00:00.000+00:00")
    other = profile_record(run_id="a", target="task ssd --train", created_at="2099-01-01T10:05:00.000+00:00")
    later = profile_record(run_id="b", created_at="2099-01-02T09:00:00.000+00:00")
    with ResultStore(tmp_path / "r.db") as store:
        store.add(make_record(run_id="inf-1", created_at="2099-01-01T12:00:00+00:00"))
        for p in (first, other, later):
            store.add_profile(p)
        assert store.query_profiles(run_id="a") == [first, other]
        assert store.query_profiles(target="task ssd --train") == [other]
        assert store.query_profiles(limit=1) == [first] and store.query_profiles(run_id="c") == []
        assert store.profile_sets() == [
            {"run_id": "b", "created_at": later.created_at, "n": 1},
            {"run_id": "a", "created_at": first.created_at, "n": 2},
        ]
        # Profile run "a" began before the inference run, "b" after it.
        assert [resolve_runs(store, f"last~{n}") for n in range(3)] == [["b"], ["inf-1"], ["a"]]
        assert resolve_runs(store, "a,inf-1") == ["a", "inf-1"]
        with pytest.raises(UsageError, match="unknown run id 'c'"):
            resolve_runs(store, "c")


def test_a_version_3_database_file_gains_the_profiles_table(tmp_path):
    path = tmp_path / "v3.db"
    old = Database(path)
    prepare(old, MIGRATIONS[:3])  # the schema as mlgauge made it before profiles
    old.dispose()
    tiny = tiny_record()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM mlgauge_schema").fetchall() == [(3,)]
        assert not conn.execute("SELECT name FROM sqlite_master WHERE name = 'profiles'").fetchall()
        conn.execute("INSERT INTO tiny_runs (record_id, run_id, created_at, benchmark, record_json) VALUES (?, ?, ?, ?, ?)",
                     (tiny.record_id, tiny.run_id, tiny.created_at, tiny.benchmark, tiny.to_json()))  # fmt: skip
    conn.close()
    profile = profile_record()
    with ResultStore(path) as store:
        store.add_profile(profile)
        assert store.query_profiles() == [profile] and store.query_tiny() == [tiny]
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT version FROM mlgauge_schema").fetchall() == [(SCHEMA_VERSION,)] == [(4,)]
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM profiles")
    conn.close()


def test_a_record_made_from_a_summary(tmp_path):
    summary = profile_summary()
    bottleneck = {"title": "Reorders take 17% of oneDNN time", "advice": "channels_last", "share": 0.17}
    record = ProfileRecord.from_summary(summary, target="task ssd --train", folder=tmp_path, peaks=PEAKS,
                                        bottlenecks=[bottleneck], run_id="prof-x")  # fmt: skip
    assert (record.steps, record.step_ms, record.coverage) == (4, 50.0, 0.9)
    assert record.warnings == ["3 events had no duration"] and record.folder == str(tmp_path)
    assert record.mlgauge_version == __version__ and record.system["hostname"]
    assert record.roofs == {"float32": 100.0, "bfloat16": 250.0} and record.triad_gbs == 20.0
    assert [r["name"] for r in record.roofline_ops()] == ["aten::mkldnn_convolution", "aten::mul", "aten::addmm"]
    assert ProfileRecord.from_dict(record.to_dict()) == record
    saved = record.save(tmp_path)
    assert saved.name == "profile_record.json"
    assert ProfileRecord.from_dict(json.loads(saved.read_text())) == record
