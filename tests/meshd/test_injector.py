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
        "--xds-host", "mesh.example", "--server", emulator_url(emulator),
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
