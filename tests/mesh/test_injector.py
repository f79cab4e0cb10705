"""Sidecar injector: AdmissionReview in, JSONPatch out; idempotent; served over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
from collections.abc import Mapping
from typing import Any

import httpx
from aiohttp import web

from canaryctl.mesh import injector
from canaryctl.mesh.injector import InjectorSettings, admission_review

SETTINGS = InjectorSettings(proxy_image="example.test/envoy:1.40.0", exclude_inbound_ports=(9999,))


def _pod(annotations: dict[str, str] | None = None, init: bool = False) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "shop"},
        "spec": {"containers": [{"name": "app", "image": "web:1", "ports": [{"containerPort": 8080}]}]},
    }
    if annotations is not None:
        pod["metadata"]["annotations"] = annotations
    if init:
        pod["spec"]["initContainers"] = [{"name": "migrate", "image": "web:1"}]
    return pod


def _review(pod: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "1234",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE",
            "namespace": "shop",
            "object": pod,
        },
    }


def _apply(doc: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply the JSONPatch subset the injector emits ("add" to objects and arrays), as the apiserver would."""
    doc = copy.deepcopy(doc)
    for op in ops:
        assert op["op"] == "add"
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        target: Any = doc
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target.append(op["value"]) if last == "-" else target.insert(int(last), op["value"])
        else:
            assert last not in target, f"add over existing {op['path']}"
            target[last] = op["value"]
    return doc


def _patch(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    body = response["response"]
    assert body["allowed"] is True and body["uid"] == "1234"
    return json.loads(base64.b64decode(body["patch"])) if "patch" in body else []


def test_annotated_pod_is_injected_once() -> None:
    pod = _pod({"mesh.canaryctl.dev/inject": "true"}, init=True)
    ops = _patch(admission_review(_review(pod), SETTINGS))
    injected = _apply(pod, ops)
    names = [c["name"] for c in injected["spec"]["containers"]]
    assert names == ["app", injector.PROXY_CONTAINER]
    assert [c["name"] for c in injected["spec"]["initContainers"]] == ["migrate", injector.INIT_CONTAINER]
    proxy = injected["spec"]["containers"][1]
    assert proxy["image"] == "example.test/envoy:1.40.0"
    assert proxy["securityContext"]["runAsUser"] == SETTINGS.proxy_uid
    bootstrap = json.loads(proxy["args"][proxy["args"].index("--config-yaml") + 1])
    assert bootstrap["dynamic_resources"]["ads_config"]["set_node_on_first_message_only"] is True
    script = injected["spec"]["initContainers"][1]["command"][2]
    assert "--dport 9999 -j RETURN" in script
    assert f"--uid-owner {SETTINGS.proxy_uid} -j RETURN" in script
    assert "REDIRECT --to-ports 15006" in script and "REDIRECT --to-ports 15001" in script
    assert injected["metadata"]["annotations"][injector.STATUS_ANNOTATION] == "injected"

    # The webhook may run again on the mutated pod (reinvocation, retries): nothing changes.
    assert _patch(admission_review(_review(injected), SETTINGS)) == []


def test_namespace_label_opts_in_and_annotation_opts_out() -> None:
    enabled = {injector.INJECT_LABEL: "enabled"}
    ops = _patch(admission_review(_review(_pod()), SETTINGS, namespace_labels=enabled))
    injected = _apply(_pod(), ops)  # no annotations and no initContainers before: both created
    assert injected["spec"]["initContainers"][0]["name"] == injector.INIT_CONTAINER
    assert injected["metadata"]["annotations"]["prometheus.io/port"] == "15090"

    opted_out = _pod({"mesh.canaryctl.dev/inject": "false"})
    assert _patch(admission_review(_review(opted_out), SETTINGS, namespace_labels=enabled)) == []
    assert _patch(admission_review(_review(_pod()), SETTINGS, namespace_labels={})) == []
    host_network = _pod()
    host_network["spec"]["hostNetwork"] = True
    assert _patch(admission_review(_review(host_network), SETTINGS, namespace_labels=enabled)) == []


def test_pod_annotations_exclude_ports() -> None:
    pod = _pod({"mesh.canaryctl.dev/inject": "true", injector.EXCLUDE_OUTBOUND_ANNOTATION: "5432, 6379"})
    injected = _apply(pod, _patch(admission_review(_review(pod), SETTINGS)))
    script = injected["spec"]["initContainers"][0]["command"][2]
    assert "CANARYCTL_OUTPUT -p tcp --dport 5432 -j RETURN" in script
    assert "CANARYCTL_OUTPUT -p tcp --dport 6379 -j RETURN" in script


def test_http_handler_serves_admission_reviews() -> None:
    async def labels(namespace: str) -> Mapping[str, str]:
        return {injector.INJECT_LABEL: "enabled"} if namespace == "shop" else {}

    async def run() -> None:
        runner = web.AppRunner(injector.make_app(SETTINGS, labels))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            port = runner.addresses[0][1]
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                response = await client.post("/mutate", json=_review(_pod()))
                assert response.status_code == 200
                assert [op["path"] for op in _patch(response.json())][:2] == [
                    "/spec/initContainers",
                    "/spec/containers/-",
                ]
                assert (await client.post("/mutate", content=b"{not json")).status_code == 400
                assert (await client.get("/healthz")).text == "ok"
        finally:
            await runner.cleanup()

    asyncio.run(run())
