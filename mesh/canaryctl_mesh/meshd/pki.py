"""The mesh's certificate authority: one CA kept in a Secret, short-lived serving certificates from it.

meshd's two processes share one CA (Secret ``<release>-mesh-ca``: ``ca.crt``, ``ca.key``). Whichever
starts first creates it; a second creator's conflict (409) re-reads the winner's. Each process then
issues its own serving certificate in memory (the injector's webhook, the control plane's xDS port)
and renews it well before it expires, so no certificate is ever written by Helm (``helm template``
renders the same manifests every time) and none needs a restart to rotate. The CA certificate is
what the webhook's ``caBundle`` and the sidecars' bootstrap trust. The same CA can later sign SPIFFE
workload certificates for the identities `canaryctl_mesh.identity` proves.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import logging
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes.client.exceptions import ApiException

from canaryctl_mesh.kube import KubeObjects

log = logging.getLogger(__name__)

_LABELS = {"app.kubernetes.io/part-of": "canaryctl", "app.kubernetes.io/component": "mesh"}
CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=30)


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=True,
    key_cert_sign=True,
    crl_sign=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    encipher_only=False,
    decipher_only=False,
)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate (chain) and its PEM private key."""

    cert: bytes
    key: bytes

    @property
    def not_after(self) -> datetime.datetime:
        return x509.load_pem_x509_certificate(self.cert).not_valid_after_utc


class CertificateAuthority:
    def __init__(self, pair: KeyPair) -> None:
        self.pair = pair
        self._cert = x509.load_pem_x509_certificate(pair.cert)
        key = serialization.load_pem_private_key(pair.key, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the mesh CA key must be an EC key")
        self._key = key

    @property
    def cert_pem(self) -> bytes:
        return self.pair.cert

    @classmethod
    def create(cls, common_name: str) -> CertificateAuthority:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_KEY_USAGE, critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(KeyPair(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)))

    def issue_server(self, dns_names: list[str], validity: datetime.timedelta = LEAF_VALIDITY) -> KeyPair:
        """A serving certificate for `dns_names` (IP addresses allowed), chained to this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        names: list[x509.GeneralName] = []
        for name in dns_names:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                names.append(x509.DNSName(name))
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(min(now + validity, self._cert.not_valid_after_utc))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self._key, hashes.SHA256())
        )
        return KeyPair(cert.public_bytes(serialization.Encoding.PEM) + self.pair.cert, _pem_key(key))


def due_for_renewal(pair: KeyPair, issued_for: datetime.timedelta = LEAF_VALIDITY) -> bool:
    """Renew once a third of the lifetime is left, as cert-manager does by default."""
    return pair.not_after - _now() < issued_for / 3


async def load_or_create_ca(objects: KubeObjects, namespace: str, secret: str) -> CertificateAuthority:
    """The mesh CA from Secret `namespace`/`secret`, created there first if missing."""
    for _ in range(3):
        found = await objects.get("v1", "Secret", namespace, secret)
        data = (found or {}).get("data") or {}
        if "ca.crt" in data and "ca.key" in data:
            return CertificateAuthority(
                KeyPair(base64.b64decode(data["ca.crt"]), base64.b64decode(data["ca.key"]))
            )
        ca = CertificateAuthority.create(f"canaryctl mesh CA ({namespace})")
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret, "namespace": namespace, "labels": _LABELS},
            "type": "Opaque",
            "data": {
                "ca.crt": base64.b64encode(ca.pair.cert).decode(),
                "ca.key": base64.b64encode(ca.pair.key).decode(),
            },
        }
        try:
            await objects.create(body)
        except ApiException as error:
            if error.status != 409:
                raise
            log.info("mesh CA %s/%s was created meanwhile; reading it", namespace, secret)
            continue
        log.info("created the mesh CA in Secret %s/%s", namespace, secret)
        return ca
    raise RuntimeError(f"could not read or create the mesh CA Secret {namespace}/{secret}")
