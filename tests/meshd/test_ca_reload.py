"""The mesh CA Secret changes while meshd runs: a renewed intermediate signs from then on and connected
sidecars get certificates from it on their open streams, a root bundle is the trust pushed to them,
and a Secret meshd must not use is refused (a log line, an Event) while issuance goes on.

The Secret lives in kmock's API emulator and is replaced whole, as cert-manager's writes and
``kubectl apply`` of a Secret do; the sidecars are raw delta-ADS clients over TLS with tokens (real
Envoys take these changes under load in tests/netns/test_capture.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import kmock
import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from canaryctl.local.prometheus import free_port
from canaryctl_mesh import config
from canaryctl_mesh.ads import AdsServer
from canaryctl_mesh.identity import TokenAuthenticator
from canaryctl_mesh.injector import PROXY_CONTAINER
from canaryctl_mesh.kube import KubeObjects
from canaryctl_mesh.meshd.ca_secret import REFUSED_REASON, CaSecret
from canaryctl_mesh.meshd.injector import WEBHOOK_API
from canaryctl_mesh.meshd.pki import CertificateAuthority, ca_from_secret, load_or_create_ca
from canaryctl_mesh.meshd.tls import IssuedCertificate, xds_credentials
from canaryctl_mesh.meshd.workload import WorkloadCertificates
from tests.kube.emulator import emulator_url
from tests.meshd.authorities import Authority, encoded, pem_key, root, secret
from tests.meshd.test_injector import review, wait_healthy
from tests.meshd.test_security import SERVER_NAME, RawSidecar, answer_token_reviews
from tests.meshd.test_workload_identity import SECRETS, Reviews, received_secrets, workload

pytestmark = pytest.mark.asyncio

NS, NAME = "canaryctl-system", "canaryctl-mesh-ca"
RECHECK = 0.1


@dataclass
class Meshd:
    """The control plane's CA side as meshd wires it: the Secret followed, the xDS serving certificate
    and the workload certificates switched to each new CA."""

    ads: AdsServer
    serving: IssuedCertificate
    certificates: WorkloadCertificates
    ca_secret: CaSecret

    def sidecar(self, trust: bytes, token: str, node_id: str) -> RawSidecar:
        sidecar = RawSidecar(self.ads.port, trust, token, node_id)
        sidecar.subscribe(config.SECRET_TYPE, SECRETS)
        return sidecar


StartMeshd = Callable[[dict[str, str]], Awaitable[Meshd]]


async def put(objects: KubeObjects, data: dict[str, str]) -> None:
    """Set the Secret's data (the same keys each time, so an apply replaces all of it)."""
    await objects.apply(secret(NS, NAME, data))


@pytest_asyncio.fixture
async def start_meshd(objects: KubeObjects) -> AsyncIterator[StartMeshd]:
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    servers: list[AdsServer] = []

    async def start(data: dict[str, str]) -> Meshd:
        await put(objects, data)
        ca = await load_or_create_ca(objects, NS, NAME)
        serving = IssuedCertificate(ca, [SERVER_NAME, "127.0.0.1"])
        ads = AdsServer(credentials=xds_credentials(serving), authenticator=TokenAuthenticator(Reviews()))
        await ads.start()
        servers.append(ads)
        certificates = WorkloadCertificates(ca)
        ca_secret = CaSecret(objects, NS, NAME, ca, RECHECK)

        def use(new: CertificateAuthority) -> None:
            serving.use(new)
            certificates.use(new)

        tasks.append(asyncio.create_task(certificates.keep_current(ads, stop)))
        tasks.append(asyncio.create_task(ca_secret.follow(use, stop)))
        return Meshd(ads, serving, certificates, ca_secret)

    yield start
    stop.set()
    await asyncio.gather(*tasks)
    for ads in servers:
        await ads.stop()


def chain(secrets: dict[str, tuple[str, str] | str]) -> list[x509.Certificate]:
    pair = secrets[config.WORKLOAD_SECRET]
    assert isinstance(pair, tuple)
    return x509.load_pem_x509_certificates(pair[0].encode())


async def served_certificate(port: int, trust: bytes) -> x509.Certificate:
    """The xDS port's certificate as a new TLS client (trusting `trust`) is served it."""
    context = ssl.create_default_context(cadata=trust.decode())
    context.check_hostname = False
    context.set_alpn_protocols(["h2"])
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        return x509.load_der_x509_certificate(writer.get_extra_info("ssl_object").getpeercert(True))
    finally:
        writer.close()
        await asyncio.gather(writer.wait_closed(), return_exceptions=True)


def issued_by(cert: x509.Certificate, authority: Authority) -> bool:
    try:
        cert.verify_directly_issued_by(x509.load_pem_x509_certificate(authority.cert))
    except InvalidSignature:
        return False
    return True


async def test_a_renewed_intermediate_signs_at_once_and_connected_sidecars_move_to_it(
    start_meshd: StartMeshd, objects: KubeObjects, tmp_path: Path
) -> None:
    company = root("company root")
    first = company.issue("mesh intermediate")
    meshd = await start_meshd(first.cert_manager_data(company.cert))
    pay = meshd.sidecar(company.cert, "token-pay", "pay-1.team-a")
    try:
        before = await received_secrets(pay)
        assert chain(before)[1].serial_number == first.serial
        renewed = company.issue("mesh intermediate")  # cert-manager's renewal: new key, same root
        await put(objects, renewed.cert_manager_data(company.cert))

        # The open stream gets a certificate from the new intermediate; the trust (the root) is unchanged.
        after = await received_secrets(pay)
        assert set(after) == {config.WORKLOAD_SECRET}
        workload(after, company.cert.decode(), tmp_path)
        assert chain(after)[1].serial_number == renewed.serial
        # The xDS port serves a certificate from it to the next handshake too (the same root verifies it).
        assert issued_by(await served_certificate(meshd.ads.port, company.cert), renewed)
    finally:
        await pay.close()


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        ("key of another certificate", "the key does not match the signing certificate"),
        ("not a CA", "is not a CA"),
        ("under another root", "does not chain to a certificate of the trust bundle"),
        ("not PEM", "is not PEM certificates"),
    ],
)
async def test_a_secret_meshd_must_not_use_is_refused_and_issuance_goes_on(
    breakage: str,
    reason: str,
    start_meshd: StartMeshd,
    objects: KubeObjects,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    company = root("company root")
    current = company.issue("mesh intermediate")
    meshd = await start_meshd(current.cert_manager_data(company.cert))
    stranger = root("another root")
    bad = {
        "key of another certificate": current.cert_manager_data(company.cert)
        | encoded({"tls.key": pem_key(ec.generate_private_key(ec.SECP256R1()))}),
        "not a CA": company.issue("a leaf", ca=False).cert_manager_data(company.cert),
        "under another root": stranger.issue("mesh intermediate").cert_manager_data(company.cert),
        "not PEM": current.cert_manager_data(company.cert) | encoded({"tls.crt": b"-----BEGIN nonsense"}),
    }[breakage]
    await put(objects, bad)
    events: list[dict[str, Any]] = []
    for _ in range(100):
        events = [
            e for e in await objects.list_objects("v1", "Event", NS) if e.get("reason") == REFUSED_REASON
        ]
        if events:
            break
        await asyncio.sleep(RECHECK)
    assert len(events) == 1, "a Warning Event on the Secret"
    assert events[0]["type"] == "Warning" and reason in str(events[0]["message"])
    assert {k: v for k, v in events[0]["involvedObject"].items() if k != "uid"} == {
        "apiVersion": "v1",
        "kind": "Secret",
        "namespace": NS,
        "name": NAME,
    }
    refusals = [r for r in caplog.records if r.levelno == logging.ERROR and reason in r.getMessage()]
    assert len(refusals) == 1 and "the current CA stays in use" in refusals[0].getMessage()

    # Sidecars connecting now get certificates from the CA in use.
    web = meshd.sidecar(company.cert, "token-web", "web-1.team-b")
    try:
        got = await received_secrets(web)
        workload(got, company.cert.decode(), tmp_path)
        assert chain(got)[1].serial_number == current.serial
    finally:
        await web.close()
    await asyncio.sleep(5 * RECHECK)
    assert sum(reason in r.getMessage() for r in caplog.records) == 1, "refused once, not at every check"


async def test_a_root_is_rotated_through_a_bundle_pushed_to_connected_sidecars(
    start_meshd: StartMeshd, objects: KubeObjects, tmp_path: Path
) -> None:
    """The documented procedure with ca.crt/ca.key: add the new root, sign with it, drop the old one."""
    old, new = root("root 2026"), root("root 2027")

    def data(signer: Authority, *trusted: Authority) -> dict[str, str]:
        return encoded({"ca.crt": b"".join(a.cert for a in trusted), "ca.key": pem_key(signer.key)})

    meshd = await start_meshd(data(old, old))
    pay = meshd.sidecar(old.cert, "token-pay", "pay-1.team-a")
    try:
        assert (await received_secrets(pay))[config.TRUST_SECRET] == old.cert.decode()
        await put(objects, data(old, old, new))
        both = await received_secrets(pay)
        assert both[config.TRUST_SECRET] == (old.cert + new.cert).decode(), "both roots trusted"
        assert chain(both)[0].issuer == old.subject

        await put(objects, data(new, old, new))
        signed_by_new = await received_secrets(pay)
        assert set(signed_by_new) == {config.WORKLOAD_SECRET}, "the trust did not change"
        workload(signed_by_new, new.cert.decode(), tmp_path)

        await put(objects, data(new, new))
        last = await received_secrets(pay)
        assert last[config.TRUST_SECRET] == new.cert.decode()
        workload(last, new.cert.decode(), tmp_path)
    finally:
        await pay.close()


async def test_the_signing_ca_of_a_bundle_is_the_one_of_the_key() -> None:
    old, new = root("root 2026"), root("root 2027")
    ca = ca_from_secret(encoded({"ca.crt": old.cert + new.cert, "ca.key": pem_key(new.key)}))
    assert ca is not None and ca.pair.cert == new.cert and ca.trust_pem == old.cert + new.cert
    leaf = x509.load_pem_x509_certificates(ca.issue_workload("spiffe://cluster.local/ns/a/sa/b").cert)
    assert [cert.issuer for cert in leaf] == [new.subject], "a root in the bundle is not sent in chains"
    assert ca_from_secret(encoded({"unrelated": b"x"})) is None


async def next_secrets(sidecar: RawSidecar, timeout: float = 30.0) -> dict[str, tuple[str, str] | str]:
    """The secrets of the next SDS response, the other types' responses ACKed on the way."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        response = await sidecar.receive(max(0.1, deadline - asyncio.get_running_loop().time()))
        if response.type_url == config.SECRET_TYPE:
            sidecar.responses.put_nowait(response)
            return await received_secrets(sidecar)
        sidecar.ack(response)


@pytest.mark.slow
async def test_meshd_follows_its_ca_secret(
    emulator: kmock.KubernetesEmulator, objects: KubeObjects, meshd: Any, tmp_path: Path
) -> None:
    """`meshd control-plane` as the chart runs it, its CA Secret renewed and then broken under it."""
    answer_token_reviews(emulator)
    company = root("company root")
    first, renewed = company.issue("mesh intermediate"), company.issue("mesh intermediate")
    await put(objects, first.cert_manager_data(company.cert))
    xds = free_port()
    child = await meshd(
        "control-plane", "--xds-port", str(xds), "--xds-dns-name", SERVER_NAME, "--namespace", "team-a",
        "--ca-secret", NAME, "--ca-namespace", NS, "--ca-recheck-seconds", "0.2",
        "--server", emulator_url(emulator),
    )  # fmt: skip
    sidecar = RawSidecar(xds, company.cert, "token-team-a", "web-1.team-a")
    sidecar.subscribe(config.SECRET_TYPE, SECRETS)
    try:
        assert chain(await next_secrets(sidecar))[1].serial_number == first.serial
        await put(objects, renewed.cert_manager_data(company.cert))
        after = await next_secrets(sidecar)
        workload(after, company.cert.decode(), tmp_path)
        assert chain(after)[1].serial_number == renewed.serial

        await put(objects, company.issue("a leaf", ca=False).cert_manager_data(company.cert))
        for _ in range(150):
            events = await objects.list_objects("v1", "Event", NS)
            if any(event.get("reason") == REFUSED_REASON for event in events):
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"no {REFUSED_REASON} Event: {child.log.read_text()}")
        assert "is not a CA" in child.log.read_text()
        with contextlib.suppress(TimeoutError):  # the certificate from the renewed intermediate stays
            while True:
                response = await sidecar.receive(1.0)
                assert response.type_url != config.SECRET_TYPE, "a certificate from a refused CA"
                sidecar.ack(response)
    finally:
        await sidecar.close()


def bootstrap_trust(answer: dict[str, Any]) -> str:
    """The CA the injected proxy's bootstrap trusts for its xDS connection."""
    patch = json.loads(base64.b64decode(answer["response"]["patch"]))
    containers = next(op["value"] for op in patch if op["path"] == "/spec/initContainers")
    proxy = next(c for c in containers if c["name"] == PROXY_CONTAINER)
    bootstrap = json.loads(proxy["args"][proxy["args"].index("--config-yaml") + 1])
    (xds,) = bootstrap["dynamic_resources"]["ads_config"]["grpc_services"]
    return str(xds["google_grpc"]["channel_credentials"]["ssl_credentials"]["root_certs"]["inline_string"])


@pytest.mark.slow
async def test_the_injector_follows_its_ca_secret(
    emulator: kmock.KubernetesEmulator, objects: KubeObjects, meshd: Any
) -> None:
    """New pods' bootstraps trust the bundle the Secret holds now, the webhook's caBundle is that
    bundle, and its serving certificate comes from a renewed intermediate."""
    emulator.resources["admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"] = kmock.ResourceInfo(
        kind="MutatingWebhookConfiguration", namespaced=False, verbs=["get", "list", "create", "patch"]
    )
    await objects.create(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "canaryctl-injector"},
            "webhooks": [{"name": "sidecar-injector.mesh.canaryctl.dev", "clientConfig": {}}],
        }
    )
    old, new = root("root 2026"), root("root 2027")
    first, renewed = old.issue("mesh intermediate"), old.issue("mesh intermediate")
    await put(objects, first.cert_manager_data(old.cert))
    port = free_port()
    child = await meshd(
        "injector", "--port", str(port), "--tls-dns-name", "127.0.0.1",
        "--webhook-name", "canaryctl-injector", "--ca-secret", NAME, "--ca-namespace", NS,
        "--ca-recheck-seconds", "0.2",
        "--sidecar-image", "envoy:test", "--init-image", "init:test", "--server", emulator_url(emulator),
    )  # fmt: skip
    pod = review("default")
    pod["request"]["object"]["metadata"]["annotations"] = {"mesh.canaryctl.dev/inject": "true"}
    url = f"https://127.0.0.1:{port}"
    both = old.cert + new.cert

    async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
        for _ in range(150):
            if await check():
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"{what}: {child.log.read_text()}")

    async def ca_bundle() -> bytes:
        found = await objects.get(*WEBHOOK_API, "", "canaryctl-injector")
        return base64.b64decode((found or {})["webhooks"][0]["clientConfig"].get("caBundle", ""))

    async with httpx.AsyncClient(verify=ssl.create_default_context(cadata=both.decode()), timeout=10) as http:
        await wait_healthy(http, url, child)

        async def admitted_trust() -> str:
            return bootstrap_trust((await http.post(f"{url}/mutate", json=pod)).json())

        assert await admitted_trust() == old.cert.decode()
        await until(lambda: _equal(ca_bundle(), old.cert), "the caBundle is the root")

        await put(objects, first.cert_manager_data(both))  # a new root added to the bundle
        await until(lambda: _equal(admitted_trust(), both.decode()), "new pods trust both roots")
        await until(lambda: _equal(ca_bundle(), both), "the caBundle is both roots")

        await put(objects, renewed.cert_manager_data(both))  # cert-manager renews the intermediate
        await until(
            lambda: _is(served_certificate(port, both), renewed), "the webhook serves a certificate from it"
        )
        assert await ca_bundle() == both
    assert await child.terminate() == 0, child.log.read_text()


async def _equal(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def _is(certificate: Awaitable[x509.Certificate], authority: Authority) -> bool:
    return issued_by(await certificate, authority)
