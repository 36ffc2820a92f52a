"""The evaluation's reports: ``report.html`` (one file, inline CSS and SVG bar charts, no
scripts: it opens offline) and ``report.xlsx`` (a sheet ``overall`` and one per breakdown)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import escape

COLUMNS = (  # (key, heading, kind)
    ("reached", "Reached", "count"),
    ("responded", "Responded", "count"),
    ("converted", "Converted", "count"),
    ("response_rate", "Response rate", "rate"),
    ("conversion_rate", "Conversion rate", "rate"),
    ("control", "Control", "count"),
    ("control_responded", "Control responded", "count"),
    ("control_converted", "Control converted", "count"),
    ("control_response_rate", "Control response rate", "rate"),
    ("control_conversion_rate", "Control conversion rate", "rate"),
    ("response_lift", "Response lift", "rate"),
    ("response_lift_ci95", "Response lift 95% CI", "interval"),
    ("conversion_lift", "Conversion lift", "rate"),
    ("conversion_lift_ci95", "Conversion lift 95% CI", "interval"),
)
CHART_GROUPS = 30  # bars of at most this many groups per chart (the tables show all)
BAR_H, GAP, LABEL_W, PLOT_W = 12, 10, 180, 420

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Campaign {{ s.campaign }}: evaluation</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
.target { fill: #2b6cb0; } .control { fill: #a0aec0; }
.note { color: #666; }
</style></head><body>
<h1>Campaign {{ s.campaign }}</h1>
<p>Source: {{ s.source }}{% if s.run %}, run {{ s.run }}{% endif %}
{%- if s.simulated %} (responses simulated){% endif %}. {{ s.ci }}.</p>
<h2>Overall</h2>
<table><tr>{% for _, heading, _ in columns %}<th>{{ heading }}</th>{% endfor %}</tr>
<tr>{% for key, _, kind in columns %}<td>{{ fmt(s.overall[key], kind) }}</td>{% endfor %}</tr></table>
{% for name, rows in s.breakdowns.items() %}
<h2>By {{ name }}</h2>
{{ chart(rows) | safe }}
<table><tr><th>{{ name }}</th>{% for _, heading, _ in columns %}<th>{{ heading }}</th>{% endfor %}</tr>
{% for row in rows %}<tr><td>{{ row.group }}</td>
{%- for key, _, kind in columns %}<td>{{ fmt(row[key], kind) }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% endfor %}
{% if s.model %}<h2>Response model (simulated responses)</h2><p class="note">{{ s.model.about }}</p>
<p class="note">{% for k, v in s.model.items() if k != "about" %}{{ k }} = {{ v }}{% if not loop.last %}, {% endif %}
{%- endfor %}</p>{% endif %}
</body></html>
"""


def fmt(value: Any, kind: str) -> str:
    """How a number reads in the report: counts with thousands separators, rates as percent."""
    if value is None:
        return "–"
    if kind == "rate":
        return f"{value * 100:.2f}%"
    if kind == "interval":
        return f"[{value[0] * 100:.2f}%, {value[1] * 100:.2f}%]"
    return f"{value:,}"


def chart(rows: Sequence[Mapping[str, Any]]) -> str:
    """Horizontal bars: response rate of target (dark) and control (light) per group."""
    rows = list(rows)[:CHART_GROUPS]
    rates = [r.get(k) or 0.0 for r in rows for k in ("response_rate", "control_response_rate")]
    top = max(rates, default=0.0) or 1.0
    step = 2 * BAR_H + GAP
    height = step * len(rows) + 24
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{LABEL_W + PLOT_W + 80}" height="{height}" role="img">',
        f'<text x="{LABEL_W}" y="12" font-size="11"><tspan class="target">■</tspan> response rate '
        '<tspan class="control">■</tspan> control response rate</text>',
    ]
    for i, row in enumerate(rows):
        y = 20 + i * step
        label = _escape(row["group"])
        parts.append(f'<text x="{LABEL_W - 6}" y="{y + BAR_H + 4}" font-size="11" text-anchor="end">{label}</text>')
        for j, (key, css) in enumerate((("response_rate", "target"), ("control_response_rate", "control"))):
            rate = row.get(key)
            width = round((rate or 0.0) / top * PLOT_W, 1)
            parts.append(
                f'<rect class="{css}" x="{LABEL_W}" y="{y + j * BAR_H}" width="{width}" height="{BAR_H - 1}"/>'
            )
            text_y = y + j * BAR_H + BAR_H - 2
            parts.append(f'<text x="{LABEL_W + width + 4}" y="{text_y}" font-size="10">{fmt(rate, "rate")}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def _escape(value: Any) -> str:
    return str(escape(str(value)))


def html(summary: Mapping[str, Any]) -> str:
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined)
    return environment.from_string(_TEMPLATE).render(s=summary, columns=COLUMNS, fmt=fmt, chart=chart)


def xlsx(summary: Mapping[str, Any], path: Path) -> Path:
    """A workbook: sheet ``overall`` and one sheet per breakdown, a row per group."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    sheets = {"overall": [{"group": "all", **summary["overall"]}], **summary["breakdowns"]}
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(title=name[:31])
        sheet.append(["group", *(heading for _, heading, kind in COLUMNS for heading in _headings(heading, kind))])
        for cell in sheet[1]:
            cell.font = Font(bold=True)
        for row in rows:
            sheet.append([str(row["group"]), *(v for key, _, kind in COLUMNS for v in _cells(row.get(key), kind))])
        for index, (_, _, kind) in enumerate(_kinds(), start=2):
            if kind != "count":
                for (cell,) in sheet.iter_rows(min_row=2, min_col=index, max_col=index):
                    cell.number_format = "0.00%"
        sheet.freeze_panes = "B2"
    book.save(path)
    return path


def _headings(heading: str, kind: str) -> list[str]:
    return [f"{heading} low", f"{heading} high"] if kind == "interval" else [heading]


def _cells(value: Any, kind: str) -> list[Any]:
    if kind == "interval":
        return list(value) if value else [None, None]
    return [value]


def _kinds() -> list[tuple[str, str, str]]:
    """One entry per spreadsheet column after ``group`` (intervals take two)."""
    return [column for column in COLUMNS for _ in range(2 if column[2] == "interval" else 1)]


def write(directory: Path, summary: Mapping[str, Any]) -> dict[str, Path]:
    """``report.html`` and ``report.xlsx`` in ``directory``; their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    page = directory / "report.html"
    page.write_text(html(summary), encoding="utf-8")
    return {"html": page, "xlsx": xlsx(summary, directory / "report.xlsx")}
