"""The Router port over the included mesh's Envoy in local mode."""

from __future__ import annotations

from canaryctl.api.models import Canary, FaultStatus, HTTPMatchRequest, StringMatch
from canaryctl.engine.types import RouteState
from canaryctl.local.targets import Endpoint, LocalTargets
from canaryctl_mesh import config
from canaryctl_mesh.duration import parse_duration
from canaryctl_mesh.local import LocalMesh
from canaryctl_mesh.translate import cluster_name


class UnsupportedMatch(ValueError):
    pass


def backend_name(canary: Canary, primary: bool) -> str:
    """The mesh cluster of one side, named as the mesh names it in a cluster (``<service>.<namespace>``)."""
    return cluster_name(canary.spec.side_service(primary), canary.metadata.namespace or "default")


def _backend(name: str, endpoint: Endpoint) -> config.Backend:
    return config.Backend(name=name, address=endpoint.host, port=endpoint.port)


def _header(name: str, match: StringMatch) -> config.HeaderMatch:
    if match.suffix is not None:
        return config.HeaderMatch(name=name, regex=f".*{_escape(match.suffix)}")
    return config.HeaderMatch(name=name, exact=match.exact, prefix=match.prefix, regex=match.regex)


def _escape(text: str) -> str:
    return "".join(f"\\{c}" if c in ".^$*+?()[]{}|\\" else c for c in text)


def http_match(match: HTTPMatchRequest, backend: str) -> config.HttpMatch:
    """Istio's HTTPMatchRequest as the mesh's match; what the mesh cannot express is an error."""
    headers = tuple(_header(name, value) for name, value in (match.headers or {}).items())
    path_prefix = path_regex = None
    if match.uri is not None:
        if match.uri.prefix is not None:
            path_prefix = match.uri.prefix
        else:
            exact = _escape(match.uri.exact) if match.uri.exact is not None else None
            path_regex = match.uri.regex or exact or f".*{_escape(match.uri.suffix or '')}"
    methods = (match.method.exact,) if match.method is not None and match.method.exact else ()
    if match.method is not None and not methods:
        raise UnsupportedMatch("method matches must be exact")
    return config.HttpMatch(
        backend=backend, headers=headers, path_prefix=path_prefix, path_regex=path_regex, methods=methods
    )


def mesh_fault(fault: FaultStatus) -> config.Fault:
    delay = abort = None
    if fault.delay is not None:
        delay = config.FaultDelay(
            seconds=parse_duration(fault.delay.fixed_delay), percentage=fault.delay.percentage
        )
    if fault.abort is not None:
        abort = config.FaultAbort(status=fault.abort.http_status, percentage=fault.abort.percentage)
    return config.Fault(delay=delay, abort=abort)


def route_spec(canary: Canary, routes: RouteState, targets: LocalTargets) -> config.RouteSpec:
    primary, canary_backend = backend_name(canary, primary=True), backend_name(canary, primary=False)
    backends = (
        config.WeightedBackend(backend=_backend(primary, targets.primary), weight=routes.primary_weight),
        config.WeightedBackend(backend=_backend(canary_backend, targets.canary), weight=routes.canary_weight),
    )
    service = canary.spec.service_spec  # optional here: local endpoints need no generated Service
    timeout = service.timeout if service is not None else None
    return config.RouteSpec(
        service=canary.spec.apex_name,
        backends=backends,
        mirror=config.Mirror(backend=canary_backend, percentage=routes.mirror_weight)
        if routes.mirror_weight
        else None,
        faults={canary_backend: mesh_fault(routes.fault)} if routes.fault is not None else {},
        matches=tuple(http_match(m, canary_backend) for m in routes.match),
        timeout=parse_duration(timeout) if timeout else None,
    )


class LocalRouter:
    name = "canaryctl (local)"

    def __init__(self, mesh: LocalMesh, targets: LocalTargets) -> None:
        self.mesh = mesh
        self.targets = targets
        self.applied: RouteState | None = None

    def unsupported(self, routes: RouteState) -> str | None:
        return None

    async def apply(self, canary: Canary, routes: RouteState) -> None:
        await self.mesh.apply(route_spec(canary, routes, self.targets))
        self.applied = routes
