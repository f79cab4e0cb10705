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

from canaryctl_mesh import config
from canaryctl_mesh.ads import AdsServer, TypeSnapshot, encode
from canaryctl_mesh.identity import DEFAULT_TRUST_DOMAIN, Identity
from canaryctl_mesh.meshd.pki import WORKLOAD_VALIDITY, CertificateAuthority, KeyPair, due_for_renewal

log = logging.getLogger(__name__)


class WorkloadCertificates:
    def __init__(
        self,
        ca: CertificateAuthority,
        validity: datetime.timedelta = WORKLOAD_VALIDITY,
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
    ) -> None:
        self.ca = ca
        self.validity = validity
        self.trust_domain = trust_domain
        self._issued: dict[Identity, tuple[KeyPair, TypeSnapshot]] = {}

    def secrets(self, identity: Identity) -> TypeSnapshot:
        """`identity`'s secrets (`config.WORKLOAD_SECRET`, `config.TRUST_SECRET`), issued on first use."""
        found = self._issued.get(identity)
        if found is None:
            found = self._issue(identity)
        return found[1]

    def _issue(self, identity: Identity) -> tuple[KeyPair, TypeSnapshot]:
        spiffe_id = identity.spiffe_id(self.trust_domain)
        pair = self.ca.issue_workload(spiffe_id, self.validity)
        resources = config.secrets(pair.cert.decode(), pair.key.decode(), self.ca.trust_pem.decode())
        issued = self._issued[identity] = (pair, encode(config.SECRET_TYPE, resources))
        log.info("issued %s a workload certificate until %s", spiffe_id, pair.not_after)
        return issued

    def renew(self, connected: set[Identity]) -> list[Identity]:
        """Re-issue the certificates of `connected` identities that are due; forget the others'."""
        for gone in self._issued.keys() - connected:
            del self._issued[gone]
        due = [i for i, (pair, _) in self._issued.items() if due_for_renewal(pair, self.validity)]
        for identity in due:
            self._issue(identity)
        return due

    def check_interval(self) -> float:
        """Often enough to renew each certificate within a tenth of its life after it is due."""
        return min(60.0, max(0.1, self.validity.total_seconds() / 30))

    async def keep_current(self, ads: AdsServer, stop: asyncio.Event) -> None:
        """Serve `ads` its sidecars' secrets and push renewed ones until `stop` is set."""
        ads.secrets = self.secrets
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.check_interval())
            for identity in self.renew(ads.identities()):
                ads.secrets_changed(identity)
