"""Profiles in the HTML report: the op table with per-step numbers worked out by hand from the
summary, the breakdown charts, the roofline with its roofs bending at peak / triad, a summary
without the optional parts, escaping, and `mlgauge report` / `mlgauge results --runs` finding them."""

from __future__ import annotations

import html
import json
import re

import pytest
from markupsafe import escape
from test_profile_store import minimal_summary, profile_record
from test_report import HOSTILE, figures, section_ids

from mlgauge.cli import main
from mlgauge.results.report import ReportData, render_report
from mlgauge.results.store import ResultStore


def _section(text: str) -> str:
    return re.search(r'<section id="profiles">(.*?)</section>', text, re.S).group(1)


def _cells(row: str) -> list[str]:
    return [re.sub(r"\s+", " ", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]


def _op_rows(text: str) -> list[list[str]]:
    return [_cells(row) for row in re.findall(r'<tr class="op">(.*?)</tr>', _section(text), re.S)]


def _by_title(charts: list[dict]) -> dict[str, dict]:
    return {c["layout"]["title"]["text"]: c for c in charts}


def test_a_profile_gets_its_table_breakdowns_and_roofline():
    text = render_report(ReportData([], "t", "db", ["prof-a"], profiles=[profile_record()]))
    assert section_ids(text) == ["system", "profiles", "energy"]
    section = re.sub(r"\s+", " ", _section(text))
    for shown in ("python train.py --batch-size 8", "baseline", "4 steps × 50.0 ms", "90.0% of that time",
                  "float32 100.0 GFLOP/s, bfloat16 250.0 GFLOP/s", "20.0 GB/s (STREAM triad)",
                  "Element-wise ops take 19% of op time</strong>. Try: Fuse them (torch.compile)",
                  # replay: 30 ms ideal of a 50 ms step
                  "Ideal step 30.00 ms against the measured 50.00 ms: efficiency 60%",
                  # oneDNN: 36 ms over 4 steps; reorders 6 of 36 ms
                  "9.000 ms/step in primitives; reorders (memory-format conversions) 17% of it; 95% attributed",
                  "3 events had no duration", "1 costed op without FLOPs"):  # fmt: skip
        assert shown in section, shown
    rows = _op_rows(text)
    assert len(rows) == 14  # every op: fewer than the table's 15
    # Calls and self time per step (÷ 4), share of the 126 ms, rates from flops / bytes / time.
    assert rows[0] == ["aten::mkldnn_convolution", "2", "9.000", "28.6%", "compute", "66.7", "3.3", "67%"]
    assert rows[1] == ["aten::mul", "10", "6.000", "19.0%", "memory", "4.2", "50.0", "250%"]
    assert rows[2] == ["aten::addmm", "3", "4.500", "14.3%", "compute", "100.0", "3.3", "100%"]
    assert rows[3] == ["aten::copy_", "5", "2.500", "7.9%", "memory", "0.0", "80.0", "400%"]
    assert rows[-1] == ["aten::small9", "1", "0.125", "0.4%", "-", "-", "-", "-"]
    region = re.search(r"<tr><td>loss</td>(.*?)</tr>", section).group(1)
    assert _cells(region) == ["1", "5.000", "10.0%"]  # 20 ms of the 200 ms profiled
    assert "[[2, 16, 28, 28], [32, 16, 3, 3]]" in section
    # the replay's rows, largest gap first, scalar arguments' empty dims left out
    replayed = re.search(r"<tr><td>aten::addmm</td>(.*?)</tr>", section).group(1)
    assert _cells(replayed) == ["[[10], [4, 72], [72, 10]]", "3", "1.500", "0.500", "3.000"]
    assert section.index("<tr><td>aten::addmm</td><td>[[10]") < section.index("<tr><td>aten::mkldnn_convolution</td><td>[[2")
    assert "Not replayed: aten::nonzero (its cost depends on the data)" in section

    charts = _by_title(figures(text))
    assert list(charts) == ["Self time by op", "oneDNN primitive time", "Time by module", "Roofline"]
    (ops,) = charts["Self time by op"]["data"]
    assert ops["y"][:3] == ["aten::mkldnn_convolution", "aten::mul", "aten::addmm"] and ops["y"][-1] == "other (2)"
    assert len(ops["y"]) == 13 and ops["x"][0] == 9.0 and ops["x"][-1] == pytest.approx((1.0 + 0.5) / 4)
    kind, direction = charts["oneDNN primitive time"]["data"]
    assert (kind["x"], kind["y"]) == (["convolution", "reorder"], [7.5, 1.5])
    assert direction["x"] == ["backward_data", "forward_training", "backward_weights", "undef"]
    assert direction["y"] == [3.0, 2.5, 2.0, 1.5]
    forward, backward = charts["Time by module"]["data"]
    assert forward["y"] == backward["y"] == ["model.backbone", "model.head"]
    assert (forward["x"], backward["x"]) == ([5.0, 2.0], [10.0, 3.0])


def test_the_roofline_places_costed_ops_under_a_roof_per_dtype():
    text = render_report(ReportData([], "t", "db", ["prof-a"], profiles=[profile_record()]))
    roofline = _by_title(figures(text))["Roofline"]
    assert roofline["layout"]["xaxis"]["type"] == roofline["layout"]["yaxis"]["type"] == "log"
    *roofs, points = roofline["data"]
    # One point per op with FLOPs and bytes (copy_ has no FLOPs): intensity flops / bytes, achieved GFLOP/s.
    assert points["x"] == pytest.approx([20.0, 1 / 12, 30.0])
    assert points["y"] == pytest.approx([2.4e9 / 0.036 / 1e9, 1e8 / 0.024 / 1e9, 100.0])
    assert [d[0] for d in points["customdata"]] == ["aten::mkldnn_convolution", "aten::mul", "aten::addmm"]
    assert [d[1] for d in points["customdata"]] == [9.0, 6.0, 4.5]  # ms per step
    sizes = points["marker"]["size"]
    assert sizes[0] == 40 and sizes[0] > sizes[1] > sizes[2]  # the longest op is the biggest circle
    # Ridge points at peak / triad: 100 / 20 = 5 and 250 / 20 = 12.5 FLOP/byte.
    assert [r["x"][1] for r in roofs] == [5.0, 12.5] and [r["y"][1] for r in roofs] == [100.0, 250.0]
    for roof, peak in zip(roofs, (100.0, 250.0), strict=True):
        lo, _, hi = roof["x"]
        assert lo < min(points["x"]) and hi > max(points["x"])
        assert roof["y"] == pytest.approx([lo * 20.0, peak, peak])  # the memory roof, then flat
    assert [r["name"].split(":")[0] for r in roofs] == ["float32 roof", "bfloat16 roof"]


def test_a_summary_without_optional_parts_renders_escaped():
    bare = profile_record(minimal=True, target=HOSTILE, label=HOSTILE, warnings=[HOSTILE])
    bare.summary = minimal_summary(name=HOSTILE)
    text = render_report(ReportData([], "t", "db", ["prof-a"], profiles=[bare]))
    assert "<script>alert" not in text and "<img src=x" not in text
    section = re.sub(r"\s+", " ", _section(text))
    assert str(escape(HOSTILE)) in section
    assert "The whole command, 120.0 ms; 83.3% of that time" in section
    for absent in ("Roofs:", "Bottlenecks", "Replay", "oneDNN", "Named regions", "input shapes", "Roofline"):
        assert absent not in section, absent
    assert _op_rows(text) == [[str(escape(HOSTILE)), "30", "100.000", "100.0%", "-", "-", "-", "-"]]
    (chart,) = figures(text)  # only the op breakdown: no oneDNN, modules or costed ops
    assert chart["data"][0]["y"] == [html.escape(HOSTILE)] and chart["data"][0]["x"] == [100.0]
    for payload in re.findall(r'class="figure"[^>]*>(.*?)</script>', text, re.S):
        assert "<" not in payload and ">" not in payload


def test_report_and_results_commands_find_profiles(tmp_path, capsys):
    db = tmp_path / "r.db"
    first = profile_record(created_at="2025-03-01T10:00:00.000+00:00")
    with ResultStore(db) as store:
        store.add_profile(first)
        store.add_profile(profile_record(minimal=True, created_at="2025-03-01T10:01:00.000+00:00"))
    out = tmp_path / "report.html"
    assert main(["report", "last", "--db", str(db), "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["runs"] == ["prof-a"] and summary["profiles"] == 2 and summary["records"] == 0
    assert len(re.findall(r'<h3 id="profile-', out.read_text())) == 2
    assert main(["results", "--db", str(db), "--runs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"run_id": "prof-a", "created_at": first.created_at, "n": 2, "tasks": [], "scenarios": [], "kind": "profile"}
    ]
    assert main(["results", "--db", str(db), "--runs"]) == 0
    assert "(profile)" in capsys.readouterr().out
