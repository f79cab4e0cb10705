"""The mesh CA Secret followed while meshd runs: a renewed intermediate or a changed trust bundle is
taken up without a restart, a CA meshd must not use is refused and the current one kept.

meshd reads the Secret again every `CA_RECHECK` seconds (one GET of one object; the chart already
grants ``get`` on it by name, and a renewal is due days or months ahead, so seconds do not matter).
A Secret whose content changed is parsed and checked (`pki.ca_from_secret`): a key that is not the
certificate's, a certificate that is no CA or has expired, one that does not chain to the trust
bundle, or PEM that does not parse, gets an error line and a Warning Event (``MeshCARefused``) on
the Secret, once per content; issuance goes on with the CA in use. A usable new CA is handed to
`use`, which makes it sign from then on and re-issues what was signed by the old one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

from kubernetes.client.exceptions import ApiException

from canaryctl_mesh.kube import KubeObjects
from canaryctl_mesh.meshd.control_plane import RefusalEvents
from canaryctl_mesh.meshd.pki import CertificateAuthority, ca_from_secret
from canaryctl_mesh.translate import ObjectRef, Refusal

log = logging.getLogger(__name__)

CA_RECHECK = 10.0
REFUSED_REASON = "MeshCARefused"


class CaSecret:
    """Secret `namespace`/`name`, whose CA `current` is in use."""

    def __init__(
        self,
        objects: KubeObjects,
        namespace: str,
        name: str,
        current: CertificateAuthority,
        interval: float = CA_RECHECK,
        events: bool = True,
    ) -> None:
        """`events`: post the refusal Event (the control plane does; the injector, which may not, logs)."""
        self.objects = objects
        self.namespace = namespace
        self.name = name
        self.current = current
        self.interval = interval
        self.events = events
        self._seen = ""
        """Digest of the Secret data last looked at, so one content is judged (and refused) once."""

    async def check(self) -> CertificateAuthority | None:
        """The Secret's CA if it is usable and not the one in use, else None."""
        where = f"{self.namespace}/{self.name}"
        try:
            found = await self.objects.get("v1", "Secret", self.namespace, self.name)
        except (ApiException, OSError) as error:
            log.warning("could not read the mesh CA Secret %s, the current CA stays in use: %s", where, error)
            return None
        data = (found or {}).get("data") or {}
        digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
        if found is None or digest == self._seen:
            return None
        self._seen = digest
        try:
            ca = ca_from_secret(data)
            if ca is None:
                raise ValueError("it holds neither ca.crt and ca.key nor tls.crt, tls.key and ca.crt")
        except ValueError as error:
            message = f"mesh CA Secret {where} refused, the current CA stays in use: {error}"
            log.error("%s", message)
            if self.events:
                await self._report(found, message)
            return None
        if ca.pair == self.current.pair and ca.trust_pem == self.current.trust_pem:
            return None
        self.current = ca
        log.info("mesh CA Secret %s changed: signing with the CA valid until %s", where, ca.pair.not_after)
        return ca

    async def follow(self, use: Callable[[CertificateAuthority], None], stop: asyncio.Event) -> None:
        """Check every `interval` seconds and hand a new CA to `use`, until `stop` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.interval)
            if stop.is_set():
                return
            ca = await self.check()
            if ca is not None:
                use(ca)

    async def _report(self, secret: dict[str, Any], message: str) -> None:
        uid = str((secret.get("metadata") or {}).get("uid") or "")
        ref = ObjectRef("v1", "Secret", self.namespace, self.name, uid)
        event = RefusalEvents.event(Refusal(ref, message), REFUSED_REASON)
        try:
            await self.objects.apply(event)
        except (ApiException, OSError) as error:
            log.warning("could not record an Event for the mesh CA Secret: %s", error)
