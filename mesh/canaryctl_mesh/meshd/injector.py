"""`canaryctl meshd injector`: the sidecar injector's aiohttp app (canaryctl_mesh.injector) over TLS.

An AdmissionReview does not carry the namespace's labels, so each review looks the namespace up
through the kubernetes client. When that lookup fails the pod is judged on its own annotation only
(a namespace-label opt-in is missed, logged as a warning), which matches the webhook's
`failurePolicy: Ignore`: admission never blocks on the mesh.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import urllib3
from aiohttp import web
from kubernetes.client.exceptions import ApiException

from canaryctl_mesh.injector import InjectorSettings, NamespaceLabels, make_app
from canaryctl_mesh.kube import KubeObjects

log = logging.getLogger(__name__)


def namespace_labels(objects: KubeObjects) -> NamespaceLabels:
    async def lookup(name: str) -> Mapping[str, str]:
        try:
            namespace = await objects.get("v1", "Namespace", "", name)
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as error:
            log.warning("namespace %s: label lookup failed (%s); judging the pod by annotation", name, error)
            return {}
        return dict(((namespace or {}).get("metadata") or {}).get("labels") or {})

    return lookup


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


@contextlib.asynccontextmanager
async def serving(
    settings: InjectorSettings,
    labels: NamespaceLabels,
    context: ssl.SSLContext,
    host: str = "0.0.0.0",
    port: int = 9443,
) -> AsyncIterator[int]:
    """The webhook (POST /mutate, GET /healthz) over HTTPS while the block runs; yields the bound port."""
    runner = web.AppRunner(make_app(settings, labels), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, ssl_context=context)
        await site.start()
        bound = int(runner.addresses[0][1])
        log.info("injector serving HTTPS on %s:%d", host, bound)
        yield bound
    finally:
        await runner.cleanup()
