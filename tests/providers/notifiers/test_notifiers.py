"""Notifiers against a local receiver that answers like each service and records what it was sent."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from canaryctl.api.models import AlertProviderSpec, Canary, MetricStatus, Phase, Severity, Verdict
from canaryctl.ports import Alert, Notifier
from canaryctl_providers.notifiers import AlertRouter, NotifierError, notifier_for
from canaryctl_providers.notifiers.format import build_message, describe_metric
from canaryctl_providers.notifiers.routing import recipients, subscribed

ALERT = Alert(
    canary="podinfo",
    namespace="test",
    cluster="prod-eu",
    phase=Phase.FAILED,
    severity=Severity.ERROR,
    message="Canary analysis failed: <error-rate> above threshold & rolled back",
    canary_weight=30,
    failed_checks=3,
    threshold=3,
    failing_metric="error-rate = 7.5 (max 5)",
    target="podinfo",
)
PLAIN = (
    "[error] podinfo.test: Canary analysis failed: <error-rate> above threshold & rolled back\n"
    "Cluster: prod-eu\nTarget: podinfo\nPhase: Failed\nTraffic: canary 30% / primary 70%\n"
    "Failed checks: 3 of 3\nFailing metric: error-rate = 7.5 (max 5)"
)
# Slack-style APIs answer with a body; the others with a status only.
ANSWERS: dict[str, tuple[int, str | dict[str, Any]]] = {
    "slack-webhook": (200, "ok"),
    "api/chat.postMessage": (200, {"ok": True, "channel": "C1", "ts": "1.2"}),
    "bad-api/chat.postMessage": (200, {"ok": False, "error": "channel_not_found"}),
    "teams": (202, ""),
    "discord": (204, ""),
    "rocket": (200, '{"success": true}'),
    "gchat": (200, "{}"),
    "generic": (200, ""),
    "broken": (500, "boom"),
}


class Receiver:
    def __init__(self, base: str) -> None:
        self.base = base
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"

    def only(self, path: str) -> tuple[dict[str, str], dict[str, Any]]:
        matching = [(headers, body) for p, headers, body in self.requests if p == f"/{path}"]
        assert len(matching) == 1, self.requests
        return matching[0]

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.headers), await request.json()))
        status, answer = ANSWERS[request.path.lstrip("/")]
        if isinstance(answer, dict):
            return web.json_response(answer, status=status)
        return web.Response(status=status, text=answer)


def with_receiver(test: Callable[[Receiver], Awaitable[None]]) -> None:
    async def main() -> None:
        app = web.Application()
        server = TestServer(app, host="127.0.0.1")
        receiver = Receiver("")
        app.router.add_post("/{path:.*}", receiver.handle)
        await server.start_server()
        receiver.base = f"http://127.0.0.1:{server.port}"
        try:
            await test(receiver)
        finally:
            await server.close()

    asyncio.run(main())


def spec(kind: str, **fields: Any) -> AlertProviderSpec:
    return AlertProviderSpec.model_validate({"type": kind, **fields})


def test_message_carries_everything_in_one_plain_text() -> None:
    message = build_message(ALERT)
    assert message.title == "podinfo.test"
    assert message.plain == PLAIN
    assert "http" not in message.plain
    assert (message.color, message.color_int) == ("#a30200", 0xA30200)


def test_describe_metric_puts_the_value_next_to_its_threshold() -> None:
    failing = MetricStatus(name="request-success-rate", value=93.25, min=99, verdict=Verdict.FAIL)
    assert describe_metric(failing) == "request-success-rate = 93.25 (min 99)"
    compared = MetricStatus(name="latency", value=512, max=500, primary_value=210, verdict=Verdict.FAIL)
    assert describe_metric(compared) == "latency = 512 (max 500, primary 210)"
    assert describe_metric(MetricStatus(name="rps", verdict=Verdict.NO_DATA)) == "rps = no data"


def test_slack_incoming_webhook_payload() -> None:
    async def run(receiver: Receiver) -> None:
        with pytest.raises(ValueError, match="incoming-webhook address"):
            notifier_for(spec("slack"), None)
        notifier = notifier_for(
            spec("slack", channel="#deploys", username="canaryctl"),
            {"address": receiver.url("slack-webhook")},
        )
        await notifier.post(ALERT)
        _, body = receiver.only("slack-webhook")
        assert body["channel"] == "#deploys" and body["username"] == "canaryctl"
        # Slack's required escaping keeps "<error-rate>" from being read as a link.
        assert body["text"] == (
            "podinfo.test: Canary analysis failed: &lt;error-rate&gt; above threshold &amp; rolled back"
        )
        (attachment,) = body["attachments"]
        assert attachment["color"] == "#a30200"
        assert attachment["fallback"] == PLAIN
        header, fields = attachment["blocks"]
        assert header["type"] == "section" and header["text"]["type"] == "mrkdwn"
        assert header["text"]["text"].startswith("*podinfo.test*\nCanary analysis failed: &lt;error-rate&gt;")
        assert {"type": "mrkdwn", "text": "*Failing metric*\nerror-rate = 7.5 (max 5)"} in fields["fields"]
        assert len(fields["fields"]) == 6

    with_receiver(run)


def test_slack_bot_token_posts_with_chat_post_message() -> None:
    async def run(receiver: Receiver) -> None:
        provider = spec("slack", channel="#deploys", secretRef={"name": "slack"})
        notifier = notifier_for(provider, {"token": "xoxb-test"}, slack_api_url=receiver.url("api/"))
        await notifier.post(ALERT)
        headers, body = receiver.only("api/chat.postMessage")
        assert headers["Authorization"] == "Bearer xoxb-test"
        assert body["channel"] == "#deploys"
        assert body["attachments"][0]["fallback"] == PLAIN

        refused = notifier_for(provider, {"token": "xoxb-test"}, slack_api_url=receiver.url("bad-api/"))
        with pytest.raises(NotifierError, match="channel_not_found"):
            await refused.post(ALERT)
        with pytest.raises(ValueError, match="needs a channel"):
            notifier_for(spec("slack"), {"token": "xoxb-test"})

    with_receiver(run)


def test_msteams_adaptive_card() -> None:
    async def run(receiver: Receiver) -> None:
        await notifier_for(spec("msteams", address=receiver.url("teams")), None).post(ALERT)
        _, body = receiver.only("teams")
        assert body["type"] == "message"
        (attachment,) = body["attachments"]
        assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
        card = attachment["content"]
        assert (card["type"], card["version"], card["fallbackText"]) == ("AdaptiveCard", "1.4", PLAIN)
        title, text, facts = card["body"]
        assert (title["text"], title["color"]) == ("podinfo.test", "Attention")
        assert text["text"] == ALERT.message
        assert {"title": "Traffic", "value": "canary 30% / primary 70%"} in facts["facts"]

    with_receiver(run)


def test_discord_content_embed_and_username() -> None:
    async def run(receiver: Receiver) -> None:
        await notifier_for(spec("discord", address=receiver.url("discord"), username="flagger"), None).post(
            ALERT
        )
        _, body = receiver.only("discord")
        assert body["username"] == "flagger"
        assert body["content"] == f"podinfo.test: {ALERT.message}"
        assert body["allowed_mentions"] == {"parse": []}
        (embed,) = body["embeds"]
        assert (embed["title"], embed["description"], embed["color"]) == (
            "podinfo.test",
            ALERT.message,
            0xA30200,
        )
        assert {"name": "Cluster", "value": "prod-eu", "inline": True} in embed["fields"]

    with_receiver(run)


def test_rocket_gchat_and_generic_payloads() -> None:
    async def run(receiver: Receiver) -> None:
        for kind in ("rocket", "gchat", "generic"):
            await notifier_for(
                spec(kind, address=receiver.url(kind), channel="ops", username="bot"), None
            ).post(ALERT)
        _, rocket = receiver.only("rocket")
        assert (rocket["channel"], rocket["alias"]) == ("ops", "bot")
        assert rocket["attachments"][0]["fields"][0] == {
            "title": "Cluster",
            "value": "prod-eu",
            "short": True,
        }
        _, gchat = receiver.only("gchat")
        assert gchat["text"] == f"podinfo.test: {ALERT.message}"
        card = gchat["cardsV2"][0]["card"]
        assert card["header"] == {"title": "podinfo.test", "subtitle": "error"}
        assert {"decoratedText": {"topLabel": "Phase", "text": "Failed"}} in card["sections"][0]["widgets"]
        _, generic = receiver.only("generic")
        assert generic == {
            "canary": "podinfo",
            "namespace": "test",
            "cluster": "prod-eu",
            "target": "podinfo",
            "phase": "Failed",
            "severity": "error",
            "message": ALERT.message,
            "canaryWeight": 30,
            "failedChecks": 3,
            "threshold": 3,
            "failingMetric": "error-rate = 7.5 (max 5)",
            "text": PLAIN,
            "channel": "ops",
        }

    with_receiver(run)


def test_secret_address_overrides_the_spec_and_is_required() -> None:
    async def run(receiver: Receiver) -> None:
        provider = spec("generic", address="http://127.0.0.1:9/unused", secretRef={"name": "hook"})
        await notifier_for(provider, {"address": receiver.url("generic"), "other": "x"}).post(ALERT)
        assert receiver.only("generic")[1]["canary"] == "podinfo"
        with pytest.raises(ValueError, match="key 'address' in secret hook"):
            notifier_for(spec("msteams", secretRef={"name": "hook"}), {"token": "t"})

    with_receiver(run)


def test_proxy_from_the_secret_carries_the_request() -> None:
    async def run(receiver: Receiver) -> None:
        # The receiver doubles as the HTTP proxy: the .invalid host is never resolved, only forwarded to it.
        secret = {"address": "http://alerts.invalid/generic", "proxy": receiver.base}
        await notifier_for(spec("generic", secretRef={"name": "hook"}), secret).post(ALERT)
        secret = {"address": "http://hooks.slack.invalid/slack-webhook", "proxy": receiver.base}
        await notifier_for(spec("slack", secretRef={"name": "hook"}), secret).post(ALERT)
        assert receiver.only("generic")[0]["Host"] == "alerts.invalid"
        assert receiver.only("slack-webhook")[0]["Host"] == "hooks.slack.invalid"

    with_receiver(run)


def test_delivery_failures_raise_notifier_error() -> None:
    async def run(receiver: Receiver) -> None:
        with pytest.raises(NotifierError, match="HTTP 500: boom"):
            await notifier_for(spec("discord", address=receiver.url("broken")), None).post(ALERT)
        with pytest.raises(NotifierError, match=r"cannot reach 127\.0\.0\.1"):
            await notifier_for(spec("generic", address="http://127.0.0.1:9/"), None).post(ALERT)
        with pytest.raises(NotifierError, match="HTTP 500"):
            await notifier_for(spec("slack", address=receiver.url("broken")), None).post(ALERT)

    with_receiver(run)


@pytest.mark.parametrize(
    ("subscription", "expected"),
    [
        (Severity.INFO, {Severity.INFO, Severity.WARN, Severity.ERROR}),
        (Severity.WARN, {Severity.WARN, Severity.ERROR}),
        (Severity.ERROR, {Severity.ERROR}),
    ],
)
def test_severity_subscriptions_follow_flagger(subscription: Severity, expected: set[Severity]) -> None:
    assert {s for s in Severity if subscribed(subscription, s)} == expected


def canary(alerts: list[dict[str, Any]]) -> Canary:
    return Canary.model_validate(
        {
            "metadata": {"name": "podinfo", "namespace": "test"},
            "spec": {
                "targetRef": {"kind": "Deployment", "name": "podinfo"},
                "service": {"port": 80},
                "analysis": {"alerts": alerts},
            },
        }
    )


def test_router_sends_by_severity_and_reports_failures() -> None:
    alerts = [
        {"name": "all", "severity": "info", "providerRef": {"name": "generic"}},
        {"name": "errors-too", "severity": "error", "providerRef": {"name": "generic"}},
        {"name": "on-call", "severity": "error", "providerRef": {"name": "teams", "namespace": "ops"}},
        {"name": "broken", "severity": "warn", "providerRef": {"name": "broken"}},
        {"name": "missing", "severity": "warn", "providerRef": {"name": "missing"}},
    ]
    target = canary(alerts)
    assert recipients(target, Severity.INFO) == [("generic", "test")]
    assert recipients(target, Severity.ERROR) == [
        ("generic", "test"),
        ("teams", "ops"),
        ("broken", "test"),
        ("missing", "test"),
    ]

    async def run(receiver: Receiver) -> None:
        kinds = {"generic": "generic", "teams": "msteams", "broken": "generic"}

        async def resolve(name: str, namespace: str) -> Notifier:
            if name not in kinds:
                raise LookupError(f"AlertProvider {namespace}/{name} not found")
            return notifier_for(spec(kinds[name], address=receiver.url(name)), None)

        router = AlertRouter(resolve)
        errors = await router.send(target, ALERT)
        assert errors == [
            "test/broken: 127.0.0.1 answered HTTP 500: boom",
            "test/missing: cannot resolve alert provider: AlertProvider test/missing not found",
        ]
        # Posted concurrently: each subscribed provider gets one post, in whatever order they land.
        assert sorted(path for path, _, _ in receiver.requests) == ["/broken", "/generic", "/teams"]
        receiver.requests.clear()
        info = Alert(**{**ALERT.__dict__, "severity": Severity.INFO})
        assert await router.send(target, info) == []
        assert [path for path, _, _ in receiver.requests] == ["/generic"]

    with_receiver(run)


def test_default_notifier_only_when_the_canary_lists_no_alerts() -> None:
    async def run(receiver: Receiver) -> None:
        async def resolve(name: str, namespace: str) -> Notifier:
            raise AssertionError("no provider should be resolved")

        default = notifier_for(spec("generic", address=receiver.url("generic")), None)
        assert await AlertRouter(resolve, default).send(canary([]), ALERT) == []
        assert await AlertRouter(resolve).send(canary([]), ALERT) == []
        assert len(receiver.requests) == 1
        broken = notifier_for(spec("generic", address=receiver.url("broken")), None)
        assert await AlertRouter(resolve, broken).send(canary([]), ALERT) == [
            "default notifier: 127.0.0.1 answered HTTP 500: boom"
        ]

    with_receiver(run)
