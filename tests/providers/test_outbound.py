"""Every outbound call against servers a hostile tenant controls: a drip-feeding server, one that never
answers, replies of tens of MiB, error bodies of MiB, and addresses that try to move credentials.

What is asserted is what a user of another Canary would notice (time, memory, text in status) and what
the server saw (connections at once, bytes it could write, requests it got).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from canaryctl.api.models import (
    AlertProviderSpec,
    Canary,
    CanaryMetric,
    CanaryWebhook,
    LocalObjectReference,
    MetricTemplate,
    MetricTemplateProvider,
    Phase,
    Severity,
)
from canaryctl.ports import Alert
from canaryctl_providers.metrics import MetricQueryError, MetricsAnalyzer, ProviderConfigError, provider_for
from canaryctl_providers.metrics.transport import DEFAULT_TIMEOUT
from canaryctl_providers.notifiers import NotifierError, notifier_for, slack, webhook
from canaryctl_providers.outbound import (
    HOOKS_PER_CANARY,
    MAX_ERROR_CHARS,
    QUERIES_PER_CANARY,
    close_shared_clients,
)
from canaryctl_providers.webhooks import WebhookClient
from tests.providers.hostile import MIB, VECTOR, answer, drip, hang, huge, huge_reply_rss, serving

# A message may carry a few fixed words around the bounded remote text.
MESSAGE_LIMIT = MAX_ERROR_CHARS + 200
# Loopback socket buffers hold a few MiB; a client that stops reading lets no more than that through.
UNREAD = 64 * MIB
SLACK_SECONDS = 2.5


def canary(name: str, metrics_server: str | None = None, **analysis: Any) -> Canary:
    spec: dict[str, Any] = {
        "targetRef": {"kind": "Deployment", "name": name},
        "service": {"port": 80},
        "analysis": {"stepWeight": 10, **analysis},
    }
    if metrics_server:
        spec["metricsServer"] = metrics_server
    return Canary.model_validate({"metadata": {"name": name, "namespace": "test"}, "spec": spec})


def hook(url: str, timeout: str = "10s", **fields: Any) -> CanaryWebhook:
    return CanaryWebhook.model_validate({"name": "hook", "url": url, "timeout": timeout, **fields})


def prometheus(url: str, **extra: Any) -> MetricTemplateProvider:
    return MetricTemplateProvider(type="prometheus", address=url, **extra)


ALERT = Alert("podinfo", "test", "kubernetes", Phase.FAILED, Severity.ERROR, "Canary failed", 0, 2, 2)


async def timed(coro: Any) -> tuple[Any, float]:
    """The coroutine's result (or the exception it raised) and how long it took."""
    started = time.monotonic()
    try:
        result = await asyncio.wait_for(coro, 30)
    except Exception as exc:  # returned so the caller can assert on it
        result = exc
    return result, time.monotonic() - started


# --- deadlines -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_drip_feeding_server_costs_each_call_its_deadline_and_no_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One byte a second never trips a per-read timeout; the deadline is for the whole exchange."""
    monkeypatch.setattr(webhook, "TIMEOUT_SECONDS", 2.0)
    monkeypatch.setattr(slack, "TIMEOUT_SECONDS", 2.0, raising=False)

    async def main() -> None:
        async with serving(drip()) as server:
            client = WebhookClient()
            generic = AlertProviderSpec.model_validate({"type": "generic", "address": server.url})
            results = await asyncio.gather(
                timed(provider_for(prometheus(server.url), None).query("up")),
                timed(
                    provider_for(MetricTemplateProvider(type="web", address=server.url), None).query("$.v")
                ),
                timed(client.call(canary("a"), hook(server.url, timeout="2s"), None, None)),
                timed(notifier_for(generic, None).post(ALERT)),
                timed(notifier_for(AlertProviderSpec(type="slack", address=server.url), None).post(ALERT)),
            )
            await client.aclose()
        (prom, prom_s), (web, web_s), (hooked, hook_s), (notified, notify_s), (slacked, slack_s) = results
        for error, seconds in ((prom, prom_s), (web, web_s)):
            assert isinstance(error, MetricQueryError), error
            assert f"within {DEFAULT_TIMEOUT:g}s" in str(error)
            assert seconds < DEFAULT_TIMEOUT + SLACK_SECONDS
        assert not hooked.success and hooked.message == "timed out after 2s" and hook_s < 2 + SLACK_SECONDS
        for error, seconds in ((notified, notify_s), (slacked, slack_s)):
            assert isinstance(error, NotifierError), error
            assert seconds < 2 + SLACK_SECONDS

    asyncio.run(main())


# --- bodies ----------------------------------------------------------------------------------------------


def test_a_metric_reply_above_one_mib_is_an_error_and_is_not_read_to_the_end() -> None:
    """A valid Prometheus answer padded to 64 MiB: refused after 1 MiB, the connection closed."""

    async def main() -> None:
        padded = huge(200, UNREAD, prefix=VECTOR[:-2] + b"    ")
        async with serving(padded) as server:
            result, _ = await timed(provider_for(prometheus(server.url), None).query("up"))
        assert isinstance(result, MetricQueryError) and "more than 1 MiB" in str(result), result
        assert server.written < UNREAD / 4

    asyncio.run(main())


RSS_GROWTH_LIMIT_MIB = 40


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["metric", "webhook"])
def test_a_150_mib_reply_keeps_the_callers_memory_bounded(kind: str) -> None:
    """The caller runs in a process of its own whose peak RSS is reset before the call (Linux
    ``clear_refs``), so the peak is the call's alone."""
    report = asyncio.run(huge_reply_rss(kind))
    print(json.dumps(report))
    assert report["peak_mib"] - report["before_mib"] < RSS_GROWTH_LIMIT_MIB, report
    assert report["written_mib"] < report["reply_mib"] / 4, report


def test_megabyte_error_bodies_reach_no_message_whole() -> None:
    """500 with 64 MiB of text: every message stays short and the rest of the body is never read."""

    async def main() -> None:
        body = b"<html>" + b"E" * 1000
        async with serving(huge(500, UNREAD, prefix=body, content_type="text/html")) as server:
            client = WebhookClient()
            analyzer = MetricsAnalyzer()
            metric = CanaryMetric.model_validate({"name": "up", "query": "up", "thresholdRange": {"min": 1}})
            generic = AlertProviderSpec.model_validate({"type": "generic", "address": server.url})
            observed, hooked, notified, slacked = await asyncio.gather(
                analyzer.measure(canary("a", server.url), metric, caller_side=False),
                client.call(canary("a"), hook(server.url), None, None),
                timed(notifier_for(generic, None).post(ALERT)),
                timed(notifier_for(AlertProviderSpec(type="slack", address=server.url), None).post(ALERT)),
            )
            await client.aclose()
        messages = [observed.error or "", hooked.message, str(notified[0]), str(slacked[0])]
        for message in messages:
            assert "500" in message and len(message) < MESSAGE_LIMIT, message[:300]
        assert server.written < len(server.requests) * UNREAD / 4

    asyncio.run(main())


# --- per-Canary limits -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_canary_with_100_hanging_hooks_leaves_another_canarys_hook_untouched() -> None:
    async def main() -> None:
        async with serving(hang()) as hanging, serving(answer(200, b"ok")) as healthy:
            client = WebhookClient()
            starved = canary("starved")
            stuck = [
                asyncio.create_task(client.call(starved, hook(f"{hanging.url}/{i}", "10m"), None, None))
                for i in range(100)
            ]
            await hanging.wait_open(HOOKS_PER_CANARY)
            await asyncio.sleep(0.5)  # time for more connections, were they allowed
            result, seconds = await timed(client.call(canary("other"), hook(healthy.url, "2s"), None, None))
            assert result.success, result
            assert seconds < 1.0
            assert hanging.most_open == HOOKS_PER_CANARY
            await hanging.stop()  # the stuck calls fail at once instead of after ten minutes
            await asyncio.gather(*stuck)
            await client.aclose()

    asyncio.run(main())


@pytest.mark.slow
def test_a_canary_on_a_drip_feeding_prometheus_leaves_another_canarys_queries_untouched() -> None:
    """One analyzer serves every Canary, as in the operator; the starved one's queries hold its slots."""

    async def main() -> None:
        async with serving(drip()) as dripping, serving(answer(200, VECTOR)) as healthy:
            analyzer = MetricsAnalyzer()
            metrics = [
                CanaryMetric.model_validate({"name": f"m{i}", "query": "up", "thresholdRange": {"min": 1}})
                for i in range(20)
            ]
            starved = canary("starved", dripping.url)
            stuck = [asyncio.create_task(analyzer.measure(starved, m, caller_side=False)) for m in metrics]
            await dripping.wait_open(4)
            await asyncio.sleep(0.5)  # time for more connections, were they allowed
            observed, seconds = await timed(analyzer.measure(canary("other", healthy.url), metrics[0], False))
            assert observed.canary.value == 1.0 and seconds < 1.0, (observed, seconds)
            assert dripping.most_open == QUERIES_PER_CANARY
            await dripping.stop()
            await asyncio.gather(*stuck)

    asyncio.run(main())


# --- credentials stay at their own address -------------------------------------------------------------


def test_a_template_secret_never_goes_to_the_canarys_metrics_server() -> None:
    """A Prometheus template in another namespace with a secretRef and no address."""
    template = MetricTemplate.model_validate(
        {
            "metadata": {"name": "shared", "namespace": "monitoring"},
            "spec": {"provider": {"type": "prometheus", "secretRef": {"name": "prom"}}, "query": "up"},
        }
    )
    read: list[tuple[str, str]] = []

    async def templates(name: str, namespace: str) -> MetricTemplate:
        return template

    async def secrets(name: str, namespace: str) -> dict[str, str]:
        read.append((namespace, name))
        return {"token": "monitoring-team-token"}

    async def main() -> None:
        async with serving(answer(200, VECTOR)) as collector:
            metric = CanaryMetric.model_validate(
                {"name": "m", "templateRef": {"name": "shared", "namespace": "monitoring"}}
            )
            observed = await MetricsAnalyzer(templates, secrets).measure(
                canary("thief", collector.url), metric, caller_side=False
            )
        assert observed.canary.value is None
        assert "has a secretRef but no spec.provider.address" in (observed.error or "")
        assert collector.requests == [] and read == []

    asyncio.run(main())


@pytest.mark.parametrize("path", ["@127.0.0.1:{port}/x", "http://127.0.0.1:{port}/x"])
def test_a_web_query_path_cannot_take_the_credentials_to_another_host(path: str) -> None:
    async def main() -> None:
        async with serving(answer(200, b'{"v": 1}')) as own, serving(answer(200, b'{"v": 2}')) as other:
            port = other.url.rsplit(":", 1)[1]
            spec = MetricTemplateProvider(
                type="web", address=own.url, secret_ref=LocalObjectReference(name="s")
            )
            provider = provider_for(spec, {"token": "web-token"})
            assert await provider.query("$.v") == 1.0  # the template's own address works
            query = json.dumps({"jsonPath": "$.v", "path": path.format(port=port)})
            with pytest.raises(MetricQueryError, match="path"):
                await provider.query(query)
        assert other.requests == []
        assert own.requests[0].headers["authorization"] == "Bearer web-token"

    asyncio.run(main())


def test_cloudwatch_never_signs_with_the_controllers_own_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDCONTROLLER")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "controller-secret")
    spec = MetricTemplateProvider(type="cloudwatch", address="http://127.0.0.1:9", region="eu-west-1")
    with pytest.raises(ProviderConfigError, match="never used"):
        provider_for(spec, None)
    with pytest.raises(ProviderConfigError, match="not an AWS region"):
        provider_for(spec.model_copy(update={"region": "evil.example/#"}), None)


# --- one keep-alive client per address -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def keepalive_prometheus(set_cookie: str | None = None) -> AsyncIterator[tuple[str, list[Any]]]:
    """A keep-alive Prometheus answering 1; yields its URL and, per request, (client port, Cookie)."""
    seen: list[Any] = []

    async def query(request: web.Request) -> web.Response:
        assert request.transport is not None
        seen.append((request.transport.get_extra_info("peername")[1], request.headers.get("Cookie")))
        response = web.json_response({"status": "success", "data": json.loads(VECTOR)["data"]})
        if set_cookie:
            response.headers["Set-Cookie"] = set_cookie
        return response

    app = web.Application()
    app.router.add_get("/api/v1/query", query)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    finally:
        await runner.cleanup()


def test_queries_to_one_prometheus_reuse_one_connection() -> None:
    """Each query used to open (and close) a connection of its own: ~4 ms each on a loaded operator."""

    async def main() -> None:
        async with keepalive_prometheus() as (url, seen):
            analyzer = MetricsAnalyzer()
            metric = CanaryMetric.model_validate({"name": "m", "query": "up", "thresholdRange": {"min": 1}})
            for name in ("a", "b", "c"):
                for _ in range(5):
                    observed = await analyzer.measure(canary(name, url), metric, caller_side=False)
                    assert observed.canary.value == 1.0
            await close_shared_clients()
        assert len(seen) == 15
        assert len({port for port, _ in seen}) == 1, seen

    asyncio.run(main())


def test_a_cookie_one_tenants_server_sets_is_never_sent_with_a_later_query() -> None:
    async def main() -> None:
        async with keepalive_prometheus(set_cookie="session=tenant-a; Path=/") as (url, seen):
            for name in ("a", "b"):
                provider = provider_for(prometheus(url), None)
                assert await provider.query(f"up{{canary={name!r}}}") == 1.0
            await close_shared_clients()
        assert [cookie for _, cookie in seen] == [None, None]

    asyncio.run(main())
