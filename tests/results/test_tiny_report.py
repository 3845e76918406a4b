"""MLPerf Tiny runs in the HTML report: their table (escaped, energy never invented), the
per-window throughput chart, and `mlgauge report` / `mlgauge results --runs` finding them."""

from __future__ import annotations

import html
import json
import re

from markupsafe import escape
from test_report import HOSTILE, figures, section_ids
from test_tiny_store import NOT_MEASURED, tiny_record

from mlgauge.cli import main
from mlgauge.results.report import ReportData, render_report
from mlgauge.results.store import ResultStore


def _rows(text: str) -> list[str]:
    section = re.search(r'<section id="tiny">(.*?)</section>', text, re.S).group(1)
    return re.findall(r"<tr><td>(.*?)</tr>", section, re.S)


def test_tiny_runs_get_their_table_and_window_chart():
    hostile = tiny_record(HOSTILE, device={"transport": "tcp", "name": HOSTILE}, invalid_reasons=[HOSTILE])
    unmeasured = tiny_record("ad01", measured=False, valid=False, style="quick", model={})
    text = render_report(ReportData([], "t", "db", ["tiny-a"], tiny=[hostile, unmeasured]))
    assert section_ids(text) == ["system", "tiny", "energy"]
    assert "<script>alert" not in text and "<img src=x" not in text
    assert str(escape(HOSTILE)) in text
    measured_row, unmeasured_row = _rows(text)
    for shown in (f"{escape(HOSTILE)} (tcp)", "0.9120 top1 (target ≥ 0.9000)", "0.9205", "100.00", "10.000 ms",
                  "7,373.7 µJ/inference", "lpm01a", "device", 'class="valid"'):  # fmt: skip
        assert shown in measured_row, shown
    # No meter: the note, verbatim, and no number in the energy cell.
    energy_cell = re.findall(r'<td class="num">(.*?)</td>', unmeasured_row, re.S)[-1]
    assert energy_cell.strip() == NOT_MEASURED
    assert 'class="invalid"' in unmeasured_row and "accuracy 0.8712 is under the target 0.9000" in unmeasured_row
    assert 'class="num fail"' in unmeasured_row and "quick" in unmeasured_row
    assert "not valid MLPerf Tiny results" in text
    # The energy section points at the Tiny table rather than claiming no meter took part.
    assert "No energy meter took part in the inference runs" in text

    (chart,) = figures(text)
    boxes = chart["data"]
    assert [b["x"][0] for b in boxes] == [html.escape(HOSTILE), "ad01"]  # one panel per benchmark
    assert [b["y"] for b in boxes] == [[104.0, 98.0, 100.0, 102.0, 99.0]] * 2  # every window, in order
    assert [b["customdata"] for b in boxes] == [[1, 2, 3, 4, 5]] * 2
    assert [b["name"] for b in boxes] == ["onnxruntime int8 " + html.escape(HOSTILE), "onnxruntime int8 host-sim quick"]
    assert [a["text"] for a in chart["layout"]["annotations"]] == [html.escape(HOSTILE), "ad01"]
    for payload in re.findall(r'class="figure"[^>]*>(.*?)</script>', text, re.S):
        assert "<" not in payload and ">" not in payload


def test_report_command_counts_tiny_runs(tmp_path, capsys):
    db = tmp_path / "r.db"
    with ResultStore(db) as store:
        store.add_tiny(tiny_record("kws01", run_id="tiny-a"))
        store.add_tiny(tiny_record("ic01", run_id="tiny-a"))
    out = tmp_path / "report.html"
    assert main(["report", "last", "--db", str(db), "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["runs"] == ["tiny-a"] and summary["tiny_runs"] == 2 and summary["records"] == 0
    assert len(_rows(out.read_text())) == 2


def test_results_runs_lists_tiny_runs(tmp_path, capsys):
    db = tmp_path / "r.db"
    first = tiny_record(run_id="tiny-a", created_at="2025-02-01T10:00:00.000+00:00")
    with ResultStore(db) as store:
        store.add_tiny(first)
        store.add_tiny(tiny_record("ic01", run_id="tiny-a", created_at="2025-02-01T10:01:00.000+00:00"))
    assert main(["results", "--db", str(db), "--runs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"run_id": "tiny-a", "created_at": first.created_at, "n": 2, "tasks": [], "scenarios": [], "kind": "tiny"}
    ]
    assert main(["results", "--db", str(db), "--runs"]) == 0
    assert "tiny-a" in capsys.readouterr().out


def test_runs_compared_in_one_chart_keep_their_windows_apart():
    from mlgauge.results.report.charts import tiny_windows

    fig = tiny_windows([tiny_record(run_id="a"), tiny_record(run_id="b")])
    assert [t.name for t in fig.data] == ["onnxruntime int8 host-sim (a)", "onnxruntime int8 host-sim (b)"]
    assert [len(t.y) for t in fig.data] == [5, 5]
    assert tiny_windows([tiny_record(performance={"median_inferences_per_s": None})]) is None
