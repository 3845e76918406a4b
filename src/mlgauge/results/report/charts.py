"""Plotly figures for the report, built from result records only (never from a new measurement).

Every string that comes from a record or a file is HTML-escaped before it goes into a
figure: Plotly renders a few HTML tags inside labels, so a task or backend name must not
be able to inject markup.
"""

from __future__ import annotations

import html
import json

import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from mlgauge.results.record import ResultRecord
from mlgauge.results.tiny_record import TinyRecord

# The percentile ladder of a LoadGen detail log, in order (min and max bracket it).
PERCENTILES = ("min", "p50", "p90", "p95", "p97", "p99", "p99.9", "max")
# Quantile bands between those points: the distribution a detail log describes.
BANDS = (("min", "p50", "min-p50"), ("p50", "p90", "p50-p90"), ("p90", "p99", "p90-p99"), ("p99", "max", "p99-max"))
_BAND_COLOURS = ("#9ecae1", "#4292c6", "#08519c", "#e6550d")
# Plotly's default sequence, fixed here so one configuration keeps its colour in every panel.
_SERIES_COLOURS = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692", "#b6e880")
LAYOUT = {
    "template": "plotly_white",
    "margin": {"l": 60, "r": 20, "t": 50, "b": 60},
    "height": 380,
    "legend": {"orientation": "h", "y": -0.2},
}


def label(record: ResultRecord, with_task: bool = True) -> str:
    """A run's short name in charts, escaped: ``resnet50 Offline onnxruntime int8``."""
    parts = [record.task] if with_task else []
    parts += [record.scenario, record.backend]
    if record.precision != "fp32":
        parts.append(record.precision)
    parts += [f"{k}={v}" for k, v in sorted(record.model_options.items())]
    if record.dataset != "synthetic":
        parts.append(record.dataset)
    return html.escape(" ".join(parts))


def to_json(fig: go.Figure) -> str:
    """The figure as JSON that is safe inside a <script> element (no '<', '>' or '&')."""
    text = pio.to_json(fig, validate=False, pretty=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def figure(title: str, **layout) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title={"text": html.escape(title)}, **{**LAYOUT, **layout})
    return fig


def percentile_curves(records: list[ResultRecord]) -> go.Figure | None:
    """Latency at each reported percentile, one line per run; a log axis keeps tails readable."""
    runs = [r for r in records if r.latency_ns]
    if not runs:
        return None
    fig = figure("Latency percentile curves", yaxis={"type": "log", "title": {"text": "latency (ms)"}})
    for r in runs:
        points = [(p, r.latency_ns[p] / 1e6) for p in PERCENTILES if r.latency_ns.get(p) is not None]
        fig.add_trace(
            go.Scatter(
                x=[p for p, _ in points],
                y=[v for _, v in points],
                mode="lines+markers",
                name=label(r),
                hovertemplate="%{x}: %{y:.3f} ms<extra>%{fullData.name}</extra>",
            )
        )
    fig.update_xaxes(title={"text": "percentile (LoadGen detail log)"}, type="category")
    return fig


def latency_bands(records: list[ResultRecord]) -> go.Figure | None:
    """Each run's latency distribution as the quantile bands its detail log reports."""
    runs = [r for r in records if all(r.latency_ns.get(k) is not None for k in ("min", "p50", "p90", "p99", "max"))]
    if not runs:
        return None
    fig = figure(
        "Latency distribution (quantile bands)",
        barmode="overlay",  # each bar carries its own base, so bands sit end to end
        xaxis={"type": "log", "title": {"text": "latency (ms)"}},
        height=max(260, 70 + 34 * len(runs)),
    )
    names = [label(r) for r in runs]
    for (lo, hi, name), colour in zip(BANDS, _BAND_COLOURS, strict=True):
        starts = [r.latency_ns[lo] / 1e6 for r in runs]
        ends = [r.latency_ns[hi] / 1e6 for r in runs]
        fig.add_trace(
            go.Bar(
                y=names,
                x=[e - s for s, e in zip(starts, ends, strict=True)],
                base=starts,
                orientation="h",
                name=name,
                marker={"color": colour},
                customdata=list(zip(starts, ends, strict=True)),
                hovertemplate=f"{name}: %{{customdata[0]:.3f}}–%{{customdata[1]:.3f}} ms<extra></extra>",
            )
        )
    return fig


def by_backend(records: list[ResultRecord], scenarios: tuple[str, ...], title: str, axis: str) -> go.Figure | None:
    """Headline metric per task, one bar per backend (and precision): who is faster where."""
    runs = [r for r in records if r.scenario in scenarios and r.metric is not None]
    if not runs:
        return None
    fig = figure(title, barmode="group", yaxis={"title": {"text": axis}})
    groups: dict[str, list[ResultRecord]] = {}
    for r in runs:
        name = r.backend if r.precision == "fp32" else f"{r.backend} {r.precision}"
        groups.setdefault(html.escape(name), []).append(r)
    for name, rs in groups.items():
        scale = 1e6 if rs[0].metric.unit == "ns" else 1.0
        fig.add_trace(
            go.Bar(
                x=[html.escape(f"{r.task} {r.scenario}") for r in rs],
                y=[r.metric.value / scale for r in rs],
                name=name,
                text=[r.validity or "" for r in rs],
                hovertemplate="%{x}: %{y:,.3f}<extra>%{fullData.name} (%{text})</extra>",
            )
        )
    return fig


def accuracy_vs_target(records: list[ResultRecord]) -> go.Figure | None:
    """Each accuracy run as a percentage of its target threshold: 100% is exactly the target."""
    runs = [r for r in records if r.accuracy and r.accuracy.get("target", {}).get("threshold")]
    if not runs:
        return None
    fig = figure("Accuracy relative to target", yaxis={"title": {"text": "% of the target threshold"}})
    fig.add_trace(
        go.Bar(
            x=[label(r) for r in runs],
            y=[100 * r.accuracy["value"] / r.accuracy["target"]["threshold"] for r in runs],
            marker={"color": ["#31a354" if r.accuracy["passed"] else "#de2d26" for r in runs]},
            customdata=[
                (r.accuracy["value"], r.accuracy["target"]["threshold"], html.escape(str(r.accuracy["unit"])))
                for r in runs
            ],
            hovertemplate="%{x}<br>%{customdata[0]:.3f}%{customdata[2]} vs target %{customdata[1]:.3f}"
            "%{customdata[2]}<extra></extra>",
            showlegend=False,
        )
    )
    fig.add_hline(y=100, line_dash="dash", line_color="#636363", annotation_text="target")
    return fig


def _factor(row: dict, ratio: float) -> float:
    """How many times better B is than A: the ratio, flipped for lower-is-better metrics."""
    return ratio if row["higher_is_better"] else 1 / ratio


def comparison_changes(rows: list[dict]) -> go.Figure | None:
    """Times better (above 1) or worse (below 1) per compared metric, on a log axis so a
    300x latency change and a 5% throughput change both stay readable; the ratio's CI
    where repeats allow one."""
    rows = [r for r in rows if r.get("ratio")]
    if not rows:
        return None
    fig = figure(
        "Change from the baseline (times better; above 1 is better)",
        yaxis={"type": "log", "title": {"text": "× better than the baseline"}},
        xaxis={"tickangle": -30},
    )
    factors = [_factor(r, r["ratio"]) for r in rows]
    errors = None
    if any(r.get("ci") for r in rows):
        bounds = [sorted(_factor(r, x) for x in r["ci"]) if r.get("ci") else (f, f) for r, f in zip(rows, factors, strict=True)]
        errors = {
            "type": "data",
            "symmetric": False,
            "array": [hi - f for (_, hi), f in zip(bounds, factors, strict=True)],
            "arrayminus": [f - lo for (lo, _), f in zip(bounds, factors, strict=True)],
        }
    fig.add_trace(
        go.Bar(
            x=[html.escape(r["label"]) for r in rows],
            y=[f - 1 for f in factors],
            base=1,  # bars grow up or down from "no change"
            error_y=errors,
            marker={"color": ["#31a354" if f >= 1 else "#de2d26" for f in factors]},
            customdata=[(f, html.escape(r["verdict_text"])) for f, r in zip(factors, rows, strict=True)],
            hovertemplate="%{x}: %{customdata[0]:.3f}× (%{customdata[1]})<extra></extra>",
            showlegend=False,
        )
    )
    return fig


def training_curves(runs: list, x: str, title: str, axis: str) -> go.Figure | None:
    """Every run's evaluations against ``x`` ("seconds" or "samples"), with the target line."""
    runs = [r for r in runs if r.evals]
    if not runs:
        return None
    fig = figure(title, xaxis={"title": {"text": axis}}, yaxis={"title": {"text": html.escape(runs[0].quality["metric"])}})
    for r in runs:
        name = html.escape(f"{r.benchmark} run {r.run_index} (seed {r.seed}, {r.status})")
        fig.add_trace(
            go.Scatter(
                x=[e[x] for e in r.evals],
                y=[e["value"] for e in r.evals],
                mode="lines+markers",
                name=name,
                line={"dash": "solid" if r.converged else "dot"},
                hovertemplate=f"%{{x:,.0f}}: %{{y:.4f}}<extra>{name}</extra>",
            )
        )
    target = runs[0].quality.get("target")
    if target is not None:
        fig.add_hline(y=target, line_dash="dash", line_color="#636363", annotation_text="target")
    return fig


def tiny_series(record: TinyRecord, with_run: bool = False) -> str:
    """The name of one Tiny configuration in charts, escaped: ``onnxruntime int8 host-sim``."""
    device = record.device.get("name") or record.device.get("transport") or ""
    parts = [record.backend, record.precision, device] + ([record.style] if record.style != "valid" else [])
    if with_run:
        parts.append(f"({record.run_id})")
    return html.escape(" ".join(str(p) for p in parts if p))


def tiny_windows(records: list[TinyRecord]) -> go.Figure | None:
    """Every timed window's inferences/s, one panel per benchmark with its own axis (a board's
    1 inf/s and a host's 10,000 side by side would flatten every spread), one box per configuration
    with each window drawn as a point, so the spread behind the median is visible."""
    runs = [r for r in records if r.performance.get("windows")]
    if not runs:
        return None
    benchmarks = list(dict.fromkeys(r.benchmark for r in runs))
    fig = make_subplots(rows=1, cols=len(benchmarks), subplot_titles=[html.escape(b) for b in benchmarks])
    fig.update_layout(
        title={"text": "Inferences/s of each timed window (MLPerf Tiny)"},
        boxmode="group",
        **{**LAYOUT, "margin": {**LAYOUT["margin"], "t": 90}},  # room for the panel titles under it
    )
    fig.update_yaxes(title={"text": "inferences/s"}, col=1)
    # Runs compared in one report stay apart rather than pooling their windows.
    with_run = len({r.run_id for r in runs}) > 1
    series = list(dict.fromkeys(tiny_series(r, with_run) for r in runs))
    for col, benchmark in enumerate(benchmarks, start=1):
        for name in series:
            mine = [r for r in runs if r.benchmark == benchmark and tiny_series(r, with_run) == name]
            windows = [(i + 1, w["inferences_per_s"]) for r in mine for i, w in enumerate(r.performance["windows"])]
            if not windows:
                continue
            fig.add_trace(
                go.Box(
                    x=[html.escape(benchmark)] * len(windows),
                    y=[v for _, v in windows],
                    customdata=[i for i, _ in windows],
                    name=name,
                    legendgroup=name,
                    showlegend=not any(t.name == name for t in fig.data),  # one legend entry per series
                    marker={"color": _SERIES_COLOURS[series.index(name) % len(_SERIES_COLOURS)]},
                    boxpoints="all",
                    pointpos=0,
                    hovertemplate="window %{customdata}: %{y:,.2f} inferences/s<extra>%{fullData.name}</extra>",
                ),
                row=1,
                col=col,
            )
    return fig


# A breakdown shows this many parts and sums the rest into "other": past a dozen bars the small
# ones are unreadable and only their total matters.
def figure_payload(fig: go.Figure) -> str:
    """JSON for one chart, checked to parse back (a broken figure fails here, not in a browser)."""
    text = to_json(fig)
    json.loads(text)
    return text
