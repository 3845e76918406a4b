"""Run planning and the Server peak search, with the worker launcher replaced by a fake."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mlgauge.config.run_spec import RunSpec
from mlgauge.loadgen import session
from mlgauge.loadgen.session import PEAK_PROBES, Plan, execute, find_peak, new_run_id
from mlgauge.results.record import Metric, ResultRecord

BASE = RunSpec(
    task="resnet50",
    scenario="Offline",
    mode="performance",
    backend="null",
    out_dir="",
    style="quick",
    flags={"min_duration": 1000.0},
    max_batch=16,
)


def record(spec: RunSpec, value: float, validity: str | None) -> ResultRecord:
    return ResultRecord(
        task=spec.task,
        benchmark="resnet50",
        dataset="synthetic",
        scenario=spec.scenario,
        mode=spec.mode,
        style=spec.style,
        backend=spec.backend,
        backend_info={},
        log_dir=spec.out_dir,
        settings={},
        system={},
        metric=Metric(
            key="result_samples_per_second",
            name="samples/s",
            value=value,
            unit="samples/s",
            higher_is_better=True,
        ),
        validity=validity,
        run_id=spec.run_id,
    )


class FakeWorker:
    """Offline reports ``offline_qps``; a Server run is VALID iff its target_qps <= ``threshold``."""

    def __init__(self, threshold: float, offline_qps: float = 10_000.0) -> None:
        self.threshold = threshold
        self.offline_qps = offline_qps
        self.specs: list[RunSpec] = []
        self.records: list[ResultRecord] = []

    def __call__(self, spec: RunSpec) -> ResultRecord:
        self.specs.append(spec)
        if spec.scenario == "Offline":
            rec = record(spec, self.offline_qps, "VALID" if spec.mode == "performance" else None)
        elif spec.mode == "performance" and "target_qps" in spec.flags:
            qps = spec.flags["target_qps"]
            rec = record(spec, qps * 0.999, "VALID" if qps <= self.threshold else "INVALID")
        else:
            rec = record(spec, 1.0, "VALID" if spec.mode == "performance" else None)
        self.records.append(rec)
        return rec

    @property
    def server_targets(self) -> list[float]:
        return [s.flags["target_qps"] for s in self.specs if "target_qps" in s.flags]


class Events:
    def __init__(self) -> None:
        self.log: list[tuple[str, str, str]] = []

    def __call__(self, event: str, spec: RunSpec, rec: ResultRecord | None) -> None:
        assert (rec is None) == (event == "start")
        self.log.append((event, spec.scenario, Path(spec.out_dir).name))


def plan(tmp_path: Path, scenarios, modes, find_peak: bool = False) -> Plan:
    return Plan(
        base=BASE, runs_root=tmp_path, scenarios=list(scenarios), modes=list(modes), find_peak=find_peak
    )


# --- Plan --------------------------------------------------------------------------------


def test_specs_order_and_naming(tmp_path: Path) -> None:
    p = plan(tmp_path, ["MultiStream", "Offline", "SingleStream", "Server"], ["accuracy", "performance"])
    specs = p.specs()
    assert [(s.scenario, s.mode) for s in specs] == [
        ("Offline", "performance"),
        ("Server", "performance"),
        ("SingleStream", "performance"),
        ("MultiStream", "performance"),
        ("SingleStream", "accuracy"),
        ("MultiStream", "accuracy"),
        ("Server", "accuracy"),
        ("Offline", "accuracy"),
    ]
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", p.run_id)
    assert p.run_dir == tmp_path / p.run_id
    for s in specs:
        assert s.run_id == p.run_id
        assert Path(s.out_dir) == tmp_path / p.run_id / f"resnet50-{s.scenario}-{s.mode}"
        # Everything else comes from the base spec.
        assert (s.task, s.backend, s.style, s.flags, s.max_batch) == (
            "resnet50",
            "null",
            "quick",
            {"min_duration": 1000.0},
            16,
        )
    assert len({s.out_dir for s in specs}) == len(specs)
    assert BASE.out_dir == "" and BASE.run_id == ""


def test_specs_subsets(tmp_path: Path) -> None:
    assert [(s.scenario, s.mode) for s in plan(tmp_path, ["Server"], ["performance"]).specs()] == [
        ("Server", "performance")
    ]
    assert [
        (s.scenario, s.mode) for s in plan(tmp_path, ["Offline", "SingleStream"], ["accuracy"]).specs()
    ] == [
        ("SingleStream", "accuracy"),
        ("Offline", "accuracy"),
    ]
    assert plan(tmp_path, [], ["performance", "accuracy"]).specs() == []
    assert plan(tmp_path, ["Offline"], []).specs() == []


def test_repeats_interleave_performance_runs_and_run_accuracy_once(tmp_path: Path) -> None:
    p = Plan(base=BASE, runs_root=tmp_path, scenarios=["Offline", "SingleStream"], modes=["performance", "accuracy"], repeats=3)
    names = [Path(s.out_dir).name for s in p.specs()]
    assert names == [
        "resnet50-Offline-performance-1",
        "resnet50-SingleStream-performance-1",
        "resnet50-Offline-performance-2",
        "resnet50-SingleStream-performance-2",
        "resnet50-Offline-performance-3",
        "resnet50-SingleStream-performance-3",
        "resnet50-SingleStream-accuracy",
        "resnet50-Offline-accuracy",
    ]


def test_run_id_format() -> None:
    assert re.fullmatch(r"20\d{6}-\d{6}-[0-9a-f]{4}", new_run_id())


def test_execute_runs_each_spec_once_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeWorker(threshold=0)
    monkeypatch.setattr(session, "run_in_worker", fake)
    p = plan(tmp_path, ["Server", "Offline"], ["performance", "accuracy"])
    events = Events()
    records = execute(p, events)
    assert fake.specs == p.specs()
    assert records == fake.records
    names = [Path(s.out_dir).name for s in fake.specs]
    assert events.log == [
        e
        for n, s in zip(names, fake.specs, strict=True)
        for e in (("start", s.scenario, n), ("done", s.scenario, n))
    ]


# --- Offline that ended too soon -----------------------------------------------------------


class ShortOfflineWorker:
    """An Offline run whose calibrated target_qps undersized the query: it ends before
    min_duration at ``rate`` samples/s, unless target_qps came from a flag."""

    def __init__(self, rate: float, source: str = "calibration", reasons=("min_duration: ran 280 ms, needed 300 ms",)):
        self.rate, self.source, self.reasons = rate, source, list(reasons)
        self.specs: list[RunSpec] = []

    def __call__(self, spec: RunSpec) -> ResultRecord:
        self.specs.append(spec)
        Path(spec.out_dir).mkdir(parents=True, exist_ok=True)
        rec = record(spec, self.rate, "INVALID")
        rec.settings = {"target_qps": spec.flags.get("target_qps", 100.0)}
        rec.harness = {"settings_sources": {"target_qps": "--target-qps" if "target_qps" in spec.flags else self.source}}
        if "target_qps" in spec.flags and spec.flags["target_qps"] >= self.rate:
            rec.validity = "VALID"
        else:
            rec.invalid_reasons = list(self.reasons)
        return rec


def test_an_offline_run_that_beat_its_calibration_is_rerun_once_at_its_rate(tmp_path, monkeypatch) -> None:
    fake = ShortOfflineWorker(rate=400.0)
    monkeypatch.setattr(session, "run_in_worker", fake)
    (rec,) = execute(plan(tmp_path, ["Offline"], ["performance"]))
    first, second = fake.specs
    assert second.out_dir == first.out_dir
    assert second.flags == {"min_duration": 1000.0, "target_qps": 600.0}  # 1.5 x the achieved rate
    assert rec.validity == "VALID"
    assert rec.harness["resized_from"] == {
        "target_qps": 100.0,
        "samples_per_second": 400.0,
        "invalid_reasons": ["min_duration: ran 280 ms, needed 300 ms"],
    }
    assert rec.harness["settings_sources"]["target_qps"].startswith("rerun")
    saved = json.loads((Path(first.out_dir) / "record.json").read_text())
    assert saved["validity"] == "VALID" and "resized_from" in saved["harness"]


@pytest.mark.parametrize(
    "source, reasons",
    [
        ("user.conf:3", ["min_duration: ran 280 ms, needed 300 ms"]),  # the user chose the size
        ("calibration", ["min_duration: ran 280 ms, needed 300 ms", "min_queries: ran 1 queries"]),
        ("calibration", ["loadgen_errors: 1"]),
    ],
)
def test_other_invalid_offline_runs_are_reported_not_rerun(tmp_path, monkeypatch, source, reasons) -> None:
    fake = ShortOfflineWorker(rate=400.0, source=source, reasons=reasons)
    monkeypatch.setattr(session, "run_in_worker", fake)
    (rec,) = execute(plan(tmp_path, ["Offline"], ["performance"]))
    assert len(fake.specs) == 1
    assert rec.validity == "INVALID" and rec.invalid_reasons == reasons and "resized_from" not in rec.harness


# --- find_peak -------------------------------------------------------------------------------


def offline_done(p: Plan, value: float = 10_000.0) -> list[ResultRecord]:
    return [record(p._spec("Offline", "performance"), value, "VALID")]


def server_spec(p: Plan) -> RunSpec:
    (spec,) = [s for s in p.specs() if s.scenario == "Server" and s.mode == "performance"]
    return spec


def test_find_peak_bisects_to_the_highest_valid_rate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeWorker(threshold=6_000)
    monkeypatch.setattr(session, "run_in_worker", fake)
    p = plan(tmp_path, ["Offline", "Server"], ["performance"], find_peak=True)
    events = Events()
    chosen = find_peak(p, server_spec(p), offline_done(p), events)

    assert PEAK_PROBES == 8
    # The Offline result is the upper bound: no Offline run is started for it.
    assert [s.scenario for s in fake.specs] == ["Server"] * 8
    assert fake.server_targets == [10_000, 5_000, 7_500, 6_250, 5_625, 5_937.5, 6_093.75, 6_015.625]
    assert chosen is fake.records[5]
    assert chosen.validity == "VALID"
    target = fake.specs[5].flags["target_qps"]
    assert target <= 6_000 and 6_000 - target <= 10_000 / 128
    assert chosen.harness["find_peak"] == {
        "upper_bound": 10_000.0,
        "found": True,
        "probes": [
            {
                "target_qps": q,
                "validity": "VALID" if q <= 6_000 else "INVALID",
                "completed": pytest.approx(q * 0.999),
            }
            for q in (10_000, 5_000, 7_500, 6_250, 5_625, 5_937.5, 6_093.75, 6_015.625)
        ],
    }
    # Each probe is its own run folder, and keeps the user's other flags.
    assert [Path(s.out_dir).name for s in fake.specs] == [
        f"resnet50-Server-performance-peak-{i}" for i in range(1, 9)
    ]
    assert all(s.flags["min_duration"] == 1000.0 and s.run_id == p.run_id for s in fake.specs)
    assert all(s.mode == "performance" for s in fake.specs)
    assert [e for e, _, _ in events.log] == ["start", "done"] * 8


@pytest.mark.parametrize("threshold", [200.0, 1_234.0, 3_333.0, 6_000.0, 8_888.0, 9_999.0])
def test_find_peak_precision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threshold: float) -> None:
    fake = FakeWorker(threshold=threshold)
    monkeypatch.setattr(session, "run_in_worker", fake)
    p = plan(tmp_path, ["Offline", "Server"], ["performance"], find_peak=True)
    chosen = find_peak(p, server_spec(p), offline_done(p), Events())
    target = fake.specs[fake.records.index(chosen)].flags["target_qps"]
    assert chosen.validity == "VALID" and target <= threshold
    # One probe at the bound, then seven halvings: within 1/128 of the bound.
    assert threshold - target < 10_000 / 128
    assert len(fake.specs) == PEAK_PROBES


def test_find_peak_probe_rates_are_rounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeWorker(threshold=100)
    monkeypatch.setattr(session, "run_in_worker", fake)
    p = plan(tmp_path, ["Offline", "Server"], ["performance"], find_peak=True)
    chosen = find_peak(p, server_spec(p), offline_done(p, 1000 / 3), Events())
    assert fake.server_targets == [333.333, 166.667, 83.333, 125.0, 104.167, 93.75, 98.958, 101.562]
    assert chosen.harness["find_peak"]["upper_bound"] == 1000 / 3
    assert [q["target_qps"] for q in chosen.harness["find_peak"]["probes"]] == fake.server_targets
    assert chosen is fake.records[6]  # 98.958 is the highest VALID rate


def test_first_probe_valid_stops_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeWorker(threshold=1e9)
    monkeypatch.setattr(session, "run_in_worker", fake)
    p = plan(tmp_path, ["Offline", "Server"], ["performance"], find_peak=True)
    chosen = find_peak(p, server_spec(p), offline_done(p), Events())
    assert fake.server_targets == [10_000]
    assert chosen is fake.records[0]
    assert chosen.harness["find_peak"] == {
        "upper_bound": 10_000.0,
        "found": True,
        "probes": [{"target_qps": 10_000, "validity": "VALID", "completed": pytest.approx(9_990)}],
    }


def test_no_valid_probe_returns_the_lowest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeWorker(threshold=0)
    monkeypatch.setattr(session, "run_in_worker", fake)
    p = plan(tmp_path, ["Offline", "Server"], ["performance"], find_peak=True)
    chosen = find_peak(p, server_spec(p), offline_done(p), Events())
    assert fake.server_targets == [10_000, 5_000, 2_500, 1_250, 625, 312.5, 156.25, 78.125]
    assert chosen is fake.records[-1]
    assert chosen.validity == "INVALID"
    assert chosen.harness["find_peak"]["found"] is False
    assert [probe["validity"] for probe in chosen.harness["find_peak"]["probes"]] == ["INVALID"] * 8


def test_execute_with_find_peak_reuses_the_offline_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeWorker(threshold=6_000, offline_qps=8_000)
    monkeypatch.setattr(session, "run_in_worker", fake)
    p = plan(tmp_path, ["Server", "Offline"], ["performance", "accuracy"], find_peak=True)
    records = execute(p, Events())
    scenarios_modes = [(s.scenario, s.mode, Path(s.out_dir).name) for s in fake.specs]
    assert scenarios_modes[0] == ("Offline", "performance", "resnet50-Offline-performance")
    assert [s for s, m, _ in scenarios_modes[1:9]] == ["Server"] * 8
    assert scenarios_modes[9:] == [
        ("Server", "accuracy", "resnet50-Server-accuracy"),
        ("Offline", "accuracy", "resnet50-Offline-accuracy"),
    ]
    assert fake.server_targets[0] == 8_000  # the Offline throughput is the first probe
    assert len(records) == 4
    assert records[0] is fake.records[0]
    assert records[1].harness["find_peak"]["upper_bound"] == 8_000
    assert records[1].validity == "VALID"
    assert [r.mode for r in records] == ["performance", "performance", "accuracy", "accuracy"]


def test_find_peak_without_an_offline_result_runs_one_bound_probe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeWorker(threshold=1e9, offline_qps=4_321.0)
    monkeypatch.setattr(session, "run_in_worker", fake)
    p = plan(tmp_path, ["Server"], ["performance"], find_peak=True)
    events = Events()
    records = execute(p, events)
    assert [(s.scenario, s.mode, Path(s.out_dir).name) for s in fake.specs] == [
        ("Offline", "performance", "resnet50-Offline-performance-peak-bound"),
        ("Server", "performance", "resnet50-Server-performance-peak-1"),
    ]
    assert fake.specs[0].run_id == p.run_id
    assert fake.server_targets == [4_321.0]
    assert len(records) == 1 and records[0].harness["find_peak"]["upper_bound"] == 4_321.0
    assert events.log == [
        ("start", "Offline", "resnet50-Offline-performance-peak-bound"),
        ("done", "Offline", "resnet50-Offline-performance-peak-bound"),
        ("start", "Server", "resnet50-Server-performance-peak-1"),
        ("done", "Server", "resnet50-Server-performance-peak-1"),
    ]


def test_offline_accuracy_or_metricless_records_are_not_a_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeWorker(threshold=1e9, offline_qps=2_000.0)
    monkeypatch.setattr(session, "run_in_worker", fake)
    p = plan(tmp_path, ["Offline", "Server"], ["performance"], find_peak=True)
    accuracy = record(p._spec("Offline", "accuracy"), 99_999.0, None)
    metricless = record(p._spec("Offline", "performance"), 0.0, "INVALID")
    metricless.metric = None
    chosen = find_peak(p, server_spec(p), [accuracy, metricless], Events())
    assert [s.scenario for s in fake.specs] == ["Offline", "Server"]
    assert chosen.harness["find_peak"]["upper_bound"] == 2_000.0


# --- INT8 against FP32 ------------------------------------------------------------------


def _accuracy_worker(values: dict[str, float]):
    """Accuracy runs score ``values[precision]``; each writes its log folder like a worker."""

    def run(spec: RunSpec) -> ResultRecord:
        Path(spec.out_dir).mkdir(parents=True, exist_ok=True)
        rec = record(spec, 1.0, None)
        rec.metric, rec.precision = None, spec.precision
        rec.accuracy = {"metric": "top1", "value": values[spec.precision], "unit": "%", "passed": True}
        rec.save(Path(spec.out_dir))
        return rec

    return run


def test_int8_accuracy_runs_an_fp32_reference_first_and_reports_the_change(tmp_path, monkeypatch) -> None:
    p = Plan(base=BASE.with_(precision="int8"), runs_root=tmp_path, scenarios=["Offline", "SingleStream"], modes=["accuracy"])
    specs = p.accuracy_specs()
    assert [(s.scenario, s.precision, Path(s.out_dir).name) for s in specs] == [
        ("SingleStream", "fp32", "resnet50-SingleStream-accuracy-fp32"),
        ("SingleStream", "int8", "resnet50-SingleStream-accuracy"),
        ("Offline", "int8", "resnet50-Offline-accuracy"),
    ]
    monkeypatch.setattr(session, "run_in_worker", _accuracy_worker({"fp32": 95.5, "int8": 94.75}))
    records = execute(p)
    ref, *quantized = records
    assert "change_vs_fp32" not in ref.accuracy
    for r in quantized:
        assert r.accuracy["fp32_reference"] == 95.5
        assert r.accuracy["change_vs_fp32"] == pytest.approx(-0.75)
        # the log folder's record.json carries the comparison too
        saved = ResultRecord.from_dict(json.loads((Path(r.log_dir) / "record.json").read_text()))
        assert saved.accuracy["change_vs_fp32"] == pytest.approx(-0.75)


def test_fp32_runs_plan_no_reference(tmp_path) -> None:
    p = Plan(base=BASE, runs_root=tmp_path, scenarios=["Offline"], modes=["accuracy"])
    assert [s.precision for s in p.accuracy_specs()] == ["fp32"]
