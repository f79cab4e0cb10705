"""The operator's Kubernetes API client speaks TLS as the official client is configured to: the
cluster's CA, a client certificate, a bearer token (as in-cluster and kubeconfig credentials give)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web
from kubernetes import client

from canaryctl_mesh.kube import KubeObjects, KubeUnreachable
from tests.tls import self_signed_certificate

pytestmark = pytest.mark.asyncio

SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "team"}}


@asynccontextmanager
async def api_server(tmp_path: Path, client_ca: Path) -> AsyncIterator[tuple[str, Path, list[str]]]:
    """An HTTPS server that requires a client certificate signed by ``client_ca``; yields its URL, its
    own certificate (the cluster CA a client must trust) and the Authorization headers it got."""
    (tmp_path / "server").mkdir()
    cert, key = self_signed_certificate(tmp_path / "server", "kubernetes")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(client_ca))
    tls.load_cert_chain(cert, key)
    tls.verify_mode = ssl.CERT_REQUIRED
    seen: list[str] = []

    async def secret(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response(SECRET)

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/team/secrets/s", secret)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}", cert, seen
    finally:
        await runner.cleanup()


def configuration(host: str, ca: Path, cert: Path | None, key: Path | None) -> client.Configuration:
    config = client.Configuration()
    config.host = host
    config.ssl_ca_cert = str(ca)
    config.cert_file, config.key_file = (str(cert), str(key)) if cert and key else (None, None)
    config.api_key = {"BearerToken": "token-1"}
    config.api_key_prefix = {"BearerToken": "Bearer"}
    return config


async def test_requests_carry_the_cluster_ca_client_certificate_and_token(tmp_path: Path) -> None:
    (tmp_path / "client").mkdir()
    client_cert, client_key = self_signed_certificate(tmp_path / "client", "canaryctl")
    async with api_server(tmp_path, client_cert) as (url, cluster_ca, seen):
        api = client.ApiClient(configuration(url, cluster_ca, client_cert, client_key))
        async with KubeObjects(api) as objects:
            assert await objects.get("v1", "Secret", "team", "s") == SECRET
        assert seen == ["Bearer token-1"]

        # Without the client certificate the server ends the handshake: no answer, a clear error.
        api = client.ApiClient(configuration(url, cluster_ca, None, None))
        async with KubeObjects(api) as objects:
            with pytest.raises(KubeUnreachable, match="GET /api/v1/namespaces/team/secrets/s"):
                await objects.get("v1", "Secret", "team", "s")

        # A server whose certificate the cluster CA did not sign is not talked to.
        api = client.ApiClient(configuration(url, client_cert, client_cert, client_key))
        async with KubeObjects(api) as objects:
            with pytest.raises(KubeUnreachable, match=r"(?i)certificate"):
                await objects.get("v1", "Secret", "team", "s")
        assert seen == ["Bearer token-1"]
