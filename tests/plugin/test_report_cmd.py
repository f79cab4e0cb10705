"""``kubectl canary report`` for a cluster rollout, read from a real Prometheus: the controller's own
series (ControllerMetrics, as the operator exports them) and the included mesh's per-backend Envoy
counters (the labels the builtin queries select on), scraped every second while a rollout plays out;
its steps and verdict from the Canary's Events in the emulator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import kmock
import pytest
import pytest_asyncio
from aiohttp import web

from canaryctl.api.models import Canary, CanaryStatus
from canaryctl.cli.report_cmd import Prometheus, gather
from canaryctl.cli.view import Event
from canaryctl.engine.clock import to_rfc3339
from canaryctl.local.prometheus import LocalPrometheus, prometheus_binary
from canaryctl.local.router import backend_name
from canaryctl.report.history import CANARY, PRIMARY, MarkerKind
from canaryctl.telemetry.metrics import ControllerMetrics
from canaryctl_mesh import telemetry
from tests.gitops.rollouts import ROLLOUTS
from tests.plugin import scenarios
from tests.plugin.helpers import kubectl_canary

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]
SECONDS = 12
EXPOSED_AT = 4  # the canary gets 25% of the traffic from here on


class Rollout:
    """What the operator and the mesh export at each moment: 40 requests a second, 25% of them to the
    canary from EXPOSED_AT seconds on, 30% of the canary's answered 503. Counts follow the clock, not
    the test's loop, so a busy machine does not change the rates."""

    def __init__(self, canary: Canary) -> None:
        self.canary = canary
        self.metrics = ControllerMetrics()
        self.metrics.record_status(canary.model_copy(update={"status": CanaryStatus()}))
        self.started: float | None = None

    def start(self) -> None:
        self.started = time.monotonic()

    def exposition(self) -> bytes:
        elapsed = 0.0 if self.started is None else time.monotonic() - self.started
        exposed = max(0.0, elapsed - EXPOSED_AT)
        if exposed > 0:
            self.metrics.record_status(
                self.canary.model_copy(update={"status": CanaryStatus(canary_weight=25)})
            )
            self.metrics.record_metric(self.canary, "request-success-rate", 70.0)
        primary, canary = backend_name(self.canary, True), backend_name(self.canary, False)
        counts = {
            (primary, "200"): 40 * (elapsed - exposed) + 30 * exposed,
            (canary, "200"): 7 * exposed,
            (canary, "503"): 3 * exposed,
        }
        lines = [f"# TYPE {telemetry.UPSTREAM_RQ_TOTAL} counter"]
        for (backend, code), count in counts.items():
            labels = f'{telemetry.CLUSTER_LABEL}="{backend}",{telemetry.RESPONSE_CODE_LABEL}="{code}"'
            lines.append(f"{telemetry.UPSTREAM_RQ_TOTAL}{{{labels}}} {count}")
        return self.metrics.exposition() + ("\n".join(lines) + "\n").encode()


@pytest_asyncio.fixture()
async def recorded(emulator: kmock.KubernetesEmulator) -> AsyncIterator[tuple[str, datetime, datetime]]:
    """A rollout played out over SECONDS seconds, scraped by a real Prometheus; (its URL, start, end)."""
    try:
        prometheus_binary()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    obj = ROLLOUTS["fast-failed"]()
    rollout = Rollout(Canary.model_validate(obj))

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=rollout.exposition(), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    exporter = f"http://127.0.0.1:{runner.addresses[0][1]}/metrics"
    prometheus = LocalPrometheus.scraping("canaryctl", exporter)
    await asyncio.to_thread(prometheus.start)
    try:
        await _scraped(prometheus.url, datetime.now(UTC))  # the rollout starts once the scrapes do
        start = datetime.now(UTC)
        seconds = [start + timedelta(seconds=s) for s in range(SECONDS)]
        events = [
            (0, "Normal", "New revision detected! Scaling up podinfo.test"),
            (EXPOSED_AT, "Normal", "Advance podinfo.test canary weight 25"),
            (SECONDS - 1, "Warning", f"Canary failed! Scaling down podinfo.test: {obj['status']['message']}"),
        ]
        rollout.start()
        await asyncio.sleep(SECONDS)
        scenarios.seed(emulator, [obj])
        for second, kind, message in events:
            event = scenarios.event("podinfo", 0, message, warning=kind == "Warning")
            event["metadata"]["name"] = f"podinfo.{second}"
            event["lastTimestamp"] = to_rfc3339(seconds[second])
            scenarios.seed(emulator, [event])
        end = datetime.now(UTC)
        await _scraped(prometheus.url, end)
        yield prometheus.url, start, end
    finally:
        await asyncio.to_thread(prometheus.stop)
        await runner.cleanup()


async def _scraped(url: str, end: datetime) -> None:
    """Until Prometheus has a sample from after ``end`` (scrapes are a second apart)."""
    deadline = time.monotonic() + 20
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            answer = await client.get(
                f"{url}/api/v1/query",
                params={"query": "timestamp(canaryctl_canary_weight)"},
            )
            found = answer.json()["data"]["result"]
            if found and max(float(r["value"][1]) for r in found) > end.timestamp():
                return
            await asyncio.sleep(0.5)
    raise AssertionError("Prometheus did not scrape the exporter")


async def test_report_reads_the_rollout_from_prometheus_and_events(
    emulator: kmock.KubernetesEmulator,
    recorded: tuple[str, datetime, datetime],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, start, end = recorded
    canary = Canary.model_validate(ROLLOUTS["fast-failed"]())
    found = (
        Event(to_rfc3339(start), "Normal", "Synced", "New revision detected! Scaling up podinfo.test"),
        Event(to_rfc3339(end), "Warning", "Synced", "Canary failed! Scaling down podinfo.test"),
    )
    window = Prometheus(url, start - timedelta(seconds=1), end + timedelta(seconds=2))
    history = await asyncio.to_thread(gather, canary, found, window)

    canary_errors = history.errors[CANARY].values
    assert canary_errors and 25 <= max(canary_errors) <= 35, canary_errors  # 3 of 10 answered 503
    assert max(history.errors[PRIMARY].values) == 0
    assert 8 <= max(history.requests[CANARY].values) <= 12, history.requests[CANARY].values  # 10 a second
    assert max(history.weights[0].values) == 25 and min(history.weights[0].values) == 0
    assert set(history.metrics["request-success-rate"].values) == {70.0}
    assert [m.kind for m in history.markers] == [MarkerKind.STEP, MarkerKind.ROLLED_BACK]

    out = tmp_path / "report.html"
    argv = ("report", "podinfo", "-n", "test", "--prometheus", url, "-f", str(out))
    assert await kubectl_canary(emulator, *argv, "--now", to_rfc3339(end + timedelta(seconds=2))) == 0
    assert capsys.readouterr().out == f"canary test/podinfo: Failed; report {out}\n"
    page = out.read_text(encoding="utf-8")
    assert "<h1>Rolled back: test/podinfo</h1>" in page
    assert "Advance podinfo.test canary weight 25" in page
