"""`canaryctl meshd injector` as a process: real TLS, namespace labels from the emulator, SIGTERM."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
from pathlib import Path
from typing import Any

import httpx
import kmock
import pytest

from canaryctl.local.prometheus import free_port
from canaryctl_mesh.injector import INIT_CONTAINER, INJECT_LABEL, PROXY_CONTAINER
from canaryctl_mesh.kube import KubeObjects
from tests.kube.emulator import emulator_url
from tests.meshd.conftest import NS

pytestmark = pytest.mark.asyncio


def review(namespace: str) -> dict[str, Any]:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": namespace},
        "spec": {"containers": [{"name": "web", "image": "web:1"}]},
    }
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": f"uid-{namespace}",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": namespace,
            "object": pod,
        },
    }


async def wait_healthy(http: httpx.AsyncClient, url: str, child: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert child.proc.returncode is None, child.log.read_text()
        try:
            if (await http.get(f"{url}/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"injector not healthy within {timeout}s: {child.log.read_text()}")


async def test_injector_answers_admission_reviews_over_tls(
    emulator: kmock.KubernetesEmulator, objects: KubeObjects, meshd: Any, tls_files: tuple[Path, Path]
) -> None:
    labelled = {"name": NS, "labels": {INJECT_LABEL: "enabled"}}
    await objects.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": labelled})
    cert, key = tls_files
    port = free_port()
    child = await meshd(
        "injector", "--port", str(port), "--tls-cert", str(cert), "--tls-key", str(key),
        "--sidecar-image", "envoy:test", "--init-image", "init:test", "--excluded-ports", "22,2222",
        "--xds-host", "mesh.example", "--insecure-xds", "--server", emulator_url(emulator),
    )  # fmt: skip
    url = f"https://127.0.0.1:{port}"
    trusted = ssl.create_default_context(cafile=str(cert))
    async with httpx.AsyncClient(verify=trusted, trust_env=False, timeout=5) as http:
        await wait_healthy(http, url, child)

        answer = (await http.post(f"{url}/mutate", json=review(NS))).json()
        assert answer["kind"] == "AdmissionReview" and answer["response"]["uid"] == f"uid-{NS}"
        patch = json.loads(base64.b64decode(answer["response"]["patch"]))
        added = {op["path"]: op["value"] for op in patch}
        init, proxy = added["/spec/initContainers"]  # the proxy is a native sidecar
        assert proxy["name"] == PROXY_CONTAINER and proxy["image"] == "envoy:test"
        assert "mesh.example" in proxy["args"][1]  # the ADS address in the inline bootstrap
        assert init["name"] == INIT_CONTAINER and init["image"] == "init:test"
        assert "--dport 22 -j RETURN" in init["command"][2] and "--dport 2222 -j RETURN" in init["command"][2]

        # "default" carries no inject label: the pod is allowed unchanged.
        unlabelled = (await http.post(f"{url}/mutate", json=review("default"))).json()["response"]
        assert unlabelled == {"uid": "uid-default", "allowed": True}

    # The certificate is what a client checks: without trusting it, the handshake fails.
    async with httpx.AsyncClient(trust_env=False, timeout=5) as untrusting:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusting.get(f"{url}/healthz")
    assert await child.terminate() == 0, child.log.read_text()


async def test_injector_manages_its_certificate_and_answers_warnings_not_500s(
    emulator: kmock.KubernetesEmulator, objects: KubeObjects, meshd: Any
) -> None:
    """No certificate files: the injector makes the mesh CA, serves a certificate from it, puts the CA in
    the webhook's caBundle; bad annotations are warnings, a 3 MiB review is read, garbage gets a 400."""
    webhook = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "canaryctl-injector"},
        "webhooks": [{"name": "sidecar-injector.mesh.canaryctl.dev", "clientConfig": {}}],
    }
    emulator.resources["admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"] = kmock.ResourceInfo(
        kind="MutatingWebhookConfiguration", namespaced=False, verbs=["get", "list", "create", "patch"]
    )
    await objects.create(webhook)
    port = free_port()
    child = await meshd(
        "injector", "--port", str(port), "--tls-dns-name", "127.0.0.1",
        "--webhook-name", "canaryctl-injector", "--ca-namespace", "canaryctl-system",
        "--sidecar-image", "envoy:test", "--init-image", "init:test",
        "--server", emulator_url(emulator),
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while (secret := await objects.get("v1", "Secret", "canaryctl-system", "canaryctl-mesh-ca")) is None:
        assert time.monotonic() < deadline and child.proc.returncode is None, child.log.read_text()
        await asyncio.sleep(0.1)
    ca_pem = base64.b64decode(secret["data"]["ca.crt"])
    trusted = ssl.create_default_context(cadata=ca_pem.decode())
    url = f"https://127.0.0.1:{port}"
    async with httpx.AsyncClient(verify=trusted, trust_env=False, timeout=10) as http:
        await wait_healthy(http, url, child)
        configured = await objects.get(
            "admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", "", "canaryctl-injector"
        )
        assert configured is not None
        assert configured["webhooks"][0]["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]

        bad = review("default")
        pod = bad["request"]["object"]
        pod["metadata"]["annotations"] = {
            "mesh.canaryctl.dev/inject": "true",
            "mesh.canaryctl.dev/exclude-outbound-ports": "5432,postgres",
        }
        pod["metadata"]["labels"] = {"filler": "x" * 63}
        pod["spec"]["containers"][0]["env"] = [{"name": f"V{i}", "value": "x" * 1000} for i in range(2900)]
        answer = await http.post(f"{url}/mutate", json=bad)
        assert answer.status_code == 200 and len(answer.request.content) > 2.8 * 1024 * 1024
        response = answer.json()["response"]
        assert response["allowed"] and "exclude-outbound-ports" in response["warnings"][0]
        added = {op["path"]: op["value"] for op in json.loads(base64.b64decode(response["patch"]))}
        _, proxy = added["/spec/initContainers"]  # meshed all the same, the proxy a native sidecar
        assert proxy["name"] == PROXY_CONTAINER
        token = added["/spec/volumes"][0]["projected"]["sources"][0]["serviceAccountToken"]
        assert token["audience"] == "canaryctl-mesh"

        assert (await http.post(f"{url}/mutate", json=["not", "a", "review"])).status_code == 400
        assert (await http.post(f"{url}/mutate", content=b"{")).status_code == 400
    assert await child.terminate() == 0, child.log.read_text()
