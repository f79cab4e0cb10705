"""SMI TrafficSplit (v1alpha1-4) + HTTPRouteGroup + TrafficPolicy + Services/EndpointSlices → RouteSpec.

Backends become Envoy clusters named ``<service>_<namespace>``. With ``spec.matches`` (v1alpha3+) the
split applies only to matching requests, as SMI says: the matched traffic goes to the single weighted
backend and everything else to the apex service. HTTPRouteGroup header values are RE2 regexes (SMI's
semantics), given as a map or as a list of one-entry maps.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from canaryctl_mesh.api import MESH_API_VERSION, TRAFFIC_POLICY_KIND, TrafficPolicy
from canaryctl_mesh.config import (
    DEFAULT_SERVER_FIRST_PORTS,
    INJECTED,
    STATUS_ANNOTATION,
    TERMINATED_PHASES,
    UNCAPTURED_INBOUND_ANNOTATION,
    Backend,
    Cookie,
    Fault,
    FaultAbort,
    FaultDelay,
    HeaderMatch,
    HttpMatch,
    Mirror,
    OutlierDetection,
    Peer,
    Retries,
    RouteSpec,
    WeightedBackend,
)
from canaryctl_mesh.duration import parse_duration
from canaryctl_mesh.identity import DEFAULT_TRUST_DOMAIN, Identity

Object = Mapping[str, Any]

_QUANTITY = re.compile(r"^([+-]?\d+(?:\.\d+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")
_SUFFIX = {
    None: Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(1000),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
}


def parse_weight(value: int | float | str) -> Decimal:
    """SMI weights: ints (v1alpha2+) or Kubernetes Quantities such as "500m" (v1alpha1)."""
    if isinstance(value, bool):
        raise ValueError(f"invalid weight {value!r}")
    if isinstance(value, int | float):
        number = Decimal(str(value))
    else:
        found = _QUANTITY.match(value.strip())
        if not found:
            raise ValueError(f"invalid weight {value!r}: expected an integer or a quantity like 500m")
        number = Decimal(found.group(1)) * _SUFFIX[found.group(2)]
    if number < 0:
        raise ValueError(f"invalid weight {value!r}: must not be negative")
    return number


def integer_weights(weights: list[Decimal]) -> list[int]:
    """Envoy wants integers: keep ints as they are, scale fractional (milli) weights by 1000."""
    if all(w == w.to_integral_value() for w in weights):
        return [int(w) for w in weights]
    return [int((w * 1000).to_integral_value()) for w in weights]


def _namespace(obj: Object) -> str:
    return str(obj.get("metadata", {}).get("namespace") or "default")


def _name(obj: Object) -> str:
    return str(obj.get("metadata", {}).get("name", ""))


def cluster_name(service: str, namespace: str) -> str:
    """``<service>_<namespace>``: unique (Kubernetes names have no ``_``) and free of dots, which
    Envoy's stats tagging would split (``cluster.a.b.upstream_rq`` tags the cluster as ``a``)."""
    return f"{service}_{namespace}"


def _service_port(service: Object) -> Mapping[str, Any]:
    ports = service.get("spec", {}).get("ports") or []
    if not ports:
        raise ValueError(f"service {_name(service)} has no ports")
    return next((p for p in ports if p.get("name") == "http"), ports[0])


def meshed_pods(objects: Iterable[Object], trust_domain: str = DEFAULT_TRUST_DOMAIN) -> dict[str, str]:
    """The SPIFFE ID (in `trust_domain`) of each pod (by name) that runs the injected sidecar."""
    return {
        _name(pod): Identity(
            _namespace(pod), str(pod.get("spec", {}).get("serviceAccountName") or "default")
        ).spiffe_id(trust_domain)
        for pod in objects
        if pod.get("kind") == "Pod" and _annotations(pod).get(STATUS_ANNOTATION) == INJECTED
    }


def _annotations(obj: Object) -> Mapping[str, Any]:
    return (obj.get("metadata") or {}).get("annotations") or {}


def _ipv4(value: Any) -> str | None:
    return _parsed_ipv4(value) if isinstance(value, str) else None


@functools.lru_cache(maxsize=65536)
def _parsed_ipv4(value: str) -> str | None:
    """Cached: every pod's address is looked at again whenever its namespace changes."""
    try:
        return value if ipaddress.ip_address(value).version == 4 else None
    except ValueError:
        return None


def _uncaptured_ports(pod: Object) -> tuple[int, ...] | None:
    """The pod's UNCAPTURED_INBOUND_ANNOTATION; None when it lacks it or it does not parse."""
    value = _annotations(pod).get(UNCAPTURED_INBOUND_ANNOTATION)
    return _parsed_ports(value) if isinstance(value, str) else None


@functools.lru_cache(maxsize=1024)
def _parsed_ports(value: str) -> tuple[int, ...] | None:
    try:
        ports = tuple(sorted({int(p) for p in value.split(",") if p.strip()}))
    except ValueError:
        return None
    return ports if all(1 <= p <= 65535 for p in ports) else None


def mesh_peers(
    objects: Iterable[Object],
    routed: Iterable[str] = (),
    server_first: tuple[int, ...] = DEFAULT_SERVER_FIRST_PORTS,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
) -> tuple[Peer, ...]:
    """Addresses of one namespace that reach sidecars only, for pass-through mTLS: the IPv4 address of
    each running meshed pod, and the ClusterIP of each Service whose ready endpoints are all such
    pods (of any ServiceAccounts). Ports a pod does not capture and the namespace's `server_first`
    ports (where its sidecars do not look for mTLS) stay plaintext, and so does a Service port whose
    target port is one of those. `routed`: ClusterIPs of services under a TrafficSplit."""
    items = list(objects)
    pods: dict[str, tuple[str, str, tuple[int, ...]]] = {}
    owners: dict[str, int] = {}
    for pod in items:
        if pod.get("kind") != "Pod" or _annotations(pod).get(STATUS_ANNOTATION) != INJECTED:
            continue
        status = pod.get("status") or {}
        address, uncaptured = _ipv4(status.get("podIP")), _uncaptured_ports(pod)
        if address is None or uncaptured is None or status.get("phase") in TERMINATED_PHASES:
            continue
        account = str((pod.get("spec") or {}).get("serviceAccountName") or "default")
        plaintext = tuple(sorted({*uncaptured, *server_first}))
        pods[_name(pod)] = (address, Identity(_namespace(pod), account).spiffe_id(trust_domain), plaintext)
        owners[address] = owners.get(address, 0) + 1
    # Two live pods claiming one address (a reused IP seen before the old pod's end): neither is sure.
    pods = {name: pod for name, pod in pods.items() if owners[pod[0]] == 1}
    peers = {address: Peer(address, (identity,), plaintext) for address, identity, plaintext in pods.values()}
    slices: dict[str, list[Object]] = {}
    for eps in items:
        if eps.get("kind") == "EndpointSlice":
            labels = (eps.get("metadata") or {}).get("labels") or {}
            slices.setdefault(str(labels.get("kubernetes.io/service-name")), []).append(eps)
    routed_addresses = set(routed)
    for service in items:
        if service.get("kind") != "Service":
            continue
        address = _ipv4((service.get("spec") or {}).get("clusterIP"))
        if address is None or address in peers:
            continue
        members = _service_members(slices.get(_name(service), []), pods)
        if members is None:
            continue
        targets, identities = members
        ports = (service.get("spec") or {}).get("ports") or []
        names = [
            (port["port"], str(port.get("name") or "")) for port in ports if isinstance(port.get("port"), int)
        ]
        plaintext = tuple(sorted({number for number, name in names if targets.get(name, True)}))
        served = tuple(sorted({number for number, _ in names}))
        peers[address] = Peer(address, identities, plaintext, address in routed_addresses, served)
    return tuple(sorted(peers.values()))


def _service_members(
    slices: list[Object], pods: Mapping[str, tuple[str, str, tuple[int, ...]]]
) -> tuple[dict[str, bool], tuple[str, ...]] | None:
    """(per port name whether its target port is plaintext on an endpoint, the endpoints'
    identities), or None unless the service's `slices` have ready endpoints, every one a meshed pod."""
    identities: set[str] = set()
    targets: dict[str, bool] = {}
    for eps in slices:
        ready = [
            e for e in eps.get("endpoints") or [] if (e.get("conditions") or {}).get("ready") is not False
        ]
        members = []
        for endpoint in ready:
            ref = endpoint.get("targetRef") or {}
            member = pods.get(str(ref.get("name"))) if ref.get("kind") == "Pod" else None
            if member is None or any(a != member[0] for a in endpoint.get("addresses") or []):
                return None
            members.append(member)
        for port in eps.get("ports") or []:
            key = str(port.get("name") or "")
            plaintext = any(port.get("port") in member[2] for member in members)
            targets[key] = targets.get(key, False) or plaintext
        identities.update(member[1] for member in members)
    return (targets, tuple(sorted(identities))) if identities else None


def _is_ip(address: object) -> bool:
    try:
        ipaddress.ip_address(str(address))
    except ValueError:
        return False
    return True


def backend_for(service: Object, slices: Iterable[Object], pods: Mapping[str, str] | None = None) -> Backend:
    """Ready endpoints from the service's EndpointSlices; the ClusterIP or DNS name when there are none.

    `pods` (`meshed_pods`) makes endpoints whose pod runs a sidecar mTLS peers with that identity."""
    name, namespace = _name(service), _namespace(service)
    port = _service_port(service)
    endpoints: list[tuple[str, int]] = []
    peers: dict[str, str] = {}
    for eps in slices:
        labels = eps.get("metadata", {}).get("labels", {})
        if labels.get("kubernetes.io/service-name") != name or _namespace(eps) != namespace:
            continue
        slice_ports = eps.get("ports") or []
        match = next((p for p in slice_ports if p.get("name", "") == port.get("name", "")), None)
        target = match.get("port") if match else port.get("targetPort", port["port"])
        if not isinstance(target, int) or not 0 < target < 65536:
            continue
        for endpoint in eps.get("endpoints") or []:
            if endpoint.get("conditions", {}).get("ready") is False:
                continue
            # IP literals only: an FQDN slice's names would make Envoy refuse the whole cluster update
            addresses = [a for a in endpoint.get("addresses") or [] if _is_ip(a)]
            endpoints.extend((address, target) for address in addresses)
            ref = endpoint.get("targetRef") or {}
            peer = (pods or {}).get(str(ref.get("name"))) if ref.get("kind") == "Pod" else None
            if peer is not None:
                peers.update(dict.fromkeys(addresses, peer))
    cluster_ip = service.get("spec", {}).get("clusterIP")
    address = cluster_ip if cluster_ip and cluster_ip != "None" else f"{name}.{namespace}.svc.cluster.local"
    return Backend(
        name=cluster_name(name, namespace),
        address=address,
        port=int(port["port"]),
        endpoints=tuple(sorted(set(endpoints))),
        peers=tuple(sorted(peers.items())),
    )


def _hosts(service: Object) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(names any caller may use, short names only callers in the service's namespace may use).

    A short name means a service in the caller's own namespace, as in Kubernetes DNS: ``pay`` from
    team-a is team-a's pay, never team-b's.
    """
    name, namespace = _name(service), _namespace(service)
    qualified = [f"{name}.{namespace}", f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]
    cluster_ip = service.get("spec", {}).get("clusterIP")
    if cluster_ip and cluster_ip != "None":
        qualified.append(cluster_ip)
    port = _service_port(service)["port"]

    def with_port(names: list[str]) -> tuple[str, ...]:
        return tuple(host for n in names for host in (n, f"{n}:{port}"))

    return with_port(qualified), with_port([name])


def _header_matches(headers: Any) -> tuple[HeaderMatch, ...]:
    """Accept both SMI shapes: {name: value} and [{name: value}, ...]."""
    if headers is None:
        return ()
    items: list[tuple[str, Any]] = []
    if isinstance(headers, Mapping):
        items = list(headers.items())
    elif isinstance(headers, list):
        for entry in headers:
            if not isinstance(entry, Mapping):
                raise ValueError(f"invalid HTTPRouteGroup header entry {entry!r}")
            items.extend(entry.items())
    else:
        raise ValueError(f"invalid HTTPRouteGroup headers {headers!r}")
    matches = []
    for name, value in items:
        try:
            matches.append(HeaderMatch(name=str(name).lower(), regex=str(value)))
        except ValidationError as error:
            raise ValueError(f"headers.{name}.{_problems(error)}") from error
    return tuple(matches)


def route_group_matches(group: Object) -> list[Mapping[str, Any]]:
    """v1alpha1/2 keep matches at the top level, v1alpha3/4 under spec."""
    spec_matches = (group.get("spec") or {}).get("matches")
    return list(spec_matches if spec_matches is not None else group.get("matches") or [])


def http_match(raw: Mapping[str, Any], backend: str) -> HttpMatch:
    """One HTTPRouteGroup match; ValueError naming the field (as SMI spells it) Envoy would refuse."""
    methods = tuple(m for m in raw.get("methods") or () if m != "*")
    headers = _header_matches(raw.get("headers"))
    try:
        return HttpMatch(backend=backend, headers=headers, path_regex=raw.get("pathRegex"), methods=methods)
    except ValidationError as error:
        raise ValueError(_problems(error)) from error


_SMI_FIELDS = {"path_regex": "pathRegex"}


def _problems(error: ValidationError) -> str:
    """A validation error in one line: each field's path (as SMI spells it) and why."""
    return "; ".join(
        f"{'.'.join(_SMI_FIELDS.get(str(part), str(part)) for part in detail['loc'])}: "
        + (str(detail["ctx"]["error"]) if detail["type"] == "value_error" else detail["msg"])
        for detail in error.errors()
    )


def _seconds(duration: str | None) -> float | None:
    return parse_duration(duration) if duration is not None else None


def _apply_policy(policy: TrafficPolicy, namespace: str) -> dict[str, Any]:
    spec = policy.spec
    fields: dict[str, Any] = {"timeout": _seconds(spec.timeout)}
    if spec.mirror:
        fields["mirror"] = Mirror(
            backend=cluster_name(spec.mirror.backend, namespace), percentage=spec.mirror.percentage
        )
    fields["faults"] = {
        cluster_name(f.backend, namespace): Fault(
            delay=FaultDelay(seconds=parse_duration(f.delay.fixed_delay), percentage=f.delay.percentage)
            if f.delay
            else None,
            abort=FaultAbort(status=f.abort.http_status, percentage=f.abort.percentage) if f.abort else None,
        )
        for f in spec.faults
    }
    if spec.retries:
        r = spec.retries
        fields["retries"] = Retries(
            attempts=r.attempts,
            per_try_timeout=_seconds(r.per_try_timeout),
            retry_on=r.retry_on,
            budget_percent=r.budget_percent,
            min_retry_concurrency=r.min_retry_concurrency,
        )
    fields["cookies"] = tuple(
        Cookie(
            name=c.name,
            value=c.value,
            set_cookie=c.set_cookie,
            backend=cluster_name(c.backend, namespace) if c.backend else None,
        )
        for c in spec.session_affinity
    )
    if spec.outlier_detection:
        o = spec.outlier_detection
        fields["outlier_detection"] = OutlierDetection(
            consecutive_5xx=o.consecutive_5xx,
            interval=parse_duration(o.interval),
            base_ejection_time=parse_duration(o.base_ejection_time),
            max_ejection_percent=o.max_ejection_percent,
        )
    return fields


def _policy_services(policy: TrafficPolicy) -> list[str]:
    """Services a policy names (mirror target, faulted backends), each once."""
    names = [policy.spec.mirror.backend] if policy.spec.mirror else []
    return list(dict.fromkeys([*names, *(f.backend for f in policy.spec.faults)]))


def translate_split(
    split: Object,
    services: Iterable[Object],
    endpoint_slices: Iterable[Object] = (),
    route_groups: Iterable[Object] = (),
    policy: TrafficPolicy | Object | None = None,
    pods: Mapping[str, str] | None = None,
) -> RouteSpec:
    """One TrafficSplit (any SMI version) and what it refers to → the RouteSpec for its apex service.

    ``hosts`` are the names a caller in any namespace may use; see `translate_namespace` for short names.
    `pods` (`meshed_pods`) turns on mTLS to the endpoints with a sidecar.
    """
    if not str(split.get("apiVersion", "")).startswith("split.smi-spec.io/"):
        raise ValueError(f"not an SMI TrafficSplit: apiVersion {split.get('apiVersion')!r}")
    namespace = _namespace(split)
    by_name = {_name(s): s for s in services if _namespace(s) == namespace}
    slices = list(endpoint_slices)
    spec = split.get("spec") or {}
    apex = str(spec.get("service", ""))

    def service(name: str) -> Object:
        if name not in by_name:
            raise ValueError(f"TrafficSplit {namespace}/{_name(split)}: service {name!r} not found")
        return by_name[name]

    raw_backends = spec.get("backends") or []
    if not raw_backends:
        raise ValueError(f"TrafficSplit {namespace}/{_name(split)} has no backends")
    weights = integer_weights([parse_weight(b.get("weight", 0)) for b in raw_backends])
    backends = [
        WeightedBackend(backend=backend_for(service(str(b["service"])), slices, pods), weight=w)
        for b, w in zip(raw_backends, weights, strict=True)
    ]

    matches: list[HttpMatch] = []
    if spec.get("matches"):
        targets = [wb for wb in backends if wb.weight > 0]
        if len(targets) != 1:
            raise ValueError(
                f"TrafficSplit {namespace}/{_name(split)}: matches need exactly one backend with weight > 0"
            )
        groups = {_name(g): g for g in route_groups if _namespace(g) == namespace}
        for ref in spec["matches"]:
            if ref.get("kind", "HTTPRouteGroup") != "HTTPRouteGroup" or ref.get("name") not in groups:
                raise ValueError(f"TrafficSplit {namespace}/{_name(split)}: unknown match {ref!r}")
            for index, raw in enumerate(route_group_matches(groups[ref["name"]])):
                try:
                    matches.append(http_match(raw, targets[0].backend.name))
                except ValueError as error:
                    raise ValueError(
                        f"TrafficSplit {namespace}/{_name(split)}: HTTPRouteGroup {ref['name']} "
                        f"matches[{index}]: {error}"
                    ) from error
        # Unmatched requests go to the apex service itself.
        apex_backend = backend_for(service(apex), slices, pods)
        backends = [
            WeightedBackend(backend=wb.backend, weight=0)
            for wb in backends
            if wb.backend.name != apex_backend.name
        ] + [WeightedBackend(backend=apex_backend, weight=100)]

    fields: dict[str, Any] = {}
    if policy is not None:
        model = policy if isinstance(policy, TrafficPolicy) else TrafficPolicy.model_validate(policy)
        fields = _apply_policy(model, namespace)
        known = {wb.backend.name for wb in backends}
        for name in _policy_services(model):
            if cluster_name(name, namespace) not in known:
                if name not in by_name:
                    raise ValueError(f"service {name!r} not found")
                backends.append(WeightedBackend(backend=backend_for(by_name[name], slices, pods), weight=0))

    return RouteSpec(
        service=cluster_name(apex, namespace),
        backends=tuple(backends),
        hosts=_hosts(service(apex))[0],
        matches=tuple(matches),
        **fields,
    )


EXPORT_ANNOTATION = "mesh.canaryctl.dev/export-to"
"""TrafficSplit annotation: namespaces whose sidecars get this route ("*" all, "." its own, or names)."""
ALL_NAMESPACES = "*"
_NAMESPACE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def parse_export_to(value: str, namespace: str) -> frozenset[str]:
    """``"*"``, ``"."`` (own namespace) and namespace names, comma-separated → the namespaces, or {"*"}."""
    names = {part.strip() for part in value.split(",") if part.strip()}
    if not names:
        raise ValueError(f"{EXPORT_ANNOTATION}: empty; use '*', '.' or namespace names")
    bad = sorted(n for n in names if n not in (ALL_NAMESPACES, ".") and not _NAMESPACE_NAME.match(n))
    if bad:
        raise ValueError(f"{EXPORT_ANNOTATION}: {bad} are not namespace names; use '*', '.' or names")
    if ALL_NAMESPACES in names:
        return frozenset({ALL_NAMESPACES})
    return frozenset(namespace if n == "." else n for n in names) | {namespace}


@dataclass(frozen=True)
class ObjectRef:
    """Enough of a Kubernetes object to name it in an Event (``involvedObject``)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str = ""

    @classmethod
    def of(cls, obj: Object) -> ObjectRef:
        uid = str((obj.get("metadata") or {}).get("uid") or "")
        return cls(str(obj.get("apiVersion", "")), str(obj.get("kind", "")), _namespace(obj), _name(obj), uid)

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True)
class Refusal:
    """An object the control plane left out, and why; everything else keeps being routed."""

    ref: ObjectRef
    message: str


@dataclass(frozen=True)
class MeshRoute:
    """One routed apex service: its RouteSpec and who may see it under which names."""

    split: ObjectRef
    namespace: str
    spec: RouteSpec
    short_hosts: tuple[str, ...]
    """Names that mean this service only to callers in `namespace` (``web``, ``web:80``)."""
    export_to: frozenset[str]
    """Namespaces whose sidecars get this route; ``{"*"}`` for all."""

    def visible_to(self, namespace: str) -> bool:
        return namespace == self.namespace or bool({namespace, ALL_NAMESPACES} & self.export_to)

    def spec_for(self, namespace: str) -> RouteSpec:
        """The route as a caller in `namespace` sees it: short names only from the same namespace."""
        if namespace != self.namespace:
            return self.spec
        return self.spec.model_copy(update={"hosts": self.short_hosts + self.spec.hosts})


@dataclass
class Translation:
    routes: list[MeshRoute] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)


def _age(obj: Object) -> tuple[str, str]:
    """Older objects win conflicts, as in Istio: creationTimestamp (RFC 3339 sorts as text), then name."""
    return str((obj.get("metadata") or {}).get("creationTimestamp") or ""), _name(obj)


def _by_service(objects: list[Object], translation: Translation) -> dict[str, Object]:
    """The oldest object per spec.service; every younger one is refused, naming the one that won."""
    winners: dict[str, Object] = {}
    for obj in sorted(objects, key=_age):
        service = str((obj.get("spec") or {}).get("service") or "")
        if service in winners:
            message = (
                f"{obj.get('kind')} {_name(winners[service])} (older) already routes service {service!r}"
            )
            translation.refused.append(Refusal(ObjectRef.of(obj), message))
        else:
            winners[service] = obj
    return winners


def translate_namespace(
    objects: Iterable[Object],
    default_export_to: frozenset[str] = frozenset({ALL_NAMESPACES}),
    mtls: bool = False,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
) -> Translation:
    """One namespace's objects → its routes, refusing bad or conflicting objects one by one.

    A TrafficSplit only ever refers to objects in its own namespace, so namespaces translate
    independently (and the control plane redoes only those that changed). A split that cannot be
    translated, or routes a service an older split already routes, is refused alone; an invalid
    TrafficPolicy is refused alone and its service is routed without it.
    """
    items = list(objects)

    def kind(k: str) -> list[Object]:
        return [o for o in items if o.get("kind") == k]

    translation = Translation()
    services, slices, groups = kind("Service"), kind("EndpointSlice"), kind("HTTPRouteGroup")
    pods = meshed_pods(items, trust_domain) if mtls else None
    service_by_name = {_name(s): s for s in services}
    policies = _by_service(
        [p for p in kind(TRAFFIC_POLICY_KIND) if p.get("apiVersion") == MESH_API_VERSION], translation
    )
    for apex, split in _by_service(kind("TrafficSplit"), translation).items():
        namespace = _namespace(split)
        annotation = ((split.get("metadata") or {}).get("annotations") or {}).get(EXPORT_ANNOTATION)
        try:
            export_to = (
                parse_export_to(annotation, namespace) if annotation is not None else default_export_to
            )
            spec = translate_split(split, services, slices, groups, pods=pods)
        except ValueError as error:
            translation.refused.append(Refusal(ObjectRef.of(split), str(error)))
            continue
        policy = policies.get(apex)
        if policy is not None:
            try:
                spec = translate_split(split, services, slices, groups, policy, pods)
            except ValueError as error:
                message = f"TrafficPolicy {namespace}/{_name(policy)}: {error}"
                translation.refused.append(Refusal(ObjectRef.of(policy), message))
        short = _hosts(service_by_name[apex])[1]
        translation.routes.append(MeshRoute(ObjectRef.of(split), namespace, spec, short, export_to))
    return translation
