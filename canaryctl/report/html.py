"""A History as one HTML page: a Promoted/Rolled back banner with the reason, then plotly charts with
units and legends: traffic and error rate per version (the data fastFail judges, with its limit), the
routing with step boundaries and verdicts, and each metric against its threshold band. plotly.js is
inlined, so the page opens offline and never loads from a CDN."""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from canaryctl.api.models import CanaryMetric, CanaryStatus, Phase
from canaryctl.engine.judge import DURATION, SUCCESS_RATE, bounds
from canaryctl.engine.steps import strategy
from canaryctl.report.history import CANARY, PRIMARY, History, Marker, MarkerKind, Series

COLORS = {PRIMARY: "#1f77b4", CANARY: "#ff7f0e"}
MARKER_COLORS = {
    MarkerKind.PASS: "#2ca02c",
    MarkerKind.FAIL: "#d62728",
    MarkerKind.PROMOTED: "#2ca02c",
    MarkerKind.ROLLED_BACK: "#d62728",
    MarkerKind.STEP: "#7f7f7f",
    MarkerKind.EVENT: "#9467bd",
}
UNITS = {SUCCESS_RATE: "%", DURATION: "ms"}
PASS_BAND, FAIL_BAND = "rgba(44,160,44,0.12)", "rgba(214,39,40,0.08)"
HEIGHT = 320


def _layout(figure: go.Figure, title: str, y_title: str) -> go.Figure:
    figure.update_layout(
        title={"text": title, "x": 0},
        height=HEIGHT,
        margin={"l": 70, "r": 30, "t": 50, "b": 40},
        legend={"orientation": "h", "y": -0.2},
        hovermode="x unified",
        template="plotly_white",
    )
    figure.update_xaxes(title_text="time (UTC)", tickformat="%H:%M:%S", type="date")
    figure.update_yaxes(title_text=y_title, zeroline=False)
    return figure


def _line(
    series: Series, color: str | None = None, dash: str | None = None, steps: bool = False
) -> go.Scatter:
    """``steps``: a value holds until the next point (weights), instead of a slope between points."""
    times, values = zip(*series.points, strict=True) if series.points else ((), ())
    return go.Scatter(
        x=list(times),
        y=list(values),
        name=series.name,
        mode="lines+markers",
        marker={"size": 4},
        line={"color": color, "dash": dash, "shape": "hv" if steps else "linear"},
        connectgaps=False,
    )


def _markers(figure: go.Figure, markers: Sequence[Marker], labelled: bool) -> None:
    """Step boundaries as dotted lines; promotion and rollback as solid ones, labelled."""
    for marker in markers:
        solid = marker.kind in (MarkerKind.PROMOTED, MarkerKind.ROLLED_BACK, MarkerKind.FAIL)
        figure.add_vline(
            x=marker.at,
            line={"color": MARKER_COLORS[marker.kind], "dash": "solid" if solid else "dot", "width": 1},
        )
        if labelled or solid:
            figure.add_annotation(
                x=marker.at,
                y=1,
                yref="paper",
                text=html.escape(marker.label[:40]),
                showarrow=False,
                textangle=-90,
                xanchor="right",
                yanchor="top",
                font={"size": 10, "color": MARKER_COLORS[marker.kind]},
            )


def _side(series: dict[str, Series], side: str) -> Series:
    return series.get(side) or Series(side)


def _ending(history: History) -> list[Marker]:
    return [m for m in history.markers if m.kind in (MarkerKind.PROMOTED, MarkerKind.ROLLED_BACK)]


def traffic_figure(history: History) -> go.Figure:
    figure = go.Figure([_line(_side(history.requests, side), COLORS[side]) for side in (PRIMARY, CANARY)])
    _markers(figure, _ending(history), labelled=True)
    figure.update_yaxes(rangemode="tozero")
    return _layout(figure, "Requests per second by version", "requests / s")


def error_figure(history: History) -> go.Figure:
    figure = go.Figure([_line(_side(history.errors, side), COLORS[side]) for side in (PRIMARY, CANARY)])
    fast_fail = history.canary.spec.effective_analysis.fast_fail
    if fast_fail is not None:
        figure.add_hline(
            y=fast_fail.max_error_rate,
            line={"color": MARKER_COLORS[MarkerKind.FAIL], "dash": "dash"},
            annotation_text=f"fastFail limit {fast_fail.max_error_rate:g}%",
            annotation_position="top left",
        )
    _markers(figure, _ending(history), labelled=True)
    figure.update_yaxes(rangemode="tozero")
    window = f" over {history.error_window}" if history.error_window else ""
    return _layout(figure, f"Error rate (5xx) by version{window}", "5xx responses (%)")


def routing_figure(history: History) -> go.Figure:
    lines = [_line(series, dash="dot" if i else None, steps=True) for i, series in enumerate(history.weights)]
    figure = go.Figure(lines)
    for span in history.faults:
        figure.add_vrect(
            x0=span.start,
            x1=span.end,
            fillcolor=FAIL_BAND,
            line_width=0,
            annotation_text=html.escape(span.label),
            annotation_position="top left",
        )
    _markers(figure, history.markers, labelled=False)
    figure.update_yaxes(range=[-5, 105])
    return _layout(figure, "Routing: share of traffic, steps and verdicts", "traffic (%)")


def _range(values: Sequence[float], limits: Sequence[float]) -> list[float]:
    """Zoomed on the data and the thresholds, so 99.87 against a minimum of 99 reads at a glance."""
    low, high = min([*values, *limits]), max([*values, *limits])
    pad = max((high - low) * 0.15, abs(high) * 0.002, 0.5)
    return [low - pad, high + pad]


def metric_figure(history: History, metric: CanaryMetric) -> go.Figure:
    series = history.metrics.get(metric.name) or Series(metric.name)
    unit = UNITS.get(metric.name, "")
    limits = bounds(metric)
    given = [v for v in (limits.min, limits.max) if v is not None]
    figure = go.Figure([_line(Series(f"{metric.name} (canary)", series.points), COLORS[CANARY])])
    checks = history.verdicts.get(metric.name) or []
    by_time = dict(series.points)
    for kind in (MarkerKind.PASS, MarkerKind.FAIL):
        chosen = [m for m in checks if m.kind is kind and by_time.get(m.at) is not None]
        figure.add_trace(
            go.Scatter(
                x=[m.at for m in chosen],
                y=[by_time[m.at] for m in chosen],
                mode="markers",
                name=f"check {kind.value}ed",
                marker={
                    "size": 11,
                    "color": MARKER_COLORS[kind],
                    "symbol": "circle" if kind is MarkerKind.PASS else "x",
                },
                hovertext=[m.label for m in chosen],
            )
        )
    if not series.values:
        figure.add_annotation(
            text="no check ran before the rollout ended",
            xref="paper",
            yref="paper",
            x=0.5,
            y=0.5,
            showarrow=False,
        )
    y_range = _range(series.values or given or [0.0], given)
    low = limits.min if limits.min is not None else y_range[0]
    high = limits.max if limits.max is not None else y_range[1]
    if given:
        figure.add_hrect(y0=low, y1=high, fillcolor=PASS_BAND, line_width=0, layer="below")
        for name, value in (("min", limits.min), ("max", limits.max)):
            if value is not None:
                figure.add_hline(
                    y=value,
                    line={"color": MARKER_COLORS[MarkerKind.FAIL], "dash": "dash"},
                    annotation_text=f"{name} {value:g}{unit}",
                    annotation_position="bottom right" if name == "min" else "top right",
                )
    figure.update_yaxes(range=y_range, ticksuffix=unit)
    _markers(figure, _ending(history), labelled=False)
    band = " – ".join(
        f"{k} {v:g}{unit}" for k, v in (("min", limits.min), ("max", limits.max)) if v is not None
    )
    title = f"{metric.name}: canary against its threshold ({band or 'no threshold'}), green passes"
    return _layout(figure, title, f"{metric.name} ({unit})" if unit else metric.name)


def verdict(status: CanaryStatus) -> tuple[str, str]:
    """The banner's headline and color."""
    if status.phase is Phase.SUCCEEDED:
        return "Promoted", MARKER_COLORS[MarkerKind.PROMOTED]
    if status.phase is Phase.FAILED:
        return "Rolled back", MARKER_COLORS[MarkerKind.ROLLED_BACK]
    return (status.phase.value if status.phase else "Pending"), "#7f7f7f"


def _when(at: datetime | None) -> str:
    return f"{at:%Y-%m-%d %H:%M:%S} UTC" if at else "-"


def render_report(history: History) -> str:
    canary = history.canary
    status = canary.status or CanaryStatus()
    headline, color = verdict(status)
    name = f"{canary.metadata.namespace}/{canary.metadata.name}"
    figures = [traffic_figure(history), error_figure(history), routing_figure(history)]
    figures += [metric_figure(history, m) for m in canary.spec.effective_analysis.metrics or []]
    if history.start is not None and history.end is not None:
        for figure in figures:  # one time axis for every chart
            figure.update_xaxes(range=[history.start, history.end])
    charts = "".join(
        f"<section>{figure.to_html(full_html=False, include_plotlyjs=False, div_id=f'chart-{i}')}</section>"
        for i, figure in enumerate(figures)
    )
    facts = [
        ("Strategy", strategy(canary.spec.effective_analysis).value),
        ("Provider", canary.spec.provider or "default"),
        ("From", _when(history.start)),
        ("To", _when(history.end)),
        ("Data", history.source),
    ]
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in facts)
    alerts = "".join(f"<li>{html.escape(a)}</li>" for a in history.alerts) or "<li>none</li>"
    events = "".join(
        f"<tr><td>{_when(m.at)}</td><td>{html.escape(m.kind.value)}</td><td>{html.escape(m.label)}</td></tr>"
        for m in sorted(history.markers, key=lambda m: m.at)
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>canaryctl report: {html.escape(name)} {headline}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 1em auto; padding: 0 1em }}
.banner {{ border-left: 8px solid {color}; background: #f7f7f7; padding: .6em 1em; margin: 1em 0 }}
.banner h1 {{ margin: 0; color: {color} }}
.banner p {{ margin: .3em 0 0; font-size: 1.1em }}
table {{ border-collapse: collapse }}
th, td {{ text-align: left; padding: 2px 12px 2px 0; vertical-align: top }}
section {{ margin: 1.5em 0 }}
</style>
<script>{get_plotlyjs()}</script>
</head><body>
<div class="banner" id="verdict"><h1>{headline}: {html.escape(name)}</h1>
<p id="reason">{html.escape(status.message or "-")}</p></div>
<table>{rows}</table>
{charts}
<h2>Timeline</h2><table id="timeline">{events}</table>
<h2>Alerts sent</h2><ul>{alerts}</ul>
</body></html>
"""


def write_report(path: Path, history: History) -> Path:
    path.write_text(render_report(history), encoding="utf-8")
    return path
