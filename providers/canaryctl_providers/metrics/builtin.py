"""The builtin metrics, ``request-success-rate`` (% non-5xx) and ``request-duration`` (p99, ms), per mesh.

Queries are templates rendered like MetricTemplates. For Istio, Linkerd, Kuma, OSM, App Mesh, Knative,
Kubernetes/Gateway API, ingress-nginx, Contour, Gloo, Skipper, Traefik and APISIX they are Flagger's;
the included mesh reads the Envoy stats named in canaryctl_mesh.telemetry. Each mesh also has a
request-count query over the interval (for the engine's two-proportion test and fastFail), and a
caller-side variant for fault steps, where the upstream never sees the requests a fault aborted.

The included mesh measures where Istio and Linkerd do, on the server side: the destination pod's
sidecar counts every request it lets in, per workload, whoever sent it (a meshed pod, an unmeshed
client, a load test calling ``<service>-canary``). Where no sidecar serves the workload (the local
runtime's plain processes) the same query falls back to the callers' upstream stats.

One deliberate change from Flagger: the success-rate numerator falls back to 0, so a canary that
fails every request reads 0% instead of "no data"; with no traffic at all the query still returns
nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from canaryctl.api.models import INCLUDED_MESH
from canaryctl_mesh import telemetry
from canaryctl_providers.metrics.template import TemplateModel

SUCCESS_RATE = "request-success-rate"
DURATION = "request-duration"
BUILTIN_METRICS = (SUCCESS_RATE, DURATION)


@dataclass(frozen=True)
class Source:
    """Where one mesh keeps request stats: a counter and a latency histogram with their selectors.

    ``alternative``: a second selector for the same series under another label scheme; each query then
    reads the series either selects (PromQL ``or``, so a series both select counts once)."""

    counter: str
    selector: str
    successes: str
    buckets: str
    to_ms: str = ""
    alternative: str = ""

    def _series(self, metric: str, extra: str, fn: str) -> str:
        selectors = [s for s in (self.selector, self.alternative) if s]
        return " or ".join(
            f"{fn}({metric}{{{', '.join(m for m in (selector, extra) if m)}}}[{{{{ interval }}}}])"
            for selector in selectors
        )

    def queries(self) -> BuiltinQueries:
        def counter(extra: str, fn: str) -> str:
            return f"sum({self._series(self.counter, extra, fn)})"

        return BuiltinQueries(
            success_rate=f"({counter(self.successes, 'rate')} or vector(0)) / {counter('', 'rate')} * 100",
            duration=(
                f"histogram_quantile(0.99, sum({self._series(self.buckets, '', 'rate')}) by (le)){self.to_ms}"
            ),
            requests=counter("", "increase"),
        )


_NON_WORD = re.compile(r"\W", re.ASCII)


def skipper_names(model: TemplateModel) -> TemplateModel:
    """Flagger's encodeModelForSkipper: Skipper names routes after the Ingress with every non-word
    character made ``_``, so the names its queries match are encoded alike."""

    def encode(name: str) -> str:
        return _NON_WORD.sub("_", name)

    return replace(
        model,
        name=encode(model.name),
        namespace=encode(model.namespace),
        target=encode(model.target),
        service=encode(model.service),
        ingress=encode(model.ingress),
    )


@dataclass(frozen=True)
class BuiltinQueries:
    success_rate: str
    duration: str
    requests: str
    # What the model's names become before rendering (Skipper's route names); None: as they are.
    names: Callable[[TemplateModel], TemplateModel] | None = None

    def model_for(self, model: TemplateModel) -> TemplateModel:
        return self.names(model) if self.names is not None else model

    def value_query(self, metric: str) -> str:
        return self.success_rate if metric == SUCCESS_RATE else self.duration

    def or_else(self, fallback: BuiltinQueries) -> BuiltinQueries:
        """Each query answered by this source when it has data, else by `fallback` (PromQL ``or``):
        whole queries, never a numerator from one source over a denominator from the other."""

        def either(preferred: str, other: str) -> str:
            return f"({preferred}) or ({other})"

        return BuiltinQueries(
            success_rate=either(self.success_rate, fallback.success_rate),
            duration=either(self.duration, fallback.duration),
            requests=either(self.requests, fallback.requests),
        )


@dataclass(frozen=True)
class MeshQueries:
    upstream: BuiltinQueries
    caller: BuiltinQueries

    def select(self, caller_side: bool) -> BuiltinQueries:
        return self.caller if caller_side else self.upstream


_FIVE_XX = '"5.*"'
_ISTIO_DEST = 'destination_workload_namespace="{{ namespace }}", destination_workload=~"{{ target }}"'
_LINKERD_IN = 'namespace="{{ namespace }}", deployment=~"{{ target }}", direction="inbound"'
_LINKERD_OUT = 'dst_namespace="{{ namespace }}", dst_deployment=~"{{ target }}", direction="outbound"'
_POD_NAME = '"{{ target }}-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"'
# A pod's own stats: Flagger's relabelling (kubernetes_namespace, kubernetes_pod_name) or Prometheus
# Operator's PodMonitor/ServiceMonitor labels (namespace, pod); the queries read either.
_POD = f'kubernetes_namespace="{{{{ namespace }}}}", kubernetes_pod_name=~{_POD_NAME}'
_OPERATOR_POD = f'namespace="{{{{ namespace }}}}", pod=~{_POD_NAME}'


_GRPC_ERRORS = "|".join(str(status) for status in telemetry.GRPC_SERVER_ERRORS)
_HTTP_SUCCESS = f"{telemetry.RESPONSE_CODE_LABEL}!~{_FIVE_XX}"
_ENVOY_SUCCESS = f'{_HTTP_SUCCESS}, {telemetry.GRPC_STATUS_LABEL}!~"{_GRPC_ERRORS}"'


def _envoy(
    counter: str, buckets: str, selector: str, successes: str = _ENVOY_SUCCESS, alternative: str = ""
) -> Source:
    return Source(counter, selector, successes, buckets, alternative=alternative)


def _backend(label: str) -> str:
    return f'{label}="{{{{ backend }}}}"'


_WORKLOAD = (
    f'{telemetry.WORKLOAD_NAMESPACE_LABEL}="{{{{ namespace }}}}", '
    f'{telemetry.WORKLOAD_LABEL}="{{{{ target }}}}"'
)


def _istio(reporter: str) -> Source:
    selector = f'reporter="{reporter}", {_ISTIO_DEST}'
    return Source(
        "istio_requests_total",
        selector,
        f"response_code!~{_FIVE_XX}",
        "istio_request_duration_milliseconds_bucket",
    )


def _linkerd(selector: str) -> Source:
    return Source(
        "response_total",
        selector,
        'classification!="failure"',
        "response_latency_ms_bucket",
    )


_INCLUDED = MeshQueries(
    upstream=_envoy(telemetry.INBOUND_RQ_TOTAL, telemetry.INBOUND_RQ_DURATION_BUCKET, _WORKLOAD)
    .queries()
    .or_else(
        _envoy(
            telemetry.UPSTREAM_RQ_TOTAL,
            telemetry.UPSTREAM_RQ_TIME_BUCKET,
            _backend(telemetry.CLUSTER_LABEL),
            _HTTP_SUCCESS,
        ).queries()
    ),
    caller=_envoy(
        telemetry.CALLER_RQ_TOTAL, telemetry.CALLER_RQ_DURATION_BUCKET, _backend(telemetry.BACKEND_LABEL)
    ).queries(),
)
_ISTIO = MeshQueries(_istio("destination").queries(), _istio("source").queries())
_LINKERD = MeshQueries(_linkerd(_LINKERD_IN).queries(), _linkerd(_LINKERD_OUT).queries())


def _destination_only(source: Source) -> MeshQueries:
    """Stats of the destination alone: no caller side, so fault steps read the same queries (these pods
    never see requests a proxy aborted in front of them)."""
    queries = source.queries()
    return MeshQueries(queries, queries)


def _envoy_upstream(selector: str, alternative: str = "") -> Source:
    """A sidecar Envoy's own cluster stats, as Kuma and App Mesh export them."""
    return _envoy(
        telemetry.UPSTREAM_RQ_TOTAL, telemetry.UPSTREAM_RQ_TIME_BUCKET, selector, _HTTP_SUCCESS, alternative
    )


_KUBERNETES = _destination_only(
    Source(
        "http_request_duration_seconds_count",
        _POD,
        f"status!~{_FIVE_XX}",
        "http_request_duration_seconds_bucket",
        " * 1000",
        _OPERATOR_POD,
    )
)
# Kuma labels each dataplane's Envoy stats with its kuma.io/service (``<service>_<namespace>_svc_<port>``);
# Flagger selects ``{{ target }}-canary_...``, which on the primary side would name no service, so the
# side's Service comes from ``{{ backend }}`` (``<apex>-canary_<namespace>``, ``<apex>-primary_...``).
_KUMA = _destination_only(_envoy_upstream('service=~"{{ backend }}_svc_[0-9a-zA-Z-]+"'))
_OSM = _destination_only(
    Source(
        "osm_request_total",
        'destination_namespace="{{ namespace }}", destination_kind="Deployment", '
        'destination_name="{{ target }}"',
        f"response_code!~{_FIVE_XX}",
        "osm_request_duration_ms_bucket",
    )
)
# App Mesh: each pod's Envoy sidecar, by its pod's labels.
_APPMESH = _destination_only(_envoy_upstream(_POD, _OPERATOR_POD))


# Knative: the activator's and queue-proxies' Envoy (net-istio, net-kourier), per revision: ``{{ route }}``
# is the revision measured.
_KNATIVE = _destination_only(
    Source(
        "envoy_cluster_upstream_rq",
        'envoy_cluster_name=~"{{ namespace }}/{{ route }}"',
        f"envoy_response_code!~{_FIVE_XX}",
        "envoy_cluster_upstream_rq_time_bucket",
    )
)


# Ingress controllers: Flagger's queries, which measure the canary's side only (comparing against the
# primary finds no primary data). Their routers refuse faults, so there is no caller side either.
_NGINX_SELECTOR = 'namespace="{{ namespace }}", ingress="{{ ingress }}", canary!=""'
_NGINX_DURATION = "nginx_ingress_controller_response_duration_seconds"
_NGINX_QUERIES = replace(
    Source("nginx_ingress_controller_requests", _NGINX_SELECTOR, f"status!~{_FIVE_XX}", "").queries(),
    duration=(
        f"sum(rate({_NGINX_DURATION}_sum{{{_NGINX_SELECTOR}}}[{{{{ interval }}}}])) / "
        f"sum(rate({_NGINX_DURATION}_count{{{_NGINX_SELECTOR}}}[{{{{ interval }}}}])) * 1000"
    ),
)


def _envoy_cluster(cluster: str) -> BuiltinQueries:
    """Envoy's per-cluster stats as Contour and Gloo export them, for the clusters ``cluster`` matches."""
    return _envoy_upstream(f'envoy_cluster_name=~"{cluster}"').queries()


_TRAEFIK_SERVICE = 'service=~"{{ namespace }}-{{ service }}-canary-[0-9a-zA-Z-]+@kubernetescrd"'
_TRAEFIK_BUCKETS = "traefik_service_request_duration_seconds_bucket"
# Traefik's request counter is the histogram's +Inf bucket.
_TRAEFIK_QUERIES = replace(
    Source(_TRAEFIK_BUCKETS, f'{_TRAEFIK_SERVICE}, le="+Inf"', 'code!~"5.."', "").queries(),
    duration=(
        f"histogram_quantile(0.99, sum(rate({_TRAEFIK_BUCKETS}{{{_TRAEFIK_SERVICE}}}"
        "[{{ interval }}])) by (le)) * 1000"
    ),
)

_APISIX_ROUTE = 'route=~"{{ namespace }}_{{ route }}-{{ service }}-canary_.+"'
_APISIX_QUERIES = replace(
    Source("apisix_http_status", _APISIX_ROUTE, 'code!~"5.."', "").queries(),
    duration=(
        f'histogram_quantile(0.99, sum(rate(apisix_http_latency_bucket{{type=~"request", {_APISIX_ROUTE}}}'
        "[{{ interval }}])) by (le))"
    ),
)

# Skipper: Flagger's queries over the canary Ingress's routes (``kube_<ns>__<ingress>_canary__...``);
# requests are the response histogram's +Inf bucket, the duration is an average.
_SKIPPER_ROUTE = (
    '{{- $route := printf "kube(ew)?_%s__%s_canary__.*__%s_canary(_[0-9]+)?" namespace ingress service }}'
)
_SKIPPER_SERVE = "skipper_serve_route_duration_seconds"
_SKIPPER_SOURCE = Source(
    "skipper_response_duration_seconds_bucket", 'route=~"{{ $route }}", le="+Inf"', 'code!~"5.."', ""
).queries()
_SKIPPER_QUERIES = BuiltinQueries(
    success_rate=_SKIPPER_ROUTE + _SKIPPER_SOURCE.success_rate,
    duration=(
        f'{_SKIPPER_ROUTE}sum(rate({_SKIPPER_SERVE}_sum{{route=~"{{{{ $route }}}}"}}[{{{{ interval }}}}])) / '
        f'sum(rate({_SKIPPER_SERVE}_count{{route=~"{{{{ $route }}}}"}}[{{{{ interval }}}}])) * 1000'
    ),
    requests=_SKIPPER_ROUTE + _SKIPPER_SOURCE.requests,
    names=skipper_names,
)

_INGRESS_QUERIES = {
    "nginx": _NGINX_QUERIES,
    "contour": _envoy_cluster("{{ namespace }}_{{ service }}-canary_[0-9a-zA-Z-]+"),
    "gloo": _envoy_cluster("{{ namespace }}-{{ service }}-canaryupstream-[0-9a-zA-Z-]+_[0-9a-zA-Z-]+"),
    "traefik": _TRAEFIK_QUERIES,
    "apisix": _APISIX_QUERIES,
    "skipper": _SKIPPER_QUERIES,
}


def mesh_queries(provider: str | None) -> MeshQueries:
    """Queries for a Canary's ``spec.provider``; None is the included mesh."""
    name = (provider or INCLUDED_MESH).split(":")[0]
    if name == INCLUDED_MESH:
        return _INCLUDED
    if name == "istio":
        return _ISTIO
    if name in ("linkerd", "smi"):
        return _LINKERD
    if name in ("kubernetes", "gatewayapi"):
        return _KUBERNETES
    if name == "kuma":
        return _KUMA
    if name == "osm":
        return _OSM
    if name == "appmesh":
        return _APPMESH
    if name == "knative":
        return _KNATIVE
    if name in _INGRESS_QUERIES:
        return MeshQueries(_INGRESS_QUERIES[name], _INGRESS_QUERIES[name])
    raise ValueError(f"no builtin metrics for provider {provider!r}")
