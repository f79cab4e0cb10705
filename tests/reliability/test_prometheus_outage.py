"""Prometheus unreachable mid-analysis, on the local platform with real Envoy, apps and Prometheus.

The canary is judged by a Prometheus scraping the local Envoy. Once traffic is split, Prometheus is
stopped by its PID: the analysis must hold (no promotion, no failed check, the metric's status says
why), and once a new Prometheus answers on the same address the analysis recovers and promotes.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from canaryctl.api.models import Canary, CanaryStatus, Phase, Verdict
from canaryctl.demo.app import build_app
from canaryctl.demo.servers import LocalServer
from canaryctl.local.console import Console
from canaryctl.local.manifests import load_texts
from canaryctl.local.prometheus import LocalPrometheus
from canaryctl.local.runtime import LocalOptions, LocalRuntime
from tests.reliability.traffic import Users

OUTAGE_SECONDS = 4.0  # four analysis intervals
RUN_TIMEOUT_SECONDS = 45.0
USER_CONNECTIONS = 2
USER_PAUSE_SECONDS = 0.1  # about 20 requests a second in all
POLL_SECONDS = 0.05
METRIC = "request-success-rate"

CANARY = {
    "apiVersion": "canaryctl.dev/v1beta1",
    "kind": "Canary",
    "metadata": {"name": "outage", "namespace": "reliability"},
    "spec": {
        "targetRef": {"kind": "Service", "name": "outage"},
        "service": {"port": 80},
        "progressDeadlineSeconds": 60,
        "analysis": {
            "interval": "1s",
            "threshold": 1,
            "stepWeight": 50,
            "maxWeight": 50,
            "metrics": [
                {"name": METRIC, "interval": "4s", "thresholdRange": {"min": 95}, "onNoData": "hold"}
            ],
        },
    },
}


@dataclass
class Outage:
    """Statuses recorded before, during and after Prometheus was down (indices into ``statuses``)."""

    statuses: list[CanaryStatus] = field(default_factory=list)
    began: int = 0
    ended: int = 0
    seconds_to_promotion: float = 0.0

    @property
    def during(self) -> list[CanaryStatus]:
        return self.statuses[self.began : self.ended]


def _write_targets(path: Path, stats_url: str) -> None:
    """Prometheus file-based service discovery; rename-swapped so it never reads half a file."""
    parsed = httpx.URL(stats_url)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": [f"{parsed.host}:{parsed.port}"]}]))
    os.replace(tmp, path)


async def _roll_out(tmp_path: Path) -> tuple[Canary, Outage]:
    targets = tmp_path / "targets.json"
    targets.write_text("[]")
    scrape = {
        "job_name": "canaryctl-envoy",
        "metrics_path": "/stats/prometheus",
        "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "1s"}],
    }
    prometheus = LocalPrometheus([scrape])
    restarted = LocalPrometheus([scrape])
    restarted.port = prometheus.port  # the analyzer's address stays the same across the outage
    apps = [LocalServer(build_app("v1", 0.0, 1.0, seed=1)), LocalServer(build_app("v2", 0.0, 1.0, seed=2))]
    outage = Outage()
    split = asyncio.Event()
    users: list[Users] = []
    saboteur: asyncio.Task[None] | None = None
    try:
        await asyncio.to_thread(prometheus.start)
        primary, canary = [await app.start() for app in apps]
        options = LocalOptions(
            primary=primary.url, canary=canary.url, prometheus=prometheus.url, timeout=RUN_TIMEOUT_SECONDS
        )
        bundle = load_texts([("outage.yaml", yaml.safe_dump(CANARY))])
        runtime = LocalRuntime(bundle, options, Console(io.StringIO()))

        def started(listen_url: str) -> None:
            _write_targets(targets, runtime.mesh.stats_url)
            port = httpx.URL(listen_url).port
            assert port is not None
            users.append(Users(port, USER_CONNECTIONS, USER_PAUSE_SECONDS).start())

        def record(current: Canary) -> None:
            assert current.status is not None
            outage.statuses.append(current.status)
            if current.status.canary_weight > 0:
                split.set()

        async def break_prometheus() -> None:
            await asyncio.wait_for(split.wait(), RUN_TIMEOUT_SECONDS)
            await asyncio.to_thread(prometheus.stop)  # terminates its PID
            outage.began = len(outage.statuses)
            await asyncio.sleep(OUTAGE_SECONDS)
            outage.ended = len(outage.statuses)
            back = time.monotonic()
            await asyncio.to_thread(restarted.start)
            for _ in range(round(RUN_TIMEOUT_SECONDS / POLL_SECONDS)):
                if outage.statuses and outage.statuses[-1].phase is Phase.SUCCEEDED:
                    break
                await asyncio.sleep(POLL_SECONDS)
            outage.seconds_to_promotion = time.monotonic() - back

        runtime.on_started = started
        runtime.on_tick = record
        saboteur = asyncio.create_task(break_prometheus())
        result = await runtime.run()
        await asyncio.wait_for(saboteur, 5)  # it saw the promotion, or raises what went wrong
        return result.canary, outage
    finally:
        for user in users:
            await user.stop()
        if saboteur is not None:
            saboteur.cancel()
            await asyncio.gather(saboteur, return_exceptions=True)
        for app in apps:
            await app.stop()
        await asyncio.to_thread(prometheus.stop)
        await asyncio.to_thread(restarted.stop)


def test_prometheus_outage_holds_the_analysis_and_it_recovers(tmp_path: Path, fast_intervals: None) -> None:
    canary, outage = asyncio.run(_roll_out(tmp_path))

    during = outage.during
    assert len(during) >= 3, "the analysis kept ticking while Prometheus was down"
    assert all(s.phase is Phase.PROGRESSING and s.canary_weight == 50 for s in during), "held, not promoted"
    assert all(s.failed_checks == 0 for s in during), "an unreachable provider is not a failed check"
    judged = [m for s in during for m in s.metrics if m.name == METRIC]
    assert judged and all(m.verdict in (Verdict.ERROR, Verdict.NO_DATA) for m in judged)
    failures = [m.message for m in judged if m.verdict is Verdict.ERROR]
    assert failures and all("query failed" in message for message in failures), failures

    assert canary.status is not None and canary.status.phase is Phase.SUCCEEDED
    final = next(m for m in canary.status.metrics if m.name == METRIC)
    assert final.verdict is Verdict.PASS and final.provider == "prometheus"
    assert outage.seconds_to_promotion < 15
