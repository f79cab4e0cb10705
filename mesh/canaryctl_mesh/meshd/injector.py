"""`canaryctl meshd injector`: the sidecar injector's aiohttp app (canaryctl_mesh.injector) over TLS.

The serving certificate either comes from the mesh CA (`MeshCertificate`: issued in memory, renewed
before it expires, and the MutatingWebhookConfiguration's ``caBundle`` kept equal to the CA, so a
``helm upgrade`` or an Argo CD sync that drops it is repaired within a minute) or from files a
cert-manager Secret volume keeps current (`FileCertificate`). Either way a new certificate is loaded
into the live TLS context: no restart, no window in which pods start without a sidecar.

An AdmissionReview does not carry the namespace's labels, so the injector watches Namespaces (a
reflector, as the control plane watches its objects) and a review reads the labels from memory: a
rollout of thousands of pods costs the API server no request. Before the first list, and for a
namespace the watch has not shown yet (created moments before its first pod), the review looks the
namespace up with one GET. When that lookup fails the pod is judged on its own annotation only (a
namespace-label opt-in is missed, logged as a warning), which matches the webhook's
`failurePolicy: Ignore`: admission never blocks on the mesh.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Protocol

from aiohttp import web
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from canaryctl_mesh.injector import InjectorSettings, NamespaceLabels, make_app
from canaryctl_mesh.kube import KubeObjects
from canaryctl_mesh.meshd.pki import KeyPair
from canaryctl_mesh.meshd.tls import IssuedCertificate, file_watcher, keep_current, read_pair, server_context
from canaryctl_mesh.meshd.watch import Object, ObjectStore, Reflector, Source

log = logging.getLogger(__name__)

NAMESPACES = Source("v1", "Namespace", None)
STOP_TIMEOUT = 5.0
CHECK_INTERVAL = 60.0
WEBHOOK_API = ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration")


class WatchedNamespaceLabels:
    """`NamespaceLabels` from a watch of Namespaces (a GET only for one the watch has not shown)."""

    def __init__(self, api: client.ApiClient, objects: KubeObjects) -> None:
        self.objects = objects
        self.store = ObjectStore(lambda: None)
        self.reflector = Reflector(api, NAMESPACES, self.store)

    async def __aenter__(self) -> WatchedNamespaceLabels:
        self.reflector.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        self.reflector.stop()
        await asyncio.to_thread(self.reflector.join, STOP_TIMEOUT)

    async def __call__(self, name: str) -> Mapping[str, str]:
        namespace: Object | None = None
        if self.reflector.synced.is_set():
            namespace = self.store.get(NAMESPACES, name, name)  # kept under the namespace it is
        if namespace is None:
            try:
                namespace = await self.objects.get("v1", "Namespace", "", name)
            except (ApiException, OSError) as error:
                log.warning(
                    "namespace %s: label lookup failed (%s); judging the pod by annotation", name, error
                )
                return {}
        return dict(((namespace or {}).get("metadata") or {}).get("labels") or {})


class ServingCertificate(Protocol):
    def current(self) -> KeyPair: ...

    async def refresh(self) -> KeyPair | None:
        """A replacement pair when one is due (and whatever goes with it is done), else None."""
        ...


class FileCertificate:
    """PEM files a cert-manager Secret volume keeps current (the kubelet swaps them on renewal)."""

    def __init__(self, cert: Path, key: Path) -> None:
        self._pair = read_pair(cert, key)
        self._changed = file_watcher(cert, key)

    def current(self) -> KeyPair:
        return self._pair

    async def refresh(self) -> KeyPair | None:
        return self._changed()


class MeshCertificate:
    """A certificate from the mesh CA, and the webhook's caBundle kept equal to the CA's trust bundle
    (its roots, which stay when an intermediate is renewed)."""

    def __init__(self, issued: IssuedCertificate, objects: KubeObjects, webhook: str) -> None:
        self.issued = issued
        self.objects = objects
        self.webhook = webhook

    def current(self) -> KeyPair:
        return self.issued.pair

    async def refresh(self) -> KeyPair | None:
        with contextlib.suppress(ApiException, OSError):
            await self.ensure_ca_bundle()
        return self.issued.renewed()

    async def ensure_ca_bundle(self) -> None:
        """Set every webhook's caBundle in the configuration to the mesh CA's trust, where it differs."""
        if not self.webhook:
            return
        bundle = base64.b64encode(self.issued.ca.trust_pem).decode()
        found = await self.objects.get(*WEBHOOK_API, "", self.webhook)
        if found is None:
            log.warning("MutatingWebhookConfiguration %s not found; caBundle not set", self.webhook)
            return
        operations = []
        for index, hook in enumerate(found.get("webhooks") or []):
            if (hook.get("clientConfig") or {}).get("caBundle") != bundle:
                # Guard on the name: a concurrent edit that reorders the list fails the patch (422).
                operations += [
                    {"op": "test", "path": f"/webhooks/{index}/name", "value": hook.get("name")},
                    {"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle", "value": bundle},
                ]
        if operations:
            await self.objects.json_patch(*WEBHOOK_API, "", self.webhook, operations)
            log.info("set the caBundle of %s to the mesh CA", self.webhook)


@contextlib.asynccontextmanager
async def serving(
    settings: InjectorSettings | Callable[[], InjectorSettings],
    labels: NamespaceLabels,
    certificate: ServingCertificate,
    stop: asyncio.Event,
    host: str = "0.0.0.0",
    port: int = 9443,
    check_interval: float = CHECK_INTERVAL,
    outcomes: Counter[str] | None = None,
) -> AsyncIterator[int]:
    """The webhook (POST /mutate, GET /healthz) over HTTPS while the block runs; yields the bound port.

    Every `check_interval` seconds the certificate is refreshed (and the caBundle checked); a new
    pair serves the next handshake. `outcomes` counts the admissions by outcome.
    """
    if isinstance(certificate, MeshCertificate):
        await certificate.ensure_ca_bundle()
    context = server_context(certificate.current())
    runner = web.AppRunner(make_app(settings, labels, outcomes), access_log=None)
    await runner.setup()
    refresher: asyncio.Task[None] | None = None
    try:
        site = web.TCPSite(runner, host, port, ssl_context=context)
        await site.start()
        bound = int(runner.addresses[0][1])
        log.info("injector serving HTTPS on %s:%d", host, bound)
        refresher = asyncio.create_task(keep_current(context, certificate.refresh, check_interval, stop))
        yield bound
    finally:
        if refresher is not None:
            refresher.cancel()
            await asyncio.gather(refresher, return_exceptions=True)
        await runner.cleanup()
