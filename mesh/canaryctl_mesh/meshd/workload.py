"""Workload certificates: each connected sidecar's SPIFFE certificate, served to it alone over SDS.

A sidecar proved its identity (pod, ServiceAccount, namespace) when its ADS stream was admitted
(`canaryctl_mesh.identity`); the first time it asks for its secrets the mesh CA issues a certificate
for ``spiffe://<trust domain>/ns/<namespace>/sa/<serviceaccount>`` with a fresh key, each pod its own.
Certificates are short-lived and renewed with a third of their life left, while the sidecar is
connected: Envoy takes the new one for new connections and keeps serving the open ones, so nothing
is dropped. Certificates of identities no longer connected are forgotten. Keys live only here, in
memory, and on the sidecar's stream; they are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from google.protobuf import any_pb2

from canaryctl_mesh import config
from canaryctl_mesh.ads import AdsServer, TypeSnapshot
from canaryctl_mesh.identity import DEFAULT_TRUST_DOMAIN, Identity
from canaryctl_mesh.meshd.pki import WORKLOAD_VALIDITY, CertificateAuthority, KeyPair, due_for_renewal

log = logging.getLogger(__name__)


class WorkloadCertificates:
    """Issues on one thread of its own, off the event loop: a P-256 key and a signature cost about a
    millisecond of CPU, so a reconnect storm of thousands of sidecars would otherwise hold up every
    xDS response for seconds. One thread, not more: the signing holds the GIL, and two signing
    threads starve the event loop of it far worse than one (tens of ms instead of the switch
    interval, 5 ms)."""

    def __init__(
        self,
        ca: CertificateAuthority,
        validity: datetime.timedelta = WORKLOAD_VALIDITY,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
        signer: Executor | None = None,
    ) -> None:
        """`signer` runs the signing (a thread of its own unless given)."""
        self.ca = ca
        self.validity = validity
        self.trust_domain = trust_domain
        self._issued: dict[Identity, _Issued] = {}
        self._issuing: dict[Identity, asyncio.Future[_Issued]] = {}
        self._signer = signer or ThreadPoolExecutor(1, thread_name_prefix="workload-certificates")
        self._changed = asyncio.Event()

    async def secrets(self, identity: Identity) -> TypeSnapshot:
        """`identity`'s secrets (`config.WORKLOAD_SECRET`, `config.TRUST_SECRET`), issued on first use."""
        found = self._issued.get(identity)
        if found is None:
            found = await self._issue(identity)
        return found.secrets

    async def _issue(self, identity: Identity) -> _Issued:
        """One issuance per identity at a time, shared by the streams asking meanwhile."""
        pending = self._issuing.get(identity)
        if pending is None:
            pending = self._issuing[identity] = asyncio.ensure_future(self._sign(identity))
            pending.add_done_callback(lambda _: self._issuing.pop(identity, None))
        return await asyncio.shield(pending)

    async def _sign(self, identity: Identity) -> _Issued:
        ca, spiffe_id = self.ca, identity.spiffe_id(self.trust_domain)
        loop = asyncio.get_running_loop()
        pair, secrets = await loop.run_in_executor(
            self._signer, workload_secrets, ca, spiffe_id, self.validity
        )
        issued = self._issued[identity] = _Issued(pair, secrets, ca)
        log.info("issued %s a workload certificate until %s", spiffe_id, pair.not_after)
        return issued

    def use(self, ca: CertificateAuthority) -> None:
        """Sign with `ca` from now on; certificates (and trust) from the old one are re-issued at once."""
        self.ca = ca
        self._changed.set()

    async def renew(self, connected: set[Identity], renewed: Callable[[Identity], None]) -> None:
        """Re-issue the certificates of `connected` identities that are due or came from another CA,
        calling `renewed` with each as soon as it has its new one; forget the others'."""
        for gone in self._issued.keys() - connected:
            del self._issued[gone]
        due = [
            identity
            for identity, issued in self._issued.items()
            if issued.ca is not self.ca or due_for_renewal(issued.pair, self.validity)
        ]
        for identity in due:
            if identity in self._issuing:
                await asyncio.shield(self._issuing[identity])  # begun before a change of CA, maybe
            if (issued := self._issued.get(identity)) is not None and (
                issued.ca is not self.ca or due_for_renewal(issued.pair, self.validity)
            ):
                await self._issue(identity)
                renewed(identity)

    def check_interval(self) -> float:
        """Often enough to renew each certificate within a tenth of its life after it is due."""
        return min(60.0, max(0.1, self.validity.total_seconds() / 30))

    async def keep_current(self, ads: AdsServer, stop: asyncio.Event) -> None:
        """Serve `ads` its sidecars' secrets and push renewed ones until `stop` is set."""
        ads.secrets = self.secrets
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_either(stop, self._changed), self.check_interval())
                self._changed.clear()
                await self.renew(ads.identities(), ads.secrets_changed)
        finally:
            self._signer.shutdown(wait=False, cancel_futures=True)


def workload_secrets(
    ca: CertificateAuthority, spiffe_id: str, validity: datetime.timedelta
) -> tuple[KeyPair, TypeSnapshot]:
    """A certificate for `spiffe_id` and the two SDS secrets carrying it and the trust bundle: those
    `config.secrets` describes, built as protobuf directly, since parsing them from JSON as other
    resources are cost more CPU than the signing itself (0.4 ms against 0.07)."""
    pair = ca.issue_workload(spiffe_id, validity)
    workload = secret_pb2.Secret(
        name=config.WORKLOAD_SECRET,
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain=base_pb2.DataSource(inline_string=pair.cert.decode()),
            private_key=base_pb2.DataSource(inline_string=pair.key.decode()),
        ),
    )
    trust = secret_pb2.Secret(
        name=config.TRUST_SECRET,
        validation_context=common_pb2.CertificateValidationContext(
            trusted_ca=base_pb2.DataSource(inline_string=ca.trust_pem.decode())
        ),
    )
    packed = []
    for secret in (workload, trust):
        resource = any_pb2.Any()
        resource.Pack(secret)
        packed.append((secret.name, resource))
    return pair, TypeSnapshot.of(packed)


@dataclass(frozen=True)
class _Issued:
    pair: KeyPair
    secrets: TypeSnapshot
    ca: CertificateAuthority
    """The CA that signed it: one replaced since means it is re-issued."""


async def _either(*events: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
