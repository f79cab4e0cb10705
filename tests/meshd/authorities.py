"""Roots and intermediates as an organisation's PKI or cert-manager makes them, for the mesh CA tests."""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from canaryctl_mesh.meshd.pki import CertificateAuthority, KeyPair

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def signed(
    subject: str,
    key: PrivateKey,
    issuer: x509.Name,
    signer: PrivateKey,
    path_length: int | None,
    ca: bool = True,
) -> bytes:
    """A certificate valid for 30 days (a CA unless `ca` is false), PEM."""
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, ca, ca, False, False), critical=True)
        .sign(signer, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def pem_key(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class Authority:
    name: str
    cert: bytes
    key: PrivateKey = field(repr=False)

    @property
    def subject(self) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)])

    @property
    def serial(self) -> int:
        return x509.load_pem_x509_certificate(self.cert).serial_number

    def issue(self, name: str, *, ca: bool = True, key: PrivateKey | None = None) -> Authority:
        """An intermediate CA (or, `ca` false, a leaf) signed by this one."""
        key = key or ec.generate_private_key(ec.SECP256R1())
        return Authority(name, signed(name, key, self.subject, self.key, 0 if ca else None, ca), key)

    def signing(self, trust: bytes) -> CertificateAuthority:
        """The mesh CA signing with this one, sidecars trusting `trust`."""
        return CertificateAuthority(KeyPair(self.cert, pem_key(self.key)), trust)

    def cert_manager_data(self, trust: bytes) -> dict[str, str]:
        """A Secret's data as cert-manager writes it for a Certificate with isCA: true."""
        return encoded({"tls.crt": self.cert, "tls.key": pem_key(self.key), "ca.crt": trust})


def root(name: str) -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return Authority(name, signed(name, key, subject, key, 1), key)


def encoded(fields: dict[str, bytes]) -> dict[str, str]:
    return {name: base64.b64encode(value).decode() for name, value in fields.items()}


def secret(namespace: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "data": data,
    }
