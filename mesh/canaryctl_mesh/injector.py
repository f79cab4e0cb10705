"""Sidecar injector: a mutating admission webhook adding the Envoy sidecar and the iptables init container.

The core is `admission_review(review) -> review`, a pure function building a JSONPatch; `make_app`
wraps it as an aiohttp handler. Pods opt in through the namespace label or the pod's label or
annotation (the pod wins both ways); a pod already carrying the proxy is left unchanged, so
re-running the webhook (retries, reinvocationPolicy: IfNeeded) is harmless.

The proxy is a native sidecar (an init container with ``restartPolicy: Always``, Kubernetes 1.29+):
the kubelet starts the app containers only once the proxy's startup probe says it has its config,
and stops the proxy only after they exited, so the app never runs without its proxy. The app's
httpGet and tcpSocket probes are rewritten to the proxy's static health listener, which checks the
app on 127.0.0.1 (see `canaryctl_mesh.config.AppProbe`): captured probes would reach Envoy, not
the app (a tcpSocket probe would always pass). Pods in namespaces whose Pod Security level forbids
the init container's NET_ADMIN are left unmeshed with a warning saying why, never refused.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from canaryctl_mesh import config, telemetry
from canaryctl_mesh.identity import TOKEN_AUDIENCE

log = logging.getLogger(__name__)

INJECT_LABEL = "mesh.canaryctl.dev/inject"
"""Namespace label ("enabled" meshes every pod in the namespace) and pod label ("true"/"false"); the
pod label is what the webhook's objectSelector sees, so it also works outside labelled namespaces."""
INJECT_ANNOTATION = "mesh.canaryctl.dev/inject"
"""Pod annotation; "true" meshes the pod, "false" opts it out even in a meshed namespace."""
STATUS_ANNOTATION = config.STATUS_ANNOTATION
EXCLUDE_INBOUND_ANNOTATION = "mesh.canaryctl.dev/exclude-inbound-ports"
EXCLUDE_OUTBOUND_ANNOTATION = "mesh.canaryctl.dev/exclude-outbound-ports"
PROXY_CONTAINER = "canaryctl-proxy"
INIT_CONTAINER = "canaryctl-init"
POD_SECURITY_ENFORCE = "pod-security.kubernetes.io/enforce"
NET_ADMIN_FORBIDDEN = ("baseline", "restricted")
"""Pod Security levels that reject the init container's NET_ADMIN and NET_RAW capabilities."""
CLUSTER_DNS_POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet")
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
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
    xds_host: str = "canaryctl-mesh.canaryctl-system.svc.cluster.local"
    """The control plane's fully qualified name: no search domain is needed to resolve it."""
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
    startup_seconds: int = Field(default=120, ge=1, le=3600)
    """How long the app waits for the proxy's first config before the kubelet restarts the proxy."""


def _ports(value: str | None) -> list[int]:
    return [int(p) for p in (value or "").replace(" ", "").split(",") if p]


def _valid_port_annotations(annotations: Mapping[str, str], warnings: list[str]) -> dict[str, str]:
    """The pod's annotations with only valid ports in its exclude-port lists; the rest is warned
    about and ignored, so a typo never fails the pod's admission."""
    valid = dict(annotations)
    for key in (EXCLUDE_INBOUND_ANNOTATION, EXCLUDE_OUTBOUND_ANNOTATION):
        if key not in annotations:
            continue
        tokens = [t for t in str(annotations[key]).replace(" ", "").split(",") if t]
        good = [t for t in tokens if t.isdigit() and 1 <= int(t) <= 65535]
        if len(good) != len(tokens):
            bad = ", ".join(repr(t) for t in tokens if t not in good)
            warnings.append(f"{key}: {bad} not a port (1-65535); ignored")
        valid[key] = ",".join(good)
    return valid


def uncaptured_inbound_ports(settings: InjectorSettings, annotations: Mapping[str, str]) -> list[int]:
    """Ports the inbound redirect leaves alone: the sidecar's own and the excluded ones."""
    ports = settings.ports
    skipped = [
        *ports.own(),
        *settings.exclude_inbound_ports,
        *_ports(annotations.get(EXCLUDE_INBOUND_ANNOTATION)),
    ]
    return sorted(set(skipped))


def iptables_script(settings: InjectorSettings, annotations: Mapping[str, str]) -> str:
    """Redirect inbound TCP to the inbound listener and outbound TCP (not the proxy's own) to outbound.

    IPv4 only: IPv6 traffic is not captured (it bypasses the proxy).
    """
    ports = settings.ports
    inbound_skip = uncaptured_inbound_ports(settings, annotations)
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
        *(f"{nat} -A CANARYCTL_INBOUND -p tcp --dport {p} -j RETURN" for p in inbound_skip),
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


def workload_name(pod: Mapping[str, Any]) -> str:
    """The pod's workload as Istio names it: the Deployment behind its ReplicaSet, else the owner,
    else the pod's generateName or name. It labels the server-side golden metrics."""
    metadata = pod.get("metadata") or {}
    owners = [o for o in metadata.get("ownerReferences") or [] if isinstance(o, Mapping)]
    owner = next((o for o in owners if o.get("controller")), owners[0] if owners else None)
    if owner and owner.get("name"):
        name = str(owner["name"])
        template_hash = (metadata.get("labels") or {}).get("pod-template-hash")
        if owner.get("kind") == "ReplicaSet" and template_hash and name.endswith(f"-{template_hash}"):
            return name[: -len(template_hash) - 1]
        return name
    generated = str(metadata.get("generateName") or "").rstrip("-")
    return generated or str(metadata.get("name") or "")


def _probe_port(container: Mapping[str, Any], port: Any) -> int | None:
    if isinstance(port, int):
        return port
    named = {p.get("name"): p.get("containerPort") for p in container.get("ports") or []}
    found = named.get(port) if isinstance(port, str) else None
    if isinstance(found, int):
        return found
    return int(port) if isinstance(port, str) and port.isdigit() else None


def rewrite_probe(
    container: Mapping[str, Any], kind: str, settings: InjectorSettings
) -> tuple[dict[str, Any], config.AppProbe] | None:
    """The probe pointed at the proxy's health listener and what that listener must check; None for
    probes left alone (exec, grpc, or a port that does not resolve)."""
    probe = container.get(kind)
    if not isinstance(probe, Mapping):
        return None
    try:
        return _rewrite_probe(container, kind, probe, settings)
    except (ValueError, TypeError):  # an invalid probe is the API server's to reject, not ours
        return None


def _rewrite_probe(
    container: Mapping[str, Any], kind: str, probe: Mapping[str, Any], settings: InjectorSettings
) -> tuple[dict[str, Any], config.AppProbe] | None:
    action = probe.get("httpGet") or probe.get("tcpSocket")
    if not isinstance(action, Mapping):
        return None
    port = _probe_port(container, action.get("port"))
    if port is None or not 1 <= port <= 65535:
        return None
    path = f"/app-health/{container.get('name', '')}/{kind.removesuffix('Probe')}"
    is_http = "httpGet" in probe
    app_probe = config.AppProbe(
        path=path,
        port=port,
        http_path=str(action.get("path") or "/") if is_http else None,
        https=is_http and str(action.get("scheme", "HTTP")).upper() == "HTTPS",
        timeout=min(float(probe.get("timeoutSeconds") or 1), 3600),
        period=min(float(probe.get("periodSeconds") or 10), 3600),
    )
    http_get: dict[str, Any] = {"path": path, "port": settings.ports.health, "scheme": "HTTP"}
    if is_http and action.get("httpHeaders"):
        http_get["httpHeaders"] = action["httpHeaders"]
    rewritten = {k: v for k, v in probe.items() if k not in ("httpGet", "tcpSocket")}
    rewritten["httpGet"] = http_get
    return rewritten, app_probe


def token_volume(settings: InjectorSettings) -> dict[str, Any]:
    """A projected ServiceAccount token for the control plane's audience only, rotated by the kubelet."""
    token = {
        "audience": settings.token_audience,
        "expirationSeconds": settings.token_expiration_seconds,
        "path": SIDECAR_TOKEN_PATH.rsplit("/", 1)[1],
    }
    return {"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": token}]}}


def proxy_container(
    settings: InjectorSettings,
    workload: str = "",
    probes: tuple[config.AppProbe, ...] = (),
    xds_host: str | None = None,
) -> dict[str, Any]:
    """The Envoy sidecar, as a native sidecar (restartPolicy Always) for spec.initContainers.

    `xds_host` (the control plane's address, for pods whose DNS cannot resolve its name) replaces the
    name it dials; with TLS the certificate is still checked against the name (`XdsAuth.server_name`).
    """
    ports = settings.ports
    bootstrap = config.ads_bootstrap(
        "sidecar",
        xds_host or settings.xds_host,
        settings.xds_port,
        admin_port=ports.admin,
        auth=settings.xds_auth,
        health=("0.0.0.0", ports.health),
        probes=probes,
    )
    ready = {
        "httpGet": {"path": config.READY_PATH, "port": ports.health, "scheme": "HTTP"},
        "timeoutSeconds": 1,
    }
    mounts = [{"name": TOKEN_VOLUME, "mountPath": SIDECAR_TOKEN_PATH.rsplit("/", 1)[0], "readOnly": True}]
    return {
        "name": PROXY_CONTAINER,
        "image": settings.proxy_image,
        "restartPolicy": "Always",
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
            {"name": telemetry.WORKLOAD_ENV, "value": workload},
            {
                "name": telemetry.WORKLOAD_NAMESPACE_ENV,
                "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
            },
        ],
        "ports": [
            {"name": "http-envoy-prom", "containerPort": ports.prometheus, "protocol": "TCP"},
            {"name": "http-health", "containerPort": ports.health, "protocol": "TCP"},
        ],
        # The app starts only once the proxy has its config; until then its traffic would be refused.
        "startupProbe": {**ready, "periodSeconds": 1, "failureThreshold": settings.startup_seconds},
        "readinessProbe": {**ready, "periodSeconds": 5, "failureThreshold": 3},
        "resources": settings.proxy_resources.model_dump(),
        **({"volumeMounts": mounts} if settings.xds_auth else {}),
        "securityContext": {
            "runAsUser": settings.proxy_uid,
            "runAsGroup": settings.proxy_uid,
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }


def wants_injection(pod: Mapping[str, Any], namespace_labels: Mapping[str, str] | None) -> bool:
    """The pod's label, else its annotation, else the namespace label; never a hostNetwork pod (its
    iptables rules would capture the node's traffic)."""
    if (pod.get("spec") or {}).get("hostNetwork"):
        return False
    metadata = pod.get("metadata") or {}
    own = (metadata.get("labels") or {}).get(INJECT_LABEL)
    if own is None:
        own = (metadata.get("annotations") or {}).get(INJECT_ANNOTATION)
    if own is not None:
        return str(own).lower() == "true"
    return (namespace_labels or {}).get(INJECT_LABEL) == "enabled"


def already_injected(pod: Mapping[str, Any]) -> bool:
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    spec = pod.get("spec") or {}
    containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    return STATUS_ANNOTATION in annotations or any(c.get("name") == PROXY_CONTAINER for c in containers)


def refusal(
    pod: Mapping[str, Any], namespace_labels: Mapping[str, str] | None, xds_ip: str | None
) -> str | None:
    """Why a pod that asked for the mesh is left unmeshed, or None when it can be meshed."""
    level = (namespace_labels or {}).get(POD_SECURITY_ENFORCE)
    if level in NET_ADMIN_FORBIDDEN:
        return (
            f"not meshed: the namespace enforces Pod Security level {level!r}, which rejects the "
            f"{INIT_CONTAINER} init container's NET_ADMIN and NET_RAW capabilities; label the namespace "
            f"{POD_SECURITY_ENFORCE}=privileged to mesh its pods"
        )
    policy = (pod.get("spec") or {}).get("dnsPolicy", "ClusterFirst")
    if policy not in CLUSTER_DNS_POLICIES and xds_ip is None:
        return (
            f"not meshed: the pod's dnsPolicy {policy!r} cannot resolve the mesh control plane and "
            "the injector could not resolve its address either"
        )
    return None


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _annotation_ops(metadata: Mapping[str, Any], added: Mapping[str, str]) -> list[dict[str, Any]]:
    annotations = metadata.get("annotations")
    if annotations is None:
        return [{"op": "add", "path": "/metadata/annotations", "value": dict(added)}]
    return [
        {"op": "add", "path": f"/metadata/annotations/{_escape(k)}", "value": v}
        for k, v in added.items()
        if k not in annotations
    ]


def pod_patch(
    pod: Mapping[str, Any],
    settings: InjectorSettings,
    namespace_labels: Mapping[str, str] | None = None,
    xds_ip: str | None = None,
    warnings: list[str] | None = None,
) -> list[dict[str, Any]]:
    """JSONPatch ops meshing `pod`; empty when it opted out or already carries the proxy.

    A pod that cannot be meshed (see `refusal`) only gets a status annotation saying why, and the
    reason is added to `warnings` (kubectl shows admission warnings to whoever created the pod).
    `xds_ip` is the control plane's address, for pods whose DNS cannot resolve its name.
    """
    if already_injected(pod) or not wants_injection(pod, namespace_labels):
        return []
    spec = pod.get("spec") or {}
    metadata = pod.get("metadata") or {}
    warned: list[str] = []
    reason = refusal(pod, namespace_labels, xds_ip)
    if reason is not None:
        warned.append(f"{INJECT_ANNOTATION}: {reason}")
    annotations = _valid_port_annotations(metadata.get("annotations") or {}, warned)
    if warnings is not None:
        warnings += warned
    if reason is not None:
        return _annotation_ops(metadata, {STATUS_ANNOTATION: reason})
    ops: list[dict[str, Any]] = []
    probes: list[config.AppProbe] = []
    for index, container in enumerate(spec.get("containers") or []):
        for kind in PROBES:
            rewritten = rewrite_probe(container, kind, settings)
            if rewritten is not None:
                ops.append(
                    {"op": "replace", "path": f"/spec/containers/{index}/{kind}", "value": rewritten[0]}
                )
                probes.append(rewritten[1])
    cluster_dns = spec.get("dnsPolicy", "ClusterFirst") in CLUSTER_DNS_POLICIES
    sidecars = [
        init_container(settings, annotations),
        proxy_container(settings, workload_name(pod), tuple(probes), None if cluster_dns else xds_ip),
    ]
    # Appended: the pod's own init containers run first, before its traffic is captured.
    if spec.get("initContainers"):
        ops += [{"op": "add", "path": "/spec/initContainers/-", "value": c} for c in sidecars]
    else:
        ops.append({"op": "add", "path": "/spec/initContainers", "value": sidecars})
    if settings.xds_auth:
        volume = token_volume(settings)
        ops.append(
            {"op": "add", "path": "/spec/volumes/-", "value": volume}
            if spec.get("volumes")
            else {"op": "add", "path": "/spec/volumes", "value": [volume]}
        )
    added = {
        STATUS_ANNOTATION: config.INJECTED,
        config.UNCAPTURED_INBOUND_ANNOTATION: ",".join(
            str(p) for p in uncaptured_inbound_ports(settings, annotations)
        ),
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(settings.ports.prometheus),
        "prometheus.io/path": "/stats/prometheus",
    }
    return ops + _annotation_ops(metadata, added)


def admission_review(
    review: Mapping[str, Any],
    settings: InjectorSettings | None = None,
    namespace_labels: Mapping[str, str] | None = None,
    xds_ip: str | None = None,
    outcomes: Counter[str] | None = None,
) -> dict[str, Any]:
    """AdmissionReview (admission.k8s.io/v1) in, AdmissionReview with a JSONPatch (or none) out.

    `outcomes` counts the review's outcome: injected, refused (a status annotation and a warning say
    why it cannot be meshed) or skipped."""
    request = review.get("request") or {}
    response: dict[str, Any] = {"uid": request.get("uid", ""), "allowed": True}
    pod = request.get("object") or {}
    ops: list[dict[str, Any]] = []
    if request.get("kind", {}).get("kind", "Pod") == "Pod" and request.get("operation", "CREATE") == "CREATE":
        warnings: list[str] = []
        ops = pod_patch(pod, settings or InjectorSettings(), namespace_labels, xds_ip, warnings)
        if ops:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(json.dumps(ops).encode()).decode()
        if warnings:
            response["warnings"] = warnings
            name = (pod.get("metadata") or {}).get("name") or (pod.get("metadata") or {}).get("generateName")
            log.warning("pod %s/%s %s", request.get("namespace", ""), name, "; ".join(warnings))
    if outcomes is not None:
        injected = any(op["path"].startswith("/spec/initContainers") for op in ops)
        outcomes["injected" if injected else "refused" if ops else "skipped"] += 1
    return {
        "apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
        "kind": "AdmissionReview",
        "response": response,
    }


NamespaceLabels = Callable[[str], Awaitable[Mapping[str, str]]]
XDS_ADDRESS_TTL = 60.0


MAX_REVIEW_BYTES = 8 * 1024 * 1024
"""The API server accepts objects of up to 3 MiB; a review carries the object (and for updates the old
one too) plus a small envelope, and JSON escaping can grow it."""


def make_app(
    settings: InjectorSettings | Callable[[], InjectorSettings],
    namespace_labels: NamespaceLabels | None = None,
    outcomes: Counter[str] | None = None,
) -> web.Application:
    """POST /mutate; `settings` or what it returns for each review (the mesh CA's trust, which the
    bootstrap carries, changes while the injector runs); `namespace_labels` looks up the pod's
    namespace (the review does not carry it); `outcomes` counts the answers by outcome (see
    `admission_review`, plus invalid and error).

    The control plane's name is resolved here (the injector's own DNS is the cluster's) and cached
    for a minute, for pods with a dnsPolicy that cannot resolve it. A body that is not an
    AdmissionReview object gets a 400; any other failure still answers `allowed` (the pod starts
    unmeshed) with a warning naming the error, never a 500.
    """
    resolved: dict[str, tuple[float, str | None]] = {}

    async def xds_ip(settings: InjectorSettings) -> str | None:
        loop = asyncio.get_running_loop()
        cached = resolved.get(settings.xds_host)
        if cached and loop.time() - cached[0] < XDS_ADDRESS_TTL:
            return cached[1]
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(settings.xds_host, settings.xds_port, type=socket.SOCK_STREAM), 2.0
            )
            address: str | None = str(infos[0][4][0])
        except (OSError, TimeoutError, IndexError):
            address = None
        resolved[settings.xds_host] = (loop.time(), address)
        return address

    def count(outcome: str) -> None:
        if outcomes is not None:
            outcomes[outcome] += 1

    async def mutate(request: web.Request) -> web.Response:
        try:
            review = await request.json()
        except ValueError:
            count("invalid")
            return web.json_response({"error": "body is not JSON"}, status=400)
        if not isinstance(review, dict) or not isinstance(review.get("request") or {}, dict):
            count("invalid")
            return web.json_response({"error": "body is not an AdmissionReview object"}, status=400)
        try:
            pod_request = review.get("request") or {}
            namespace = str(pod_request.get("namespace", ""))
            labels = await namespace_labels(namespace) if namespace_labels else None
            pod_spec = (pod_request.get("object") or {}).get("spec") or {}
            policy = pod_spec.get("dnsPolicy", "ClusterFirst")
            current = settings() if callable(settings) else settings
            address = None if policy in CLUSTER_DNS_POLICIES else await xds_ip(current)
            return web.json_response(admission_review(review, current, labels, address, outcomes))
        except Exception as error:  # an injector bug must not block or silently drop the pod
            log.exception("admission review failed")
            count("error")
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
