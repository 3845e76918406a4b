"""One self-contained HTML report from stored results: opens offline, escapes every string.

The page inlines Plotly's JavaScript (no CDN), so a report mailed or archived with a
submission still draws its charts years later. Sections come from the view registry in
``views``; this module only assembles them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from mlgauge import paths
from mlgauge.errors import OutputError
from mlgauge.results.report.views import VIEWS, Canvas, ReportData, Section, register_view
from mlgauge.results.units import format_value

__all__ = ["ReportData", "Section", "register_view", "render_report", "write_report"]


def _environment() -> Environment:
    # Autoescape everything: task names, reasons, hostnames and file paths all come from
    # records and files a user may not have written. Lenient undefined: records written by
    # older versions lack newer system fields, and a missing field shows as "-".
    env = Environment(
        loader=PackageLoader("mlgauge.results.report", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["format_value"] = format_value
    return env


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    # A "</script" inside the bundle would end the element early; the bundle has none
    # today, but the guard keeps a future Plotly release from breaking every report.
    return get_plotlyjs().replace("</script", "<\\/script")


def render_report(data: ReportData) -> str:
    """The report's HTML text."""
    from mlgauge import __version__

    env = _environment()
    canvas = Canvas(env)
    sections: list[Section] = []
    for _name, view in VIEWS:
        section = view(data, canvas)
        if section is not None:
            sections.append(section)
    return env.get_template("report.html.j2").render(
        title=data.title,
        run_ids=data.run_ids,
        record_count=len(data.records) + len(data.training) + len(data.tiny) + len(data.profiles),
        source=data.source,
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        version=__version__,
        quick=any(r.style == "quick" for r in [*data.records, *data.tiny]),
        sections=sections,
        figures=canvas.figures,
        plotly_js=_plotly_js(),
    )


def write_report(path: Path, text: str) -> Path:
    """Write atomically: a reader never sees half a report, and a failure leaves no file behind."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return paths.write_text_atomic(path, text)
    except OSError as exc:
        raise OutputError(
            f"cannot write the report: {exc.strerror or exc}",
            hint="Choose an output path in a writable folder with -o",
            path=path,
        ) from exc
