"""`canaryctl meshd control-plane|injector`: the included mesh's in-cluster processes."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from kubernetes import client

from canaryctl_mesh import config
from canaryctl_mesh.injector import InjectorSettings
from canaryctl_mesh.kube import KubeObjects, api_client, api_client_for_host, pool_size
from canaryctl_mesh.meshd import injector
from canaryctl_mesh.meshd.control_plane import ControlPlane, sources

DEFAULT_PORTS = config.SidecarPorts()


def _port_list(value: str) -> tuple[int, ...]:
    try:
        ports = tuple(int(p) for p in value.replace(" ", "").split(",") if p)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated ports, got {value!r}") from error
    if not all(1 <= p <= 65535 for p in ports):
        raise argparse.ArgumentTypeError(f"ports must be 1-65535, got {value!r}")
    return ports


def _common(parser: argparse.ArgumentParser) -> None:
    kube = parser.add_mutually_exclusive_group()
    kube.add_argument("--kubeconfig", default=None, help="kubeconfig (default: in-cluster, then ~/.kube)")
    kube.add_argument("--server", default=None, help="API server URL without credentials (kubectl proxy)")
    sidecar = parser.add_argument_group("sidecar ports (the control plane and the injector must agree)")
    for name, default, what in (
        ("outbound", DEFAULT_PORTS.outbound, "outbound listener (iptables sends outgoing TCP here)"),
        ("inbound", DEFAULT_PORTS.inbound, "inbound listener (iptables sends incoming TCP here)"),
        ("prometheus", DEFAULT_PORTS.prometheus, "Prometheus listener (/stats/prometheus)"),
        ("admin", DEFAULT_PORTS.admin, "Envoy admin, on 127.0.0.1"),
    ):
        sidecar.add_argument(f"--{name}-port", type=int, default=default, help=f"{what} (default {default})")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    meshd = subparsers.add_parser("meshd", help="run the included mesh's control plane or sidecar injector")
    commands = meshd.add_subparsers(dest="meshd_command", metavar="COMMAND")
    commands.required = True

    plane = commands.add_parser(
        "control-plane",
        help="serve sidecar config over gRPC ADS from watched SMI objects",
        description="Watches TrafficSplits (SMI v1alpha1-4), HTTPRouteGroups, TrafficPolicies, Services and "
        "EndpointSlices and pushes the sidecars' Envoy config over ADS.",
    )
    plane.add_argument("--xds-port", type=int, default=15010, help="ADS port on 0.0.0.0 (default 15010)")
    plane.add_argument(
        "--namespace",
        action="append",
        default=[],
        dest="namespaces",
        help="watch this namespace (repeatable; default: all namespaces)",
    )
    plane.add_argument(
        "--resync-seconds", type=float, default=30.0, help="relist everything this often (default 30)"
    )
    _common(plane)
    plane.set_defaults(func=run)

    webhook = commands.add_parser(
        "injector",
        help="serve the sidecar injector admission webhook over HTTPS",
        description="POST /mutate answers AdmissionReviews for pods; GET /healthz.",
    )
    webhook.add_argument("--port", type=int, default=9443, help="HTTPS port on 0.0.0.0 (default 9443)")
    webhook.add_argument("--tls-cert", type=Path, required=True, help="PEM certificate (chain)")
    webhook.add_argument("--tls-key", type=Path, required=True, help="PEM private key")
    webhook.add_argument("--sidecar-image", required=True, help="Envoy image of the injected proxy")
    webhook.add_argument("--init-image", required=True, help="init container image (sh + iptables)")
    webhook.add_argument("--xds-host", default=InjectorSettings().xds_host, help="control plane address")
    webhook.add_argument("--xds-port", type=int, default=15010, help="the control plane's ADS port")
    webhook.add_argument(
        "--excluded-ports",
        type=_port_list,
        default=(),
        help="comma-separated ports kept out of the iptables redirect, inbound and outbound",
    )
    _common(webhook)
    webhook.set_defaults(func=run)


def _api(args: argparse.Namespace) -> client.ApiClient:
    """One client for the process, its pool sized for the control plane's watches (one each)."""
    watchers = len(sources(args.namespaces)) if args.meshd_command == "control-plane" else 0
    connections = pool_size(watchers)
    if args.server:
        return api_client_for_host(args.server, connections=connections)
    return api_client(args.kubeconfig, connections=connections)


def _ports(args: argparse.Namespace) -> config.SidecarPorts:
    return config.SidecarPorts(
        outbound=args.outbound_port,
        inbound=args.inbound_port,
        prometheus=args.prometheus_port,
        admin=args.admin_port,
    )


async def _until_signalled(serve: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> None:
    """Run `serve(stop)`; SIGTERM or SIGINT sets `stop`."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(stop)


async def _control_plane(args: argparse.Namespace, api: client.ApiClient, stop: asyncio.Event) -> None:
    async with ControlPlane(
        api, args.namespaces, "0.0.0.0", args.xds_port, args.resync_seconds, _ports(args), bind_host="0.0.0.0"
    ):
        await stop.wait()


async def _injector(args: argparse.Namespace, api: client.ApiClient, stop: asyncio.Event) -> None:
    settings = InjectorSettings(
        proxy_image=args.sidecar_image,
        init_image=args.init_image,
        xds_host=args.xds_host,
        xds_port=args.xds_port,
        ports=_ports(args),
        exclude_inbound_ports=args.excluded_ports,
        exclude_outbound_ports=args.excluded_ports,
    )
    context = injector.tls_context(args.tls_cert, args.tls_key)
    labels = injector.namespace_labels(KubeObjects(api))
    async with injector.serving(settings, labels, context, "0.0.0.0", args.port):
        await stop.wait()


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    serve = _control_plane if args.meshd_command == "control-plane" else _injector
    api = _api(args)
    try:
        asyncio.run(_until_signalled(lambda stop: serve(args, api, stop)))
    finally:
        api.close()  # type: ignore[no-untyped-call]
    return 0
