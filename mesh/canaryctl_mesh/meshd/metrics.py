"""meshd's Prometheus metrics: the health of the mesh's control plane and injector.

What a mesh operator watches: sidecars and xDS streams connected per namespace, responses pushed and
how long sidecars take to answer them, ACKs and NACKs (a NACK is a configuration Envoy rejected: that
sidecar keeps its last accepted routes), streams refused, objects refused (an invalid or conflicting
TrafficSplit, HTTPRouteGroup or TrafficPolicy is left out of the mesh), watch restarts, TokenReview
answers, injector admissions by outcome and when each certificate expires.

The ADS server counts in plain integers on its push path (`canaryctl_mesh.telemetry.XdsCounters`);
this module reads them when scraped. /metrics is served by aiohttp in meshd's event loop, the thread
that changes those counters, so reading them needs no lock.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client import Histogram as PromHistogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from canaryctl_mesh import telemetry
from canaryctl_mesh.ads import AdsServer
from canaryctl_mesh.translate import Refusal

log = logging.getLogger(__name__)

PREFIX = telemetry.MESHD_PREFIX
TOKEN_REVIEW_RESULTS = ("authenticated", "unauthenticated", "error")
WATCH_RESTART_REASONS = ("expired", "error")
SYNC_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def type_name(type_url: str) -> str:
    """``type.googleapis.com/envoy.config.cluster.v3.Cluster`` → ``Cluster``."""
    return type_url.rsplit(".", 1)[-1]


class _ControlPlaneCollector(Collector):
    def __init__(self, ads: AdsServer, refused: Callable[[], list[Refusal]]) -> None:
        self.ads = ads
        self.refused = refused

    def collect(self) -> Iterator[Metric]:
        counters = self.ads.counters
        streams = GaugeMetricFamily(
            telemetry.XDS_STREAMS, "Open xDS streams, by the sidecars' namespace.", labels=["namespace"]
        )
        sidecars = GaugeMetricFamily(
            telemetry.XDS_CONNECTED_SIDECARS,
            "Sidecars (node ids) with an open xDS stream, by namespace.",
            labels=["namespace"],
        )
        rejecting = GaugeMetricFamily(
            telemetry.XDS_REJECTING_SIDECARS,
            "Connected sidecars whose Envoy rejected (NACKed) the config it was last sent, by namespace: "
            "they keep serving their last accepted config.",
            labels=["namespace"],
        )
        for namespace, (open_streams, nodes, rejected) in sorted(self.ads.stream_counts().items()):
            streams.add_metric([namespace], open_streams)
            sidecars.add_metric([namespace], nodes)
            rejecting.add_metric([namespace], rejected)
        yield streams
        yield sidecars
        yield rejecting
        yield _by_type(
            telemetry.XDS_RESPONSES_TOTAL, "xDS responses written to sidecars, by resource type.",
            counters.responses,
        )  # fmt: skip
        yield _by_type(
            telemetry.XDS_ACKS_TOTAL,
            "xDS responses sidecars accepted (ACK), by resource type.",
            counters.acks,
        )
        nacks = CounterMetricFamily(
            telemetry.XDS_NACKS_TOTAL.removesuffix("_total"),
            "xDS responses a sidecar's Envoy rejected (NACK): it keeps its last accepted config.",
            labels=["type", "namespace"],
        )
        for (type_url, namespace), count in sorted(counters.nacks.items()):
            nacks.add_metric([type_name(type_url), namespace], count)
        yield nacks
        refused = CounterMetricFamily(
            f"{PREFIX}_xds_refused_streams",
            "xDS streams refused: unauthenticated, review_unavailable (the token could not be checked: "
            "TokenReview failed), permission_denied (node id of another pod or namespace), stream_limit, "
            "unknown_type (a type meshd does not serve), subscription_limit (too many or too long names).",
            labels=["reason"],
        )
        for reason, count in sorted(counters.refused_streams.items()):
            refused.add_metric([reason], count)
        yield refused
        push = HistogramMetricFamily(
            telemetry.XDS_PUSH_DURATION,
            "Seconds from an xDS response written until the sidecar's ACK or NACK, by resource type.",
            labels=["type"],
        )
        for type_url, buckets in sorted(counters.push_seconds.items()):
            push.add_metric([type_name(type_url)], buckets.cumulative(), buckets.sum)
        yield push
        objects = GaugeMetricFamily(
            f"{PREFIX}_refused_objects",
            "Objects left out of the mesh (invalid, or conflicting with an older one), by kind, namespace.",
            labels=["kind", "namespace"],
        )
        for (kind, namespace), count in sorted(
            Counter((r.ref.kind, r.ref.namespace) for r in self.refused()).items()
        ):
            objects.add_metric([kind, namespace], count)
        yield objects


def _by_type(name: str, documentation: str, counts: Mapping[str, int]) -> CounterMetricFamily:
    family = CounterMetricFamily(name.removesuffix("_total"), documentation, labels=["type"])
    for type_url, count in sorted(counts.items()):
        family.add_metric([type_name(type_url)], count)
    return family


class _CountsCollector(Collector):
    """A `collections.Counter` kept by code without prometheus-client, as one labelled counter."""

    def __init__(self, name: str, documentation: str, label: str, counts: Mapping[str, int]) -> None:
        self.name, self.documentation, self.label, self.counts = name, documentation, label, counts

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=[self.label])
        for value, count in sorted(self.counts.items()):
            family.add_metric([value], count)
        yield family


class _CertificatesCollector(Collector):
    def __init__(self, expiries: Mapping[str, Callable[[], datetime.datetime]]) -> None:
        self.expiries = expiries

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            f"{PREFIX}_certificate_expiry_timestamp_seconds",
            "When the certificate meshd serves (or signs with) expires, Unix time.",
            labels=["certificate"],
        )
        for name, not_after in sorted(self.expiries.items()):
            family.add_metric([name], not_after().timestamp())
        yield family


class MeshdMetrics:
    """One meshd process's metrics in a registry of its own (two in one process never share series)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.watch_restarts = PromCounter(
            f"{PREFIX}_watch_restarts",
            "Lists and watches of a watched resource started again: expired (410 Gone, history "
            "compacted) or error (a failed request, retried with backoff).",
            ["kind", "reason"],
            registry=self.registry,
        )
        self.token_reviews = PromCounter(
            f"{PREFIX}_token_reviews",
            "TokenReviews of sidecar tokens sent to the API server, by answer: authenticated, "
            "unauthenticated or error (no answer).",
            ["result"],
            registry=self.registry,
        )
        for result in TOKEN_REVIEW_RESULTS:
            self.token_reviews.labels(result)
        self.translation_failures = PromCounter(
            f"{PREFIX}_translation_failures",
            "Namespaces whose objects could not be translated by a fault of meshd (an error it did not "
            "foresee; the log has its traceback): their sidecars keep the last configuration.",
            registry=self.registry,
        )
        self.sync_seconds = PromHistogram(
            f"{PREFIX}_sync_duration_seconds",
            "Seconds one sync takes: translating the namespaces that changed and handing the changed "
            "views to the xDS server.",
            buckets=SYNC_BUCKETS,
            registry=self.registry,
        )

    def watch_control_plane(self, ads: AdsServer, refused: Callable[[], list[Refusal]]) -> None:
        self.registry.register(_ControlPlaneCollector(ads, refused))

    def watch_admissions(self, outcomes: Mapping[str, int]) -> None:
        self.registry.register(
            _CountsCollector(
                f"{PREFIX}_injector_admissions",
                "Pod admission reviews the injector answered, by outcome: injected, skipped (not "
                "meshed or already injected), refused (cannot be meshed, a warning says why), invalid "
                "(not an AdmissionReview) or error (answered allowed, unmeshed).",
                "outcome",
                outcomes,
            )
        )

    def watch_certificates(self, expiries: Mapping[str, Callable[[], datetime.datetime]]) -> None:
        self.registry.register(_CertificatesCollector(expiries))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


@contextlib.asynccontextmanager
async def serving(metrics: MeshdMetrics, host: str, port: int) -> AsyncIterator[int]:
    """GET /metrics over plain HTTP while the block runs; yields the bound port."""

    async def exposition(_: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", exposition)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = int(runner.addresses[0][1])
        log.info("serving metrics on %s:%d/metrics", host, bound)
        yield bound
    finally:
        await runner.cleanup()
