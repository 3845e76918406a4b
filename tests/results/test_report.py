"""The HTML report: self-contained, escaped, every view drawn; and, in a real headless
Chromium, a report of a real run renders its charts without a script error."""

from __future__ import annotations

import html
import json
import math
import re

import pytest
from markupsafe import escape
from PIL import Image

from browser import dump_dom, screenshot
from mlgauge.cli import main
from mlgauge.errors import OutputError
from mlgauge.results.compare import compare
from mlgauge.results.record import Metric, ResultRecord
from mlgauge.results.report import ReportData, Section, register_view, render_report, write_report
from mlgauge.results.report import views as report_views

HOSTILE = '<script>alert("x")</script>&<img src=x onerror=alert(1)>'
LATENCY = {"min": 1e6, "p50": 2e6, "p90": 3e6, "p95": 3.5e6, "p97": 4e6, "p99": 5e6, "p99.9": 8e6, "max": 9e6}


def record(scenario: str, mode: str, value: float = 100.0, **kw) -> ResultRecord:
    performance = mode == "performance"
    unit = "ns" if scenario == "SingleStream" else "samples/s"
    fields = dict(
        task="resnet50",
        benchmark="resnet50",
        dataset="synthetic",
        scenario=scenario,
        mode=mode,
        style="quick",
        backend="onnxruntime",
        backend_info={"version": "1.32.0", "device": "cpu", "threads": 2},
        log_dir="/tmp/logs",
        settings={},
        system={"hostname": "box", "cpu_model": "AMD EPYC", "cpu_logical_cores": 2, "os": "Linux"},
        metric=Metric("k", "p90 latency" if unit == "ns" else "samples/s", value, unit, unit != "ns")
        if performance
        else None,
        validity="VALID" if performance else None,
        latency_ns=dict(LATENCY) if performance else {},
        accuracy=None
        if performance
        else {"metric": "top1", "value": 90.0, "unit": "%", "passed": True, "target": {"threshold": 85.0}},
        run_id="run-a",
    )
    fields.update(kw)
    return ResultRecord(**fields)


def figures(text: str) -> list[dict]:
    return [json.loads(m) for m in re.findall(r'<script type="application/json" class="figure"[^>]*>(.*?)</script>', text, re.S)]


def section_ids(text: str) -> list[str]:
    return re.findall(r'<section id="([a-z-]+)">', text)


def test_a_report_has_every_view_and_loads_nothing_from_the_network():
    records = [
        record("SingleStream", "performance", 2.5e6),
        record("Offline", "performance", 400.0),
        record("Offline", "accuracy"),
        record("Offline", "performance", 300.0, backend="torch"),
    ]
    text = render_report(ReportData(records, "My report", "results.db", ["run-a"]))
    assert section_ids(text) == ["system", "score", "summary", "latency", "throughput", "accuracy", "energy"]
    # Percentile curves and bands (SingleStream only: an Offline "latency" is the time since
    # the one big query started), throughput and latency by backend, accuracy vs target.
    figs = figures(text)
    assert len(figs) == 5
    assert len(re.findall(r'<div class="chart" id="chart-\d+"></div>', text)) == 5
    assert [t["name"] for t in figs[0]["data"]] == ["resnet50 SingleStream onnxruntime"]
    assert [t["name"] for t in figs[2]["data"]] == ["onnxruntime", "torch"]
    assert [t["y"] for t in figs[2]["data"]] == [[400.0], [300.0]]
    # Self-contained: Plotly is inlined, nothing is fetched.
    assert "Plotly" in text and len(text) > 1_000_000
    assert not re.search(r"<script[^>]+src=", text) and not re.search(r"<link[^>]+href=", text)
    # The score is the geometric mean of 1/p90 (2.5 ms -> 400/s), 400 and 300 samples/s.
    expected = math.exp((math.log(400) + math.log(400) + math.log(300)) / 3)
    assert f"{expected:,.2f} queries/s" in text
    assert "Not measured: no energy meter took part in these runs." in text


def test_every_string_from_records_is_escaped():
    hostile = record(
        "Offline",
        "performance",
        task=HOSTILE,
        backend=HOSTILE,
        validity="INVALID",
        invalid_reasons=[HOSTILE],
        system={"hostname": HOSTILE, "cpu_model": HOSTILE, "libraries": {HOSTILE: HOSTILE}},
        run_id=HOSTILE,
    )
    text = render_report(ReportData([hostile, record("Offline", "accuracy", task=HOSTILE)], HOSTILE, HOSTILE, [HOSTILE]))
    assert "<script>alert" not in text and "<img src=x" not in text
    assert str(escape(HOSTILE)) in text  # shown, as text
    # Figure JSON cannot close its <script> element, and carries the name escaped for Plotly.
    for payload in re.findall(r'class="figure"[^>]*>(.*?)</script>', text, re.S):
        assert "<" not in payload and ">" not in payload
    names = [t.get("name", "") for f in figures(text) for t in f["data"]]
    assert any(html.escape(HOSTILE) in n for n in names)


def test_a_later_capability_plugs_in_its_own_view():
    def profile_breakdown(data, canvas):
        return Section("profile", "Operator breakdown", canvas.render("energy.html.j2", records=[]))

    register_view("profile", profile_breakdown, before="energy")
    try:
        text = render_report(ReportData([record("Offline", "performance")], "t", "db", ["r"]))
        assert section_ids(text)[-2:] == ["profile", "energy"]
        with pytest.raises(ValueError, match="already registered"):
            register_view("profile", profile_breakdown)
    finally:
        report_views.VIEWS[:] = [(n, v) for n, v in report_views.VIEWS if n != "profile"]


def test_a_baseline_comparison_is_tabled_and_charted():
    baseline = [record("Offline", "performance", v, run_id="run-a") for v in (100.0, 101.0, 99.0, 100.5, 99.5)]
    candidate = [record("Offline", "performance", v, run_id="run-b") for v in (80.0, 81.0, 79.0, 80.5, 79.5)]
    comparison = compare(baseline, candidate).to_dict()
    text = render_report(ReportData(candidate, "t", "db", ["run-b"], comparison, ["run-a"]))
    assert section_ids(text)[:4] == ["system", "score", "summary", "comparison"]
    start = text.index('<section id="comparison">')
    body = text[start : text.index("</section>", start)]
    assert '<td class="regression">regression</td>' in body
    assert "100 samples/s (5)" in body and "80.0 samples/s (5)" in body and "0.800" in body
    (change,) = [f for f in figures(text) if f["layout"]["title"]["text"].startswith("Change from the baseline")]
    (bar,) = change["data"]
    assert bar["base"] == 1 and bar["y"] == [pytest.approx(-0.2)]  # 0.8 times as good, drawn down from 1
    low, high = bar["error_y"]["arrayminus"][0], bar["error_y"]["array"][0]
    assert low >= 0 and high >= 0 and 0.8 - low < 0.8 < 0.8 + high < 0.82  # the CI brackets 0.8


def test_measured_energy_is_tabled():
    measured = record("Offline", "performance", energy={"meter": "rapl", "joules": 12.5, "average_watts": 41.25})
    text = render_report(ReportData([measured], "t", "db", ["r"]))
    assert "12.500" in text and "41.25" in text and "rapl" in text and "Not measured" not in text


def test_an_unwritable_output_is_one_clear_error_and_leaves_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot write the report"):
        write_report(blocker / "report.html", "<html></html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.integration  # a real LoadGen run, a real browser
def test_a_real_run_renders_in_headless_chromium(quick_run, tmp_path, capsys):
    out = tmp_path / "report.html"
    code = main(["report", quick_run["run_id"], "--db", str(quick_run["db"]), "-o", str(out), "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["records"] == len(quick_run["records"])
    charts = len(figures(out.read_text()))
    assert charts >= 4

    dom = dump_dom(out, tmp_path / "profile")
    root = re.search(r"<html[^>]*>", dom).group(0)
    assert f'data-charts-rendered="{charts}"' in root, root  # every Plotly.newPlot resolved
    assert "data-js-errors" not in root, re.search(r'<pre id="js-errors">(.*?)</pre>', dom, re.S).group(1)
    # Plotly drew an SVG into every chart element.
    assert dom.count('class="main-svg"') >= charts
    for scenario in ("SingleStream", "MultiStream", "Offline"):
        assert scenario in dom

    shot = screenshot(out, tmp_path / "report.png", tmp_path / "profile")
    image = Image.open(shot).convert("L")
    assert image.size == (1280, 2400)
    lo, hi = image.getextrema()
    assert hi - lo > 100  # not a blank page


def test_training_runs_get_their_curves_and_table():
    from mlgauge.results.training_record import TrainingRecord

    def run(index: int, status: str, values: list[float]) -> TrainingRecord:
        evals = [{"epoch": 4 * (i + 1), "samples": 4000 * (i + 1), "seconds": 10.0 * (i + 1), "value": v} for i, v in enumerate(values)]
        return TrainingRecord(
            benchmark="resnet", dataset="synthetic", division="open", status=status,
            reason="" if status == "success" else "max epochs reached", time_to_train_s=10.0 * len(values),
            epochs=4 * len(values), samples=4000 * len(values), seed=7 + index,
            quality={"metric": "top1", "target": 0.85, "value": values[-1], "higher_is_better": True},
            evals=evals, config={}, log_path="", system={"hostname": HOSTILE}, run_id="set", run_index=index,
        )  # fmt: skip

    runs = [run(0, "success", [0.5, 0.8, 0.86]), run(1, "aborted", [0.4, 0.6, 0.7, 0.75])]
    text = render_report(ReportData([], "t", "db", ["set"], training=runs))
    assert section_ids(text) == ["system", "training", "energy"]
    by_time, by_samples = figures(text)
    assert [t["x"] for t in by_time["data"]] == [[10.0, 20.0, 30.0], [10.0, 20.0, 30.0, 40.0]]
    assert [t["x"] for t in by_samples["data"]] == [[4000, 8000, 12000], [4000, 8000, 12000, 16000]]
    assert [t["line"]["dash"] for t in by_time["data"]] == ["solid", "dot"]
    assert by_time["layout"]["shapes"][0]["y0"] == 0.85  # the target line
    assert "30.0 s" in text and "max epochs reached" in text and str(escape(HOSTILE)) in text
