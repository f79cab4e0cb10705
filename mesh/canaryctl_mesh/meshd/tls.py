"""Serving certificates that rotate without a restart: the xDS port (gRPC) and the webhook (aiohttp)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from canaryctl_mesh.meshd.pki import LEAF_VALIDITY, CertificateAuthority, KeyPair, due_for_renewal

log = logging.getLogger(__name__)


class IssuedCertificate:
    """A serving certificate from the mesh CA, re-issued in memory once it is due for renewal or the
    CA changed."""

    def __init__(
        self, ca: CertificateAuthority, dns_names: list[str], validity: datetime.timedelta = LEAF_VALIDITY
    ) -> None:
        self.ca = ca
        self.dns_names = dns_names
        self.validity = validity
        self.pair = ca.issue_server(dns_names, validity)
        self._handed = self.pair

    def use(self, ca: CertificateAuthority) -> None:
        """Sign with `ca` from now on: a certificate from it serves the next handshake."""
        self.ca = ca
        self.pair = ca.issue_server(self.dns_names, self.validity)
        log.info("re-issued the serving certificate for %s from the new mesh CA", self.dns_names[0])

    def renewed(self) -> KeyPair | None:
        """A new pair if the current one was due or the CA changed since the last call, else None."""
        if due_for_renewal(self.pair, self.validity):
            self.pair = self.ca.issue_server(self.dns_names, self.validity)
            log.info(
                "renewed the serving certificate for %s (until %s)", self.dns_names[0], self.pair.not_after
            )
        if self.pair is self._handed:
            return None
        self._handed = self.pair
        return self.pair


def xds_credentials(certificate: IssuedCertificate) -> grpc.ServerCredentials:
    """gRPC asks the fetcher at each new handshake; a renewed pair serves from then on."""

    def configuration(pair: KeyPair) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(pair.key, pair.cert)])

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        pair = certificate.renewed()
        return configuration(pair) if pair is not None else None

    return grpc.dynamic_ssl_server_credentials(configuration(certificate.pair), fetch)


def server_context(pair: KeyPair) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    load_pair(context, pair)
    return context


def load_pair(context: ssl.SSLContext, pair: KeyPair) -> None:
    """Load into a live context: handshakes from now on present the new certificate."""
    with tempfile.TemporaryDirectory(prefix="canaryctl-tls-") as directory:
        cert, key = Path(directory, "tls.crt"), Path(directory, "tls.key")
        cert.write_bytes(pair.cert)
        key.touch(mode=0o600)
        key.write_bytes(pair.key)
        context.load_cert_chain(cert, key)


def read_pair(cert: Path, key: Path) -> KeyPair:
    return KeyPair(cert.read_bytes(), key.read_bytes())


async def keep_current(
    context: ssl.SSLContext,
    refresh: Callable[[], Awaitable[KeyPair | None]],
    interval: float,
    stop: asyncio.Event,
) -> None:
    """Every `interval` seconds ask `refresh` for a replacement and load it; until `stop` is set."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        if stop.is_set():
            return
        try:
            pair = await refresh()
            if pair is not None:
                load_pair(context, pair)
        except (OSError, ssl.SSLError, ValueError) as error:
            log.error("could not load the new serving certificate, keeping the current one: %s", error)


def file_watcher(cert: Path, key: Path) -> Callable[[], KeyPair | None]:
    """Files a cert-manager Secret volume keeps current: a new pair once their content changed."""
    seen = read_pair(cert, key)

    def changed() -> KeyPair | None:
        nonlocal seen
        current = read_pair(cert, key)
        if current == seen:
            return None
        seen = current
        log.info("serving certificate files changed; loading them (%s)", os.fspath(cert))
        return current

    return changed
