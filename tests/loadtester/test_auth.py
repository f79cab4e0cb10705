"""Authenticated callers: the namespace a command or gate acts for is the token's, not the payload's.

Tokens by SHA-256 files, ServiceAccount tokens through TokenReview (kmock's emulator answers it as an
API server does: spec echoed, status.user of the token's ServiceAccount, audiences intersected), and
canaryctl's own webhook client presenting the token of a Canary's namespace from a Secret.
"""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import httpx
import kmock
import pytest
from aiohttp.test_utils import TestServer

from canaryctl.api.models import Canary, CanaryWebhook
from canaryctl.loadtester import LOADTESTER, LoadTester, Policy, build_app
from canaryctl.loadtester.auth import TokenHashes, token_hash
from canaryctl.loadtester.token_review import TokenReviewer
from canaryctl.operator.adapters import Catalog
from canaryctl_mesh.kube import KubeObjects, api_client_for_host
from canaryctl_providers.webhooks import WebhookClient
from tests.kube.emulator import emulator_url, running_emulator
from tests.loadtester.helpers import metric, payload, with_loadtester

TOKENS = {"team-a": "token-of-team-a", "team-b": "token-of-team-b"}
TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"


def hashes_dir(tmp_path: Path, tokens: dict[str, str] = TOKENS) -> Path:
    directory = tmp_path / "hashes"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "..data").mkdir(exist_ok=True)  # what a Secret volume holds besides its keys
    for namespace, token in tokens.items():
        (directory / namespace).write_text(f"# {namespace}\n{token_hash(token)}\n")
    return directory


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_without_a_valid_token_nothing_runs_and_no_gate_moves(tmp_path: Path) -> None:
    policy = Policy(authenticators=(TokenHashes(hashes_dir(tmp_path)),), allow_commands=frozenset({"sleep"}))

    async def run(client: httpx.AsyncClient, _tester: LoadTester) -> None:
        for headers in ({}, bearer("guessed"), {"Authorization": "Basic dGVhbS1hOng="}):
            for path, body in (
                ("/", payload("sleep 30")),
                ("/gate/open", payload()),
                ("/gate/check", payload()),
            ):
                response = await client.post(path, json=body, headers=headers)
                assert response.status_code == 401, (path, headers)
                assert response.headers["WWW-Authenticate"] == 'Bearer realm="canaryctl-loadtester"'
        assert (
            await metric(client, 'canaryctl_loadtester_requests_refused_total{reason="unauthenticated"}') == 9
        )
        assert await metric(client, "canaryctl_loadtester_commands_started_total") == 0
        assert await metric(client, "canaryctl_loadtester_gates_open") == 0
        # Flagger's constant gates and the probes stay open: they carry no state.
        assert (await client.get("/gate/approve")).status_code == 200
        assert (await client.get("/healthz")).status_code == 200

    with_loadtester(run, policy)


def test_the_namespace_is_the_tokens_not_the_payloads(tmp_path: Path) -> None:
    policy = Policy(authenticators=(TokenHashes(hashes_dir(tmp_path)),), allow_commands=frozenset({"sleep"}))

    async def run(client: httpx.AsyncClient, _tester: LoadTester) -> None:
        a, b = bearer(TOKENS["team-a"]), bearer(TOKENS["team-b"])
        claimed = await client.post("/", json=payload("sleep 30", namespace="team-b"), headers=a)
        assert (claimed.status_code, claimed.text) == (
            403,
            "the token is for namespace 'team-a'; the payload names 'team-b'\n",
        )
        started = await client.post("/", json=payload("sleep 30", namespace=None), headers=a)
        assert started.text == "command started for podinfo.team-a\n"

        # team-a opens the gate of its podinfo; team-b's podinfo (same name) stays closed, and team-b
        # cannot open or close team-a's by naming it.
        assert (
            await client.post("/gate/open", json=payload(namespace="team-a"), headers=a)
        ).status_code == 202
        assert (await client.post("/gate/check", json=payload(namespace=None), headers=a)).status_code == 200
        assert (await client.post("/gate/check", json=payload(namespace=None), headers=b)).status_code == 403
        for action in ("open", "close"):
            response = await client.post(f"/gate/{action}", json=payload(namespace="team-a"), headers=b)
            assert response.status_code == 403, action
        assert (
            await client.post("/gate/check", json=payload(namespace="team-a"), headers=a)
        ).status_code == 200

    with_loadtester(run, policy)


def test_token_files_hold_hashes_and_rotate_without_a_restart(tmp_path: Path) -> None:
    directory = hashes_dir(tmp_path)
    hashes = TokenHashes(directory, reload_seconds=0)
    (directory / "team-a").write_text(f"{token_hash('old-a')}\n{token_hash('new-a')}\n")

    async def check() -> None:
        assert (await hashes.identify("old-a")) == (await hashes.identify("new-a"))
        identity = await hashes.identify("new-a")
        assert identity is not None and identity.namespace == "team-a"
        assert await hashes.identify(TOKENS["team-a"]) is None  # rotated out
        (directory / "team-a").write_text("not-a-hash\n")  # a broken update keeps the last good tokens
        assert await hashes.identify("new-a") is not None

    asyncio.run(check())
    for name, content, message in (
        ("team-c", "s3cr3t\n", "expected the hex SHA-256 of a token"),
        ("Team_C", token_hash("x"), "the file name must be the namespace"),
        ("team-d", token_hash(TOKENS["team-b"]), "the same token also stands for team-b"),
    ):
        broken = hashes_dir(tmp_path / name)
        (broken / name).write_text(content)
        with pytest.raises(ValueError, match=message):
            TokenHashes(broken)


def review_reaction(emulator: kmock.KubernetesEmulator, accounts: dict[str, str], calls: list[str]) -> None:
    """TokenReview as the API server answers it: the spec echoed, the status filled in, nothing stored
    (kmock 0.8 stores every create, even one a reaction answers: drop it, or the next one conflicts)."""

    def review(request: kmock.Request) -> dict[str, Any]:
        del emulator.objects[request.resource, None, None]  # type: ignore[arg-type]  # a nameless create
        spec = request.data["spec"]
        calls.append(spec["token"])
        user = accounts.get(spec["token"])
        wanted = spec.get("audiences") or ["https://kubernetes.default.svc"]
        issued = ["https://kubernetes.default.svc", "canaryctl-loadtester"]
        audiences = [a for a in wanted if a in issued]
        status: dict[str, Any] = {"authenticated": bool(user and audiences)}
        if status["authenticated"]:
            status |= {"user": {"username": user}, "audiences": audiences}
        return {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": spec,
            "status": status,
        }

    emulator[f"post {TOKEN_REVIEWS}"] << review


def test_service_account_tokens_are_checked_with_token_review() -> None:
    accounts = {
        "sa-token-a": "system:serviceaccount:team-a:loadtester-caller",
        "user-token": "jane@example.com",
    }
    calls: list[str] = []

    async def main() -> None:
        async with running_emulator() as emulator:
            review_reaction(emulator, accounts, calls)
            reviewer = TokenReviewer(api_client_for_host(emulator_url(emulator)), ["canaryctl-loadtester"])
            app = build_app(Policy(authenticators=(reviewer,)))
            server = TestServer(app, host="127.0.0.1", handler_cancellation=True)
            await server.start_server()
            try:
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{server.port}", timeout=10
                ) as client:
                    await exercise(client)
            finally:
                await server.close()

    async def exercise(client: httpx.AsyncClient) -> None:
        async def gate(token: str, **kw: Any) -> httpx.Response:
            return await client.post("/gate/open", json=payload(namespace=None, **kw), headers=bearer(token))

        assert (await gate("sa-token-a")).status_code == 202
        assert (
            await client.post("/gate/check", json=payload(namespace="team-a"), headers=bearer("sa-token-a"))
        ).text == "Approved\n"
        user = await gate("user-token")
        assert (user.status_code, user.text) == (
            403,
            "jane@example.com is not a ServiceAccount: only those name a namespace\n",
        )
        assert (await gate("forged")).status_code == 401
        # Answers are cached by token hash: repeated calls do not each cost an API request.
        for _ in range(5):
            assert (await gate("sa-token-a")).status_code == 202
            assert (await gate("forged")).status_code == 401
        assert sorted(calls) == ["forged", "sa-token-a", "user-token"]

    asyncio.run(main())


def test_an_unreachable_api_server_is_a_503_the_webhook_client_retries() -> None:
    reviewer = TokenReviewer(api_client_for_host("http://127.0.0.1:9"))

    async def run(client: httpx.AsyncClient, _tester: LoadTester) -> None:
        response = await client.post("/gate/check", json=payload(), headers=bearer("any"))
        assert response.status_code == 503
        assert response.text.startswith("cannot verify the token with the API server")
        assert await metric(client, 'canaryctl_loadtester_requests_refused_total{reason="unavailable"}') == 1

    with_loadtester(run, Policy(authenticators=(reviewer,)))


def secret(namespace: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": encoded,
    }


def canary_with_hook(namespace: str, **hook: Any) -> Canary:
    return Canary.model_validate(
        {
            "apiVersion": "canaryctl.dev/v1beta1",
            "kind": "Canary",
            "metadata": {"name": "podinfo", "namespace": namespace},
            "spec": {
                "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
                "service": {"port": 9898},
                "analysis": {"webhooks": [{"name": "load-test", **hook}]},
            },
        }
    )


def hook_of(canary: Canary) -> CanaryWebhook:
    analysis = canary.spec.analysis
    assert analysis is not None and analysis.webhooks
    return analysis.webhooks[0]


def test_a_canary_presents_its_own_namespaces_token_and_no_other(tmp_path: Path) -> None:
    """The controller reads a hook's secretRef in the Canary's namespace only: team-c naming the Secret
    that holds team-a's token gets nothing, and the load tester acts for team-a only with team-a's."""
    seen: list[str] = []

    async def main() -> None:
        async with running_emulator() as emulator:
            for namespace in ("team-a", "team-b", "team-c"):
                emulator.objects["v1/namespaces", None, namespace] = {
                    "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace},
                }  # fmt: skip
            objects = KubeObjects(api_client_for_host(emulator_url(emulator)))
            await objects.apply(secret("team-a", "loadtester-token", {"token": TOKENS["team-a"]}))
            await objects.apply(secret("team-b", "loadtester-token", {"token": TOKENS["team-b"] + "\n"}))
            await objects.apply(secret("team-b", "no-token", {"password": "x"}))
            app = build_app(
                Policy(
                    authenticators=(TokenHashes(hashes_dir(tmp_path)),), allow_commands=frozenset({"sleep"})
                )
            )
            server = TestServer(app, host="127.0.0.1", handler_cancellation=True)
            await server.start_server()
            hooks = WebhookClient(secrets=Catalog(objects).secret)
            try:
                url = f"http://127.0.0.1:{server.port}/"
                hook = {
                    "url": url,
                    "secretRef": {"name": "loadtester-token"},
                    "metadata": {"cmd": "sleep 30"},
                }
                for namespace in ("team-a", "team-b", "team-c"):
                    canary = canary_with_hook(namespace, **hook)
                    result = await hooks.call(canary, hook_of(canary), None, "x")
                    seen.append(f"{namespace}: {result.success} {result.message}")
                canary = canary_with_hook("team-b", url=url, secretRef={"name": "no-token"})
                result = await hooks.call(canary, hook_of(canary), None, "x")
                seen.append(f"team-b: {result.success} {result.message}")
                anonymous = canary_with_hook("team-a", url=url, metadata={"cmd": "sleep 31"})
                result = await hooks.call(anonymous, hook_of(anonymous), None, "x")
                seen.append(f"team-a: {result.success} {result.message}")
                secret_reads = {
                    r.url.path for r in emulator if "/secrets/" in r.url.path and r.method == "GET"
                }
                assert secret_reads == {
                    "/api/v1/namespaces/team-a/secrets/loadtester-token",
                    "/api/v1/namespaces/team-b/secrets/loadtester-token",
                    "/api/v1/namespaces/team-c/secrets/loadtester-token",
                    "/api/v1/namespaces/team-b/secrets/no-token",
                }
                tester = app[LOADTESTER]
                assert len(tester.pids()) == 2
            finally:
                await hooks.aclose()
                await server.close()

    asyncio.run(main())
    assert seen == [
        "team-a: True command started for podinfo.team-a",
        "team-b: True command started for podinfo.team-b",
        "team-c: False secretRef: LookupError: Secret team-c/loadtester-token not found",
        "team-b: False secretRef: LookupError: Secret team-b/no-token has no key 'token'",
        "team-a: False HTTP 401: this load tester needs 'Authorization: Bearer <token>'",
    ]
