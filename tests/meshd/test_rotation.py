"""Serving certificates rotate without a restart and without dropping connections, seen by real TLS
clients: the injector's webhook (certificate from the mesh CA with a lifetime of seconds, and
cert-manager files swapped the way the kubelet updates a Secret volume) and the xDS port (gRPC)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509

from canaryctl_mesh import config
from canaryctl_mesh.ads import AdsServer
from canaryctl_mesh.injector import InjectorSettings
from canaryctl_mesh.kube import KubeObjects
from canaryctl_mesh.meshd import injector
from canaryctl_mesh.meshd.pki import CertificateAuthority, KeyPair
from canaryctl_mesh.meshd.tls import IssuedCertificate, xds_credentials
from tests.mesh.delta_client import DeltaClient

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

LIFETIME = datetime.timedelta(seconds=3)
"""Renewed once a third is left: a new certificate about every two seconds."""
CHECK_INTERVAL = 0.2
ROTATION_TIMEOUT = 20.0


class TlsConnection:
    """One TLS connection from Python's ssl (OpenSSL) client, kept open across requests."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, ca_pem: bytes, alpn: list[str] | None = None) -> TlsConnection:
        context = ssl.create_default_context(cadata=ca_pem.decode())
        if alpn:
            context.set_alpn_protocols(alpn)
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        return cls(reader, writer)

    def certificate(self) -> x509.Certificate:
        der = self.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der)

    async def get(self, path: str) -> int:
        """An HTTP/1.1 keep-alive GET on this connection; its status."""
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: injector\r\n\r\n".encode())
        await self.writer.drain()
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            length = int(value) if name.lower() == "content-length" else length
        await self.reader.readexactly(length)
        return status

    async def close(self) -> None:
        self.writer.close()
        await asyncio.gather(self.writer.wait_closed(), return_exceptions=True)


async def served_certificate(port: int, ca_pem: bytes, alpn: list[str] | None = None) -> x509.Certificate:
    connection = await TlsConnection.open(port, ca_pem, alpn)
    try:
        return connection.certificate()
    finally:
        await connection.close()


async def until_another_certificate(
    port: int, ca_pem: bytes, old: x509.Certificate, alpn: list[str] | None = None
) -> x509.Certificate:
    """The certificate a new handshake gets once it is no longer `old`."""
    deadline = time.monotonic() + ROTATION_TIMEOUT
    while (new := await served_certificate(port, ca_pem, alpn)).serial_number == old.serial_number:
        assert time.monotonic() < deadline, "the served certificate never changed"
        await asyncio.sleep(0.1)
    return new


@pytest.fixture
def mesh_ca() -> CertificateAuthority:
    return CertificateAuthority.create("test mesh CA")


async def no_labels(_: str) -> dict[str, str]:
    return {}


@contextlib.asynccontextmanager
async def webhook(certificate: injector.ServingCertificate) -> AsyncIterator[int]:
    """The injector's HTTPS server, checking for a new certificate every CHECK_INTERVAL seconds."""
    stop = asyncio.Event()
    settings = InjectorSettings()
    async with injector.serving(
        settings, no_labels, certificate, stop, "127.0.0.1", 0, check_interval=CHECK_INTERVAL
    ) as port:
        yield port
        stop.set()


async def assert_rotates_keeping_connections(
    port: int, ca_pem: bytes, rotate: Callable[[], Awaitable[Any]] | None = None
) -> tuple[x509.Certificate, x509.Certificate]:
    """An open connection, a rotation, then: new handshakes get the new certificate and the open
    connection keeps being served."""
    kept = await TlsConnection.open(port, ca_pem)
    try:
        old = kept.certificate()
        assert await kept.get("/healthz") == 200
        if rotate is not None:
            await rotate()
        new = await until_another_certificate(port, ca_pem, old)
        assert await kept.get("/healthz") == 200, "the open connection was dropped"
        assert kept.certificate().serial_number == old.serial_number
    finally:
        await kept.close()
    return old, new


async def test_the_injector_serves_its_renewed_certificate_without_a_restart(
    mesh_ca: CertificateAuthority, objects: KubeObjects
) -> None:
    issued = IssuedCertificate(mesh_ca, ["127.0.0.1"], LIFETIME)
    async with webhook(injector.MeshCertificate(issued, objects, webhook="")) as port:
        old, new = await assert_rotates_keeping_connections(port, mesh_ca.cert_pem)
        assert new.not_valid_after_utc > old.not_valid_after_utc


def kubelet_volume(directory: Path, pair: KeyPair, generation: int) -> None:
    """Write `pair` as the kubelet updates a Secret volume: files in a new timestamped directory,
    then the `..data` symlink swapped atomically; tls.crt and tls.key point through it."""
    version = directory / f"..{generation}"
    version.mkdir()
    (version / "tls.crt").write_bytes(pair.cert)
    (version / "tls.key").write_bytes(pair.key)
    swap = directory / "..data_tmp"
    swap.symlink_to(version.name)
    os.replace(swap, directory / "..data")
    for name in ("tls.crt", "tls.key"):
        if not (directory / name).is_symlink():
            (directory / name).symlink_to(f"..data/{name}")


async def test_the_injector_loads_renewed_cert_manager_files_without_a_restart(
    mesh_ca: CertificateAuthority, tmp_path: Path
) -> None:
    first = mesh_ca.issue_server(["127.0.0.1"])
    kubelet_volume(tmp_path, first, 1)
    renewed = mesh_ca.issue_server(["127.0.0.1"])
    certificate = injector.FileCertificate(tmp_path / "tls.crt", tmp_path / "tls.key")

    async def renew() -> None:
        kubelet_volume(tmp_path, renewed, 2)

    async with webhook(certificate) as port:
        old, new = await assert_rotates_keeping_connections(port, mesh_ca.cert_pem, renew)
    assert old.serial_number == x509.load_pem_x509_certificate(first.cert).serial_number
    assert new.serial_number == x509.load_pem_x509_certificate(renewed.cert).serial_number


async def test_the_xds_port_serves_its_renewed_certificate_and_keeps_open_streams(
    mesh_ca: CertificateAuthority,
) -> None:
    issued = IssuedCertificate(mesh_ca, ["127.0.0.1"], LIFETIME)
    async with AdsServer("127.0.0.1", 0, credentials=xds_credentials(issued)) as ads:
        await ads.set_snapshot("*", config.sidecar_resources([], config.SidecarPorts()))
        channel = grpc.aio.secure_channel(
            f"127.0.0.1:{ads.port}", grpc.ssl_channel_credentials(mesh_ca.cert_pem)
        )
        sidecar = DeltaClient(channel, "web-1.shop")
        try:
            sidecar.subscribe(config.LISTENER_TYPE)
            sidecar.ack(await sidecar.receive(10))
            old = await served_certificate(ads.port, mesh_ca.cert_pem, ["h2"])
            new = await until_another_certificate(ads.port, mesh_ca.cert_pem, old, ["h2"])
            assert new.not_valid_after_utc > old.not_valid_after_utc

            # The stream opened before the rotation still gets pushes.
            await ads.set_snapshot("*", config.sidecar_resources([], config.SidecarPorts(outbound=15101)))
            update = await sidecar.receive(10)
            assert [resource.name for resource in update.resources] == ["outbound"]
        finally:
            await sidecar.close()
