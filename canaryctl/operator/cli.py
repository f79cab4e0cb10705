"""``canaryctl operator``: run the Kubernetes operator (kopf) in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses

from canaryctl.api.models import INCLUDED_MESH, CanaryAnalysis
from canaryctl.operator.adapters import OperatorObjects
from canaryctl.operator.handlers import (
    PEERING_LIFETIME_SECONDS,
    CanaryOperator,
    OperatorConfig,
    release_finalizers,
)
from canaryctl.providers.kube import api_client, api_client_for_host
from canaryctl.providers.metrics.analyzer import DEFAULT_PROMETHEUS
from canaryctl.providers.routers import ROUTERS
from canaryctl.telemetry.logs import LEVELS, LogFormat, configure_logging
from canaryctl.telemetry.metrics import Compat, ControllerMetrics, serve_metrics


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "operator",
        help="run the Kubernetes operator",
        description="Watches Canaries, MetricTemplates and AlertProviders and drives each rollout. "
        "Run two replicas with the same --peering name: one acts, the other stands by.",
    )
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch this namespace (repeatable); default: all namespaces",
    )
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument(
        "--peering",
        default="canaryctl",
        metavar="NAME",
        help="kopf peering object for leader election (default: canaryctl; it must exist)",
    )
    peering.add_argument("--standalone", action="store_true", help="no leader election")
    parser.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority; the highest live one acts (default: random, distinct per replica)",
    )
    parser.add_argument(
        "--peering-lifetime",
        type=int,
        default=PEERING_LIFETIME_SECONDS,
        metavar="SECONDS",
        help="how long a replica's peering record lives unless renewed: a standby takes over from a "
        "replica that died without a clean exit at most this long after (default: %(default)s)",
    )
    parser.add_argument(
        "--default-provider",
        default=INCLUDED_MESH,
        choices=sorted(ROUTERS),
        help="router for Canaries without spec.provider (default: %(default)s)",
    )
    parser.add_argument(
        "--metrics-port", type=int, default=8080, help="Prometheus /metrics port; 0 disables it"
    )
    parser.add_argument(
        "--metrics-compat",
        default=Compat.CANARYCTL.value,
        choices=[c.value for c in Compat],
        help="names of Flagger's metric families: flagger_* (as Flagger, for its alerts and dashboards) "
        "or canaryctl_* (default: %(default)s); labels and values are Flagger's either way",
    )
    parser.add_argument(
        "--prometheus-url",
        default=DEFAULT_PROMETHEUS,
        help="Prometheus for builtin metrics without spec.metricsServer (default: %(default)s)",
    )
    parser.add_argument("--liveness", default=None, metavar="URL", help="e.g. http://0.0.0.0:8081/healthz")
    parser.add_argument("--cluster-name", default="kubernetes", help="cluster name shown in alerts")
    parser.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file (default: in-cluster, then ~/.kube)"
    )
    parser.add_argument("--context", default=None, help="kubeconfig context")
    parser.add_argument(
        "--server", default=None, metavar="URL", help="API server URL without credentials (kubectl proxy)"
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=LEVELS, type=str.upper, help="default: %(default)s"
    )
    parser.add_argument(
        "--log-format",
        default=LogFormat.TEXT.value,
        choices=[f.value for f in LogFormat],
        help="text lines or one JSON object per line; both carry canary, namespace, phase, step and "
        "trace ids (default: %(default)s)",
    )
    parser.add_argument("--verbose", action="store_true", help="same as --log-level DEBUG")
    parser.add_argument(
        "--release-finalizers",
        action="store_true",
        help="remove canaryctl's finalizer from every Canary in the watched namespaces and exit: run "
        "when the controller is uninstalled (the chart's post-delete hook), so Canaries deleted later "
        "do not stay Terminating",
    )
    # Lowers Flagger's 10 s floor on analysis intervals: for benchmarks and tests against an emulator.
    parser.add_argument("--min-interval-seconds", type=float, default=None, help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    configure_logging("DEBUG" if args.verbose else args.log_level, args.log_format)
    if args.min_interval_seconds is not None:
        CanaryAnalysis.min_interval_seconds = args.min_interval_seconds
    config = OperatorConfig(
        namespaces=tuple(args.namespace),
        peering=None if args.standalone else args.peering,
        default_provider=args.default_provider,
        prometheus_url=args.prometheus_url,
        cluster_name=args.cluster_name,
        liveness=args.liveness,
        peering_lifetime=args.peering_lifetime,
    )
    if args.priority is not None:
        config = dataclasses.replace(config, priority=args.priority)
    api = api_client_for_host(args.server) if args.server else api_client(args.kubeconfig, args.context)
    if args.release_finalizers:
        released = asyncio.run(release_finalizers(OperatorObjects(api), tuple(args.namespace)))
        for name in released:
            print(f"released {name}")
        print(f"{len(released)} Canaries released")
        return 0
    metrics = ControllerMetrics(args.metrics_compat, mesh_provider=args.default_provider)
    server = serve_metrics(metrics, args.metrics_port) if args.metrics_port else None
    try:
        asyncio.run(CanaryOperator(config, api, metrics).run())
    finally:
        if server is not None:
            server.stop()
    return 0
