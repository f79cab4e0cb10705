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
import contextlib
import datetime
import functools
import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
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


MAX_CHAIN = 8
"""Certificates followed from the signing CA up to a trusted one, at most."""


def _certificates(pem: bytes, what: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as error:
        raise ValueError(f"{what} is not PEM certificates: {error}") from None


def _public(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | x509.Certificate) -> bytes:
    public = key.public_key()
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _check_signer(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    if _public(cert) != _public(key):
        raise ValueError(f"the key does not match the signing certificate ({cert.subject.rfc4514_string()})")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise ValueError(f"the signing certificate ({cert.subject.rfc4514_string()}) is not a CA")
    with contextlib.suppress(x509.ExtensionNotFound):
        if not cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign:
            raise ValueError(
                f"the signing certificate ({cert.subject.rfc4514_string()}) may not sign certificates"
            )
    if cert.not_valid_after_utc <= _now():
        raise ValueError(f"the signing certificate expired at {cert.not_valid_after_utc}")


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _check_chains(chain: list[x509.Certificate], trust: list[x509.Certificate]) -> None:
    """The signing certificate leads to one of `trust` through `chain`, each signed by the next."""
    cert = chain[0]
    for _ in range(MAX_CHAIN):
        if cert in trust:
            return
        issuer = next((c for c in (*trust, *chain) if c != cert and _issued_by(cert, c)), None)
        if issuer is None:
            break
        cert = issuer
    raise ValueError(
        f"the signing certificate ({chain[0].subject.rfc4514_string()}) does not chain to a certificate "
        "of the trust bundle: sidecars would refuse the certificates it signs"
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


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
    """Signs with `pair` (its certificate may be an intermediate, followed by the certificates up to
    the root: leaves carry those not in the trust bundle as their chain); `trust_pem` is what peers
    verify against (one or more roots, a bundle), `pair.cert` unless given.

    Raises ValueError, saying why, unless the key is the certificate's, the certificate is a CA valid
    now, and it chains to a certificate of the trust bundle: a CA that would make sidecars refuse each
    other is never used.
    """

    def __init__(self, pair: KeyPair, trust_pem: bytes | None = None) -> None:
        self.pair = pair
        self.trust_pem = trust_pem or pair.cert
        chain = _certificates(pair.cert, "the signing certificate")
        trust = _certificates(self.trust_pem, "the trust bundle")
        try:
            key = serialization.load_pem_private_key(pair.key, password=None)
        except (ValueError, TypeError) as error:
            raise ValueError(f"the signing key is not an unencrypted PEM private key: {error}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError("the mesh CA key must be an EC or RSA key")
        self._cert, self._key = chain[0], key
        _check_signer(self._cert, key)
        _check_chains(chain, trust)
        untrusted = [cert for cert in chain if cert not in trust]
        self._chain_pem = b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in untrusted)
        """What leaves carry after themselves, so peers trusting only a root can verify them."""

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
        return KeyPair(cert.public_bytes(serialization.Encoding.PEM) + self._chain_pem, _pem_key(key))


def due_for_renewal(pair: KeyPair, issued_for: datetime.timedelta = LEAF_VALIDITY) -> bool:
    """Renew once a third of the lifetime is left, as cert-manager does by default."""
    return pair.not_after - _now() < issued_for / 3


def ca_from_secret(data: Mapping[str, str]) -> CertificateAuthority | None:
    """The CA in a Secret's (base64) `data`, None if it holds neither form; ValueError saying why if it
    holds a CA meshd must not use."""
    try:
        fields = {name: base64.b64decode(value, validate=True) for name, value in data.items()}
    except (ValueError, TypeError) as error:
        raise ValueError(f"the Secret's data is not base64: {error}") from None
    if "tls.crt" in fields and "tls.key" in fields and "ca.crt" in fields:  # cert-manager, isCA: true
        return CertificateAuthority(KeyPair(fields["tls.crt"], fields["tls.key"]), fields["ca.crt"])
    if "ca.crt" in fields and "ca.key" in fields:
        # ca.crt may be a bundle of roots (during a rotation): the one of ca.key signs, all are trusted.
        bundle, key = fields["ca.crt"], fields["ca.key"]
        certificates = _certificates(bundle, "ca.crt")
        try:
            public = _public(serialization.load_pem_private_key(key, password=None))  # type: ignore[arg-type]
        except (ValueError, TypeError, AttributeError) as error:
            raise ValueError(f"ca.key is not an unencrypted PEM private key: {error}") from None
        signer = next((cert for cert in certificates if _public(cert) == public), certificates[0])
        return CertificateAuthority(KeyPair(_pem(signer), key), bundle)
    return None


async def load_or_create_ca(objects: KubeObjects, namespace: str, secret: str) -> CertificateAuthority:
    """The mesh CA from Secret `namespace`/`secret`, created there first if missing."""
    for _ in range(3):
        found = await objects.get("v1", "Secret", namespace, secret)
        try:
            found_ca = ca_from_secret((found or {}).get("data") or {})
        except ValueError as error:
            raise ValueError(f"the mesh CA Secret {namespace}/{secret} is not usable: {error}") from None
        if found_ca is not None:
            return found_ca
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
