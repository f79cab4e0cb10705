"""Sidecar injector: a mutating admission webhook adding the Envoy sidecar and the iptables init container.

The core is `admission_review(review) -> review`, a pure function building a JSONPatch; `make_app`
wraps it as an aiohttp handler. Pods opt in through the namespace label or the pod annotation
(the annotation wins both ways); a pod already carrying the proxy is left unchanged, so re-running
the webhook (retries, reinvocationPolicy: IfNeeded) is harmless.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from canaryctl.mesh import config
from canaryctl.mesh.identity import TOKEN_AUDIENCE

log = logging.getLogger(__name__)

INJECT_LABEL = "mesh.canaryctl.dev/inject"
"""Namespace label; value "enabled" meshes every pod in the namespace."""
INJECT_ANNOTATION = "mesh.canaryctl.dev/inject"
"""Pod annotation; "true" meshes the pod, "false" opts it out even in a meshed namespace."""
STATUS_ANNOTATION = "mesh.canaryctl.dev/status"
EXCLUDE_INBOUND_ANNOTATION = "mesh.canaryctl.dev/exclude-inbound-ports"
EXCLUDE_OUTBOUND_ANNOTATION = "mesh.canaryctl.dev/exclude-outbound-ports"
PROXY_CONTAINER = "canaryctl-proxy"
INIT_CONTAINER = "canaryctl-init"
TOKEN_VOLUME = "canaryctl-xds-token"
SIDECAR_TOKEN_PATH = "/var/run/secrets/canaryctl/xds/token"
"""Where the proxy finds the projected ServiceAccount token it authenticates to the control plane with."""


class ContainerResources(BaseModel):
    model_config = ConfigDict(frozen=True)

    requests: dict[str, str] = Field(default_factory=lambda: {"cpu": "50m", "memory": "64Mi"})
    limits: dict[str, str] = Field(default_factory=lambda: {"cpu": "1", "memory": "256Mi"})


class InjectorSettings(BaseModel):
    """Everything the injected containers depend on, passed in as one value (Helm values map onto it)."""

    model_config = ConfigDict(frozen=True)

    proxy_image: str = "docker.io/envoyproxy/envoy:v1.40.0"
    init_image: str = "docker.io/istio/proxyv2:1.24.2"
    """Any image with sh and iptables."""
    xds_host: str = "canaryctl-mesh.canaryctl-system.svc"
    xds_port: int = 15010
    xds_auth: config.XdsAuth | None = None
    """TLS trust and token path for an authenticating control plane; None = plaintext, no token."""
    token_audience: str = TOKEN_AUDIENCE
    token_expiration_seconds: int = Field(default=3600, ge=600)
    proxy_uid: int = 1337
    ports: config.SidecarPorts = Field(default_factory=config.SidecarPorts)
    proxy_resources: ContainerResources = Field(default_factory=ContainerResources)
    init_resources: ContainerResources = Field(
        default_factory=lambda: ContainerResources(
            requests={"cpu": "10m", "memory": "10Mi"}, limits={"cpu": "100m", "memory": "50Mi"}
        )
    )
    exclude_inbound_ports: tuple[int, ...] = ()
    exclude_outbound_ports: tuple[int, ...] = ()
    log_level: str = "warning"


def _ports(value: str | None) -> list[int]:
    return [int(p) for p in (value or "").replace(" ", "").split(",") if p]


def checked_annotations(annotations: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The annotations with unusable port lists dropped, and a warning for each one dropped.

    A typo in an annotation must not leave the pod unmeshed (or its init container failing): the pod
    is meshed without that exclusion and the warning reaches whoever created it (kubectl prints it).
    """
    kept, warnings = dict(annotations), []
    for key in (EXCLUDE_INBOUND_ANNOTATION, EXCLUDE_OUTBOUND_ANNOTATION):
        if key not in kept:
            continue
        try:
            ports = _ports(str(kept[key]))
        except ValueError:
            ports = [0]
        if not all(1 <= port <= 65535 for port in ports):
            warnings.append(
                f"annotation {key}={kept.pop(key)!r} ignored: expected comma-separated ports 1-65535"
            )
    return kept, warnings


def iptables_script(settings: InjectorSettings, annotations: Mapping[str, str]) -> str:
    """Redirect inbound TCP to the inbound listener and outbound TCP (not the proxy's own) to outbound."""
    ports = settings.ports
    own = [ports.admin, ports.outbound, ports.inbound, ports.prometheus]
    inbound_skip = [
        *own,
        *settings.exclude_inbound_ports,
        *_ports(annotations.get(EXCLUDE_INBOUND_ANNOTATION)),
    ]
    outbound_skip = [*settings.exclude_outbound_ports, *_ports(annotations.get(EXCLUDE_OUTBOUND_ANNOTATION))]
    nat = "iptables -t nat"
    lines = [
        "set -e",
        f"{nat} -N CANARYCTL_INBOUND 2>/dev/null || {nat} -F CANARYCTL_INBOUND",
        f"{nat} -N CANARYCTL_OUTPUT 2>/dev/null || {nat} -F CANARYCTL_OUTPUT",
        *(
            f"{nat} -C {chain} -p tcp -j {target} 2>/dev/null || {nat} -A {chain} -p tcp -j {target}"
            for chain, target in (("PREROUTING", "CANARYCTL_INBOUND"), ("OUTPUT", "CANARYCTL_OUTPUT"))
        ),
        *(f"{nat} -A CANARYCTL_INBOUND -p tcp --dport {p} -j RETURN" for p in sorted(set(inbound_skip))),
        f"{nat} -A CANARYCTL_INBOUND -p tcp -j REDIRECT --to-ports {ports.inbound}",
        f"{nat} -A CANARYCTL_OUTPUT -m owner --uid-owner {settings.proxy_uid} -j RETURN",
        f"{nat} -A CANARYCTL_OUTPUT -d 127.0.0.1/32 -j RETURN",
        *(f"{nat} -A CANARYCTL_OUTPUT -p tcp --dport {p} -j RETURN" for p in sorted(set(outbound_skip))),
        f"{nat} -A CANARYCTL_OUTPUT -p tcp -j REDIRECT --to-ports {ports.outbound}",
    ]
    return "\n".join(lines)


def init_container(settings: InjectorSettings, annotations: Mapping[str, str]) -> dict[str, Any]:
    return {
        "name": INIT_CONTAINER,
        "image": settings.init_image,
        "command": ["sh", "-c", iptables_script(settings, annotations)],
        "resources": settings.init_resources.model_dump(),
        "securityContext": {
            "runAsUser": 0,
            "runAsNonRoot": False,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
        },
    }


def token_volume(settings: InjectorSettings) -> dict[str, Any]:
    """A projected ServiceAccount token for the control plane's audience only, rotated by the kubelet."""
    token = {
        "audience": settings.token_audience,
        "expirationSeconds": settings.token_expiration_seconds,
        "path": SIDECAR_TOKEN_PATH.rsplit("/", 1)[1],
    }
    return {"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": token}]}}


def proxy_container(settings: InjectorSettings) -> dict[str, Any]:
    bootstrap = config.ads_bootstrap(
        "sidecar",
        settings.xds_host,
        settings.xds_port,
        admin_port=settings.ports.admin,
        auth=settings.xds_auth,
    )
    mounts = [{"name": TOKEN_VOLUME, "mountPath": SIDECAR_TOKEN_PATH.rsplit("/", 1)[0], "readOnly": True}]
    return {
        "name": PROXY_CONTAINER,
        "image": settings.proxy_image,
        "command": ["envoy"],
        "args": [
            "--config-yaml",
            json.dumps(bootstrap, separators=(",", ":")),
            "--service-node",
            "$(POD_NAME).$(POD_NAMESPACE)",
            "--service-cluster",
            "$(POD_NAMESPACE)",
            "--disable-hot-restart",
            "--file-flush-interval-msec",
            "1000",
            "--log-level",
            settings.log_level,
        ],
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ],
        "ports": [{"name": "http-envoy-prom", "containerPort": settings.ports.prometheus, "protocol": "TCP"}],
        "resources": settings.proxy_resources.model_dump(),
        **({"volumeMounts": mounts} if settings.xds_auth else {}),
        "securityContext": {
            "runAsUser": settings.proxy_uid,
            "runAsGroup": settings.proxy_uid,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }


def wants_injection(pod: Mapping[str, Any], namespace_labels: Mapping[str, str] | None) -> bool:
    metadata = pod.get("metadata") or {}
    annotation = (metadata.get("annotations") or {}).get(INJECT_ANNOTATION)
    if annotation is not None:
        return str(annotation).lower() == "true"
    if (pod.get("spec") or {}).get("hostNetwork"):
        return False
    return (namespace_labels or {}).get(INJECT_LABEL) == "enabled"


def already_injected(pod: Mapping[str, Any]) -> bool:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    containers = (pod.get("spec") or {}).get("containers") or []
    return STATUS_ANNOTATION in annotations or any(c.get("name") == PROXY_CONTAINER for c in containers)


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def pod_patch(
    pod: Mapping[str, Any], settings: InjectorSettings, namespace_labels: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """JSONPatch ops meshing `pod`; empty when it opted out or already carries the proxy."""
    if already_injected(pod) or not wants_injection(pod, namespace_labels):
        return []
    spec = pod.get("spec") or {}
    metadata = pod.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    ops: list[dict[str, Any]] = []
    init = init_container(settings, annotations)
    if spec.get("initContainers"):
        ops.append({"op": "add", "path": "/spec/initContainers/-", "value": init})
    else:
        ops.append({"op": "add", "path": "/spec/initContainers", "value": [init]})
    ops.append({"op": "add", "path": "/spec/containers/-", "value": proxy_container(settings)})
    if settings.xds_auth:
        volume = token_volume(settings)
        ops.append(
            {"op": "add", "path": "/spec/volumes/-", "value": volume}
            if spec.get("volumes")
            else {"op": "add", "path": "/spec/volumes", "value": [volume]}
        )
    added = {
        STATUS_ANNOTATION: "injected",
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(settings.ports.prometheus),
        "prometheus.io/path": "/stats/prometheus",
    }
    if "annotations" not in metadata or metadata["annotations"] is None:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": added})
    else:
        ops += [
            {"op": "add", "path": f"/metadata/annotations/{_escape(k)}", "value": v}
            for k, v in added.items()
            if k not in annotations
        ]
    return ops


def admission_review(
    review: Mapping[str, Any],
    settings: InjectorSettings | None = None,
    namespace_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """AdmissionReview (admission.k8s.io/v1) in, AdmissionReview with a JSONPatch (or none) out."""
    request = review.get("request") or {}
    response: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": True}
    pod = request.get("object") or {}
    if request.get("kind", {}).get("kind", "Pod") == "Pod" and request.get("operation", "CREATE") == "CREATE":
        metadata = pod.get("metadata") or {}
        annotations, warnings = checked_annotations(metadata.get("annotations") or {})
        if warnings:
            pod = {**pod, "metadata": {**metadata, "annotations": annotations}}
            response["warnings"] = warnings
        ops = pod_patch(pod, settings or InjectorSettings(), namespace_labels)
        if ops:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
    return {
        "apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
        "kind": "AdmissionReview",
        "response": response,
    }


NamespaceLabels = Callable[[str], Awaitable[Mapping[str, str]]]


MAX_REVIEW_BYTES = 8 * 1024 * 1024
"""The API server accepts objects of up to 3 MiB; a review carries the object (and for updates the old
one too) plus a small envelope, and JSON escaping can grow it."""


def make_app(settings: InjectorSettings, namespace_labels: NamespaceLabels | None = None) -> web.Application:
    """POST /mutate; `namespace_labels` looks up the pod's namespace (the review does not carry it).

    A body that is not an AdmissionReview object gets a 400; any other failure still answers
    `allowed` (the pod starts unmeshed) with a warning naming the error, never a 500.
    """

    async def mutate(request: web.Request) -> web.Response:
        try:
            review = await request.json()
        except ValueError:
            return web.json_response({"error": "body is not JSON"}, status=400)
        if not isinstance(review, dict) or not isinstance(review.get("request") or {}, dict):
            return web.json_response({"error": "body is not an AdmissionReview object"}, status=400)
        try:
            namespace = str((review.get("request") or {}).get("namespace", ""))
            labels = await namespace_labels(namespace) if namespace_labels else None
            return web.json_response(admission_review(review, settings, labels))
        except Exception as error:  # an injector bug must not block or silently drop the pod
            log.exception("admission review failed")
            response = {
                "uid": str((review.get("request") or {}).get("uid", "")),
                "allowed": True,
                "warnings": [
                    f"canaryctl mesh injector: pod not meshed ({type(error).__name__}: {error})"[:512]
                ],
            }
            return web.json_response(
                {"apiVersion": review.get("apiVersion", "admission.k8s.io/v1"), "kind": "AdmissionReview",
                 "response": response}
            )  # fmt: skip

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(client_max_size=MAX_REVIEW_BYTES)
    app.router.add_post("/mutate", mutate)
    app.router.add_get("/healthz", healthz)
    return app
