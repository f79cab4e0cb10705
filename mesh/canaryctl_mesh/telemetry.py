"""Metric names and labels the mesh exposes on Envoy's /stats/prometheus, and the counters behind the
control plane's own /metrics (meshd; served by `canaryctl_mesh.meshd.metrics`).

The metrics provider writes PromQL against these constants, so they are the contract; docs/mesh.md
lists the same names. Each backend is its own Envoy cluster named after the backend (for example
``podinfo-primary`` / ``podinfo-canary``), so the cluster label tells primary from canary.

Upstream stats (Envoy built-ins) miss faults injected by the mesh, because an aborted request never
reaches the upstream. Caller-side stats come from Envoy's stats access logger, which runs once per
downstream request after the response, injected faults included, and tags it with the backend the
route picked. Server-side (inbound) stats come from the same logger in the destination pod's sidecar,
tagged with the pod's workload, so requests from unmeshed clients or sent straight to
``<service>-canary`` are measured too.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# -- upstream (per backend cluster), Envoy built-ins -------------------------------------------------
UPSTREAM_RQ_TOTAL = "envoy_cluster_upstream_rq"
"""Counter: requests answered by the upstream, labels CLUSTER_LABEL and RESPONSE_CODE_LABEL."""
UPSTREAM_RQ_TIME_BUCKET = "envoy_cluster_upstream_rq_time_bucket"
"""Histogram buckets (ms) of upstream latency, labels CLUSTER_LABEL and ``le``."""
UPSTREAM_RQ_TIME_SUM = "envoy_cluster_upstream_rq_time_sum"
UPSTREAM_RQ_TIME_COUNT = "envoy_cluster_upstream_rq_time_count"
CLUSTER_LABEL = "envoy_cluster_name"
RESPONSE_CODE_LABEL = "envoy_response_code"

# -- caller side (per backend, injected faults included), the stats access logger ---------------------
STATS_PREFIX = "canaryctl"
CALLER_RQ_TOTAL = "envoy_canaryctl_requests"
"""Counter: every downstream request, labels SERVICE_LABEL, BACKEND_LABEL, RESPONSE_CODE_LABEL."""
CALLER_RQ_DURATION_BUCKET = "envoy_canaryctl_request_duration_bucket"
"""Histogram buckets (ms) of the full caller-side duration (injected delays included), same labels + le."""
CALLER_RQ_DURATION_SUM = "envoy_canaryctl_request_duration_sum"
CALLER_RQ_DURATION_COUNT = "envoy_canaryctl_request_duration_count"
SERVICE_LABEL = "canaryctl_service"
BACKEND_LABEL = "canaryctl_backend"

# -- server side (per workload, every request the pod's sidecar let in), the stats access logger --------
INBOUND_STATS_PREFIX = "canaryctl_inbound"
INBOUND_RQ_TOTAL = "envoy_canaryctl_inbound_requests"
"""Counter: requests answered to the pod, labels WORKLOAD_LABEL, WORKLOAD_NAMESPACE_LABEL,
RESPONSE_CODE_LABEL and GRPC_STATUS_LABEL."""
INBOUND_RQ_DURATION_BUCKET = "envoy_canaryctl_inbound_request_duration_bucket"
"""Histogram buckets (ms) of the server-side duration, labels WORKLOAD_LABEL, WORKLOAD_NAMESPACE_LABEL, le."""
INBOUND_RQ_DURATION_SUM = "envoy_canaryctl_inbound_request_duration_sum"
INBOUND_RQ_DURATION_COUNT = "envoy_canaryctl_inbound_request_duration_count"
WORKLOAD_LABEL = "canaryctl_workload"
WORKLOAD_NAMESPACE_LABEL = "canaryctl_workload_namespace"
GRPC_STATUS_LABEL = "canaryctl_grpc_status"
"""The gRPC status number; empty for plain HTTP."""
WORKLOAD_ENV = "CANARYCTL_WORKLOAD"
"""Environment of the sidecar container naming its workload (Deployment, StatefulSet, ...)."""
WORKLOAD_NAMESPACE_ENV = "CANARYCTL_WORKLOAD_NAMESPACE"
GRPC_SERVER_ERRORS = (2, 4, 12, 13, 14, 15)
"""gRPC statuses that count as failures, like 5xx: UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED,
INTERNAL, UNAVAILABLE, DATA_LOSS (the ones gRPC's HTTP mapping turns into 5xx)."""

# -- fault filter totals (not per backend) -------------------------------------------------------------
FAULT_ABORTS_TOTAL = "envoy_http_fault_aborts_injected"
FAULT_DELAYS_TOTAL = "envoy_http_fault_delays_injected"

_CALLER_TAGS = [
    {"name": SERVICE_LABEL, "value_format": "%ROUTE_NAME%"},
    {"name": BACKEND_LABEL, "value_format": "%UPSTREAM_CLUSTER%"},
]
_INBOUND_TAGS = [
    {"name": WORKLOAD_LABEL, "value_format": f"%ENVIRONMENT({WORKLOAD_ENV})%"},
    {"name": WORKLOAD_NAMESPACE_LABEL, "value_format": f"%ENVIRONMENT({WORKLOAD_NAMESPACE_ENV})%"},
]


def _stats_logger(prefix: str, tags: list[dict[str, str]]) -> dict[str, Any]:
    """Body of an envoy.access_loggers.stats config: `<prefix>.requests` and `<prefix>.request_duration`.

    Envoy 1.40 logs `stat_prefix` as deprecated in favour of `stats_scope.prefix`, but the xds-protos
    used to build ADS responses do not know `stats_scope` yet; switch once they do (same metric names).
    """
    outcome = [
        {"name": RESPONSE_CODE_LABEL, "value_format": "%RESPONSE_CODE%"},
        {"name": GRPC_STATUS_LABEL, "value_format": "%GRPC_STATUS_NUMBER%"},
    ]
    return {
        "stat_prefix": prefix,
        "counters": [{"stat": {"name": "requests", "tags": [*tags, *outcome]}, "value_fixed": 1}],
        "histograms": [
            {
                "stat": {"name": "request_duration", "tags": tags},
                "unit": "Milliseconds",
                "value_format": "%DURATION%",
            }
        ],
    }


def caller_stats_logger() -> dict[str, Any]:
    """Behind CALLER_RQ_TOTAL and CALLER_RQ_DURATION_*: per apex service and backend, faults included."""
    return _stats_logger(STATS_PREFIX, _CALLER_TAGS)


def inbound_stats_logger() -> dict[str, Any]:
    """Behind INBOUND_RQ_TOTAL and INBOUND_RQ_DURATION_*: per workload, whoever the caller was.

    The workload comes from the sidecar's environment (the injector sets it), so one listener config
    serves every pod.
    """
    return _stats_logger(INBOUND_STATS_PREFIX, _INBOUND_TAGS)


ACCESS_LOG_FORMAT: dict[str, str] = {
    "start_time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "authority": "%REQ(:AUTHORITY)%",
    "protocol": "%PROTOCOL%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "duration_ms": "%DURATION%",
    "upstream_service_time_ms": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "route": "%ROUTE_NAME%",
    "backend": "%UPSTREAM_CLUSTER%",
    "upstream_host": "%UPSTREAM_HOST%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
}
"""JSON access log fields; response_flags carries FI (fault abort) and DI (fault delay)."""


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_samples(text: str) -> list[Sample]:
    """Samples of a Prometheus text exposition (what /stats/prometheus returns), without Prometheus."""
    samples = []
    for line in text.splitlines():
        found = _SAMPLE.match(line.strip())
        if found and not line.startswith("#"):
            labels = dict(_LABEL.findall(found.group(2) or ""))
            samples.append(Sample(found.group(1), labels, float(found.group(3))))
    return samples


def total(samples: list[Sample], name: str, **labels: str) -> float:
    """Sum of `name` samples whose labels include `labels`."""
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


# -- the control plane's own metrics (meshd's /metrics) ------------------------------------------------
MESHD_PREFIX = "canaryctl_mesh"
XDS_NACKS_TOTAL = "canaryctl_mesh_xds_nacks_total"
"""Counter: updates a sidecar's Envoy rejected (its config is then stale), labels type and namespace."""
XDS_ACKS_TOTAL = "canaryctl_mesh_xds_acks_total"
XDS_RESPONSES_TOTAL = "canaryctl_mesh_xds_responses_total"
XDS_PUSH_DURATION = "canaryctl_mesh_xds_push_duration_seconds"
"""Histogram: from a response written to a sidecar until its ACK or NACK arrived, by type."""
XDS_STREAMS = "canaryctl_mesh_xds_streams"
XDS_CONNECTED_SIDECARS = "canaryctl_mesh_xds_connected_sidecars"
XDS_REJECTING_SIDECARS = "canaryctl_mesh_xds_rejecting_sidecars"
"""Gauge: connected sidecars whose Envoy rejected the config it was last sent, by namespace."""
PUSH_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Buckets:
    """A histogram kept on the xDS push path: one bisect and two additions per observation, no lock
    and no allocation; only the scrape turns it into Prometheus's cumulative buckets."""

    def __init__(self, bounds: tuple[float, ...] = PUSH_SECONDS_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, count) pairs, +Inf last, as Prometheus exposes them."""
        running, found = 0, []
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            found.append((bound, running))
        return found


@dataclass
class XdsCounters:
    """What the ADS server counts while it pushes, as plain integers in the event loop's thread (no
    locks on the push path); meshd's /metrics reads them in the same thread when scraped."""

    responses: Counter[str] = field(default_factory=Counter)
    """Responses written, by type URL."""
    acks: Counter[str] = field(default_factory=Counter)
    nacks: Counter[tuple[str, str]] = field(default_factory=Counter)
    """By (type URL, the sidecar's namespace)."""
    refused_streams: Counter[str] = field(default_factory=Counter)
    """Streams refused or ended, by reason: unauthenticated, review_unavailable, permission_denied,
    stream_limit, unknown_type, subscription_limit."""
    push_seconds: dict[str, Buckets] = field(default_factory=dict)
    """Round trips (response written → ACK or NACK), by type URL."""

    def answered(self, type_url: str, seconds: float) -> None:
        buckets = self.push_seconds.get(type_url)
        if buckets is None:
            buckets = self.push_seconds[type_url] = Buckets()
        buckets.observe(seconds)
