"""The report's sections. A view turns the report's data into one section, or None when it
has nothing to show; training curves, tiny energy and profiler breakdowns add theirs with
``register_view`` and get the same page, escaping and charts for free."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from markupsafe import Markup

from mlgauge.results import score as scoring
from mlgauge.results.profile_record import ProfileRecord
from mlgauge.results.record import ResultRecord
from mlgauge.results.report import charts, profile_charts
from mlgauge.results.tiny_record import TinyRecord
from mlgauge.results.training_record import TrainingRecord
from mlgauge.results.units import format_repeats


@dataclass
class ReportData:
    records: list[ResultRecord]
    title: str
    source: str  # where the records were read from (the database's location)
    run_ids: list[str]
    comparison: dict | None = None  # a Comparison.to_dict() against a baseline
    baseline_ids: list[str] = field(default_factory=list)
    training: list[TrainingRecord] = field(default_factory=list)  # time-to-train runs, in set order
    tiny: list[TinyRecord] = field(default_factory=list)  # MLPerf Tiny runs, in stored order
    profiles: list[ProfileRecord] = field(default_factory=list)  # profiles, in stored order


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    body: Markup


class Canvas:
    """What a view draws with: the escaping template environment and the chart list."""

    def __init__(self, env) -> None:
        self._env = env
        self.figures: list[tuple[str, str]] = []  # (element id, figure JSON)

    def chart(self, fig) -> Markup:
        if fig is None:
            return Markup("")
        element = f"chart-{len(self.figures) + 1}"
        self.figures.append((element, charts.figure_payload(fig)))
        return Markup('<div class="chart" id="{}"></div>').format(element)

    def render(self, template: str, **values) -> Markup:
        return Markup(self._env.get_template(template).render(**values))


View = Callable[[ReportData, Canvas], Section | None]
VIEWS: list[tuple[str, View]] = []


def register_view(name: str, view: View, *, before: str | None = None) -> None:
    """Add a section; ``before`` places it ahead of a named one (default: at the end)."""
    if any(n == name for n, _ in VIEWS):
        raise ValueError(f"a report view named {name!r} is already registered")
    at = next((i for i, (n, _) in enumerate(VIEWS) if n == before), len(VIEWS))
    VIEWS.insert(at, (name, view))


def _normal(records: list[ResultRecord]) -> list[ResultRecord]:
    return [r for r in records if not r.audit]


# -- built-in views -------------------------------------------------------------------------------


def system_view(data: ReportData, canvas: Canvas) -> Section | None:
    systems: dict[tuple, dict] = {}
    for r in [*data.records, *data.training, *data.tiny, *data.profiles]:
        s = r.system
        key = (s.get("hostname"), s.get("cpu_model"), s.get("os"))
        entry = systems.setdefault(key, {"system": s, "backends": {}})
        if isinstance(r, ResultRecord | TinyRecord):
            info = r.backend_info or {}
            keys = ("version", "device", "threads", "providers")
            entry["backends"][r.backend] = {k: info[k] for k in keys if k in info}
    if not systems:
        return None
    return Section("system", "System", canvas.render("system.html.j2", systems=list(systems.values())))


def score_view(data: ReportData, canvas: Canvas) -> Section | None:
    score = scoring.geomean_score(_normal(data.records))
    if not score["parts"]:
        return None
    return Section("score", "Composite score", canvas.render("score.html.j2", score=score))


_ORDER = {s: i for i, s in enumerate(("SingleStream", "MultiStream", "Server", "Offline"))}


def _accuracy_text(acc: dict | None) -> tuple[str, str]:
    if acc is None:
        return "-", ""
    target = acc.get("target", {})
    text = f"{acc['value']:.3f}{acc.get('unit', '')}"
    if target.get("threshold") is not None:
        text += f" (target ≥ {target['threshold']:.3f}{acc.get('unit', '')})"
    if "change_vs_fp32" in acc:
        text += f", {acc['change_vs_fp32']:+.2f} vs fp32"
    return text, "pass" if acc.get("passed") else "fail"


def summary_rows(records: list[ResultRecord]) -> list[dict]:
    """One row per (task, data, scenario, backend, precision, style): metric, validity, accuracy, audits."""
    rows: dict[tuple, dict] = {}
    for r in records:
        key = (r.task, r.dataset, r.scenario, r.backend, r.precision, r.style, r.run_id)
        row = rows.setdefault(key, {"key": key, "performance": None, "accuracy": None, "audits": [], "repeats": []})
        if r.audit:
            row["audits"].append(r)
        else:
            row[r.mode] = r
            if r.mode == "performance" and r.metric is not None:
                row["repeats"].append(r)
    out = []
    for key in sorted(rows, key=lambda k: (k[0], k[1], _ORDER.get(k[2], 9), k[3:])):
        row, perf = rows[key], rows[key]["performance"]
        # Repeats show as their median and range; the first INVALID one speaks for the row.
        perf = next((r for r in row["repeats"] if r.validity != "VALID"), perf)
        accuracy, accuracy_class = _accuracy_text(row["accuracy"].accuracy if row["accuracy"] else None)
        audits = []
        for a in row["audits"]:
            passed = a.compliance.get("passed") if a.compliance else None
            audits.append((a.audit, "pass" if passed else "fail", "PASS" if passed else "FAIL"))
        out.append({
            "task": key[0], "dataset": key[1], "scenario": key[2], "backend": key[3], "precision": key[4],
            "style": key[5], "run_id": key[6],
            "metric": perf.metric.name if perf and perf.metric else "-",
            "value": format_repeats([r.metric.value for r in row["repeats"]], perf.metric.unit)
            if perf and perf.metric
            else "-",
            "validity": perf.validity if perf else None,
            "reasons": perf.invalid_reasons if perf else [],
            "accuracy": accuracy, "accuracy_class": accuracy_class, "audits": audits,
        })  # fmt: skip
    return out


def summary_view(data: ReportData, canvas: Canvas) -> Section | None:
    rows = summary_rows(data.records)
    if not rows:
        return None
    several_runs = len({r["run_id"] for r in rows}) > 1
    return Section("summary", "Results", canvas.render("summary.html.j2", rows=rows, several_runs=several_runs))


def latency_view(data: ReportData, canvas: Canvas) -> Section | None:
    # An Offline sample's latency is the time since its one big query was issued: a
    # schedule artefact, not a response time, and it would squash every other curve.
    perf = [r for r in _normal(data.records) if r.mode == "performance" and r.scenario != "Offline"]
    curves, bands = charts.percentile_curves(perf), charts.latency_bands(perf)
    if curves is None:
        return None
    body = canvas.chart(curves) + canvas.chart(bands)
    note = Markup(
        "<p class='note'>From each run's LoadGen detail log. LoadGen reports these percentiles rather "
        "than every sample, so the bands show exactly what it measured, without interpolation. "
        "Offline runs are left out: their latency is the time since the single query began.</p>"
    )
    return Section("latency", "Latency", note + body)


def throughput_view(data: ReportData, canvas: Canvas) -> Section | None:
    perf = [r for r in _normal(data.records) if r.mode == "performance"]
    rate = charts.by_backend(perf, ("Offline", "Server"), "Throughput by backend", "samples/s")
    latency = charts.by_backend(perf, ("SingleStream", "MultiStream"), "Latency metric by backend", "ms")
    if rate is None and latency is None:
        return None
    return Section("throughput", "By backend", canvas.chart(rate) + canvas.chart(latency))


def accuracy_view(data: ReportData, canvas: Canvas) -> Section | None:
    fig = charts.accuracy_vs_target([r for r in _normal(data.records) if r.mode == "accuracy"])
    return None if fig is None else Section("accuracy", "Accuracy vs target", canvas.chart(fig))


def energy_view(data: ReportData, canvas: Canvas) -> Section | None:
    measured = [r for r in data.records if r.energy]
    if not measured and any(t.energy_uj is not None for t in data.tiny):
        # "No meter took part" would be untrue: the Tiny table carries its measured energy.
        note = Markup("<p class='note'>No energy meter took part in the inference runs; the MLPerf Tiny "
                      "runs' energy per inference is in their section.</p>")  # fmt: skip
        return Section("energy", "Energy", note)
    return Section("energy", "Energy", canvas.render("energy.html.j2", records=measured))


def comparison_view(data: ReportData, canvas: Canvas) -> Section | None:
    if data.comparison is None:
        return None
    fig = charts.comparison_changes(data.comparison.get("rows", []))
    body = canvas.render("comparison.html.j2", comparison=data.comparison, baseline=data.baseline_ids)
    return Section("comparison", "Comparison with the baseline", body + canvas.chart(fig))


def training_view(data: ReportData, canvas: Canvas) -> Section | None:
    if not data.training:
        return None
    by_time = charts.training_curves(data.training, "seconds", "Quality vs time since run_start", "seconds")
    by_samples = charts.training_curves(data.training, "samples", "Quality vs training samples", "samples")
    table = canvas.render("training.html.j2", runs=data.training)
    return Section("training", "Training runs", table + canvas.chart(by_time) + canvas.chart(by_samples))


def tiny_view(data: ReportData, canvas: Canvas) -> Section | None:
    if not data.tiny:
        return None
    table = canvas.render("tiny.html.j2", runs=data.tiny)
    return Section("tiny", "MLPerf Tiny", table + canvas.chart(charts.tiny_windows(data.tiny)))


TOP_OPS = 15  # op rows in a profile's table, as `mlgauge profile` prints by default
TOP_DETAIL = 10  # rows of the shape and replay tables


def profile_rows(p: ProfileRecord, top: int = TOP_OPS) -> list[dict]:
    """The ``top`` ops by self time, calls and time per step (per run when the whole run was recorded)."""
    return [
        {"name": r["name"], "calls": p.per_step(r.get("calls") or 0),
         "self_ms": p.per_step(r.get("self_ms") or 0.0), "share": r.get("share"), "bound": r.get("bound"),
         "gflops": r.get("achieved_gflops"), "gbs": r.get("achieved_gbs"), "efficiency": r.get("efficiency")}
        for r in p.ops[:top]
    ]  # fmt: skip


def _replay_rows(replay: dict) -> list[dict]:
    """The replayed ops that lose the most time in the step, with their tensor shapes."""
    rows = [r for r in replay.get("rows") or [] if isinstance(r, dict)]
    rows.sort(key=lambda r: r.get("gap_ms_per_step") or 0.0, reverse=True)
    return [r | {"shapes": str([d for d in r.get("dims") or [] if d])} for r in rows[:TOP_DETAIL]]


def _profile_body(p: ProfileRecord, canvas: Canvas) -> Markup:
    summary = p.summary
    shapes = sorted(summary.get("shapes") or [], key=lambda s: s.get("ms") or 0.0, reverse=True)[:TOP_DETAIL]
    replay = summary.get("replay") or {}
    drawn = (profile_charts.profile_ops, profile_charts.profile_onednn, profile_charts.profile_modules,
             profile_charts.profile_roofline)
    return canvas.render(
        "profile.html.j2", p=p, rows=profile_rows(p), dnn=summary.get("onednn") or {},
        regions=sorted((summary.get("regions") or {}).items(), key=lambda kv: kv[1].get("ms") or 0.0,
                       reverse=True)[:TOP_DETAIL],
        shapes=shapes, replay=replay,
        replay_rows=_replay_rows(replay),
        unplaced=len([r for r in p.ops if r.get("costed_ms")]) - len(p.roofline_ops()),
        charts=Markup("").join(canvas.chart(draw(p)) for draw in drawn),
    )  # fmt: skip


def profile_view(data: ReportData, canvas: Canvas) -> Section | None:
    if not data.profiles:
        return None
    return Section("profiles", "Profiles", Markup("").join(_profile_body(p, canvas) for p in data.profiles))


for _name, _view in (
    ("system", system_view),
    ("score", score_view),
    ("summary", summary_view),
    ("comparison", comparison_view),
    ("training", training_view),
    ("tiny", tiny_view),
    # Not "profile": that name is the plug-in example in the report tests.
    ("profiles", profile_view),
    ("latency", latency_view),
    ("throughput", throughput_view),
    ("accuracy", accuracy_view),
    ("energy", energy_view),
):
    register_view(_name, _view)
