"""The mesh's certificate authority: one CA kept in a Secret, short-lived serving certificates from it.

meshd's two processes share one CA (Secret ``<release>-mesh-ca``: ``ca.crt``, ``ca.key``). Whichever
starts first creates it; a second creator's conflict (409) re-reads the winner's. Each process then
issues its own serving certificate in memory (the injector's webhook, the control plane's xDS port)
and renews it well before it expires, so no certificate is ever written by Helm (``helm template``
renders the same manifests every time) and none needs a restart to rotate. The CA certificate is
what the webhook's ``caBundle`` and the sidecars' bootstrap trust. The same CA signs the short-lived
SPIFFE workload certificates of the identities `canaryctl_mesh.identity` proves (automatic mTLS).

Bring your own root: create the Secret before installing, either with ``ca.crt`` and ``ca.key`` (a root
or an intermediate; ``ca.crt`` is what sidecars trust), or as cert-manager writes a Certificate with
``isCA: true`` (``tls.crt``/``tls.key`` the signing CA, ``ca.crt`` the root sidecars trust).
"""

from __future__ import annotations

import base64
import datetime
import functools
import ipaddress
import logging
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from kubernetes.client.exceptions import ApiException

from canaryctl_mesh.kube import KubeObjects

log = logging.getLogger(__name__)

_LABELS = {"app.kubernetes.io/part-of": "canaryctl", "app.kubernetes.io/component": "mesh"}
CA_VALIDITY = datetime.timedelta(days=3650)
LEAF_VALIDITY = datetime.timedelta(days=30)
WORKLOAD_VALIDITY = datetime.timedelta(hours=24)
"""Lifetime of a sidecar's SPIFFE certificate (Istio's default); renewed with a third left."""


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
    key: bytes = field(repr=False)
    """Never in a repr, so never in a log line or a traceback's locals."""

    @functools.cached_property
    def not_after(self) -> datetime.datetime:
        """Parsed once: renewal checks look at every connected sidecar's certificate."""
        return x509.load_pem_x509_certificate(self.cert).not_valid_after_utc


class CertificateAuthority:
    """Signs with `pair` (its certificate may be an intermediate: leaves carry it as their chain);
    `trust_pem` is what peers verify against (the root), `pair.cert` unless given."""

    def __init__(self, pair: KeyPair, trust_pem: bytes | None = None) -> None:
        self.pair = pair
        self.trust_pem = trust_pem or pair.cert
        self._cert = x509.load_pem_x509_certificate(pair.cert)
        key = serialization.load_pem_private_key(pair.key, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError("the mesh CA key must be an EC or RSA key")
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

    def issue_workload(self, spiffe_id: str, validity: datetime.timedelta = WORKLOAD_VALIDITY) -> KeyPair:
        """A SPIFFE X.509-SVID: the ID as the only (URI) SAN, usable as client and server certificate."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(min(now + validity, self._cert.not_valid_after_utc))
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), critical=True
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_encipherment=False,
                    content_commitment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        chain = cert.public_bytes(serialization.Encoding.PEM)
        if self.pair.cert != self.trust_pem:
            chain += self.pair.cert  # the intermediate, so peers trusting only the root can verify
        return KeyPair(chain, _pem_key(key))


def due_for_renewal(pair: KeyPair, issued_for: datetime.timedelta = LEAF_VALIDITY) -> bool:
    """Renew once a third of the lifetime is left, as cert-manager does by default."""
    return pair.not_after - _now() < issued_for / 3


async def load_or_create_ca(objects: KubeObjects, namespace: str, secret: str) -> CertificateAuthority:
    """The mesh CA from Secret `namespace`/`secret`, created there first if missing."""
    for _ in range(3):
        found = await objects.get("v1", "Secret", namespace, secret)
        data = (found or {}).get("data") or {}
        if "tls.crt" in data and "tls.key" in data and "ca.crt" in data:  # cert-manager, isCA: true
            signing = KeyPair(base64.b64decode(data["tls.crt"]), base64.b64decode(data["tls.key"]))
            return CertificateAuthority(signing, base64.b64decode(data["ca.crt"]))
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
