"""Where a tenant's address may lead the controller: never to a link-local address or a cloud metadata
service, whatever name it uses; never to another tenant's cookie; and never a remote value into status.

The servers are on loopback. A name is made to resolve to a link-local address with a resolver stub
(``outbound.resolve``): the server behind that name is a loopback one, so a guard that failed would show
as a request the server got. One test runs in a network namespace of its own, where 169.254.169.254 is
on the loopback interface, to show a real metadata-shaped server is never reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from canaryctl.api.models import (
    Canary,
    CanaryMetric,
    CanaryWebhook,
    MetricTemplate,
    MetricTemplateProvider,
    Phase,
    Severity,
)
from canaryctl.ports import Alert
from canaryctl_providers import outbound
from canaryctl_providers.metrics import MetricQueryError, MetricsAnalyzer, provider_for
from canaryctl_providers.metrics.transport import to_float
from canaryctl_providers.notifiers import NotifierError, slack, webhook
from canaryctl_providers.outbound import (
    MAX_SHARED_CLIENTS,
    close_shared_clients,
    shared_client,
    shared_clients,
)
from canaryctl_providers.webhooks import WebhookClient

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "ya29.c.b0AXv0zTPq9-secret-access-token"  # the shape of a Google access token
METADATA_ANSWER = {"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"}
TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
# What a template author writes to read the node's Google credentials through the web provider.
METADATA_QUERY = json.dumps({"jsonPath": "$.access_token", "path": TOKEN_PATH})


@contextlib.asynccontextmanager
async def recording_server(
    answer: dict[str, Any], set_cookie: str | None = None
) -> AsyncIterator[tuple[int, list[web.Request]]]:
    """A loopback server answering ``answer`` to any GET or POST; yields its port and the requests."""
    seen: list[web.Request] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request)
        response = web.json_response(answer)
        if set_cookie:
            response.headers["Set-Cookie"] = set_cookie
        return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1], seen
    finally:
        await runner.cleanup()


def resolving(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> None:
    """Names resolve to ``answers``; any other name is an error (no lookup leaves the machine)."""

    async def resolve(host: str, port: int) -> list[str]:
        if host not in answers:
            raise OSError(f"{host} is not a name this test resolves")
        return answers[host]

    monkeypatch.setattr(outbound, "resolve", resolve)


def canary() -> Canary:
    return Canary.model_validate(
        {
            "metadata": {"name": "app", "namespace": "team-a"},
            "spec": {"targetRef": {"kind": "Deployment", "name": "app"}, "service": {"port": 80}},
        }
    )


def web_template(address: str) -> MetricTemplate:
    return MetricTemplate.model_validate(
        {
            "metadata": {"name": "steal", "namespace": "team-a"},
            "spec": {
                "provider": {"type": "web", "address": address, "headers": {"Metadata-Flavor": "Google"}},
                "query": METADATA_QUERY,
            },
        }
    )


async def measure_web(address: str) -> str | None:
    """The error a Canary's status would show for a web metric against ``address``."""

    async def templates(name: str, namespace: str) -> MetricTemplate:
        return web_template(address)

    metric = CanaryMetric.model_validate(
        {"name": "token", "templateRef": {"name": "steal"}, "thresholdRange": {"min": 0}}
    )
    observation = await MetricsAnalyzer(templates=templates).measure(canary(), metric, caller_side=False)
    await close_shared_clients()
    return observation.error


# --- the guard ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "169.254.169.254",
        "169.254.0.1",
        "fe80::1",
        "[fe80::a9fe:a9fe]",
        "fd00:ec2::254",
        "::ffff:169.254.169.254",
        "100.100.100.200",
        "metadata.google.internal",
        "METADATA.google.internal.",
        "metadata",
        "instance-data.ec2.internal",
    ],
)
def test_link_local_and_metadata_destinations_are_refused(host: str) -> None:
    assert outbound.refusal(host) is not None


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "10.0.0.7", "prometheus.monitoring.svc", "169.253.1.1"])
def test_ordinary_destinations_pass(host: str) -> None:
    assert outbound.refusal(host) is None


def test_a_name_resolving_to_a_link_local_address_never_reaches_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The template names an innocent host; DNS answers with the metadata address. The server behind
    the name (loopback here) must get nothing, and the status must not carry the token."""

    async def main() -> None:
        async with recording_server(METADATA_ANSWER) as (port, seen):
            resolving(monkeypatch, {"localhost": ["169.254.169.254"]})
            error = await measure_web(f"http://localhost:{port}")
        assert seen == []
        assert (
            error is not None and "refused to connect to localhost: 169.254.169.254 is a link-local" in error
        )
        assert TOKEN not in error

    asyncio.run(main())


def test_a_name_with_any_link_local_address_is_refused_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with recording_server(METADATA_ANSWER) as (port, seen):
            resolving(monkeypatch, {"localhost": ["127.0.0.1", "fe80::1"]})
            error = await measure_web(f"http://localhost:{port}")
        assert seen == []
        assert error is not None and "fe80::1 is a link-local address" in error

    asyncio.run(main())


def test_the_connection_goes_to_the_address_that_was_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name only this stub knows reaches the loopback server: the connection used the checked answer,
    not a second lookup a DNS server could answer differently."""

    async def main() -> None:
        async with recording_server({"value": 7}) as (port, seen):
            resolving(monkeypatch, {"metrics.team-a.example": ["127.0.0.1"]})
            spec = MetricTemplateProvider(type="web", address=f"http://metrics.team-a.example:{port}")
            assert await provider_for(spec, None).query("$.value") == 7.0
            await close_shared_clients()
        assert [request.host for request in seen] == [f"metrics.team-a.example:{port}"]

    asyncio.run(main())


def test_webhooks_and_notifiers_are_refused_too(monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with recording_server({"ok": True}) as (port, seen):
            resolving(monkeypatch, {"localhost": ["169.254.169.254"]})
            url = f"http://localhost:{port}/"
            hooks = WebhookClient(backoff_base=5.0)
            hook = CanaryWebhook.model_validate({"name": "gate", "url": url, "retries": 3})
            result = await hooks.call(canary(), hook, Phase.PROGRESSING, "abc")
            await hooks.aclose()
            assert not result.success and "link-local" in result.message
            assert "attempts" not in result.message  # a refusal is final: no retry, no backoff
            alert = Alert("app", "team-a", "kubernetes", Phase.SUCCEEDED, Severity.INFO, "promoted", 0, 0, 2)
            with pytest.raises(NotifierError, match="link-local"):
                await webhook.post_json(url, {"text": "hi"}, None)
            with pytest.raises(NotifierError, match="link-local"):
                await slack.SlackNotifier(url=url).post(alert)
            with pytest.raises(NotifierError, match="cloud metadata"):
                await slack.SlackNotifier(url="http://metadata.google.internal/hook").post(alert)
            with pytest.raises(NotifierError, match="link-local"):
                await webhook.post_json("http://[fe80::1]:9/", {"text": "hi"}, None)
        assert seen == []

    asyncio.run(main())


def test_slack_refuses_an_address_literal_and_a_redirect_to_one() -> None:
    """aiohttp asks no resolver about an address literal; slack-sdk's session follows redirects."""

    async def main() -> None:
        async def moved(request: web.Request) -> web.Response:
            raise web.HTTPFound("http://[fe80::1]:9/services/T0/B0/x")

        app = web.Application()
        app.router.add_post("/hook", moved)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        alert = Alert("app", "team-a", "kubernetes", Phase.SUCCEEDED, Severity.INFO, "promoted", 0, 0, 2)
        try:
            with pytest.raises(NotifierError, match="fe80::1 is a link-local address"):
                await slack.SlackNotifier(url=f"http://127.0.0.1:{runner.addresses[0][1]}/hook").post(alert)
            with pytest.raises(NotifierError, match="fe80::1 is a link-local address"):
                await slack.SlackNotifier(url="http://[fe80::1]:9/hook").post(alert)
        finally:
            await runner.cleanup()

    asyncio.run(main())


def test_a_proxy_is_asked_for_no_metadata_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through a proxy the proxy resolves the name; the name itself is refused before anything is sent."""

    async def main() -> None:
        async with recording_server({"ok": True}) as (port, seen):
            with pytest.raises(NotifierError, match="cloud metadata"):
                await webhook.post_json(
                    "http://metadata.google.internal/computeMetadata/v1/", {}, f"http://127.0.0.1:{port}"
                )
        assert seen == []

    asyncio.run(main())


def test_the_environments_proxies_are_guarded_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """``HTTP_PROXY`` gives httpx a pool per proxy and NO_PROXY hosts none: every pool is guarded."""
    monkeypatch.setenv("HTTP_PROXY", "http://169.254.169.254:3128")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")

    async def main() -> None:
        async with recording_server({"value": 3}) as (port, seen):
            address = f"http://127.0.0.1:{port}"
            direct = provider_for(MetricTemplateProvider(type="web", address=address), None)
            assert await direct.query("$.value") == 3.0  # NO_PROXY: straight to the server
            proxied = provider_for(MetricTemplateProvider(type="web", address="http://10.0.0.7:9"), None)
            with pytest.raises(MetricQueryError, match=r"169\.254\.169\.254 is a link-local address"):
                await proxied.query("$.value")
            await close_shared_clients()
        assert len(seen) == 1

    asyncio.run(main())


NETNS_PROBE = """
import asyncio, json, sys
from aiohttp import web
from canaryctl.api.models import CanaryMetric, MetricTemplate
from canaryctl_providers.metrics import MetricsAnalyzer
from tests.providers.test_destinations import TOKEN_PATH, METADATA_ANSWER, canary, web_template

async def main():
    seen = []
    async def token(request):
        seen.append(request.path)
        if request.headers.get("Metadata-Flavor") != "Google":
            return web.Response(status=403)
        return web.json_response(METADATA_ANSWER)
    app = web.Application()
    app.router.add_get(TOKEN_PATH, token)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "169.254.169.254", 80).start()
    async def templates(name, namespace):
        return web_template(sys.argv[1])
    metric = CanaryMetric.model_validate(
        {"name": "token", "templateRef": {"name": "steal"}, "thresholdRange": {"min": 0}})
    observed = await MetricsAnalyzer(templates=templates).measure(canary(), metric, caller_side=False)
    await runner.cleanup()
    print(json.dumps({"error": observed.error, "seen": seen}))

asyncio.run(main())
"""


def _in_own_network_namespace(address: str) -> dict[str, Any]:
    """Runs the probe in a new network namespace whose loopback also holds 169.254.169.254/32: the
    metadata address is real there, and nothing can leave the namespace."""
    script = (
        f'ip link set lo up && ip addr add 169.254.169.254/32 dev lo && exec "{sys.executable}" -c "$0" "$1"'
    )
    done = subprocess.run(
        ["unshare", "--net", "--", "sh", "-c", script, textwrap.dedent(NETNS_PROBE), address],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("ip") is None, reason="needs unshare, ip")
def test_a_metadata_server_at_169_254_169_254_is_never_asked() -> None:
    """The review's trigger: a web template pointing at the metadata address with its header. Before,
    the server answered and the status read ``value 'ya29....' is not a number``."""
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, timeout=10, check=False)
    if probe.returncode != 0:
        pytest.skip("cannot create a network namespace here")
    result = _in_own_network_namespace("http://169.254.169.254")
    assert result["seen"] == []
    assert "169.254.169.254 is a link-local address" in result["error"]
    assert "ya29" not in result["error"]


# --- remote values stay out of messages ---------------------------------------------------------------------


def test_a_non_numeric_secret_looking_value_never_reaches_the_status_message() -> None:
    async def main() -> None:
        async with recording_server(METADATA_ANSWER) as (port, seen):
            error = await measure_web(f"http://127.0.0.1:{port}")
        assert len(seen) == 1  # an ordinary address: asked, and its answer is not a number
        assert error is not None
        assert TOKEN not in error and "ya29" not in error
        assert f"value is not a number but a string of {len(TOKEN)} characters" in error

    asyncio.run(main())


def test_a_json_value_that_is_no_number_is_described_not_shown() -> None:
    with pytest.raises(MetricQueryError, match="not a number but a JSON object of 1 items") as error:
        to_float({"secret": TOKEN})
    assert TOKEN not in str(error.value)


def test_remote_text_in_an_error_is_one_short_printable_line() -> None:
    text = "line one\r\n\x1b[31mred\x1b[0m\t" + "x" * 5000
    shown = outbound.excerpt(text, 100)
    assert "\x1b" not in shown and "\n" not in shown and "\r" not in shown
    assert shown.startswith("line one [31mred [0m xxx")
    assert len(shown) < 150


# --- cookies ------------------------------------------------------------------------------------------------


def test_a_cookie_one_tenants_hook_sets_never_goes_to_another_hook() -> None:
    """Hook servers of two teams on one host: cookies ignore ports, so a jar would carry team A's
    cookie (here for the whole host) to team B's hook and the shared load tester."""

    async def main() -> None:
        async with (
            recording_server({"ok": True}, set_cookie="grab=team-a; Path=/") as (port_a, _),
            recording_server({"ok": True}) as (port_b, seen_b),
        ):
            hooks = WebhookClient()
            for port in (port_a, port_b, port_a, port_b):
                hook = CanaryWebhook.model_validate({"name": "h", "url": f"http://127.0.0.1:{port}/"})
                assert (await hooks.call(canary(), hook, Phase.PROGRESSING, "abc")).success
            await hooks.aclose()
        assert [request.headers.get("Cookie") for request in seen_b] == [None, None]

    asyncio.run(main())


def test_a_client_for_tenant_addresses_keeps_no_cookie_in_its_jar() -> None:
    client = outbound.new_client()
    for cookie in ("x=1; Path=/", "y=2; Domain=.svc.cluster.local; Path=/"):
        request = httpx.Request("GET", "http://hooks.team-a.svc.cluster.local/")
        client.cookies.extract_cookies(httpx.Response(200, headers={"Set-Cookie": cookie}, request=request))
    assert len(client.cookies.jar) == 0
    asyncio.run(client.aclose())


# --- bounded caches -----------------------------------------------------------------------------------------


def test_shared_clients_are_bounded_and_an_evicted_one_closes_after_its_call() -> None:
    """A tenant naming a new address per tick used to leave a client behind for each, forever."""

    async def main() -> None:
        async with recording_server({"value": 1}) as (port, seen):
            url = f"http://127.0.0.1:{port}"
            async with shared_client(url) as held:
                pending = asyncio.create_task(held.get(url))
                for other in range(MAX_SHARED_CLIENTS + 50):
                    async with shared_client(f"http://10.255.{other // 250}.{other % 250 + 1}:9") as client:
                        assert not client.is_closed
                assert shared_clients() == MAX_SHARED_CLIENTS
                assert (await pending).status_code == 200  # evicted under a call: the call completes
                assert not held.is_closed
            await until(lambda: held.is_closed)  # closed once the last call holding it ended
            async with shared_client(url) as fresh:
                assert fresh is not held and (await fresh.get(url)).status_code == 200
            await close_shared_clients()
            assert shared_clients() == 0
        assert len(seen) == 2

    asyncio.run(main())


def test_an_oldest_unused_client_is_closed_when_evicted() -> None:
    async def main() -> None:
        async with shared_client("http://10.254.0.1:9") as first:
            pass
        for other in range(MAX_SHARED_CLIENTS):
            async with shared_client(f"http://10.253.{other // 250}.{other % 250 + 1}:9"):
                pass
        await until(lambda: first.is_closed)
        await close_shared_clients()

    asyncio.run(main())


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)
