"""``canaryctl operator``: run the Kubernetes operator (kopf) in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
from collections.abc import Mapping

from canaryctl import registry
from canaryctl.api.models import INCLUDED_MESH, AlertProviderSpec, AlertProviderType
from canaryctl.operator.adapters import OperatorObjects
from canaryctl.operator.cache import CACHED_KINDS
from canaryctl.operator.handlers import (
    MAX_CONCURRENT_TICKS,
    PEERING_LIFETIME_SECONDS,
    START_JITTER_SECONDS,
    CanaryOperator,
    OperatorConfig,
    release_finalizers,
    tune_process,
)
from canaryctl.ports import Notifier
from canaryctl.telemetry.logs import LEVELS, LogFormat, configure_logging
from canaryctl.telemetry.metrics import Compat, ControllerMetrics, serve_metrics
from canaryctl_mesh.kube import KUBE_REQUEST_TIMEOUT_SECONDS, api_client, api_client_for_host, pool_size
from canaryctl_providers.metrics.analyzer import DEFAULT_PROMETHEUS
from canaryctl_providers.outbound import HOOKS_PER_CANARY, QUERIES_PER_CANARY

# Flagger's environment variables for its global Slack notifier, by the AlertProvider secret key each fills.
SLACK_ENV = {"address": "SLACK_URL", "token": "SLACK_TOKEN", "proxy": "SLACK_PROXY_URL"}


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
        choices=registry.names(registry.ROUTERS),
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
    parser.add_argument(
        "--shared-namespace",
        action="append",
        default=[],
        metavar="NS",
        help="a namespace whose MetricTemplates and AlertProviders every Canary may refer to "
        "(repeatable; the controller's own, $POD_NAMESPACE, always is; '*': any namespace, Flagger's "
        "default, for clusters whose namespaces trust each other); a reference elsewhere gets an "
        "InvalidSpec condition",
    )
    parser.add_argument(
        "--no-cross-namespace-refs",
        action="store_true",
        help="a Canary may only refer to MetricTemplates and AlertProviders in its own namespace, "
        "whatever --shared-namespace says (Flagger's -no-cross-namespace-refs)",
    )
    parser.add_argument(
        "--hook-concurrency",
        type=_positive_int,
        default=HOOKS_PER_CANARY,
        metavar="N",
        help="webhook calls one Canary may have in flight; the rest wait (default: %(default)s)",
    )
    parser.add_argument(
        "--query-concurrency",
        type=_positive_int,
        default=QUERIES_PER_CANARY,
        metavar="N",
        help="metric queries one Canary may have in flight; the rest wait (default: %(default)s)",
    )
    parser.add_argument(
        "--max-concurrent-ticks",
        type=_positive_int,
        default=MAX_CONCURRENT_TICKS,
        metavar="N",
        help="first ticks of Canaries (after a start, a failover or a new Canary) in flight at once; "
        "the rest wait their turn (default: %(default)s)",
    )
    parser.add_argument(
        "--start-jitter-seconds",
        type=float,
        default=START_JITTER_SECONDS,
        metavar="SECONDS",
        help="after a start or a failover each Canary's first tick waits a random part of its interval, "
        "at most this long, so resumed Canaries spread out; 0 disables it (default: %(default)s)",
    )
    parser.add_argument(
        "--kube-request-timeout",
        type=float,
        default=KUBE_REQUEST_TIMEOUT_SECONDS,
        metavar="SECONDS",
        help="client timeout of every Kubernetes API call (default: %(default)s)",
    )
    parser.add_argument("--liveness", default=None, metavar="URL", help="e.g. http://0.0.0.0:8081/healthz")
    parser.add_argument("--cluster-name", default="kubernetes", help="cluster name shown in alerts")
    parser.add_argument(
        "--slack-channel",
        default=None,
        metavar="CHANNEL",
        help="channel of the default Slack notifier; its URL (or bot token) is read from the environment: "
        f"{', '.join(SLACK_ENV.values())}",
    )
    parser.add_argument(
        "--slack-user", default=None, metavar="NAME", help="user name of the default Slack notifier"
    )
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


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def shared_namespaces(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[str, ...]:
    """Where Canaries may refer besides their own namespace: the shared ones and the controller's."""
    if args.no_cross_namespace_refs:
        return ()
    own = [environ["POD_NAMESPACE"]] if environ.get("POD_NAMESPACE") else []
    return tuple(dict.fromkeys([*args.shared_namespace, *own]))


def default_notifier(
    environ: Mapping[str, str], channel: str | None = None, username: str | None = None
) -> Notifier | None:
    """Slack for Canaries that list no alerts, as Flagger's global flags; None when no URL or token is set.

    The URL and token are credentials, so they come from the environment (a Secret), never from argv,
    which any process on the node can read and which error messages print.
    """
    secret = {key: environ[name] for key, name in SLACK_ENV.items() if environ.get(name)}
    if not (secret.get("address") or secret.get("token")):
        return None
    spec = AlertProviderSpec(type=AlertProviderType.SLACK, channel=channel, username=username)
    return registry.notifier(spec, secret)


async def release_all(objects: OperatorObjects, namespaces: tuple[str, ...]) -> list[str]:
    async with objects:  # its connections belong to this event loop
        return await release_finalizers(objects, namespaces)


def run(args: argparse.Namespace) -> int:
    configure_logging("DEBUG" if args.verbose else args.log_level, args.log_format)
    try:
        notifier = default_notifier(os.environ, args.slack_channel, args.slack_user)
    except ValueError as exc:
        print(f"canaryctl operator: default Slack notifier: {exc}", file=sys.stderr)
        return 2
    config = OperatorConfig(
        namespaces=tuple(args.namespace),
        peering=None if args.standalone else args.peering,
        default_provider=args.default_provider,
        prometheus_url=args.prometheus_url,
        cluster_name=args.cluster_name,
        liveness=args.liveness,
        peering_lifetime=args.peering_lifetime,
        shared_namespaces=shared_namespaces(args, os.environ),
        hook_concurrency=args.hook_concurrency,
        query_concurrency=args.query_concurrency,
        kube_request_timeout=args.kube_request_timeout,
        max_concurrent_ticks=args.max_concurrent_ticks,
        min_interval_seconds=args.min_interval_seconds,
        start_jitter=max(0.0, args.start_jitter_seconds),
        default_notifier=notifier,
    )
    if args.priority is not None:
        config = dataclasses.replace(config, priority=args.priority)
    connections = pool_size(watchers=len(CACHED_KINDS) * max(1, len(config.namespaces)))
    api = (
        api_client_for_host(args.server, connections=connections)
        if args.server
        else api_client(args.kubeconfig, args.context, connections=connections)
    )
    if args.release_finalizers:
        released = asyncio.run(release_all(OperatorObjects(api), tuple(args.namespace)))
        for name in released:
            print(f"released {name}")
        print(f"{len(released)} Canaries released")
        return 0
    metrics = ControllerMetrics(args.metrics_compat, mesh_provider=args.default_provider)
    server = serve_metrics(metrics, args.metrics_port) if args.metrics_port else None
    operator = CanaryOperator(config, api, metrics)
    tune_process()
    try:
        asyncio.run(operator.run())
    finally:
        if server is not None:
            server.stop()
    return 0
