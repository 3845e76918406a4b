"""Plotly figures for a profile: time by op, by oneDNN primitive kind and direction, by module, and
the roofline. Built from the stored ProfileRecord only; names from a trace are HTML-escaped as in
charts.py.
"""

from __future__ import annotations

import html
import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mlgauge.results.profile_record import ProfileRecord
from mlgauge.results.report.charts import LAYOUT, figure

TOP_BREAKDOWN = 12

_ROOF_COLOURS = ("#636363", "#9467bd", "#8c564b", "#17becf")
_BOUND_COLOURS = {"compute": "#ef553b", "memory": "#636efa"}


def _hbar_figure(title: str, n: int, unit: str, **layout) -> go.Figure:
    """Room for ``n`` horizontal bars, the first at the top."""
    return figure(title, height=max(260, 90 + 24 * n), xaxis={"title": {"text": unit}},
                   yaxis={"autorange": "reversed", "automargin": True}, **layout)  # fmt: skip


def _top(parts: dict[str, float]) -> tuple[list[str], list[float]]:
    """The TOP_BREAKDOWN largest parts, largest first, and the rest summed as "other (N)"."""
    ranked = sorted(parts.items(), key=lambda kv: kv[1], reverse=True)
    top, rest = ranked[:TOP_BREAKDOWN], ranked[TOP_BREAKDOWN:]
    if rest:
        top.append((f"other ({len(rest)})", sum(v for _, v in rest)))
    return [k for k, _ in top], [v for _, v in top]


def profile_ops(record: ProfileRecord) -> go.Figure | None:
    """Self time by op: the largest twelve and the rest as "other"."""
    parts = {r["name"]: record.per_step(r.get("self_ms") or 0.0) for r in record.ops}
    if not parts:
        return None
    names, values = _top(parts)
    unit = record.per_step_unit
    fig = _hbar_figure("Self time by op", len(names), unit)
    fig.add_trace(
        go.Bar(y=[html.escape(n) for n in names], x=values, orientation="h", showlegend=False,
               hovertemplate=f"%{{y}}: %{{x:,.3f}} {unit}<extra></extra>")
    )  # fmt: skip
    return fig


def profile_onednn(record: ProfileRecord) -> go.Figure | None:
    """oneDNN primitive time by primitive kind and by direction (ProfileDNN's two breakdowns)."""
    dnn = record.summary.get("onednn") or {}
    panels = [dnn.get("by_kind") or {}, dnn.get("by_direction") or {}]
    if not any(panels):
        return None
    unit = record.per_step_unit
    fig = make_subplots(rows=1, cols=2, subplot_titles=["by primitive kind", "by direction"])
    fig.update_layout(title={"text": "oneDNN primitive time"},
                      **{**LAYOUT, "margin": {**LAYOUT["margin"], "t": 90}})  # fmt: skip
    fig.update_yaxes(title={"text": unit}, col=1)
    for col, buckets in enumerate(panels, start=1):
        names, values = _top({k: record.per_step(v.get("ms") or 0.0) for k, v in buckets.items()})
        calls = [(buckets.get(n) or {}).get("calls", "") for n in names]  # "other" has no single count
        fig.add_trace(
            go.Bar(x=[html.escape(n) for n in names], y=values, customdata=calls, showlegend=False,
                   hovertemplate=f"%{{x}}: %{{y:,.3f}} {unit}, %{{customdata}} calls<extra></extra>"),
            row=1, col=col,
        )  # fmt: skip
    return fig


def profile_modules(record: ProfileRecord) -> go.Figure | None:
    """Forward and backward time by module, stacked; None when the summary has no module times."""
    modules = record.summary.get("modules") or {}
    if not modules:
        return None
    total = {m: (v.get("forward_ms") or 0.0) + (v.get("backward_ms") or 0.0) for m, v in modules.items()}
    names = sorted(total, key=lambda m: total[m], reverse=True)[:TOP_BREAKDOWN]
    unit = record.per_step_unit
    fig = _hbar_figure("Time by module", len(names), unit, barmode="stack")
    for part, colour in (("forward", "#636efa"), ("backward", "#ef553b")):
        times = [record.per_step(modules[n].get(f"{part}_ms") or 0.0) for n in names]
        fig.add_trace(
            go.Bar(y=[html.escape(n) for n in names], x=times, orientation="h", name=part,
                   marker={"color": colour},
                   hovertemplate=f"%{{y}} {part}: %{{x:,.3f}} {unit}<extra></extra>")
        )  # fmt: skip
    return fig


def _roofs(fig: go.Figure, record: ProfileRecord, lo: float, hi: float) -> None:
    """One roof per measured dtype: min(peak, intensity x triad) from ``lo`` to ``hi`` FLOP/byte,
    bending at the ridge point peak / triad."""
    triad = record.triad_gbs
    for i, (dtype, peak) in enumerate(record.roofs.items() if triad else ()):
        ridge = peak / triad
        fig.add_trace(
            go.Scatter(x=[lo, ridge, hi], y=[lo * triad, peak, peak], mode="lines",
                       line={"color": _ROOF_COLOURS[i % len(_ROOF_COLOURS)], "dash": "dash"},
                       name=html.escape(f"{dtype} roof: {peak:,.1f} GFLOP/s, ridge {ridge:.2f} FLOP/byte"),
                       hovertemplate="%{x:.3g} FLOP/byte: %{y:,.1f} GFLOP/s attainable<extra></extra>")
        )  # fmt: skip


def profile_roofline(record: ProfileRecord) -> go.Figure | None:
    """Each costed op at (FLOPs per byte, achieved GFLOP/s) on log axes, sized by its time, under the
    roofs min(peak of the dtype, intensity x STREAM triad), one per measured dtype."""
    ops = record.roofline_ops()
    if not ops:
        return None
    fig = figure("Roofline", height=460,
                  xaxis={"type": "log", "title": {"text": "arithmetic intensity (FLOP/byte)"}},
                  yaxis={"type": "log", "title": {"text": "achieved GFLOP/s"}})  # fmt: skip
    intensity = [r["flops"] / r["bytes"] for r in ops]
    times = [record.per_step(r["costed_ms"]) for r in ops]
    ridges = [peak / record.triad_gbs for peak in record.roofs.values()] if record.triad_gbs else []
    # A quarter-decade beyond the outermost point or ridge on each side, so every bend is in view.
    _roofs(fig, record, min(intensity + ridges) / 4, max(intensity + ridges) * 4)
    unit, biggest = record.per_step_unit, max(times)
    details = [(html.escape(r["name"]), t, "-" if r.get("efficiency") is None else f"{r['efficiency']:.0%}",
                html.escape(r.get("bound") or "-")) for r, t in zip(ops, times, strict=True)]  # fmt: skip
    fig.add_trace(
        go.Scatter(
            x=intensity, y=[r["achieved_gflops"] for r in ops], mode="markers", name="ops",
            customdata=details,
            # Area roughly follows time, so the ops worth fixing are the big circles.
            marker={"size": [8 + 32 * math.sqrt(t / biggest) for t in times], "opacity": 0.75,
                    "color": [_BOUND_COLOURS.get(r.get("bound"), "#00cc96") for r in ops]},
            hovertemplate=f"%{{customdata[0]}}<br>%{{customdata[1]:,.3f}} {unit}, %{{y:,.1f}} GFLOP/s at "
            "%{x:.3g} FLOP/byte<br>efficiency %{customdata[2]} (%{customdata[3]}-bound)<extra></extra>",
        )
    )  # fmt: skip
    return fig
