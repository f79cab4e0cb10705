"""WebhookClient against real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from canaryctl.api.models import (
    MAX_WEBHOOK_RETRIES,
    MAX_WEBHOOK_TIMEOUT,
    Canary,
    CanaryWebhook,
    Phase,
    WebhookType,
)
from canaryctl.cli.main import main
from canaryctl.engine.types import HookResult
from canaryctl_providers.webhooks import WebhookClient
from tests.tls import self_signed_certificate

REPO = Path(__file__).resolve().parents[3]
CANARY = Canary.model_validate(
    {
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {
            "targetRef": {"kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {"threshold": 3},
        },
        "status": {"phase": "Progressing", "canaryWeight": 20, "failedChecks": 1, "lastAppliedSpec": "abc"},
    }
)


class Receiver:
    """Records every request; answers with the status the path names (/200, /500, /hang)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, await request.json()))
        code = request.match_info["code"]
        if code == "hang":
            # Bounded so a broken test cannot hang the suite; released at teardown.
            await asyncio.wait_for(self.release.wait(), timeout=5)
            return web.Response(text="late")
        return web.Response(status=int(code), text=f"answer {code}")


def with_receiver(test: Callable[[Receiver, str], Awaitable[None]]) -> None:
    async def main() -> None:
        receiver = Receiver()
        app = web.Application()
        app.router.add_post("/{code}", receiver.handle)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            await test(receiver, f"http://127.0.0.1:{server.port}")
        finally:
            receiver.release.set()
            await server.close()

    asyncio.run(main())


def hook(url: str, **fields: Any) -> CanaryWebhook:
    return CanaryWebhook.model_validate({"name": "check", "url": url, **fields})


def test_success_posts_flagger_payload_with_metadata() -> None:
    async def run(receiver: Receiver, base: str) -> None:
        client = WebhookClient()
        spec = hook(f"{base}/200", type="pre-rollout", metadata={"cmd": "hey -z 1m URL", "type": "cmd"})
        result = await client.call(CANARY, spec, Phase.PROGRESSING, "abc123")
        await client.aclose()
        assert result == HookResult("check", WebhookType.PRE_ROLLOUT, True, 200, "answer 200")
        assert receiver.requests == [
            (
                "/200",
                {
                    "name": "podinfo",
                    "namespace": "test",
                    "phase": "Progressing",
                    "checksum": "abc123",
                    "metadata": {"cmd": "hey -z 1m URL", "type": "cmd"},
                },
            )
        ]

    with_receiver(run)


def test_server_error_is_a_failed_result_and_retries_are_counted() -> None:
    async def run(receiver: Receiver, base: str) -> None:
        client = WebhookClient(backoff_base=0.01)
        result = await client.call(CANARY, hook(f"{base}/500", retries=2), None, None)
        await client.aclose()
        assert not result.success
        assert result.status_code == 500
        assert result.message == "HTTP 500: answer 500 (after 3 attempts)"
        assert len(receiver.requests) == 3
        assert receiver.requests[0][1]["phase"] == ""

    with_receiver(run)


def test_a_refusal_is_not_retried() -> None:
    async def run(receiver: Receiver, base: str) -> None:
        client = WebhookClient(backoff_base=0.01)
        result = await client.call(CANARY, hook(f"{base}/403", type="rollback", retries=3), None, None)
        await client.aclose()
        assert (result.success, result.message, len(receiver.requests)) == (False, "HTTP 403: answer 403", 1)

    with_receiver(run)


def test_hanging_server_times_out_within_the_hook_timeout() -> None:
    async def run(receiver: Receiver, base: str) -> None:
        seen: list[tuple[HookResult, float]] = []
        client = WebhookClient(observe=lambda _c, _h, result, seconds: seen.append((result, seconds)))
        started = time.monotonic()
        result = await client.call(CANARY, hook(f"{base}/hang", timeout="500ms"), None, None)
        elapsed = time.monotonic() - started
        await client.aclose()
        assert not result.success
        assert result.message == "timed out after 0.5s"
        assert 0.4 < elapsed < 2.0
        assert seen and seen[0][0] == result and 0.4 < seen[0][1] < 2.0

    with_receiver(run)


def test_unreachable_or_invalid_url_is_a_failed_result() -> None:
    async def run(_receiver: Receiver, base: str) -> None:
        client = WebhookClient()
        # Port 9 (discard) on 127.0.0.1 is closed here; the connection is refused at once.
        result = await client.call(CANARY, hook("http://127.0.0.1:9/"), None, None)
        invalid = await client.call(CANARY, hook("http://127.0.0.1:99999/"), None, None)
        await client.aclose()
        assert not result.success and result.status_code is None
        assert result.message.startswith("ConnectError")
        assert not invalid.success and invalid.message == "OverflowError: connect(): port must be 0-65535."

    with_receiver(run)


def test_event_payload_carries_message_type_and_millisecond_timestamp() -> None:
    async def run(receiver: Receiver, base: str) -> None:
        client = WebhookClient()
        spec = hook(f"{base}/202", type="event", metadata={"env": "prod", "eventType": "ignored"})
        before = int(time.time() * 1000)
        result = await client.event(CANARY, spec, Phase.FAILED, "Canary failed: 2 checks", True)
        after = int(time.time() * 1000)
        await client.aclose()
        assert result.success and result.status_code == 202
        body = receiver.requests[0][1]
        assert (body["name"], body["namespace"], body["phase"], body["checksum"]) == (
            "podinfo",
            "test",
            "Failed",
            "abc",
        )
        metadata = body["metadata"]
        assert metadata["eventMessage"] == "Canary failed: 2 checks"
        assert metadata["eventType"] == "Warning"
        assert metadata["env"] == "prod"
        assert before <= int(metadata["timestamp"]) <= after

    with_receiver(run)


def test_timeout_and_retries_are_bounded_where_a_manifest_is_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The model (lint, the operator) and the generated CRD (the API server) refuse the same values."""
    manifest = {
        "apiVersion": "canaryctl.dev/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 80},
            "analysis": {
                "interval": "1m",
                "stepWeight": 10,
                "webhooks": [{"name": "load", "url": "http://lt/", "timeout": "1h", "retries": 50}],
            },
        },
    }
    path = tmp_path / "canary.yaml"
    path.write_text(yaml.safe_dump(manifest))
    assert main(["lint", str(path)]) == 1
    out = capsys.readouterr().out
    assert "spec.analysis.webhooks[0].timeout: timeout 1h is above the maximum of 10m" in out
    assert "spec.analysis.webhooks[0].retries: Input should be less than or equal to 10" in out
    for timeout in ("10m", "600s", "9m59s", "500ms"):
        hook(f"http://lt/{timeout}", timeout=timeout)
    for timeout in ("10m1s", "601s", "10"):
        with pytest.raises(ValueError, match=r"maximum|unit"):
            hook("http://lt/", timeout=timeout)

    crd = yaml.safe_load((REPO / "crds" / "canaries.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    webhook = schema["properties"]["spec"]["properties"]["analysis"]["properties"]["webhooks"]["items"]
    assert webhook["properties"]["retries"]["maximum"] == MAX_WEBHOOK_RETRIES
    timeout_schema = webhook["properties"]["timeout"]
    assert timeout_schema["maxLength"] == 32
    assert timeout_schema["x-kubernetes-validations"][0]["rule"] == (
        f"duration(self) <= duration('{MAX_WEBHOOK_TIMEOUT}')"
    )


def test_disable_tls_skips_verification_for_that_hook_only(tmp_path: Path) -> None:
    """Flagger's ``disableTLS`` (webhook.go: callWebhook's InsecureSkipVerify): a hook to a server with a
    certificate no CA signed succeeds with it and fails without it, also right after a call with it to
    the same server (no unchecked connection is reused for a hook that checks)."""
    cert, key = self_signed_certificate(tmp_path, "127.0.0.1")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    async def main() -> None:
        receiver = Receiver()
        app = web.Application()
        app.router.add_post("/{code}", receiver.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        url = f"https://127.0.0.1:{runner.addresses[0][1]}/200"
        client = WebhookClient()
        try:
            trusting = hook(url, name="trusting", disableTLS=True)
            checking = hook(url, name="checking")
            results = [
                await client.call(CANARY, spec, Phase.PROGRESSING, "abc")
                for spec in (checking, trusting, checking, trusting)
            ]
        finally:
            await client.aclose()
            await runner.cleanup()
        assert [r.success for r in results] == [False, True, False, True]
        assert all("CERTIFICATE_VERIFY_FAILED" in r.message for r in results if not r.success), results
        assert len(receiver.requests) == 2, "only the hooks with disableTLS reached the server"

    asyncio.run(main())
