"""Sidecar injector: AdmissionReview in, JSONPatch out; idempotent; served over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping
from typing import Any

import httpx
import jsonpatch
import kubernetes_validate
import pytest
from aiohttp import web

from canaryctl_mesh import config, injector, telemetry
from canaryctl_mesh.injector import InjectorSettings, admission_review

SETTINGS = InjectorSettings(proxy_image="example.test/envoy:1.40.0", exclude_inbound_ports=(9999,))
KUBERNETES_VERSION = "1.33"


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
    """Apply the JSONPatch as the API server would (RFC 6902, not our own reading of it)."""
    patched: dict[str, Any] = jsonpatch.apply_patch(doc, ops)
    return patched


def _validate(pod: dict[str, Any]) -> None:
    """The mutated pod against Kubernetes' own OpenAPI schema (native sidecars need 1.29+)."""
    try:
        kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"injected pod is invalid at {list(error.path)}: {error.message}")


def _patch(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    body = response["response"]
    assert body["allowed"] is True and body["uid"] == "1234"
    return json.loads(base64.b64decode(body["patch"])) if "patch" in body else []


def _proxy(pod: dict[str, Any]) -> dict[str, Any]:
    proxy: dict[str, Any] = next(
        c for c in pod["spec"]["initContainers"] if c["name"] == injector.PROXY_CONTAINER
    )
    return proxy


def _bootstrap(proxy: dict[str, Any]) -> dict[str, Any]:
    bootstrap: dict[str, Any] = json.loads(proxy["args"][proxy["args"].index("--config-yaml") + 1])
    return bootstrap


def test_annotated_pod_gets_a_native_sidecar_once() -> None:
    pod = _pod({"mesh.canaryctl.dev/inject": "true"}, init=True)
    ops = _patch(admission_review(_review(pod), SETTINGS))
    injected = _apply(pod, ops)
    _validate(injected)
    assert [c["name"] for c in injected["spec"]["containers"]] == ["app"]
    # The pod's own init containers run first, then the capture, then the proxy as a native sidecar.
    assert [c["name"] for c in injected["spec"]["initContainers"]] == [
        "migrate",
        injector.INIT_CONTAINER,
        injector.PROXY_CONTAINER,
    ]
    proxy = _proxy(injected)
    assert proxy["restartPolicy"] == "Always", "a native sidecar: started before and stopped after the app"
    startup = proxy["startupProbe"]["httpGet"]
    assert (startup["port"], startup["path"]) == (SETTINGS.ports.health, config.READY_PATH)
    assert proxy["image"] == "example.test/envoy:1.40.0"
    assert proxy["securityContext"]["runAsUser"] == SETTINGS.proxy_uid
    bootstrap = _bootstrap(proxy)
    assert bootstrap["dynamic_resources"]["ads_config"]["set_node_on_first_message_only"] is True
    (health,) = bootstrap["static_resources"]["listeners"]
    assert health["address"]["socket_address"]["port_value"] == SETTINGS.ports.health
    script = injected["spec"]["initContainers"][1]["command"][2]
    assert "--dport 9999 -j RETURN" in script
    assert f"CANARYCTL_INBOUND -p tcp --dport {SETTINGS.ports.health} -j RETURN" in script
    assert f"--uid-owner {SETTINGS.proxy_uid} -j RETURN" in script
    assert "REDIRECT --to-ports 15006" in script and "REDIRECT --to-ports 15001" in script
    assert injected["metadata"]["annotations"][injector.STATUS_ANNOTATION] == "injected"

    # The webhook may run again on the mutated pod (reinvocation, retries): nothing changes.
    assert _patch(admission_review(_review(injected), SETTINGS)) == []


def test_the_control_plane_is_found_by_its_fully_qualified_name_or_address() -> None:
    def xds_address(pod: dict[str, Any], xds_ip: str | None) -> str:
        injected = _apply(pod, _patch(admission_review(_review(pod), SETTINGS, xds_ip=xds_ip)))
        (cluster,) = _bootstrap(_proxy(injected))["static_resources"]["clusters"][:1]
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        address: str = endpoint["address"]["socket_address"]["address"]
        return address

    pod = _pod({"mesh.canaryctl.dev/inject": "true"})
    assert xds_address(pod, None) == "canaryctl-mesh.canaryctl-system.svc.cluster.local"
    # A pod on the node's resolver cannot resolve cluster names: it gets the address the injector resolved.
    pod["spec"]["dnsPolicy"] = "Default"
    assert xds_address(pod, "10.96.0.15") == "10.96.0.15"
    review = admission_review(_review(pod), SETTINGS, xds_ip=None)
    assert "dnsPolicy 'Default'" in review["response"]["warnings"][0]
    assert "initContainers" not in _apply(pod, _patch(review))["spec"]


def test_pod_security_levels_that_forbid_net_admin_get_a_warning_not_a_broken_pod() -> None:
    pod = _pod({"mesh.canaryctl.dev/inject": "true"})
    for level in ("baseline", "restricted"):
        labels = {injector.POD_SECURITY_ENFORCE: level, injector.INJECT_LABEL: "enabled"}
        response = admission_review(_review(pod), SETTINGS, namespace_labels=labels)
        (warning,) = response["response"]["warnings"]
        assert level in warning and "NET_ADMIN" in warning
        refused = _apply(pod, _patch(response))
        assert "initContainers" not in refused["spec"], "no container the namespace would reject"
        assert refused["metadata"]["annotations"][injector.STATUS_ANNOTATION].startswith("not meshed")
    privileged = {injector.POD_SECURITY_ENFORCE: "privileged"}
    assert _patch(admission_review(_review(pod), SETTINGS, namespace_labels=privileged))


def test_the_pod_label_opts_in_outside_labelled_namespaces() -> None:
    """The label is what the webhook's objectSelector sees for pods in unlabelled namespaces."""
    pod = _pod()
    pod["metadata"]["labels"] = {injector.INJECT_LABEL: "true"}
    assert _patch(admission_review(_review(pod), SETTINGS, namespace_labels={}))
    pod["metadata"]["labels"] = {injector.INJECT_LABEL: "false"}
    enabled = {injector.INJECT_LABEL: "enabled"}
    assert _patch(admission_review(_review(pod), SETTINGS, namespace_labels=enabled)) == []


def test_app_probes_are_rewritten_to_the_sidecar_health_listener() -> None:
    pod = _pod({"mesh.canaryctl.dev/inject": "true"})
    app = pod["spec"]["containers"][0]
    app["ports"] = [{"name": "http", "containerPort": 8080}]
    app["livenessProbe"] = {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 7}
    app["readinessProbe"] = {"tcpSocket": {"port": 5432}, "timeoutSeconds": 2}
    app["startupProbe"] = {"exec": {"command": ["true"]}}
    injected = _apply(pod, _patch(admission_review(_review(pod), SETTINGS)))
    _validate(injected)
    probed = injected["spec"]["containers"][0]
    for kind, path in (
        ("livenessProbe", "/app-health/app/liveness"),
        ("readinessProbe", "/app-health/app/readiness"),
    ):
        assert probed[kind]["httpGet"] == {"path": path, "port": SETTINGS.ports.health, "scheme": "HTTP"}
    assert probed["livenessProbe"]["periodSeconds"] == 7 and probed["readinessProbe"]["timeoutSeconds"] == 2
    assert probed["startupProbe"] == {"exec": {"command": ["true"]}}, "exec probes do not pass the proxy"
    static = _bootstrap(_proxy(injected))["static_resources"]
    clusters = {c["name"]: c for c in static["clusters"]}
    assert clusters["probe_http_8080"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"] == {
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 8080}}
    }
    assert "tcp_health_check" in clusters["probe_tcp_5432"]["health_checks"][0]


def test_workload_names_label_the_server_side_metrics() -> None:
    pod = _pod({"mesh.canaryctl.dev/inject": "true"})
    pod["metadata"] |= {
        "generateName": "podinfo-primary-7d9f8b5c4-",
        "labels": {"pod-template-hash": "7d9f8b5c4"},
        "ownerReferences": [{"kind": "ReplicaSet", "name": "podinfo-primary-7d9f8b5c4", "controller": True}],
    }
    assert injector.workload_name(pod) == "podinfo-primary"
    env = {e["name"]: e for e in _proxy(_apply(pod, _patch(admission_review(_review(pod), SETTINGS))))["env"]}
    assert env[telemetry.WORKLOAD_ENV]["value"] == "podinfo-primary"
    assert env[telemetry.WORKLOAD_NAMESPACE_ENV]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    stateful = {"metadata": {"name": "db-0", "ownerReferences": [{"kind": "StatefulSet", "name": "db"}]}}
    assert injector.workload_name(stateful) == "db"
    assert injector.workload_name({"metadata": {"name": "lonely"}}) == "lonely"


def test_namespace_label_opts_in_and_annotation_opts_out() -> None:
    enabled = {injector.INJECT_LABEL: "enabled"}
    ops = _patch(admission_review(_review(_pod()), SETTINGS, namespace_labels=enabled))
    injected = _apply(_pod(), ops)  # no annotations and no initContainers before: both created
    _validate(injected)
    assert injected["spec"]["initContainers"][0]["name"] == injector.INIT_CONTAINER
    assert injected["metadata"]["annotations"]["prometheus.io/port"] == "15090"

    opted_out = _pod({"mesh.canaryctl.dev/inject": "false"})
    assert _patch(admission_review(_review(opted_out), SETTINGS, namespace_labels=enabled)) == []
    assert _patch(admission_review(_review(_pod()), SETTINGS, namespace_labels={})) == []
    host_network = _pod({"mesh.canaryctl.dev/inject": "true"})
    host_network["spec"]["hostNetwork"] = True  # its rules would capture the node's own traffic
    assert _patch(admission_review(_review(host_network), SETTINGS, namespace_labels=enabled)) == []


def test_pod_annotations_exclude_ports() -> None:
    pod = _pod({"mesh.canaryctl.dev/inject": "true", injector.EXCLUDE_OUTBOUND_ANNOTATION: "5432, 6379"})
    injected = _apply(pod, _patch(admission_review(_review(pod), SETTINGS)))
    script = injected["spec"]["initContainers"][0]["command"][2]
    assert "CANARYCTL_OUTPUT -p tcp --dport 5432 -j RETURN" in script
    assert "CANARYCTL_OUTPUT -p tcp --dport 6379 -j RETURN" in script


def test_the_pod_tells_callers_which_inbound_ports_it_does_not_capture() -> None:
    """Callers' sidecars wrap pass-through traffic in mTLS except on these ports, which reach the app
    unproxied: the sidecar's own, the cluster-wide exclusions and the pod's."""
    settings = SETTINGS.model_copy(update={"exclude_inbound_ports": (22,)})
    pod = _pod({"mesh.canaryctl.dev/inject": "true", injector.EXCLUDE_INBOUND_ANNOTATION: "9200"})
    injected = _apply(pod, _patch(admission_review(_review(pod), settings)))
    annotation = injected["metadata"]["annotations"][config.UNCAPTURED_INBOUND_ANNOTATION]
    assert annotation == "22,9200,15000,15001,15006,15021,15090"
    script = injected["spec"]["initContainers"][0]["command"][2]
    for port in annotation.split(","):
        assert f"CANARYCTL_INBOUND -p tcp --dport {port} -j RETURN" in script


def test_bad_port_annotations_and_probes_are_warnings_not_errors() -> None:
    pod = _pod({"mesh.canaryctl.dev/inject": "true", injector.EXCLUDE_OUTBOUND_ANNOTATION: "5432,pg,70000"})
    pod["spec"]["containers"][0]["livenessProbe"] = {"tcpSocket": {"port": 8080}, "timeoutSeconds": -1}
    response = admission_review(_review(pod), SETTINGS)["response"]
    (warning,) = response["warnings"]
    assert "'pg', '70000'" in warning and injector.EXCLUDE_OUTBOUND_ANNOTATION in warning
    injected = _apply(pod, _patch({"response": response}))
    script = injected["spec"]["initContainers"][0]["command"][2]
    assert "--dport 5432 -j RETURN" in script and "70000" not in script
    # The API server rejects the invalid probe itself; the injector leaves it as it was.
    assert injected["spec"]["containers"][0]["livenessProbe"]["tcpSocket"] == {"port": 8080}


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
                assert [op["path"] for op in _patch(response.json())][:1] == ["/spec/initContainers"]
                assert (await client.post("/mutate", content=b"{not json")).status_code == 400
                assert (await client.get("/healthz")).text == "ok"
        finally:
            await runner.cleanup()

    asyncio.run(run())
