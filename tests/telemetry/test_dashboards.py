"""The shipped Grafana dashboards and alert rules against a real Prometheus fed by local rollouts.

Two rollouts run on the local platform at once, each with its own Envoy and real traffic: one healthy
(promoted), one answering half its requests with 500 (rolled back). A real Prometheus scrapes the
controller's metrics (recorded as the operator records them) and both Envoys, and evaluates the chart's
PrometheusRule. Every panel's every query must parse and return a value over the rollouts' time span,
every template variable must list the rollouts' names, and the rules must load and evaluate, the failed
canary's alert pending.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryctl.api import lint
from canaryctl.api.models import CanaryAnalysis, Phase
from canaryctl.telemetry.metrics import ControllerMetrics, serve_metrics
from e2e.platform import NAMESPACE as ROLLOUT_NAMESPACE
from e2e.platform import Context, Run, Scenario, Version, run_scenario
from tests.chart.conftest import CHART, NAMESPACE, RELEASE, render_values
from tests.telemetry.controller import Prometheus, prometheus_scraping

SUCCESS = {"name": "request-success-rate", "interval": "10s", "thresholdRange": {"min": 95}}
# Latency is charted, not judged: a busy machine stretches the healthy app's p99 past seconds.
LATENCY = {"name": "request-duration", "interval": "10s", "thresholdRange": {"max": 30_000}}
GRAFANA = {"$__rate_interval": "10s", "$__range": "5m"}  # what Grafana substitutes for a 5-minute view


def analysis(loadtester: str, _listen: str) -> dict[str, Any]:
    """Checks 2 s apart, three failed ones to roll back: each Envoy lives through several scrapes."""
    gate = {"name": "gate", "type": "pre-rollout", "url": f"{loadtester}/gate/approve"}
    check = {"name": "check", "type": "rollout", "url": f"{loadtester}/gate/approve"}  # every check
    return {
        "interval": "2s",
        "threshold": 3,
        "stepWeight": 25,
        "metrics": [SUCCESS, LATENCY],
        "webhooks": [gate, check],
    }


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        found += panels(panel) if "panels" in panel else [panel]
    return found


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's interpolation of ``$name`` and ``${name}`` (longest names first)."""
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace("${" + name.lstrip("$") + "}", values[name]).replace(name, values[name])
    return expr


async def watch_mesh(targets: Path, run: Run, found: list[str]) -> None:
    """Adds the rollout's Envoy to Prometheus's file-discovered targets once it runs."""
    for _ in range(600):
        if run.stats_url:
            found.append(run.stats_url.split("//", 1)[1].split("/", 1)[0])
            targets.write_text(json.dumps([{"targets": found, "labels": {"job": "mesh"}}]))
            return
        await asyncio.sleep(0.1)


async def rollouts(targets: Path, metrics: ControllerMetrics) -> dict[str, Run]:
    """A promoted and a rolled-back rollout at once, both recorded in ``metrics``."""
    found: list[str] = []

    async def watch(context: Context) -> None:
        await watch_mesh(targets, context.run, found)

    scenarios = [
        Scenario("healthy", analysis, act=watch, metrics=metrics),
        Scenario("faulty", analysis, canary=Version(error_rate=0.5), act=watch, metrics=metrics),
    ]
    runs = await asyncio.gather(*(run_scenario(s) for s in scenarios))
    return {s.name: run for s, run in zip(scenarios, runs, strict=True)}


def returns_data(prometheus: Prometheus, expr: str, start: float, end: float) -> bool:
    data = prometheus.api("query_range", query=expr, start=str(start), end=str(end), step="1")
    values = [float(v) for series in data["result"] for _, v in series["values"]]
    return any(v == v for v in values)  # a value that is not NaN


def chart_rules(directory: Path) -> Path:
    """The chart's PrometheusRule as a Prometheus rules file (canaryctl names, ServiceMonitor on)."""
    values = {"prometheusRule": {"enabled": True}, "serviceMonitor": {"enabled": True}}
    (rule,) = [m for m in render_values(values) if m["kind"] == "PrometheusRule"]
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    return path


@pytest.mark.slow
def test_every_panel_and_rule_against_local_rollouts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(CanaryAnalysis, "min_interval_seconds", 1.0)
    monkeypatch.setattr(lint, "MIN_INTERVAL_SECONDS", 1.0)
    rules = chart_rules(tmp_path)
    metrics = ControllerMetrics()
    server = serve_metrics(metrics, 0, host="127.0.0.1")
    targets = tmp_path / "mesh.json"
    targets.write_text("[]")
    jobs: list[dict[str, Any]] = [
        # As the chart's ServiceMonitor scrapes the controller: job = its Service, namespace = the release's,
        # and the series' own labels (a Canary's namespace) honoured over the target's.
        {
            "job_name": RELEASE,
            "honor_labels": True,
            "static_configs": [{"targets": [f"127.0.0.1:{server.port}"], "labels": {"namespace": NAMESPACE}}],
        },
        {
            "job_name": "mesh",
            "metrics_path": "/stats/prometheus",
            "file_sd_configs": [{"files": [str(targets)]}],
        },
    ]
    try:
        with prometheus_scraping({}, [rules], jobs) as prometheus:
            start = time.time()
            runs = asyncio.run(rollouts(targets, metrics))
            assert runs["healthy"].phase is Phase.SUCCEEDED, runs["healthy"].ticks[-3:]
            assert runs["faulty"].phase is Phase.FAILED, runs["faulty"].ticks[-3:]
            time.sleep(3)  # the last scrapes
            end = time.time()
            check_dashboards(prometheus, start, end)
            check_rules(prometheus)
    finally:
        server.stop()


def check_dashboards(prometheus: Prometheus, start: float, end: float) -> None:
    names = {"healthy", "faulty"}
    backends = {f"{name}-{side}_{ROLLOUT_NAMESPACE}" for name in names for side in ("primary", "canary")}
    # The mesh control plane's dashboard: tests/meshd/test_metrics.py, against a running meshd.
    for path in sorted(p for p in (CHART / "dashboards").glob("*.json") if p.stem != "meshd"):
        dashboard = json.loads(path.read_text())
        variables = {
            "$datasource": "prometheus",
            "$prefix": "canaryctl",
            "$namespace": ROLLOUT_NAMESPACE,
            "$name": "healthy|faulty",
            "$backend": "|".join(sorted(backends)),
            **GRAFANA,
        }
        for variable in dashboard["templating"]["list"]:
            if variable["type"] != "query":
                continue
            query = substitute(variable["query"]["query"], variables)
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
            assert match is not None, query
            listed = set(prometheus.api(f"label/{match[2]}/values", **{"match[]": match[1]}))
            expected = {"namespace": {ROLLOUT_NAMESPACE}, "name": names, "backend": backends}[
                variable["name"]
            ]
            assert expected <= listed, f"{path.name} ${variable['name']}: {listed}"
        for panel in panels(dashboard):
            for target in panel["targets"]:
                expr = substitute(target["expr"], variables)
                assert returns_data(prometheus, expr, start, end), f"{path.name} {panel['title']!r}: {expr}"


def check_rules(prometheus: Prometheus) -> None:
    assert prometheus.until('ALERTS{alertname="CanaryFailed"}'), "CanaryFailed not pending"
    (group,) = prometheus.api("rules")["groups"]
    assert {rule["name"]: rule["health"] for rule in group["rules"]} == {
        "CanaryFailed": "ok",
        "CanaryAnalysisHalted": "ok",
        "CanaryControllerDown": "ok",
        "MeshConfigRejected": "ok",
    }
    pending = prometheus.query('ALERTS{alertname="CanaryFailed"}')
    assert [(a["metric"]["name"], a["metric"]["alertstate"]) for a in pending] == [("faulty", "pending")]
    assert not prometheus.query(
        'ALERTS{alertname=~"CanaryAnalysisHalted|CanaryControllerDown|MeshConfigRejected"}'
    )
