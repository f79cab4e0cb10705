"""Workload identity: each authenticated sidecar gets its own SPIFFE certificate over SDS and nobody
else's; renewed ones are pushed on the open stream; a root brought as cert-manager writes it signs.

The sidecars are raw delta-ADS clients over TLS carrying a bearer token, as Envoy sends them (real
Envoys fetch these secrets in tests/netns); the certificates are checked with the openssl CLI.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
import subprocess
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2

from canaryctl_mesh import config
from canaryctl_mesh.ads import AdsServer, encode
from canaryctl_mesh.identity import POD_NAME_EXTRA, TOKEN_AUDIENCE, TokenAuthenticator
from canaryctl_mesh.kube import KubeObjects
from canaryctl_mesh.meshd.pki import CertificateAuthority, load_or_create_ca
from canaryctl_mesh.meshd.tls import IssuedCertificate, xds_credentials
from canaryctl_mesh.meshd.workload import WorkloadCertificates, workload_secrets
from tests.mesh.delta_client import DeltaClient, unpack
from tests.meshd.authorities import signed
from tests.meshd.test_security import SERVER_NAME, RawSidecar

pytestmark = pytest.mark.asyncio

ACCOUNTS = {"token-pay": ("team-a", "pay", "pay-1"), "token-web": ("team-b", "web", "web-1")}
SECRETS = (config.WORKLOAD_SECRET, config.TRUST_SECRET)


class Reviews:
    """TokenReview answers as the API server gives them for the two pods' projected tokens."""

    async def review(self, token: str, audiences: list[str]) -> Mapping[str, Any]:
        if token not in ACCOUNTS or TOKEN_AUDIENCE not in audiences:
            return {"authenticated": False, "error": "invalid bearer token"}
        namespace, account, pod = ACCOUNTS[token]
        user = {"username": f"system:serviceaccount:{namespace}:{account}", "extra": {POD_NAME_EXTRA: [pod]}}
        return {"authenticated": True, "audiences": [TOKEN_AUDIENCE], "user": user}


@pytest_asyncio.fixture
async def served() -> AsyncIterator[tuple[AdsServer, CertificateAuthority]]:
    """ADS as meshd serves it, workload certificates living 1.5 s (renewed after 1 s)."""
    ca = CertificateAuthority.create("test mesh CA")
    ads = AdsServer(
        credentials=xds_credentials(IssuedCertificate(ca, [SERVER_NAME])),
        authenticator=TokenAuthenticator(Reviews()),
    )
    stop = asyncio.Event()
    await ads.start()
    renewals = asyncio.create_task(
        WorkloadCertificates(ca, datetime.timedelta(seconds=1.5)).keep_current(ads, stop)
    )
    yield ads, ca
    stop.set()
    await renewals
    await ads.stop()


async def received_secrets(sidecar: RawSidecar) -> dict[str, tuple[str, str] | str]:
    """Secrets of the next response: the workload's (certificate chain, key), the trust bundle."""
    response = await sidecar.receive(10)
    assert response.type_url == config.SECRET_TYPE
    sidecar.ack(response)
    found: dict[str, tuple[str, str] | str] = {}
    for name, secret in unpack(response, secret_pb2.Secret).items():
        assert isinstance(secret, secret_pb2.Secret)
        if secret.HasField("tls_certificate"):
            pair = secret.tls_certificate
            found[name] = (pair.certificate_chain.inline_string, pair.private_key.inline_string)
        else:
            found[name] = secret.validation_context.trusted_ca.inline_string
    return found


def checked(chain: str, key: str, trust: str, tmp: Path) -> x509.Certificate:
    """The leaf of `chain`, once openssl verified it as a client certificate chaining to `trust` (through
    the chain's intermediates) and `key` was found to be its key."""
    (tmp / "trust.pem").write_text(trust)
    (tmp / "chain.pem").write_text(chain)
    verify = ["openssl", "verify", "-CAfile", str(tmp / "trust.pem"), "-untrusted", str(tmp / "chain.pem")]
    subprocess.run([*verify, "-purpose", "sslclient", str(tmp / "chain.pem")], check=True, timeout=30)
    subprocess.run([*verify, "-purpose", "sslserver", str(tmp / "chain.pem")], check=True, timeout=30)
    cert = x509.load_pem_x509_certificate(chain.encode())
    private = serialization.load_pem_private_key(key.encode(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert private.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    return cert


def workload(secrets: Mapping[str, tuple[str, str] | str], trust: str, tmp: Path) -> x509.Certificate:
    pair = secrets[config.WORKLOAD_SECRET]
    assert isinstance(pair, tuple)
    return checked(*pair, trust, tmp)


def uris(cert: x509.Certificate) -> list[str]:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return names.get_values_for_type(x509.UniformResourceIdentifier)


async def test_each_sidecar_gets_its_own_identity_and_it_is_renewed_on_the_open_stream(
    served: tuple[AdsServer, CertificateAuthority], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ads, ca = served
    pay = RawSidecar(ads.port, ca.cert_pem, "token-pay", "pay-1.team-a")
    web = RawSidecar(ads.port, ca.cert_pem, "token-web", "web-1.team-b")
    try:
        for sidecar in (pay, web):
            sidecar.subscribe(config.SECRET_TYPE, SECRETS)
        pay_secrets, web_secrets = await received_secrets(pay), await received_secrets(web)
        assert pay_secrets[config.TRUST_SECRET] == web_secrets[config.TRUST_SECRET] == ca.trust_pem.decode()
        trust = ca.trust_pem.decode()
        pay_cert, web_cert = workload(pay_secrets, trust, tmp_path), workload(web_secrets, trust, tmp_path)
        assert uris(pay_cert) == ["spiffe://cluster.local/ns/team-a/sa/pay"]
        assert uris(web_cert) == ["spiffe://cluster.local/ns/team-b/sa/web"]
        assert pay_cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) < datetime.timedelta(
            seconds=2
        )

        # Asking for more names gets nothing: a sidecar's secrets are its own two, nothing else exists
        # for it. The next thing on the stream is the renewed certificate: same identity, new key.
        pay.subscribe(config.SECRET_TYPE, ["web", "team-b/web"])
        renewed = await received_secrets(pay)
        assert set(renewed) == {config.WORKLOAD_SECRET}, "the trust bundle did not change"
        new_cert = workload(renewed, trust, tmp_path)
        assert new_cert.serial_number != pay_cert.serial_number and uris(new_cert) == uris(pay_cert)
        assert renewed[config.WORKLOAD_SECRET][1] != pay_secrets[config.WORKLOAD_SECRET][1]
    finally:
        await pay.close()
        await web.close()
    assert "PRIVATE KEY" not in caplog.text


async def test_a_sidecar_without_a_proven_identity_gets_no_secret(tmp_path: Path) -> None:
    """Loopback ADS without an authenticator (the local runtime): no identity, so no certificate."""
    ca = CertificateAuthority.create("test mesh CA")
    ads = AdsServer()
    ads.secrets = WorkloadCertificates(ca).secrets
    await ads.start()
    sidecar = DeltaClient.insecure(ads.port, "pay-1.team-a")
    try:
        sidecar.subscribe(config.SECRET_TYPE, SECRETS)
        assert await sidecar.nothing_within(0.5)
    finally:
        await sidecar.close()
        await ads.stop()


async def test_a_root_brought_through_cert_manager_signs_workload_certificates(
    objects: KubeObjects, tmp_path: Path
) -> None:
    """The Secret a cert-manager Certificate with isCA: true writes (RSA, cert-manager's default):
    tls.crt/tls.key the intermediate meshd signs with, ca.crt the root every sidecar trusts."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "company root")])
    root = signed("company root", root_key, root_name, root_key, 1)
    intermediate_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    intermediate = signed("mesh intermediate", intermediate_key, root_name, root_key, 0)
    key_pem = intermediate_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    data = {"tls.crt": intermediate, "tls.key": key_pem, "ca.crt": root}
    await objects.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "mesh-ca", "namespace": "canaryctl-system"},
            "type": "kubernetes.io/tls",
            "data": {name: base64.b64encode(value).decode() for name, value in data.items()},
        }
    )
    ca = await load_or_create_ca(objects, "canaryctl-system", "mesh-ca")
    assert ca.trust_pem == root
    pair = ca.issue_workload("spiffe://cluster.local/ns/team-a/sa/pay")
    # The chain carries the intermediate, so a peer trusting the root alone verifies it.
    cert = checked(pair.cert.decode(), pair.key.decode(), root.decode(), tmp_path)
    assert uris(cert) == ["spiffe://cluster.local/ns/team-a/sa/pay"]


async def test_the_secrets_built_as_protobuf_are_the_sds_secrets_config_describes() -> None:
    """meshd builds each sidecar's two secrets as protobuf (parsing JSON cost more than signing);
    they must stay byte for byte the resources `config.secrets` describes (the static form tests use)."""
    ca = CertificateAuthority.create("test mesh CA")
    pair, built = workload_secrets(ca, "spiffe://cluster.local/ns/team-a/sa/pay", datetime.timedelta(hours=1))
    described = encode(
        config.SECRET_TYPE, config.secrets(pair.cert.decode(), pair.key.decode(), ca.trust_pem.decode())
    )
    assert built.version == described.version
    assert {
        name: resource.SerializeToString() for name, (_, resource) in built.entries.items() if resource
    } == {name: resource.SerializeToString() for name, (_, resource) in described.entries.items() if resource}
