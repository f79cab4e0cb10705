"""`canaryctl meshd control-plane|injector`: the included mesh's in-cluster processes."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import signal
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from kubernetes import client
from pythonjsonlogger.json import JsonFormatter

from canaryctl_mesh import config
from canaryctl_mesh.ads import AdsServer
from canaryctl_mesh.identity import DEFAULT_TRUST_DOMAIN, TOKEN_AUDIENCE, TokenAuthenticator, trust_domain
from canaryctl_mesh.injector import SIDECAR_TOKEN_PATH, InjectorSettings
from canaryctl_mesh.kube import KubeObjects, api_client, api_client_for_host, pool_size
from canaryctl_mesh.meshd import injector, metrics, runtime
from canaryctl_mesh.meshd.auth import KubeTokenReviewer
from canaryctl_mesh.meshd.ca_secret import CA_RECHECK, CaSecret
from canaryctl_mesh.meshd.control_plane import ControlPlane, sources
from canaryctl_mesh.meshd.pki import WORKLOAD_VALIDITY, CertificateAuthority, load_or_create_ca
from canaryctl_mesh.meshd.tls import IssuedCertificate, xds_credentials
from canaryctl_mesh.meshd.workload import WorkloadCertificates
from canaryctl_mesh.translate import parse_export_to

DEFAULT_PORTS = config.SidecarPorts()
DEFAULT_METRICS_PORT = 8080
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


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
    parser.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="text lines, or one JSON object per line (time, level, logger, message) (default text)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=DEFAULT_METRICS_PORT,
        help=f"Prometheus /metrics over plain HTTP on 0.0.0.0 (default {DEFAULT_METRICS_PORT})",
    )


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
        "--watch-timeout-seconds",
        type=float,
        default=300.0,
        help="length of one watch request; the next resumes where it ended, no relist (default 300)",
    )
    plane.add_argument(
        "--default-export-to",
        default="*",
        help="namespaces whose sidecars get a TrafficSplit's route unless its mesh.canaryctl.dev/export-to "
        "annotation says otherwise: '*' (default), '.' (its own namespace) or names",
    )
    security = plane.add_argument_group("xDS security (TLS and ServiceAccount-token authentication)")
    security.add_argument(
        "--xds-dns-name",
        action="append",
        default=[],
        dest="xds_dns_names",
        help="name (or IP) in the xDS serving certificate, e.g. the Service's FQDN (repeatable, required "
        "unless --insecure)",
    )
    security.add_argument(
        "--token-audience",
        default=TOKEN_AUDIENCE,
        help=f"audience of sidecar tokens (default {TOKEN_AUDIENCE})",
    )
    security.add_argument(
        "--max-streams-per-identity",
        type=int,
        default=8,
        help="xDS streams one identity (one pod, for pod-bound tokens) may hold (default 8; 0 = no limit)",
    )
    security.add_argument(
        "--mtls",
        choices=[*config.MTLS_MODES, "off"],
        default=config.PERMISSIVE,
        help="automatic mTLS between sidecars; the default inbound mode, a namespace's "
        "mesh.canaryctl.dev/mtls label overrides it: permissive (default) also accepts plaintext from "
        "unmeshed clients, strict refuses it; off: no workload certificates",
    )
    security.add_argument(
        "--trust-domain",
        type=_trust_domain,
        default=DEFAULT_TRUST_DOMAIN,
        help="SPIFFE trust domain of the workload certificates and of the identities sidecars expect and "
        f"authorize (spiffe://<trust domain>/ns/<ns>/sa/<sa>; default {DEFAULT_TRUST_DOMAIN})",
    )
    security.add_argument(
        "--workload-certificate-minutes",
        type=float,
        default=WORKLOAD_VALIDITY.total_seconds() / 60,
        help=f"lifetime of a sidecar's SPIFFE certificate, renewed with a third left (default "
        f"{WORKLOAD_VALIDITY.total_seconds() / 60:.0f})",
    )
    security.add_argument(
        "--insecure",
        action="store_true",
        help="plaintext xDS, no authentication, every sidecar may stream any namespace's view: loopback "
        "tests and local runs only",
    )
    _ca(plane)
    _common(plane)
    plane.set_defaults(func=run)

    webhook = commands.add_parser(
        "injector",
        help="serve the sidecar injector admission webhook over HTTPS",
        description="POST /mutate answers AdmissionReviews for pods; GET /healthz. The serving certificate "
        "comes from the mesh CA (renewed in memory, the webhook's caBundle kept current) or, with "
        "--tls-cert/--tls-key, from files (cert-manager), reloaded when they change.",
    )
    webhook.add_argument("--port", type=int, default=9443, help="HTTPS port on 0.0.0.0 (default 9443)")
    webhook.add_argument("--tls-cert", type=Path, help="PEM certificate (chain) from cert-manager")
    webhook.add_argument("--tls-key", type=Path, help="PEM private key from cert-manager")
    webhook.add_argument(
        "--tls-dns-name",
        action="append",
        default=[],
        dest="tls_dns_names",
        help="name in the webhook's certificate, e.g. the Service's FQDN (repeatable; without --tls-cert)",
    )
    webhook.add_argument(
        "--webhook-name",
        default="",
        help="MutatingWebhookConfiguration whose caBundle the injector keeps equal to the mesh CA",
    )
    webhook.add_argument("--sidecar-image", required=True, help="Envoy image of the injected proxy")
    webhook.add_argument("--init-image", required=True, help="init container image (sh + iptables)")
    webhook.add_argument("--xds-host", default=InjectorSettings().xds_host, help="control plane address")
    webhook.add_argument("--xds-port", type=int, default=15010, help="the control plane's ADS port")
    webhook.add_argument(
        "--token-audience", default=TOKEN_AUDIENCE, help="audience of the sidecars' projected tokens"
    )
    webhook.add_argument(
        "--insecure-xds",
        action="store_true",
        help="sidecars connect in plaintext without a token (a control plane run with --insecure)",
    )
    webhook.add_argument(
        "--excluded-ports",
        type=_port_list,
        default=(),
        help="comma-separated ports kept out of the iptables redirect, inbound and outbound",
    )
    _ca(webhook)
    _common(webhook)
    webhook.set_defaults(func=run)


def _trust_domain(value: str) -> str:
    try:
        return trust_domain(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _recheck_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0.1 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds between 0.1 and 3600, got {value!r}")
    return seconds


def _ca(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("the mesh CA (one Secret the control plane and injector share)")
    group.add_argument("--ca-secret", default="canaryctl-mesh-ca", help="Secret holding ca.crt and ca.key")
    group.add_argument(
        "--ca-namespace", default=None, help="its namespace (default: this pod's namespace, else 'default')"
    )
    group.add_argument(
        "--ca-recheck-seconds",
        type=_recheck_seconds,
        default=CA_RECHECK,
        help=f"how often the Secret is read again, to take up a renewed or rotated CA (default "
        f"{CA_RECHECK:.0f}; 0.1 to 3600)",
    )


def _api(args: argparse.Namespace) -> client.ApiClient:
    """One client for the process, its pool sized for the control plane's watches (one each)."""
    if args.meshd_command == "control-plane":
        watchers = len(sources(args.namespaces, not args.insecure and args.mtls != "off"))
    else:
        watchers = 0
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


def _own_namespace(args: argparse.Namespace) -> str:
    if args.ca_namespace:
        return str(args.ca_namespace)
    mounted = Path(SERVICE_ACCOUNT_NAMESPACE)
    return mounted.read_text().strip() if mounted.exists() else "default"


async def _mesh_ca(args: argparse.Namespace, api: client.ApiClient) -> CaSecret:
    """The mesh CA Secret, created first if missing, with the CA it holds in use."""
    objects, namespace = KubeObjects(api, field_manager="canaryctl-mesh"), _own_namespace(args)
    ca = await load_or_create_ca(objects, namespace, args.ca_secret)
    events = args.meshd_command == "control-plane"
    return CaSecret(objects, namespace, args.ca_secret, ca, args.ca_recheck_seconds, events)


def xds_server(
    api: client.ApiClient,
    certificate: IssuedCertificate,
    *,
    host: str = "0.0.0.0",
    port: int = 15010,
    audience: str = TOKEN_AUDIENCE,
    max_streams_per_identity: int = 8,
    measured: metrics.MeshdMetrics | None = None,
) -> AdsServer:
    """ADS as meshd serves it: TLS from the mesh CA, tokens checked by TokenReview. The reviews get an
    API client of their own, so a reconnect storm (thousands of new tokens) reuses its connections
    instead of opening one per review next to the watches holding the shared pool. `measured` counts the
    reviews and shows when the CA and the serving certificate expire."""
    if measured is not None:
        measured.watch_certificates(
            {"ca": lambda: certificate.ca.pair.not_after, "xds": lambda: certificate.pair.not_after}
        )
    token_reviews = measured.token_reviews if measured is not None else None
    return AdsServer(
        host,
        port,
        credentials=xds_credentials(certificate),
        authenticator=TokenAuthenticator(
            KubeTokenReviewer(client.ApiClient(api.configuration), token_reviews), audience
        ),
        max_streams_per_identity=max_streams_per_identity,
    )


async def _control_plane(args: argparse.Namespace, api: client.ApiClient, stop: asyncio.Event) -> None:
    try:
        export_to = parse_export_to(args.default_export_to, "")
    except ValueError as error:
        raise SystemExit(f"--default-export-to: {error}") from error
    certificates = None
    measured = metrics.MeshdMetrics()
    if args.insecure:
        ads = AdsServer("0.0.0.0", args.xds_port)
    else:
        if not args.xds_dns_names:
            raise SystemExit("--xds-dns-name is required unless --insecure")
        if not 1 <= args.workload_certificate_minutes <= 60 * 24 * 90:
            raise SystemExit("--workload-certificate-minutes: between 1 and 129600 (90 days)")
        ca_secret = await _mesh_ca(args, api)
        serving = IssuedCertificate(ca_secret.current, args.xds_dns_names)
        ads = xds_server(
            api, serving, port=args.xds_port, audience=args.token_audience,
            max_streams_per_identity=args.max_streams_per_identity, measured=measured,
        )  # fmt: skip
        if args.mtls != "off":
            lifetime = datetime.timedelta(minutes=args.workload_certificate_minutes)
            certificates = WorkloadCertificates(ca_secret.current, lifetime, args.trust_domain)
    mtls = args.mtls if certificates is not None else None
    plane = ControlPlane(
        api, args.namespaces, ports=_ports(args), ads=ads, default_export_to=export_to,
        watch_timeout=args.watch_timeout_seconds, metrics=measured, mtls=mtls,
        trust_domain=args.trust_domain,
    )  # fmt: skip
    async with plane, metrics.serving(measured, "0.0.0.0", args.metrics_port):
        if args.insecure:
            await stop.wait()
            return

        def use(ca: CertificateAuthority) -> None:
            serving.use(ca)
            if certificates is not None:
                certificates.use(ca)

        following = asyncio.create_task(ca_secret.follow(use, stop))
        try:
            if certificates is None:
                await stop.wait()
            else:
                await certificates.keep_current(ads, stop)
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)


async def _injector(args: argparse.Namespace, api: client.ApiClient, stop: asyncio.Event) -> None:
    objects = KubeObjects(api, field_manager="canaryctl-mesh")
    # The mesh CA signs the webhook's certificate (unless cert-manager does) and is what sidecars trust.
    needs_ca = not args.insecure_xds or not args.tls_cert
    ca_secret = await _mesh_ca(args, api) if needs_ca else None
    settings = InjectorSettings(
        proxy_image=args.sidecar_image,
        init_image=args.init_image,
        xds_host=args.xds_host,
        xds_port=args.xds_port,
        token_audience=args.token_audience,
        ports=_ports(args),
        exclude_inbound_ports=args.excluded_ports,
        exclude_outbound_ports=args.excluded_ports,
    )

    def trusting(ca: CertificateAuthority) -> InjectorSettings:
        """The settings whose bootstraps trust `ca`'s bundle for xDS."""
        auth = config.XdsAuth(ca.trust_pem.decode(), SIDECAR_TOKEN_PATH, args.xds_host)
        return settings.model_copy(update={"xds_auth": auth})

    if ca_secret is not None and not args.insecure_xds:
        settings = trusting(ca_secret.current)
    current = settings
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise SystemExit("--tls-cert and --tls-key go together")
        serving: injector.ServingCertificate = injector.FileCertificate(args.tls_cert, args.tls_key)
    else:
        if not args.tls_dns_names or ca_secret is None:
            raise SystemExit("--tls-dns-name is required without --tls-cert/--tls-key")
        serving = injector.MeshCertificate(
            IssuedCertificate(ca_secret.current, args.tls_dns_names), objects, args.webhook_name
        )

    def use(ca: CertificateAuthority) -> None:
        """Pods admitted from now on trust `ca`'s bundle; the webhook's next certificate is from it."""
        nonlocal current
        if current.xds_auth is not None:
            current = trusting(ca)
        if isinstance(serving, injector.MeshCertificate):
            serving.issued.use(ca)

    measured = metrics.MeshdMetrics()
    outcomes: Counter[str] = Counter()
    measured.watch_admissions(outcomes)
    expiries = {"injector": lambda: serving.current().not_after}
    if ca_secret is not None:
        expiries["ca"] = lambda: ca_secret.current.pair.not_after
    measured.watch_certificates(expiries)
    check_interval = min(injector.CHECK_INTERVAL, args.ca_recheck_seconds)
    async with (
        injector.WatchedNamespaceLabels(api, objects) as labels,
        injector.serving(
            lambda: current, labels, serving, stop, "0.0.0.0", args.port, check_interval, outcomes
        ),
        metrics.serving(measured, "0.0.0.0", args.metrics_port),
    ):
        if ca_secret is None:
            await stop.wait()
        else:
            await ca_secret.follow(use, stop)


def _log_handler(log_format: str) -> logging.Handler:
    """The controller's line shapes: the same keys in JSON, so one log pipeline reads both."""
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(
            JsonFormatter(
                "%(levelname)s %(name)s %(message)s",
                rename_fields={"levelname": "level", "name": "logger"},
                timestamp="time",
            )
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    return handler


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, handlers=[_log_handler(args.log_format)])
    serve = _control_plane if args.meshd_command == "control-plane" else _injector
    api = _api(args)
    try:
        runtime.run(_until_signalled(lambda stop: serve(args, api, stop)))
    finally:
        api.close()  # type: ignore[no-untyped-call]
    return 0
