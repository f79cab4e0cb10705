"""A self-contained HTML report of one run: weight and each metric over time, as inline SVG."""

from __future__ import annotations

import html
from pathlib import Path

from canaryctl.api.models import Canary
from canaryctl.engine.judge import bounds
from canaryctl.local.runtime import Timeline

WIDTH, HEIGHT, PAD = 640, 160, 36


def _polyline(points: list[tuple[float, float]], top: float, duration: float, color: str) -> str:
    if not points:
        return ""
    scale_y = top if top > 0 else 1.0
    coords = " ".join(
        f"{PAD + (WIDTH - 2 * PAD) * t / duration:.1f},{HEIGHT - PAD - (HEIGHT - 2 * PAD) * v / scale_y:.1f}"
        for t, v in points
    )
    return f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{coords}"/>'


def _chart(title: str, points: list[tuple[float, float]], duration: float, limits: list[float]) -> str:
    top = max([v for _, v in points] + limits + [1.0]) * 1.1
    lines = [
        f'<line x1="{PAD}" x2="{WIDTH - PAD}" y1="{y:.1f}" y2="{y:.1f}" stroke="#c33" stroke-dasharray="4"/>'
        for limit in limits
        for y in [HEIGHT - PAD - (HEIGHT - 2 * PAD) * limit / top]
    ]
    axis = (
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - PAD}" y2="{HEIGHT - PAD}" stroke="#888"/>'
        f'<text x="{PAD}" y="{HEIGHT - 10}" font-size="11">0s</text>'
        f'<text x="{WIDTH - PAD - 30}" y="{HEIGHT - 10}" font-size="11">{duration:.0f}s</text>'
        f'<text x="4" y="{PAD}" font-size="11">{top:.4g}</text>'
    )
    return (
        f"<h3>{html.escape(title)}</h3>"
        f'<svg width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg">{axis}{"".join(lines)}'
        f"{_polyline(points, top, duration, '#1f6feb')}</svg>"
    )


def render_report(canary: Canary, timeline: Timeline, alerts: list[str]) -> str:
    points = timeline.points
    duration = max([float(str(p["t"])) for p in points] + [1.0])
    weight = [(float(str(p["t"])), float(str(p["weight"]))) for p in points]
    charts = [_chart("canary weight (%)", weight, duration, [])]
    for metric in canary.spec.effective_analysis.metrics or []:
        name, limits = metric.name, bounds(metric)
        series = []
        for point in points:
            values = point["metrics"]
            value = values.get(name) if isinstance(values, dict) else None
            if isinstance(value, int | float):
                series.append((float(str(point["t"])), float(value)))
        charts.append(_chart(name, series, duration, [v for v in (limits.min, limits.max) if v is not None]))
    status = canary.status
    verdict = status.phase.value if status and status.phase else "unknown"
    items = "".join(f"<li>{html.escape(a)}</li>" for a in alerts) or "<li>none</li>"
    return (
        "<!doctype html><meta charset='utf-8'>"
        f"<title>canaryctl demo: {html.escape(canary.metadata.name or '')}</title>"
        "<body style='font-family:sans-serif;max-width:700px;margin:auto'>"
        f"<h1>{html.escape(canary.metadata.name or '')}: {verdict}</h1>"
        f"<p>{html.escape(status.message if status else '')}</p>{''.join(charts)}"
        f"<h3>Alerts received</h3><ul>{items}</ul></body>"
    )


def write_report(path: Path, canary: Canary, timeline: Timeline, alerts: list[str]) -> Path:
    path.write_text(render_report(canary, timeline, alerts), encoding="utf-8")
    return path
