"""Pure Envoy config builder shared by the sidecar (ADS) and local (file xDS) modes.

Everything here returns plain JSON-able dicts in proto3 JSON form, so the same output can be written to
files for file-based xDS or parsed into protobufs for ADS. No I/O, no clock.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from canaryctl_mesh import telemetry
from canaryctl_mesh.identity import DEFAULT_TRUST_DOMAIN
from canaryctl_mesh.regex import EnvoyRegex, envoy_regex

CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
ROUTE_TYPE = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
FILE_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
STATS_LOG_TYPE = "type.googleapis.com/envoy.extensions.access_loggers.stats.v3.Config"
ORIGINAL_DST_TYPE = "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
TLS_INSPECTOR_TYPE = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
HTTP_INSPECTOR_TYPE = "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"
TCP_PROXY_TYPE = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
HTTP_OPTIONS_TYPE = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
HEALTH_CHECK_TYPE = "type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck"
UPSTREAM_TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
DOWNSTREAM_TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
GETADDRINFO_TYPE = (
    "type.googleapis.com/envoy.extensions.network.dns_resolver.getaddrinfo.v3.GetAddrInfoDnsResolverConfig"
)
HTTP_OPTIONS_KEY = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

FAULT_FILTER = "envoy.filters.http.fault"
# Order in which xDS types must reach Envoy: a route naming an unknown cluster answers 503.
TYPE_ORDER = (CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE)

Resource = dict[str, Any]


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Backend(_Spec):
    """One upstream service; `endpoints` (address, port) overrides the single address when set.

    The name becomes the Envoy cluster name and so the ``envoy_cluster_name`` stats label; a dot
    would make Envoy's tag extraction cut the name short, so dots are refused. `peers` names the
    endpoint addresses that run a sidecar, with the SPIFFE ID their certificate must carry: the
    sidecar talks mTLS to those and plaintext to the others (pods not meshed yet).
    """

    name: str = Field(min_length=1, pattern=r"^[^.]+$")
    address: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    endpoints: tuple[tuple[str, int], ...] = ()
    peers: tuple[tuple[str, str], ...] = ()


class WeightedBackend(_Spec):
    backend: Backend
    weight: int = Field(ge=0)


class Mirror(_Spec):
    backend: str
    percentage: float = Field(ge=0, le=100)


class FaultDelay(_Spec):
    seconds: float = Field(gt=0)
    percentage: float = Field(ge=0, le=100)


class FaultAbort(_Spec):
    status: int = Field(ge=200, le=599)
    percentage: float = Field(ge=0, le=100)


class Fault(_Spec):
    delay: FaultDelay | None = None
    abort: FaultAbort | None = None


class HeaderMatch(_Spec):
    """Exactly one of exact, prefix, regex (RE2, full match, within Envoy's program size limit)."""

    name: str = Field(min_length=1, pattern=r"^[^\x00\r\n]+$")  # Envoy refuses NUL, CR, LF in names
    exact: str | None = None
    prefix: str | None = Field(default=None, min_length=1)
    regex: EnvoyRegex | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> HeaderMatch:
        if sum(v is not None for v in (self.exact, self.prefix, self.regex)) != 1:
            raise ValueError(f"header match {self.name!r} needs exactly one of exact, prefix, regex")
        return self


HTTP_METHOD = r"^[A-Za-z][A-Za-z0-9_-]*$"
"""Method names as HTTPRouteGroups give them: tokens without RE2 metacharacters, so they need no escape."""


def methods_regex(methods: Iterable[str]) -> str:
    """The ``:method`` header regex matching any of `methods`."""
    return "|".join(sorted({m.upper() for m in methods}))


class HttpMatch(_Spec):
    """Requests matching all given conditions go to `backend` instead of the weighted split."""

    backend: str
    headers: tuple[HeaderMatch, ...] = ()
    path_regex: EnvoyRegex | None = None
    path_prefix: str | None = None
    methods: tuple[Annotated[str, Field(pattern=HTTP_METHOD)], ...] = ()

    @model_validator(mode="after")
    def _methods_fit(self) -> HttpMatch:
        if self.methods:
            envoy_regex(methods_regex(self.methods))
        return self


class Retries(_Spec):
    attempts: int = Field(default=2, ge=0)
    per_try_timeout: float | None = Field(default=None, gt=0)
    retry_on: str = "5xx,reset,connect-failure,refused-stream"
    budget_percent: float = Field(default=20.0, gt=0, le=100)
    min_retry_concurrency: int = Field(default=3, ge=0)


class OutlierDetection(_Spec):
    consecutive_5xx: int = Field(default=5, ge=1)
    interval: float = Field(default=10.0, gt=0)
    base_ejection_time: float = Field(default=30.0, gt=0)
    max_ejection_percent: int = Field(default=50, ge=0, le=100)


class Cookie(_Spec):
    """Session affinity (see TrafficPolicy's StickyCookie): ``backend`` None is an expired cookie."""

    name: str = Field(min_length=1)
    value: str = Field(min_length=1)
    set_cookie: str = Field(min_length=1)
    backend: str | None = None


class RouteSpec(_Spec):
    """How traffic for one service is routed across its backends."""

    service: str = Field(min_length=1)
    backends: tuple[WeightedBackend, ...] = Field(min_length=1)
    hosts: tuple[str, ...] = ()
    mirror: Mirror | None = None
    faults: dict[str, Fault] = Field(default_factory=dict)
    matches: tuple[HttpMatch, ...] = ()
    timeout: float | None = Field(default=None, ge=0)
    retries: Retries | None = None
    outlier_detection: OutlierDetection | None = None
    cookies: tuple[Cookie, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> RouteSpec:
        names = [wb.backend.name for wb in self.backends]
        if len(set(names)) != len(names):
            raise ValueError(f"service {self.service!r}: backend names repeat: {names}")
        if not any(wb.weight for wb in self.backends):
            raise ValueError(f"service {self.service!r}: at least one backend needs a weight above 0")
        referenced = [m.backend for m in self.matches] + list(self.faults)
        referenced += [c.backend for c in self.cookies if c.backend is not None]
        referenced += [self.mirror.backend] if self.mirror else []
        unknown = sorted(set(referenced) - set(names))
        if unknown:
            raise ValueError(f"service {self.service!r}: unknown backends {unknown}; known: {names}")
        return self


@dataclass(frozen=True)
class Resources:
    """One consistent set of xDS resources; `by_type` keys follow TYPE_ORDER."""

    clusters: list[Resource] = field(default_factory=list)
    listeners: list[Resource] = field(default_factory=list)
    routes: list[Resource] = field(default_factory=list)

    def by_type(self) -> dict[str, list[Resource]]:
        return {CLUSTER_TYPE: self.clusters, LISTENER_TYPE: self.listeners, ROUTE_TYPE: self.routes}


# ---------------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    return f"{seconds:.6f}".rstrip("0").rstrip(".") + "s"


def _fraction(percentage: float) -> dict[str, Any]:
    return {"numerator": round(percentage * 10_000), "denominator": "MILLION"}


def _socket(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def ads_source() -> dict[str, Any]:
    return {"ads": {}, "resource_api_version": "V3"}


def file_source(directory: str, filename: str) -> dict[str, Any]:
    """Envoy reloads only on a rename into the watched directory, never on in-place writes."""
    return {
        "path_config_source": {"path": f"{directory}/{filename}", "watched_directory": {"path": directory}},
        "resource_api_version": "V3",
    }


# ---------------------------------------------------------------------------------------------------
# clusters
# ---------------------------------------------------------------------------------------------------


def _same_protocol_upstream() -> dict[str, Any]:
    """Upstream requests use the downstream's protocol: HTTP/2 (gRPC) stays HTTP/2, HTTP/1.1 stays 1.1."""
    return {
        "typed_extension_protocol_options": {
            HTTP_OPTIONS_KEY: {"@type": HTTP_OPTIONS_TYPE, "use_downstream_protocol_config": {}}
        }
    }


# ---------------------------------------------------------------------------------------------------
# mutual TLS between sidecars
# ---------------------------------------------------------------------------------------------------

WORKLOAD_SECRET = "workload"
"""SDS secret: the sidecar's own SPIFFE certificate and key (each sidecar gets only its own)."""
TRUST_SECRET = "mesh-trust"
"""SDS secret: the mesh CA certificate peers are verified against."""
MTLS_ALPN = "canaryctl-mtls"
"""ALPN a sidecar offers to a peer sidecar for HTTP: the inbound listener tells mesh mTLS from an app's
own TLS, and hands what it decrypts to its HTTP connection manager."""
MTLS_TCP_ALPN = "canaryctl-mtls-tcp"
"""ALPN of any other TCP a sidecar wraps in mesh mTLS: the destination hands it to its TCP chain (the
TCPRoute rules), as it cannot look into the encrypted bytes to tell."""
PERMISSIVE, STRICT = "permissive", "strict"
MTLS_MODES = (PERMISSIVE, STRICT)
"""Inbound: permissive accepts mTLS from sidecars and plaintext from unmeshed clients; strict only mTLS."""
STATUS_ANNOTATION = "mesh.canaryctl.dev/status"
"""Pod annotation the injector sets on the pods it gives the sidecar: their endpoints get mTLS."""
INJECTED = "injected"
"""STATUS_ANNOTATION of a pod that got the sidecar (a pod left unmeshed says why instead)."""
TERMINATED_PHASES = ("Succeeded", "Failed")
"""A pod in these phases keeps its IP in its status while another pod may already have it."""
UNCAPTURED_INBOUND_ANNOTATION = "mesh.canaryctl.dev/uncaptured-inbound-ports"
"""Pod annotation the injector sets: the ports its inbound redirect leaves alone (comma-separated).
Callers wrap pass-through traffic to the pod in mTLS except on these; a pod without it is not
wrapped at all (it was meshed before callers could tell)."""
TRANSPORT_SOCKET_MATCH = "envoy.transport_socket_match"
PEER_KEY = "spiffe"


def _sds(name: str) -> dict[str, Any]:
    return {"name": name, "sds_config": ads_source()}


def _tls_context(peers: list[dict[str, Any]]) -> dict[str, Any]:
    """Our certificate and the mesh CA, both over SDS; the peer's URI SAN must match one of `peers`."""
    return {
        "tls_params": {"tls_minimum_protocol_version": "TLSv1_2", "tls_maximum_protocol_version": "TLSv1_3"},
        "tls_certificate_sds_secret_configs": [_sds(WORKLOAD_SECRET)],
        "combined_validation_context": {
            "default_validation_context": {
                "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": m} for m in peers]
            },
            "validation_context_sds_secret_config": _sds(TRUST_SECRET),
        },
    }


def _upstream_mtls(spiffe_ids: tuple[str, ...], alpn: str = MTLS_ALPN) -> dict[str, Any]:
    """The server's certificate must carry one of `spiffe_ids`. Offers `alpn`, which the server's
    listener matches on but does not select: with no ALPN agreed its HTTP connection manager tells
    HTTP/2 (gRPC) from HTTP/1.1 by the first bytes, as on plaintext."""
    common = {**_tls_context([{"exact": i} for i in spiffe_ids]), "alpn_protocols": [alpn]}
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {"@type": UPSTREAM_TLS_TYPE, "common_tls_context": common},
    }


def _downstream_mtls(trust_domain: str) -> dict[str, Any]:
    """Client certificates required, from this mesh's trust domain."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": DOWNSTREAM_TLS_TYPE,
            "require_client_certificate": True,
            "common_tls_context": _tls_context([{"prefix": f"spiffe://{trust_domain}/"}]),
        },
    }


def secrets(cert_pem: str, key_pem: str, trust_pem: str) -> list[Resource]:
    """The two SDS secrets of one sidecar."""
    return [
        {
            "@type": SECRET_TYPE,
            "name": WORKLOAD_SECRET,
            "tls_certificate": {
                "certificate_chain": {"inline_string": cert_pem},
                "private_key": {"inline_string": key_pem},
            },
        },
        {
            "@type": SECRET_TYPE,
            "name": TRUST_SECRET,
            "validation_context": {"trusted_ca": {"inline_string": trust_pem}},
        },
    ]


def _endpoint(address: str, port: int, peer: str | None) -> dict[str, Any]:
    endpoint: dict[str, Any] = {"endpoint": {"address": _socket(address, port)}}
    if peer is not None:
        endpoint["metadata"] = {"filter_metadata": {TRANSPORT_SOCKET_MATCH: {PEER_KEY: peer}}}
    return endpoint


def _cluster(backend: Backend, spec: RouteSpec) -> Resource:
    endpoints = backend.endpoints or ((backend.address, backend.port),)
    static = all(_is_ip(address) for address, _ in endpoints)
    peers = dict(backend.peers)
    cluster: Resource = {
        "@type": CLUSTER_TYPE,
        "name": backend.name,
        "type": "STATIC" if static else "STRICT_DNS",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": backend.name,
            "endpoints": [{"lb_endpoints": [_endpoint(a, p, peers.get(a)) for a, p in endpoints]}],
        },
        **_same_protocol_upstream(),
    }
    if peers:
        # Endpoints with a sidecar get mTLS expecting their identity; the rest the cluster's plaintext.
        cluster["transport_socket_matches"] = [
            {"name": f"mtls-{index}", "match": {PEER_KEY: peer}, "transport_socket": _upstream_mtls((peer,))}
            for index, peer in enumerate(sorted(set(peers.values())))
        ]
    if spec.retries:
        cluster["circuit_breakers"] = {
            "thresholds": [
                {
                    "retry_budget": {
                        "budget_percent": {"value": spec.retries.budget_percent},
                        "min_retry_concurrency": spec.retries.min_retry_concurrency,
                    }
                }
            ]
        }
    if spec.outlier_detection:
        od = spec.outlier_detection
        cluster["outlier_detection"] = {
            "consecutive_5xx": od.consecutive_5xx,
            "interval": _duration(od.interval),
            "base_ejection_time": _duration(od.base_ejection_time),
            "max_ejection_percent": od.max_ejection_percent,
        }
    return cluster


def build_clusters(specs: list[RouteSpec]) -> list[Resource]:
    """One cluster per backend; a backend shared by several services is emitted once."""
    clusters: dict[str, Resource] = {}
    for spec in specs:
        for wb in spec.backends:
            clusters.setdefault(wb.backend.name, _cluster(wb.backend, spec))
    return list(clusters.values())


# ---------------------------------------------------------------------------------------------------
# routes
# ---------------------------------------------------------------------------------------------------


def _fault_config(fault: Fault) -> dict[str, Any]:
    config: dict[str, Any] = {"@type": FAULT_TYPE}
    if fault.delay:
        config["delay"] = {
            "fixed_delay": _duration(fault.delay.seconds),
            "percentage": _fraction(fault.delay.percentage),
        }
    if fault.abort:
        config["abort"] = {"http_status": fault.abort.status, "percentage": _fraction(fault.abort.percentage)}
    return config


def _per_backend_filters(spec: RouteSpec, backend: str) -> dict[str, Any]:
    """Faults ride on the weighted cluster (or match route) so only that backend's traffic is hit."""
    fault = spec.faults.get(backend)
    return {"typed_per_filter_config": {FAULT_FILTER: _fault_config(fault)}} if fault else {}


def _route_action(spec: RouteSpec) -> dict[str, Any]:
    # Envoy's default 15 s would cut long polls, SSE and streams that work unmeshed: 0s means none.
    action: dict[str, Any] = {"timeout": _duration(spec.timeout or 0)}
    if spec.retries:
        policy: dict[str, Any] = {"retry_on": spec.retries.retry_on, "num_retries": spec.retries.attempts}
        if spec.retries.per_try_timeout:
            policy["per_try_timeout"] = _duration(spec.retries.per_try_timeout)
        action["retry_policy"] = policy
    if spec.mirror and spec.mirror.percentage > 0:
        action["request_mirror_policies"] = [
            {
                "cluster": spec.mirror.backend,
                "runtime_fraction": {"default_value": _fraction(spec.mirror.percentage)},
            }
        ]
    return action


def _match(m: HttpMatch) -> dict[str, Any]:
    match: dict[str, Any] = {}
    if m.path_regex:
        match["safe_regex"] = {"regex": m.path_regex}
    else:
        match["prefix"] = m.path_prefix or "/"
    headers = []
    for h in m.headers:
        if h.exact is not None:
            string_match: dict[str, Any] = {"exact": h.exact}
        elif h.prefix is not None:
            string_match = {"prefix": h.prefix}
        else:
            string_match = {"safe_regex": {"regex": h.regex}}
        headers.append({"name": h.name, "string_match": string_match})
    if m.methods:
        regex = methods_regex(m.methods)
        headers.append({"name": ":method", "string_match": {"safe_regex": {"regex": regex}}})
    if headers:
        match["headers"] = headers
    return match


def _set_cookie(value: str) -> dict[str, Any]:
    return {
        "response_headers_to_add": [
            {"header": {"key": "set-cookie", "value": value}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}
        ]
    }


def _handed_out(spec: RouteSpec, backend: str) -> dict[str, Any]:
    """The Set-Cookie of ``backend``'s sticky cookie on responses it serves outside its sticky route."""
    for cookie in spec.cookies:
        if cookie.backend == backend:
            return _set_cookie(cookie.set_cookie)
    return {}


def _cookie_match(cookie: Cookie) -> dict[str, Any]:
    """The pair among any other cookies; Envoy joins repeated Cookie headers with "; "."""
    regex = f"(.*; ?)?{re.escape(cookie.name)}={re.escape(cookie.value)}(;.*)?"
    return {"prefix": "/", "headers": [{"name": "cookie", "string_match": {"safe_regex": {"regex": regex}}}]}


def _routes(spec: RouteSpec) -> list[dict[str, Any]]:
    """Match routes first (first match wins), then sticky cookies, then the weighted split."""
    action = _route_action(spec)
    routes = [
        {
            "name": spec.service,
            "match": _match(m),
            "route": {"cluster": m.backend, **action},
            **_per_backend_filters(spec, m.backend),
            **_handed_out(spec, m.backend),
        }
        for m in spec.matches
    ]
    weighted = [
        {
            "name": wb.backend.name,
            "weight": wb.weight,
            **_per_backend_filters(spec, wb.backend.name),
            **_handed_out(spec, wb.backend.name),
        }
        for wb in spec.backends
    ]
    split = {"weighted_clusters": {"clusters": weighted}, **action}
    for cookie in spec.cookies:
        if cookie.backend is None:
            sticky = {"route": split, **_set_cookie(cookie.set_cookie)}
        else:
            sticky = {
                "route": {"cluster": cookie.backend, **action},
                **_per_backend_filters(spec, cookie.backend),
            }
        routes.append({"name": spec.service, "match": _cookie_match(cookie), **sticky})
    routes.append({"name": spec.service, "match": {"prefix": "/"}, "route": split})
    return routes


def build_route_config(name: str, specs: list[RouteSpec], catch_all: str | None = None) -> Resource:
    """One virtual host per service; `catch_all` sends unknown hosts to that cluster (sidecar passthrough).

    Envoy refuses a whole route configuration when two virtual hosts share a domain, so that is
    caught here, naming both services.
    """
    owners: dict[str, str] = {}
    for spec in specs:
        for domain in spec.hosts or (spec.service, f"{spec.service}:*"):
            if owners.setdefault(domain, spec.service) != spec.service:
                raise ValueError(
                    f"host {domain!r} is claimed by both {owners[domain]!r} and {spec.service!r}"
                )
    hosts = [
        {
            "name": spec.service,
            "domains": list(spec.hosts) or [spec.service, f"{spec.service}:*"],
            "routes": _routes(spec),
        }
        for spec in specs
    ]
    if catch_all:
        hosts.append(
            {
                "name": "passthrough",
                "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": catch_all, "timeout": "0s"}}],
            }
        )
    return {"@type": ROUTE_TYPE, "name": name, "virtual_hosts": hosts}


# ---------------------------------------------------------------------------------------------------
# listeners
# ---------------------------------------------------------------------------------------------------


def _access_logs(access_log_path: str, stats: dict[str, Any]) -> list[dict[str, Any]]:
    """JSON access log plus a stats logger (`stats`, from canaryctl_mesh.telemetry) for golden metrics."""
    return [
        {
            "name": "envoy.access_loggers.file",
            "typed_config": {
                "@type": FILE_LOG_TYPE,
                "path": access_log_path,
                "log_format": {"json_format": telemetry.ACCESS_LOG_FORMAT},
            },
        },
        {"name": "envoy.access_loggers.stats", "typed_config": {"@type": STATS_LOG_TYPE, **stats}},
    ]


def http_connection_manager(
    stat_prefix: str,
    route_config_name: str,
    route_source: dict[str, Any],
    access_log_path: str,
    stats: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Routes by RDS; caller-side golden metrics unless `stats` names another stats logger.

    The codec is detected (HTTP/1.1 or HTTP/2, so gRPC works) and WebSocket upgrades are let through.
    """
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": HCM_TYPE,
            "stat_prefix": stat_prefix,
            "rds": {"route_config_name": route_config_name, "config_source": route_source},
            "http_filters": [
                {"name": FAULT_FILTER, "typed_config": {"@type": FAULT_TYPE}},
                {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}},
            ],
            "upgrade_configs": [{"upgrade_type": "websocket"}],
            "access_log": _access_logs(access_log_path, stats or telemetry.caller_stats_logger()),
        },
    }


HTTP_RBAC_FILTER = "envoy.filters.http.rbac"
HTTP_RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"


def authorization_filter() -> dict[str, Any]:
    """Envoy's RBAC filter without rules, which allows everything: every inbound HTTP chain has it, and
    a workload's inbound route configuration switches it on (RBACPerRoute, `canaryctl_mesh.access`).
    Routes reach open connections at their next request, listeners only new connections, so a
    TrafficTarget change applies at once to callers already connected."""
    return {"name": HTTP_RBAC_FILTER, "typed_config": {"@type": HTTP_RBAC_TYPE}}


def build_listener(name: str, host: str, port: int, hcm: dict[str, Any]) -> Resource:
    return {
        "@type": LISTENER_TYPE,
        "name": name,
        "address": _socket(host, port),
        "filter_chains": [{"filters": [hcm]}],
    }


# ---------------------------------------------------------------------------------------------------
# the two modes
# ---------------------------------------------------------------------------------------------------

LOCAL = "local"
"""Name of the local mode's listener, route configuration and HTTP stat prefix."""


def local_listener(host: str, port: int, route_source: dict[str, Any], access_log_path: str) -> Resource:
    return build_listener(
        LOCAL, host, port, http_connection_manager(LOCAL, LOCAL, route_source, access_log_path)
    )


def local_resources(
    spec: RouteSpec, host: str, port: int, route_source: dict[str, Any], access_log_path: str
) -> Resources:
    """Local mode: one listener on host:port sending every request (any Host) to `spec`."""
    catch_all = spec.model_copy(update={"hosts": ("*",)})
    return Resources(
        clusters=build_clusters([spec]),
        listeners=[local_listener(host, port, route_source, access_log_path)],
        routes=[build_route_config(LOCAL, [catch_all])],
    )


@dataclass(frozen=True)
class SidecarPorts:
    """Ports the init container's iptables rules redirect to (Istio's numbers, familiar to operators)."""

    outbound: int = 15001
    inbound: int = 15006
    prometheus: int = 15090
    admin: int = 15000
    health: int = 15021
    """Static listener: /healthz/ready (the proxy has its config) and the rewritten app probes."""

    def own(self) -> tuple[int, ...]:
        """The sidecar's ports, never redirected."""
        return (self.admin, self.outbound, self.inbound, self.health, self.prometheus)


OUTBOUND_ROUTE_NAME = "outbound"
INBOUND_ROUTE_NAME = "inbound"
PASSTHROUGH_CLUSTER = "passthrough"
INBOUND_CLUSTER = "inbound"
ADMIN_CLUSTER = "admin"

HTTP_PROTOCOLS = ("http/1.0", "http/1.1", "h2c")
"""What http_inspector reports for cleartext HTTP; anything else is passed through as TCP."""
PROTOCOL_DETECTION_TIMEOUT = 5.0
"""Seconds a connection may stay silent before it is passed through as TCP unread. Server-first
protocols (the server speaks first: MySQL, SMTP) wait this long unless their port is opaque."""
DEFAULT_OPAQUE_PORTS = (21, 22, 25, 110, 143, 587, 3306, 4444, 5432, 6379, 9300, 11211, 33060)
"""Ports passed through as TCP without protocol detection: server-first or binary protocols
(FTP, SSH, SMTP, POP3, IMAP, MySQL, Galera, PostgreSQL, Redis, Elasticsearch transport, memcached)."""
DEFAULT_SERVER_FIRST_PORTS = (21, 22, 25, 110, 143, 587, 3306)
"""Those of DEFAULT_OPAQUE_PORTS whose server speaks first (FTP, SSH, SMTP, POP3, IMAP, MySQL): an
inbound listener with mTLS looks for a TLS ClientHello on every other port, even opaque ones."""


def _original_dst_cluster(name: str) -> Resource:
    return {
        "@type": CLUSTER_TYPE,
        "name": name,
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": "5s",
        **_same_protocol_upstream(),
    }


def _ports_predicate(ports: tuple[int, ...]) -> dict[str, Any]:
    rules = [{"destination_port_range": {"start": p, "end": p + 1}} for p in sorted(set(ports))]
    return rules[0] if len(rules) == 1 else {"or_match": {"rules": rules}}


def _listener_filters(
    opaque_ports: tuple[int, ...], tls_skipped: tuple[int, ...] | None = None
) -> list[dict[str, Any]]:
    """Restore the original destination, then detect TLS and HTTP except on opaque ports (TLS except
    on `tls_skipped` when given)."""
    skip = {"filter_disabled": _ports_predicate(opaque_ports)} if opaque_ports else {}
    if tls_skipped is not None:
        tls_skip = {"filter_disabled": _ports_predicate(tls_skipped)} if tls_skipped else {}
    else:
        tls_skip = skip
    return [
        {"name": "envoy.filters.listener.original_dst", "typed_config": {"@type": ORIGINAL_DST_TYPE}},
        {
            "name": "envoy.filters.listener.tls_inspector",
            "typed_config": {"@type": TLS_INSPECTOR_TYPE},
            **tls_skip,
        },
        {
            "name": "envoy.filters.listener.http_inspector",
            "typed_config": {"@type": HTTP_INSPECTOR_TYPE},
            **skip,
        },
    ]


def tcp_proxy(stat_prefix: str, cluster: str) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {"@type": TCP_PROXY_TYPE, "stat_prefix": stat_prefix, "cluster": cluster},
    }


def _peer_identity_forwarded(hcm: dict[str, Any]) -> dict[str, Any]:
    """`hcm` also telling the app who called: X-Forwarded-Client-Cert with the peer's SPIFFE ID
    (a plaintext chain's HCM drops any XFCC a client sent, Envoy's default)."""
    typed = {**hcm["typed_config"], "forward_client_cert_details": "SANITIZE_SET"}
    typed["set_current_client_cert_details"] = {"uri": True}
    return {**hcm, "typed_config": typed}


def capture_listener(
    name: str,
    host: str,
    port: int,
    hcm: dict[str, Any],
    cluster: str,
    opaque_ports: tuple[int, ...],
    mtls: str | None = None,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    server_first_ports: tuple[int, ...] = DEFAULT_SERVER_FIRST_PORTS,
) -> Resource:
    """Where iptables sends captured TCP: cleartext HTTP goes through `hcm`; everything else (TLS,
    databases, any other protocol, silent clients) reaches its original destination unchanged.

    With `mtls` (inbound only) the first chains terminate mesh mTLS (client certificate of the mesh's
    `trust_domain` required): offering MTLS_ALPN into the same `hcm`, so golden metrics are the same,
    offering MTLS_TCP_ALPN into a TCP proxy to `cluster`; in STRICT mode they are the only chains and
    every other connection is closed. With `mtls` TLS is looked for on opaque ports too, as callers
    wrap them in mTLS, except (when permissive) on `server_first_ports`, where a plaintext client
    would wait for a server waiting for it."""
    plaintext: list[dict[str, Any]] = [
        {
            "name": f"{name}-http",
            "filter_chain_match": {
                "transport_protocol": "raw_buffer",
                "application_protocols": list(HTTP_PROTOCOLS),
            },
            "filters": [hcm],
        }
    ]
    listener: Resource = {
        "@type": LISTENER_TYPE,
        "name": name,
        "address": _socket(host, port),
        # Strict serves nothing but mTLS: no plaintext client to keep waiting, so TLS is looked for on
        # every port, server-first ones too (callers wrap those for strict destinations).
        "listener_filters": _listener_filters(
            opaque_ports, None if mtls is None else () if mtls == STRICT else server_first_ports
        ),
        "listener_filters_timeout": _duration(PROTOCOL_DETECTION_TIMEOUT),
        "continue_on_listener_filters_timeout": True,
        "filter_chains": plaintext,
        "default_filter_chain": {"name": f"{name}-tcp", "filters": [tcp_proxy(f"{name}_tcp", cluster)]},
    }
    if mtls is not None:
        chains = [
            {
                "name": f"{name}-mtls",
                "filter_chain_match": {"transport_protocol": "tls", "application_protocols": [MTLS_ALPN]},
                "transport_socket": _downstream_mtls(trust_domain),
                "filters": [_peer_identity_forwarded(hcm)],
            },
            {
                "name": f"{name}-mtls-tcp",
                "filter_chain_match": {"transport_protocol": "tls", "application_protocols": [MTLS_TCP_ALPN]},
                "transport_socket": _downstream_mtls(trust_domain),
                "filters": [tcp_proxy(f"{name}_mtls_tcp", cluster)],
            },
        ]
        listener["filter_chains"] = chains if mtls == STRICT else [*chains, *plaintext]
        if mtls == STRICT:
            del listener["default_filter_chain"]
    return listener


@dataclass(frozen=True, order=True)
class Peer:
    """An address whose connections reach sidecars only: a meshed pod's IP, or the ClusterIP of a
    Service whose endpoints all run one. A caller's sidecar wraps what it would pass through to it
    in mesh mTLS, expecting one of `identities` (SPIFFE IDs).

    `plaintext_ports`: ports there that get what the app sent: those the destination does not capture
    (the sidecar's own, ports excluded from the inbound redirect) and, when it is permissive, its
    server-first ones, where it does not look for mTLS. `service_ports`: a ClusterIP's
    ports (a pod's IP answers on any). `routed`: the ClusterIP of a service under a TrafficSplit,
    whose HTTP keeps going through the routing table."""

    address: str
    identities: tuple[str, ...]
    plaintext_ports: tuple[int, ...] = ()
    routed: bool = False
    service_ports: tuple[int, ...] = ()

    def wrapped_on(self, port: int | None) -> bool:
        """Whether connections to `port` (None: any port without chains of its own) are wrapped; a
        ClusterIP is left out of ports it does not serve, which keeps those chains small."""
        if port is None:
            return True
        return port not in self.plaintext_ports and (not self.service_ports or port in self.service_ports)


def _peer_cluster_name(identities: tuple[str, ...], tcp: bool) -> str:
    names = "+".join(i.split("/ns/", 1)[-1] for i in identities)
    return f"mtls-{'tcp' if tcp else 'http'}:{names}"


def peer_clusters(peers: tuple[Peer, ...]) -> list[Resource]:
    """Per set of identities, an ORIGINAL_DST cluster for HTTP and one for other TCP: the original
    destination, over mTLS requiring one of them, with the ALPN that tells the destination which."""
    clusters = []
    for identities in sorted({peer.identities for peer in peers}):
        for tcp in (False, True):
            cluster = _original_dst_cluster(_peer_cluster_name(identities, tcp))
            cluster["transport_socket"] = _upstream_mtls(identities, MTLS_TCP_ALPN if tcp else MTLS_ALPN)
            clusters.append(cluster)
    return clusters


def _prefixes(addresses: list[str]) -> list[dict[str, Any]]:
    return [{"address_prefix": a, "prefix_len": 32} for a in sorted(addresses)]


def _chain(name: str, match: dict[str, Any], network_filter: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "filter_chain_match": match, "filters": [network_filter]}


def peer_filter_chains(peers: tuple[Peer, ...], hcm: dict[str, Any]) -> list[dict[str, Any]]:
    """Outbound filter chains wrapping pass-through traffic to `peers` in mesh mTLS.

    Envoy picks a filter chain by destination port first, then by the most specific destination
    address, then transport and application protocol. Per set of identities (and routed or not)
    three chains share the peers' addresses: cleartext HTTP (to the routing `hcm` for a routed
    ClusterIP, else to the HTTP mTLS cluster), the app's own TLS (passed through as it is: never
    wrapped twice), and anything else (the TCP mTLS cluster). Chain names follow their identities,
    so a change of one set's addresses leaves the other chains, and their connections, alone. Two
    more chains hold every pod's address, for calls a pod makes to itself, which stay as the app sent
    them (Envoy drains those when any pod comes or goes). A port some peers do not wrap gets its own
    copy of the chains without those peers, and of the plain HTTP chain, so everything else on that
    port keeps its usual chain."""
    if not peers:
        return []
    chains: list[dict[str, Any]] = []
    as_sent = tcp_proxy("outbound_tcp", PASSTHROUGH_CLUSTER)
    http_protocols = {"application_protocols": list(HTTP_PROTOCOLS)}
    for port in (None, *sorted({p for peer in peers for p in peer.plaintext_ports})):
        groups: dict[tuple[tuple[str, ...], bool], list[str]] = {}
        for peer in peers:
            if peer.wrapped_on(port):
                groups.setdefault((peer.identities, peer.routed), []).append(peer.address)
        on_port: dict[str, Any] = {} if port is None else {"destination_port": port}
        suffix = "" if port is None else f"-{port}"
        if port is not None:
            plain_http = {**on_port, "transport_protocol": "raw_buffer", **http_protocols}
            chains.append(_chain(f"outbound-http{suffix}", plain_http, hcm))
        for (identities, routed), addresses in sorted(groups.items()):
            key = hashlib.sha256(repr((identities, routed)).encode()).hexdigest()[:12]
            name = f"outbound-mtls-{key}{suffix}"
            match = {**on_port, "prefix_ranges": _prefixes(addresses)}
            http = hcm if routed else tcp_proxy("outbound_mtls", _peer_cluster_name(identities, False))
            chains += [
                _chain(f"{name}-http", {**match, **http_protocols}, http),
                _chain(f"{name}-tls", {**match, "transport_protocol": "tls"}, as_sent),
                _chain(
                    f"{name}-tcp", match, tcp_proxy("outbound_mtls", _peer_cluster_name(identities, True))
                ),
            ]
        pods = sorted(peer.address for peer in peers if not peer.service_ports and peer.wrapped_on(port))
        if pods:
            # A pod calling its own IP: the sidecar's connection stays inside the pod, where the inbound
            # capture never sees it, so the app would get the mesh's TLS. As the app sent it.
            self_call = {**on_port, "prefix_ranges": _prefixes(pods), "source_type": "SAME_IP_OR_LOOPBACK"}
            chains += [
                _chain(f"outbound-self{suffix}-http", {**self_call, **http_protocols}, hcm),
                _chain(f"outbound-self{suffix}-tcp", self_call, as_sent),
            ]
    return chains


def sidecar_resources(
    specs: list[RouteSpec],
    ports: SidecarPorts | None = None,
    access_log_path: str = "/dev/stdout",
    bind_host: str = "0.0.0.0",
    opaque_ports: tuple[int, ...] = DEFAULT_OPAQUE_PORTS,
    mtls: str | None = None,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    peers: tuple[Peer, ...] = (),
    server_first_ports: tuple[int, ...] = DEFAULT_SERVER_FIRST_PORTS,
) -> Resources:
    """Sidecar mode: outbound HTTP to meshed services is routed, inbound HTTP is measured (server-side
    golden metrics per workload), and everything else passes through to its original destination.
    `mtls` (PERMISSIVE or STRICT) makes the inbound listener terminate mesh mTLS from callers of
    `trust_domain` (looking for it on all but `server_first_ports`); what passes through to `peers`
    goes over mesh mTLS."""
    ports = ports or SidecarPorts()
    source = ads_source()
    outbound = http_connection_manager("outbound", OUTBOUND_ROUTE_NAME, source, access_log_path)
    inbound = http_connection_manager(
        "inbound", INBOUND_ROUTE_NAME, source, access_log_path, telemetry.inbound_stats_logger()
    )
    inbound["typed_config"]["http_filters"].insert(-1, authorization_filter())
    admin = {
        "@type": CLUSTER_TYPE,
        "name": ADMIN_CLUSTER,
        "type": "STATIC",
        "load_assignment": {
            "cluster_name": ADMIN_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket("127.0.0.1", ports.admin)}}]}],
        },
    }
    prometheus_routes = {
        "@type": ROUTE_TYPE,
        "name": "prometheus",
        "virtual_hosts": [
            {
                "name": "prometheus",
                "domains": ["*"],
                "routes": [{"match": {"path": "/stats/prometheus"}, "route": {"cluster": ADMIN_CLUSTER}}],
            }
        ],
    }
    prometheus = http_connection_manager("prometheus", "prometheus", source, "/dev/null")
    outbound_listener = capture_listener(
        "outbound", bind_host, ports.outbound, outbound, PASSTHROUGH_CLUSTER, opaque_ports
    )
    outbound_listener["filter_chains"] += peer_filter_chains(peers, outbound)
    return Resources(
        clusters=[
            *build_clusters(specs),
            *peer_clusters(peers),
            _original_dst_cluster(PASSTHROUGH_CLUSTER),
            _original_dst_cluster(INBOUND_CLUSTER),
            admin,
        ],
        listeners=[
            outbound_listener,
            capture_listener(
                "inbound",
                bind_host,
                ports.inbound,
                inbound,
                INBOUND_CLUSTER,
                opaque_ports,
                mtls,
                trust_domain,
                server_first_ports,
            ),
            build_listener("prometheus", bind_host, ports.prometheus, prometheus),
        ],
        routes=[
            build_route_config(OUTBOUND_ROUTE_NAME, specs, catch_all=PASSTHROUGH_CLUSTER),
            build_route_config(INBOUND_ROUTE_NAME, [], catch_all=INBOUND_CLUSTER),
            prometheus_routes,
        ],
    )


# ---------------------------------------------------------------------------------------------------
# bootstraps
# ---------------------------------------------------------------------------------------------------


def _bootstrap(node_id: str, admin_host: str, admin_port: int, dynamic: dict[str, Any]) -> dict[str, Any]:
    return {
        "node": {"id": node_id, "cluster": "canaryctl-mesh"},
        "admin": {"address": _socket(admin_host, admin_port)},
        # Histograms only reach /stats/prometheus at a flush; 1 s keeps analysis windows honest.
        "stats_flush_interval": "1s",
        "dynamic_resources": dynamic,
    }


def local_bootstrap(node_id: str, xds_dir: str, admin_port: int = 0) -> dict[str, Any]:
    """Bootstrap for local mode: CDS and LDS from files in `xds_dir`, admin on loopback."""
    dynamic = {
        "cds_config": file_source(xds_dir, "cds.json"),
        "lds_config": file_source(xds_dir, "lds.json"),
    }
    return _bootstrap(node_id, "127.0.0.1", admin_port, dynamic)


XDS_CLUSTER = "canaryctl_xds"
READY_PATH = "/healthz/ready"
"""On the health port: 200 once the proxy has its config. Envoy listens on static listeners only
when its initial xDS fetch is over, so until then the kubelet's probe is refused."""


class AppProbe(_Spec):
    """A kubelet probe of an app container, rewritten to the sidecar's health port at `path`.

    The health listener is static (in the bootstrap), so it answers while the control plane is away:
    an httpGet probe is forwarded to the app on 127.0.0.1 as it was (`http_path`, `https`); a
    tcpSocket probe (no `http_path`) answers 200 only while Envoy can open a connection to the port.
    """

    path: str = Field(pattern=r"^/app-health/")
    port: int = Field(ge=1, le=65535)
    http_path: str | None = None
    https: bool = False
    timeout: float = Field(default=1.0, gt=0, le=3600)
    period: float = Field(default=10.0, gt=0, le=3600)

    @property
    def cluster(self) -> str:
        kind = "http" if self.http_path is not None else "tcp"
        return f"probe_{kind}{'s' if self.https else ''}_{self.port}"


def _static_cluster(name: str, port: int) -> Resource:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket("127.0.0.1", port)}}]}],
        },
    }


def _probe_cluster(probe: AppProbe) -> Resource:
    cluster = _static_cluster(probe.cluster, probe.port)
    if probe.http_path is None:
        # Connect-only checks; a cluster nobody sends traffic to is otherwise checked once a minute.
        interval = _duration(probe.period)
        cluster["health_checks"] = [
            {
                "timeout": _duration(probe.timeout),
                "interval": interval,
                "no_traffic_interval": interval,
                "unhealthy_threshold": 1,
                "healthy_threshold": 1,
                "tcp_health_check": {},
            }
        ]
    elif probe.https:
        # kubelet does not verify the app's certificate either.
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {"@type": UPSTREAM_TLS_TYPE},
        }
    return cluster


def _answer_when_healthy(path: str, cluster: str, percentage: int) -> dict[str, Any]:
    """Envoy's health check filter answering `path`: 200 while `cluster` exists with at least
    `percentage` of its hosts healthy, else 503 (a cluster Envoy does not know is unhealthy)."""
    return {
        "name": "envoy.filters.http.health_check",
        "typed_config": {
            "@type": HEALTH_CHECK_TYPE,
            "pass_through_mode": False,
            "headers": [{"name": ":path", "string_match": {"exact": path}}],
            "cluster_min_healthy_percentages": {cluster: {"value": percentage}},
        },
    }


def health_listener(
    host: str, port: int, probes: tuple[AppProbe, ...] = (), ready_cluster: str = PASSTHROUGH_CLUSTER
) -> Resource:
    """The static listener kubelet probes: READY_PATH for the proxy, `probes` for the app containers.

    Ready means Envoy listens (its first xDS fetch is over) and knows `ready_cluster`, which every
    sidecar config has: after Envoy's initial-fetch timeout it listens without any config, and is
    still not ready.
    """
    routes = [
        {
            "match": {"path": p.path},
            "route": {"cluster": p.cluster, "prefix_rewrite": p.http_path, "timeout": _duration(p.timeout)},
        }
        for p in probes
        if p.http_path is not None
    ]
    checks = [_answer_when_healthy(READY_PATH, ready_cluster, 0)]
    checks += [_answer_when_healthy(p.path, p.cluster, 100) for p in probes if p.http_path is None]
    hcm = {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": HCM_TYPE,
            "stat_prefix": "health",
            "route_config": {
                "name": "health",
                "virtual_hosts": [{"name": "health", "domains": ["*"], "routes": routes}],
            },
            "http_filters": [
                *checks,
                {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}},
            ],
        },
    }
    listener = build_listener("health", host, port, hcm)
    del listener["@type"]  # a bootstrap listener, not an xDS resource
    return listener


FILE_METADATA_CREDENTIALS = "envoy.grpc_credentials.file_based_metadata"
FILE_METADATA_TYPE = "type.googleapis.com/envoy.config.grpc_credential.v3.FileBasedMetadataConfig"


@dataclass(frozen=True)
class XdsAuth:
    """How a sidecar reaches an authenticating control plane: TLS trusting `ca_pem` (checked against
    `server_name`), and the projected ServiceAccount token at `token_path` as a bearer token."""

    ca_pem: str
    token_path: str
    server_name: str


def _authenticated_grpc(xds_host: str, xds_port: int, auth: XdsAuth) -> dict[str, Any]:
    """Envoy's own gRPC client cannot send a token from a file, Google gRPC can: its file-based
    metadata plugin re-reads the file for every stream, so the kubelet's token rotation just works.
    Reconnects then use Envoy's default backoff (0.5 s growing to 30 s)."""
    return {
        "google_grpc": {
            "target_uri": f"{xds_host}:{xds_port}",
            "stat_prefix": XDS_CLUSTER,
            "channel_credentials": {"ssl_credentials": {"root_certs": {"inline_string": auth.ca_pem}}},
            "call_credentials": [
                {
                    "from_plugin": {
                        "name": FILE_METADATA_CREDENTIALS,
                        "typed_config": {
                            "@type": FILE_METADATA_TYPE,
                            "secret_data": {"filename": auth.token_path},
                            "header_prefix": "Bearer ",
                        },
                    }
                }
            ],
            "credentials_factory_name": FILE_METADATA_CREDENTIALS,
            "channel_args": {"args": {"grpc.ssl_target_name_override": {"string_value": auth.server_name}}},
        }
    }


def _xds_cluster(xds_host: str, xds_port: int) -> Resource:
    return {
        "name": XDS_CLUSTER,
        "type": "STATIC" if _is_ip(xds_host) else "STRICT_DNS",
        # The C library's resolver, like every other program in the pod: it honours the pod's hosts
        # file (hostAliases) and nsswitch, which c-ares, Envoy's default, does not read.
        "typed_dns_resolver_config": {
            "name": "envoy.network.dns_resolver.getaddrinfo",
            "typed_config": {"@type": GETADDRINFO_TYPE},
        },
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            HTTP_OPTIONS_KEY: {
                "@type": HTTP_OPTIONS_TYPE,
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _socket(xds_host, xds_port)}}]}],
        },
    }


def ads_bootstrap(
    node_id: str,
    xds_host: str,
    xds_port: int,
    admin_host: str = "127.0.0.1",
    admin_port: int = 15000,
    auth: XdsAuth | None = None,
    health: tuple[str, int] | None = None,
    probes: tuple[AppProbe, ...] = (),
    ready_cluster: str = PASSTHROUGH_CLUSTER,
) -> dict[str, Any]:
    """Bootstrap for the sidecar: everything over one delta ADS stream, reconnecting after an outage.

    With `auth` the stream runs over TLS and carries the pod's token (see `_authenticated_grpc`);
    without it Envoy's own gRPC client reaches the `XDS_CLUSTER`. `health` (host, port) adds the
    static health listener (readiness and rewritten app probes).
    """
    grpc_service: dict[str, Any] = (
        _authenticated_grpc(xds_host, xds_port, auth)
        if auth is not None
        else {
            "envoy_grpc": {
                "cluster_name": XDS_CLUSTER,
                # Reconnect fast when the control plane returns (default backoff grows to 30 s).
                "retry_policy": {"retry_back_off": {"base_interval": "0.1s", "max_interval": "1s"}},
            }
        }
    )
    dynamic = {
        "ads_config": {
            # Incremental xDS: a change sends only the resources that changed (see mesh/ads.py).
            "api_type": "DELTA_GRPC",
            "transport_api_version": "V3",
            # Parsing the full node on every ACK stalled the asyncio server 40-50 ms per push.
            "set_node_on_first_message_only": True,
            "grpc_services": [grpc_service],
        },
        "cds_config": ads_source(),
        "lds_config": ads_source(),
    }
    bootstrap = _bootstrap(node_id, admin_host, admin_port, dynamic)
    static: dict[str, Any] = {"clusters": [] if auth is not None else [_xds_cluster(xds_host, xds_port)]}
    if health is not None:
        static["listeners"] = [health_listener(*health, probes, ready_cluster)]
        static["clusters"] += {p.cluster: _probe_cluster(p) for p in probes}.values()
    bootstrap["static_resources"] = static
    return bootstrap
