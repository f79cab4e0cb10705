"""The mesh in pods: iptables capture, real sidecars fed over ADS, apps and clients in namespaces.

One cluster for the module: a meshed client, the primary and canary pods of ``web`` (Deployments
``web-primary`` and ``web`` as Flagger names them; they also serve the gRPC service ``greeter``),
and an unmeshed pod. Every assertion is about what a client or the app
sees, or what the sidecars counted.

The control plane is secured as meshd runs it, with automatic mTLS (permissive) and workload
certificates that live a few seconds: every test here runs over mTLS between the meshed pods while
certificates rotate underneath.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import math
import shutil
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from canaryctl.api.models import Canary, CanaryMetric
from canaryctl.local.prometheus import LocalPrometheus, PrometheusError, prometheus_binary
from canaryctl_mesh import config, injector, telemetry
from canaryctl_mesh.control import MTLS_LABEL
from canaryctl_mesh.meshd.pki import CertificateAuthority
from canaryctl_providers.metrics import MetricsAnalyzer
from tests.meshd.authorities import root
from tests.netns import harness
from tests.netns.harness import Cluster, Pod, ServicePort
from tests.providers.metrics.test_metrics_prometheus_real import query
from tests.tls import self_signed_certificate

pytestmark = pytest.mark.slow

HTTP, ECHO, SMTP, TLS, GRPC, EXCLUDED_OUT, EXCLUDED_IN = 8080, 9000, 2525, 8443, 50051, 9100, 9200
UNDECLARED_SERVER_FIRST = 2626
CLIENT = "tests.netns.client"
POSTGRES_SSL_REQUEST = "0000000804d2162f"
TLS_HANDSHAKE, TLS_APPLICATION_DATA = b"\x16\x03\x01", b"\x17\x03\x03"
"""TLS record headers: a ClientHello's, and application data (TLS 1.2 and 1.3 alike)."""
REDIS_PING = b"*1\r\n$4\r\nPING\r\n".hex()


@dataclass
class Mesh:
    cluster: Cluster
    client: Pod
    primary: Pod
    canary: Pod
    outsider: Pod
    certificate_sha256: str

    def split(self, service: str, primary: int, canary: int, policy: dict[str, Any] | None = None) -> None:
        objects: list[dict[str, Any]] = [
            {
                "apiVersion": "split.smi-spec.io/v1alpha2",
                "kind": "TrafficSplit",
                "metadata": {"name": service, "namespace": "default"},
                "spec": {
                    "service": service,
                    "backends": [
                        {"service": f"{service}-primary", "weight": primary},
                        {"service": f"{service}-canary", "weight": canary},
                    ],
                },
            }
        ]
        if policy:
            objects.append(
                {
                    "apiVersion": "mesh.canaryctl.dev/v1alpha1",
                    "kind": "TrafficPolicy",
                    "metadata": {"name": service, "namespace": "default"},
                    "spec": {"service": service, **policy},
                }
            )
        self.cluster.apply(*objects)


def _app_ports() -> tuple[ServicePort, ...]:
    return (
        ServicePort(80, HTTP, "http"),
        ServicePort(ECHO, ECHO, "tcp-echo"),
        ServicePort(SMTP, SMTP, "smtp"),  # server-first: declared, so it skips protocol detection
        ServicePort(UNDECLARED_SERVER_FIRST, UNDECLARED_SERVER_FIRST, "greeting"),  # declares nothing
        ServicePort(443, TLS, "https"),
        ServicePort(EXCLUDED_OUT, EXCLUDED_OUT, "tcp-out"),
        ServicePort(EXCLUDED_IN, EXCLUDED_IN, "tcp-in"),
    )


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = self_signed_certificate(directory, "web")
    fingerprint = hashlib.sha256(ssl.PEM_cert_to_DER_cert(Path(cert).read_text())).hexdigest()
    with harness.cluster(harness.SecuredControlPlane) as cluster:
        client = cluster.pod(
            "client",
            annotations={injector.EXCLUDE_OUTBOUND_ANNOTATION: str(EXCLUDED_OUT)},
            service_account="client",
        )
        backends = []
        for side in ("primary", "canary"):
            pod = cluster.pod(
                f"web-{side}-1",
                workload="web" if side == "canary" else "web-primary",  # Flagger's names
                annotations={injector.EXCLUDE_INBOUND_ANNOTATION: str(EXCLUDED_IN)},
                service_account="web",
            )
            pod.start_app(
                "--name", f"web-{side}", "--http", str(HTTP), "--grpc", str(GRPC),
                "--banner", str(SMTP), "--banner", str(UNDECLARED_SERVER_FIRST),
                "--echo", str(ECHO), "--echo", str(EXCLUDED_OUT), "--echo", str(EXCLUDED_IN),
                "--tls", str(TLS), "--cert", str(cert), "--key", str(key),
            )  # fmt: skip
            backends.append(pod)
        primary, canary = backends
        outsider = cluster.pod("outsider", meshed=False)
        for name, pods in (("web", [primary]), ("web-primary", [primary]), ("web-canary", [canary])):
            cluster.service(name, pods, *_app_ports())
        for name, pods in (
            ("greeter", [primary]),
            ("greeter-primary", [primary]),
            ("greeter-canary", [canary]),
        ):
            cluster.service(name, pods, ServicePort(GRPC, GRPC, "grpc"))
        cluster.apply()
        yield Mesh(cluster, client, primary, canary, outsider, fingerprint)


def _inbound(pod: Pod, **labels: str) -> float:
    samples = telemetry.parse_samples(pod.admin("/stats/prometheus"))
    return telemetry.total(samples, telemetry.INBOUND_RQ_TOTAL, **labels)


def test_a_client_calling_the_service_is_split_90_10(mesh: Mesh) -> None:
    mesh.split("web", 90, 10)
    before = {pod.name: _inbound(pod) for pod in (mesh.primary, mesh.canary)}
    requests = 2000
    result = mesh.client.python(CLIENT, "http", "web", "80", "--count", str(requests), timeout=60)
    assert result["statuses"] == {"200": requests} and result["errors"] == 0
    canary = result["bodies"]["web-canary"]
    z = (canary - requests * 0.1) / math.sqrt(requests * 0.1 * 0.9)
    print(f"netns 90/10 split: canary {canary}/{requests} = {canary / requests:.2%}, z = {z:.2f}")
    assert abs(z) < 3.5, result
    # Each pod's sidecar counted what it served, under its own workload.
    assert _inbound(mesh.canary, canaryctl_workload="web") - before[mesh.canary.name] == canary
    primary_served = _inbound(mesh.primary, canaryctl_workload="web-primary") - before[mesh.primary.name]
    assert primary_served == requests - canary


def test_mirror_and_fault_steps(mesh: Mesh) -> None:
    def canary_stats() -> dict[str, int]:
        reply = mesh.canary.python(CLIENT, "get", f"http://127.0.0.1:{HTTP}/_stats")
        stats: dict[str, int] = json.loads(reply["body"])
        return stats

    shadows_before = canary_stats().get("shadow", 0)
    mesh.split("web", 100, 0, {"mirror": {"backend": "web-canary", "percentage": 100}})
    result = mesh.client.python(CLIENT, "http", "web", "80", "--count", "200")
    assert result["bodies"] == {"web-primary": 200}, "mirrored responses never reach the client"
    deadline = time.monotonic() + 10
    while canary_stats().get("shadow", 0) - shadows_before < 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert canary_stats().get("shadow", 0) - shadows_before == 200

    mesh.split(
        "web", 0, 100, {"faults": [{"backend": "web-canary", "abort": {"httpStatus": 503, "percentage": 50}}]}
    )
    served_before = _inbound(mesh.canary)
    result = mesh.client.python(CLIENT, "http", "web", "80", "--count", "400")
    aborted = result["statuses"]["503"]
    assert 140 < aborted < 260 and result["statuses"]["200"] == 400 - aborted
    # The aborted requests never reached the canary pod: its sidecar counted only the rest.
    seen = [_inbound(mesh.canary) - served_before]
    for _ in range(50):
        if seen[-1] == 400 - aborted:
            break
        time.sleep(0.2)
        seen.append(_inbound(mesh.canary) - served_before)
    assert seen[-1] == 400 - aborted, (seen, result, mesh.canary.admin("/stats?filter=inbound"))


def test_header_route_sends_matching_requests_to_the_canary(mesh: Mesh) -> None:
    group = {
        "apiVersion": "specs.smi-spec.io/v1alpha4",
        "kind": "HTTPRouteGroup",
        "metadata": {"name": "testers", "namespace": "default"},
        "spec": {"matches": [{"name": "testers", "headers": {"x-canary": "^yes$"}}]},
    }
    split = {
        "apiVersion": "split.smi-spec.io/v1alpha3",
        "kind": "TrafficSplit",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "service": "web",
            "matches": [{"kind": "HTTPRouteGroup", "name": "testers"}],
            "backends": [{"service": "web-primary", "weight": 0}, {"service": "web-canary", "weight": 100}],
        },
    }
    mesh.cluster.apply(split, group)
    tester = mesh.client.python(CLIENT, "http", "web", "80", "--count", "20", "--header", "x-canary:yes")
    others = mesh.client.python(CLIENT, "http", "web", "80", "--count", "20", "--header", "x-canary:no")
    assert tester["bodies"] == {"web-canary": 20} and others["bodies"] == {"web-primary": 20}
    # Both went over mTLS: the client's sidecar shook hands with each backend.
    for cluster in ("web-canary_default", "web_default"):
        assert mesh.client.counter(f"cluster.{cluster}.ssl.handshake") > 0


def test_unmeshed_callers_and_the_canary_service_are_measured_server_side(mesh: Mesh) -> None:
    """What Flagger-style load tests do: call <service>-canary directly, from a pod outside the mesh.
    No caller-side sidecar sees these requests; the canary pod's sidecar counts every one."""
    labels = {"canaryctl_workload": "web", "canaryctl_workload_namespace": "default"}
    before = {code: _inbound(mesh.canary, envoy_response_code=code, **labels) for code in ("200", "500")}
    ok = mesh.outsider.python(CLIENT, "http", "web-canary", "80", "--count", "30")
    assert ok["statuses"] == {"200": 30} and ok["bodies"] == {"web-canary": 30}
    failing = mesh.outsider.python(
        CLIENT, "http", "web-canary", "80", "--count", "10", "--path", "/status/500"
    )
    assert failing["statuses"] == {"500": 10}
    assert _inbound(mesh.canary, envoy_response_code="200", **labels) - before["200"] == 30
    assert _inbound(mesh.canary, envoy_response_code="500", **labels) - before["500"] == 10


def test_tcp_tls_and_server_first_protocols_pass_untouched(mesh: Mesh) -> None:
    captured_before = mesh.client.counter("tcp.outbound_tcp.downstream_cx_total")
    wrapped_before = mesh.client.counter("tcp.outbound_mtls.downstream_cx_total")
    for payload in (POSTGRES_SSL_REQUEST, REDIS_PING):
        reply = mesh.client.python(CLIENT, "tcp", "web", str(ECHO), "--send", payload)
        assert reply == {"received": payload}, "the bytes arrive and return unchanged, no HTTP 400"
    tls = mesh.client.python(CLIENT, "tls", "web", "443")
    assert tls == {"sha256": mesh.certificate_sha256, "echoed": True}, "the app's own certificate"
    banner = mesh.client.python(CLIENT, "banner", "web", str(SMTP))
    assert banner["banner"] == "220 web-primary" and banner["seconds"] < 1.0, banner
    # All four went through the client's sidecar as TCP to the original destination: the two echoes
    # wrapped in mesh mTLS (web's endpoints are all meshed), the app's TLS and the server-first SMTP
    # as the app sent them.
    assert mesh.client.counter("tcp.outbound_tcp.downstream_cx_total") - captured_before == 2
    assert mesh.client.counter("tcp.outbound_mtls.downstream_cx_total") - wrapped_before == 2


@pytest.mark.slow
def test_an_undeclared_server_first_protocol_passes_after_the_detection_timeout(mesh: Mesh) -> None:
    """The sidecar waits for the client's first bytes, the server for the client: after the
    detection timeout the connection goes through as TCP (not closed, as Envoy's default would).
    Between two meshed pods only the caller's sidecar waits: it wraps the connection in mesh mTLS,
    whose handshake the server's sidecar recognizes at once. The two callers wait at the same time
    (each measures its own wait), so the test takes the longer wait, not the sum."""
    timeout = config.PROTOCOL_DETECTION_TIMEOUT
    callers = ((mesh.outsider, 1), (mesh.client, 1))
    with ThreadPoolExecutor(len(callers)) as pool:
        banners = list(
            pool.map(
                lambda caller: caller.python(CLIENT, "banner", "web", str(UNDECLARED_SERVER_FIRST)),
                (caller for caller, _ in callers),
            )
        )
    for (caller, sidecars), banner in zip(callers, banners, strict=True):
        assert banner["banner"] == "220 web-primary"
        assert sidecars * timeout - 0.5 < banner["seconds"] < sidecars * timeout + 4, (caller.name, banner)


def test_excluded_ports_bypass_the_sidecar(mesh: Mesh) -> None:
    outbound_before = mesh.client.counter("listener.0.0.0.0_15001.downstream_cx_total")
    assert (
        mesh.client.python(CLIENT, "tcp", "web", str(EXCLUDED_OUT), "--send", REDIS_PING)["received"]
        == REDIS_PING
    )
    assert mesh.client.counter("listener.0.0.0.0_15001.downstream_cx_total") == outbound_before

    inbound_before = mesh.primary.counter("listener.0.0.0.0_15006.downstream_cx_total")
    reply = mesh.outsider.python(CLIENT, "tcp", "web-primary", str(EXCLUDED_IN), "--send", REDIS_PING)
    assert reply["received"] == REDIS_PING
    assert mesh.primary.counter("listener.0.0.0.0_15006.downstream_cx_total") == inbound_before
    # The same pod's other ports are captured: the inbound listener sees the connection.
    mesh.outsider.python(CLIENT, "tcp", "web-primary", str(ECHO), "--send", REDIS_PING)
    assert mesh.primary.counter("listener.0.0.0.0_15006.downstream_cx_total") == inbound_before + 1


def test_the_sidecars_own_traffic_is_not_captured_again(mesh: Mesh) -> None:
    """Envoy's upstream connections (uid 1337) leave directly: each request passes the outbound
    listener once, and the sidecar's own xDS stream to the control plane is up."""
    mesh.split("web", 100, 0)
    before = mesh.client.counter("http.outbound.downstream_rq_total")
    result = mesh.client.python(CLIENT, "http", "web", "80", "--count", "50", "--concurrency", "1")
    assert result["bodies"] == {"web-primary": 50}
    assert mesh.client.counter("http.outbound.downstream_rq_total") - before == 50
    assert mesh.client.counter("control_plane.connected_state") == 1


def test_grpc_canary_is_split_and_its_errors_are_counted(mesh: Mesh) -> None:
    mesh.split("greeter", 50, 50)
    result = mesh.client.python(CLIENT, "grpc", f"greeter:{GRPC}", "hello", "--count", "200", timeout=60)
    assert result["codes"] == {"OK": 200}
    assert set(result["replies"]) == {"web-primary", "web-canary"} and min(result["replies"].values()) > 60
    failed_before = _inbound(mesh.canary, canaryctl_grpc_status="14")
    failed = mesh.client.python(CLIENT, "grpc", f"greeter:{GRPC}", "fail", "--count", "40")
    assert failed["codes"] == {"UNAVAILABLE": 40}
    assert _inbound(mesh.canary, canaryctl_grpc_status="14") - failed_before > 5


def test_websocket_upgrade_reaches_the_weighted_backend(mesh: Mesh) -> None:
    mesh.split("web", 0, 100)
    reply = mesh.client.python(CLIENT, "ws", "http://web/ws", "hello", "again")
    assert reply == {"replies": ["web-canary:hello", "web-canary:again"]}


def test_no_default_route_timeout(mesh: Mesh) -> None:
    """Envoy's default route timeout is 15 s; a long poll through the mesh must outlive it."""
    mesh.split("web", 100, 0)
    reply = mesh.client.python(CLIENT, "get", "http://web/slow/16", timeout=40)
    assert reply["status"] == 200 and reply["body"] == "web-primary" and reply["seconds"] >= 16


def test_rewritten_app_probes_check_the_app_not_the_proxy(mesh: Mesh) -> None:
    app_spec = {
        "ports": [{"name": "http", "containerPort": HTTP}],
        "livenessProbe": {"httpGet": {"path": "/status/200", "port": "http"}},
        "readinessProbe": {"tcpSocket": {"port": ECHO}, "periodSeconds": 1},
    }
    pod = mesh.cluster.pod("probed-1", workload="probed", app=app_spec)
    app = pod.start_app("--name", "probed", "--http", str(HTTP), "--echo", str(ECHO))
    (container,) = pod.manifest["spec"]["containers"]
    live, ready = (container[kind]["httpGet"] for kind in ("livenessProbe", "readinessProbe"))
    assert live["port"] == ready["port"] == mesh.cluster.settings.ports.health

    def probes() -> tuple[int, int]:
        return pod.probe(live["port"], live["path"]), pod.probe(ready["port"], ready["path"])

    def settle(expected: tuple[int, int]) -> tuple[int, int]:
        deadline = time.monotonic() + 5
        while (seen := probes()) != expected and time.monotonic() < deadline:
            time.sleep(0.1)
        return seen

    assert settle((200, 200)) == (200, 200)
    app.terminate()
    app.wait(5)
    assert settle((503, 503)) == (503, 503), "the app is gone: both probes fail"
    # What the kubelet would have seen unrewritten: the captured port still accepts connections
    # (the sidecar's inbound listener answers), so a tcpSocket probe there always passed.
    sock = harness.socket_in(mesh.cluster.router)
    with sock:
        sock.settimeout(2)
        sock.connect((pod.ip, ECHO))


def test_builtin_queries_measure_the_canary_on_the_server_side(mesh: Mesh) -> None:
    """A Canary for Deployment ``web``, judged by the builtin queries through a real Prometheus
    scraping the pods' sidecars, on traffic no meshed caller sent (an unmeshed load test)."""
    try:
        prometheus_binary()
    except PrometheusError as missing:
        pytest.skip(str(missing))

    def traffic(ok: int, failing: int) -> None:
        for service in ("web-canary", "web-primary"):
            mesh.outsider.python(CLIENT, "http", service, "80", "--count", str(ok))
        mesh.outsider.python(
            CLIENT, "http", "web-canary", "80", "--count", str(failing), "--path", "/status/500"
        )

    def scraped_everything(prometheus: LocalPrometheus) -> None:
        served = sum(_inbound(pod) for pod in (mesh.primary, mesh.canary))
        deadline = time.monotonic() + 10
        promql = f"sum({telemetry.INBOUND_RQ_TOTAL})"
        while query(prometheus, promql) != served and time.monotonic() < deadline:
            time.sleep(0.2)
        assert query(prometheus, promql) == served

    traffic(20, 5)  # every series exists before Prometheus first looks
    targets = [f"127.0.0.1:{mesh.cluster.forward(pod, 15090)}" for pod in (mesh.primary, mesh.canary)]
    job = {
        "job_name": "sidecars",
        "metrics_path": "/stats/prometheus",
        "static_configs": [{"targets": targets}],
    }
    with LocalPrometheus([job]) as prometheus:
        scraped_everything(prometheus)
        traffic(40, 10)
        scraped_everything(prometheus)
        canary = Canary.model_validate(
            {
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {
                    "metricsServer": prometheus.url,
                    "targetRef": {"kind": "Deployment", "name": "web"},
                    "service": {"port": 80},
                },
            }
        )
        metric = CanaryMetric.model_validate({"name": "request-success-rate", "compare": {"maxDelta": 1}})
        measured = asyncio.run(MetricsAnalyzer().measure(canary, metric, caller_side=False))
    assert measured.error is None, measured.error
    assert measured.canary.value == pytest.approx(80.0, abs=1.0), "40 answered, 10 failed"
    assert measured.primary is not None and measured.primary.value == pytest.approx(100.0)
    assert measured.query and telemetry.INBOUND_RQ_TOTAL in measured.query


def _sniff(pod: Pod, port: int, send: Callable[[], object]) -> bytes:
    """The TCP payload bytes that crossed the pod's interface to or from `port` while `send` ran."""
    assert shutil.which("tcpdump"), "tcpdump is not installed: `make deps` (scripts/install-system-deps.sh)"
    pcap = pod.cluster.workdir / f"{pod.name}-{port}-{time.monotonic_ns()}.pcap"
    argv = [
        "tcpdump",
        "-i",
        pod.interface,
        "--immediate-mode",
        "-U",
        "-n",
        "-s",
        "0",
        "-w",
        str(pcap),
        f"tcp port {port}",
    ]
    sniffer = subprocess.Popen(pod.exec_argv(argv), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        assert sniffer.stderr is not None
        assert b"listening on" in sniffer.stderr.readline()
        send()
        time.sleep(0.3)
    finally:
        sniffer.terminate()
        sniffer.wait(10)
    return pcap.read_bytes()


def _peer(pod: Pod, host: str, port: int = 80) -> str:
    return str(pod.python(CLIENT, "get", f"http://{host}:{port}/peer")["body"])


def test_meshed_pods_talk_mutual_tls_on_the_wire_as_their_service_accounts(mesh: Mesh) -> None:
    mesh.split("web", 100, 0)
    answers: list[str] = []
    meshed = _sniff(mesh.primary, HTTP, lambda: answers.append(_peer(mesh.client, "web")))
    plaintext = _sniff(
        mesh.primary, HTTP, lambda: answers.append(_peer(mesh.outsider, mesh.primary.ip, HTTP))
    )
    # The client's request crossed the wire as TLS 1.2+ application data records, never as HTTP; the
    # unmeshed caller's did (permissive mode), so the capture would have shown it.
    assert TLS_APPLICATION_DATA in meshed
    assert b"GET /peer" not in meshed and b"HTTP/1.1" not in meshed
    assert b"GET /peer HTTP/1.1" in plaintext
    # The app learns who called from the certificate the caller's sidecar presented.
    trust_domain = "spiffe://cluster.local/ns/default/sa"
    via_mesh, direct = answers
    assert via_mesh.startswith("web-primary By=" + f"{trust_domain}/web;"), via_mesh
    assert f";URI={trust_domain}/client" in via_mesh
    assert direct == "web-primary none", "no certificate, no identity"
    certificates = json.loads(mesh.client.admin("/certs"))["certificates"]
    sans = {san["uri"] for c in certificates for cert in c["cert_chain"] for san in cert["subject_alt_names"]}
    assert sans == {f"{trust_domain}/client"}, "the client's sidecar holds its own identity only"


def test_traffic_no_traffic_split_routes_is_mutual_tls_between_meshed_pods(mesh: Mesh) -> None:
    """Through a Service no TrafficSplit routes and to the pod's IP, HTTP and raw TCP alike: the
    caller's sidecar wraps what it passes through in mesh mTLS, as the destination is a meshed pod."""
    mesh.cluster.service(
        "plain", [mesh.primary], ServicePort(80, HTTP, "http"), ServicePort(443, TLS, "https")
    )
    mesh.cluster.apply()
    answers: list[str] = []
    through_service = _sniff(mesh.primary, HTTP, lambda: answers.append(_peer(mesh.client, "plain")))
    by_ip = _sniff(mesh.primary, HTTP, lambda: answers.append(_peer(mesh.client, mesh.primary.ip, HTTP)))
    for captured in (through_service, by_ip):
        assert TLS_HANDSHAKE in captured and TLS_APPLICATION_DATA in captured
        assert config.MTLS_ALPN.encode() in captured and config.MTLS_TCP_ALPN.encode() not in captured
        assert b"GET /peer" not in captured and b"HTTP/1.1" not in captured
    # The destination's sidecar terminated it into its HTTP chain: the app learns who called.
    for answer in answers:
        assert answer.startswith("web-primary By=spiffe://cluster.local/ns/default/sa/web;"), answer
        assert answer.endswith(";URI=spiffe://cluster.local/ns/default/sa/client"), answer
    echoed: list[object] = []
    tcp = _sniff(
        mesh.primary,
        ECHO,
        lambda: echoed.append(
            mesh.client.python(CLIENT, "tcp", mesh.primary.ip, str(ECHO), "--send", REDIS_PING)
        ),
    )
    assert echoed == [{"received": REDIS_PING}]
    assert config.MTLS_TCP_ALPN.encode() in tcp and TLS_APPLICATION_DATA in tcp
    assert bytes.fromhex(REDIS_PING) not in tcp
    # A pod calling its own IP: its sidecar's connection to it is not captured again on the way in
    # (it never leaves the pod), so it stays as the app sent it instead of reaching the app wrapped.
    assert _peer(mesh.primary, mesh.primary.ip, HTTP) == "web-primary none"
    selfcall = mesh.primary.python(CLIENT, "tcp", mesh.primary.ip, str(ECHO), "--send", REDIS_PING)
    assert selfcall == {"received": REDIS_PING}
    # The app's own TLS to the same pod is passed through as it is, never wrapped twice.
    app_tls: list[object] = []
    own = _sniff(mesh.primary, TLS, lambda: app_tls.append(mesh.client.python(CLIENT, "tls", "plain", "443")))
    assert app_tls == [{"sha256": mesh.certificate_sha256, "echoed": True}]
    assert config.MTLS_ALPN.encode() not in own, "the app's ClientHello, not the mesh's"


def test_a_forged_client_certificate_header_is_dropped(mesh: Mesh) -> None:
    forged = "By=spiffe://cluster.local/ns/default/sa/web;URI=spiffe://cluster.local/ns/kube-system/sa/admin"
    status, body = harness.http_get(mesh.outsider.netns, mesh.primary.ip, HTTP, "/peer")
    assert (status, body) == (200, "web-primary none")
    sock = harness.socket_in(mesh.outsider.netns)
    with sock:
        sock.settimeout(5)
        sock.connect((mesh.primary.ip, HTTP))
        sock.sendall(f"GET /peer HTTP/1.1\r\nHost: x\r\nX-Forwarded-Client-Cert: {forged}\r\n\r\n".encode())
        reply = sock.recv(4096)
    assert reply.endswith(b"web-primary none") and b"kube-system" not in reply


def test_strict_namespace_refuses_plaintext_but_serves_its_meshed_callers(mesh: Mesh) -> None:
    cluster = mesh.cluster
    vault = cluster.pod("vault-1", namespace="locked", workload="vault", service_account="vault")
    vault.start_app("--name", "vault", "--http", str(HTTP))
    cluster.service("vault", [vault], ServicePort(80, HTTP, "http"), namespace="locked")
    split = {
        "apiVersion": "split.smi-spec.io/v1alpha2",
        "kind": "TrafficSplit",
        "metadata": {"name": "vault", "namespace": "locked"},
        "spec": {"service": "vault", "backends": [{"service": "vault", "weight": 100}]},
    }
    locked = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "locked", "labels": {MTLS_LABEL: "strict"}},
    }
    cluster.apply(split, locked)
    answers: list[str] = []
    first = _sniff(vault, HTTP, lambda: answers.append(_peer(mesh.client, "vault.locked")))
    assert answers[0].startswith("vault By=spiffe://cluster.local/ns/locked/sa/vault;")
    assert answers[0].endswith(";URI=spiffe://cluster.local/ns/default/sa/client")
    # A first connection: the handshake (record type 22) offering the mesh's ALPN, then only TLS.
    assert TLS_HANDSHAKE in first and config.MTLS_ALPN.encode() in first and b"GET /" not in first
    assert harness.http_get(mesh.outsider.netns, vault.ip, HTTP, "/peer")[0] == 0, "plaintext is refused"
    # A meshed caller reaching the strict pod by its IP (no route) passes: its sidecar wraps it too.
    assert _peer(mesh.client, vault.ip, HTTP).endswith(";URI=spiffe://cluster.local/ns/default/sa/client")
    assert harness.http_get(mesh.outsider.netns, mesh.primary.ip, HTTP, "/peer")[0] == 200, (
        "default stays permissive"
    )
    cluster.apply(split)  # the label gone: permissive again
    assert harness.http_get(mesh.outsider.netns, vault.ip, HTTP, "/peer") == (200, "vault none")


class _Load(threading.Thread):
    """GETs over keep-alive connections from a pod, one after another, until stopped."""

    def __init__(self, pod: Pod, host: str, port: int) -> None:
        super().__init__(name="load")
        self.pod, self.host, self.port = pod, host, port
        self.statuses: Counter[int] = Counter()
        self.stopping = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 60
        while not self.stopping.is_set() and time.monotonic() < deadline:
            sock = harness.socket_in(self.pod.netns)
            sock.settimeout(5)
            try:
                sock.connect((self.host, self.port))
                connection = http.client.HTTPConnection(self.host, self.port, timeout=5)
                connection.sock = sock
                for _ in range(50):
                    connection.request("GET", "/")
                    response = connection.getresponse()
                    response.read()
                    self.statuses[response.status] += 1
            except OSError:
                self.statuses[0] += 1
            finally:
                sock.close()


def _serials(pod: Pod) -> set[str]:
    certificates = json.loads(pod.admin("/certs"))["certificates"]
    return {cert["serial_number"] for c in certificates for cert in c["cert_chain"]}


def test_certificates_rotate_under_load_without_a_failed_request(mesh: Mesh) -> None:
    mesh.split("web", 50, 50)
    first = {pod.name: _serials(pod) for pod in (mesh.client, mesh.primary, mesh.canary)}
    handshakes = mesh.client.counter("cluster.web-primary_default.ssl.handshake")
    load = _Load(mesh.client, harness.SERVICE_PREFIX + "1", 80)
    load.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(
            _serials(pod) == first[pod.name] for pod in (mesh.client, mesh.primary, mesh.canary)
        ):
            time.sleep(0.2)
        rotated = {
            pod.name: _serials(pod) != first[pod.name] for pod in (mesh.client, mesh.primary, mesh.canary)
        }
        time.sleep(1)
    finally:
        load.stopping.set()
        load.join(30)
    assert all(rotated.values()), rotated
    assert sum(load.statuses.values()) > 100 and set(load.statuses) == {200}, load.statuses
    assert mesh.client.counter("cluster.web-primary_default.ssl.handshake") >= handshakes
    assert mesh.client.counter("cluster.web-primary_default.ssl.connection_error") == 0


def _trusted(pod: Pod) -> list[set[int]]:
    """Per TLS context of the sidecar, the serials of the CAs it verifies peers with."""
    contexts = json.loads(pod.admin("/certs"))["certificates"]
    return [{int(cert["serial_number"], 16) for cert in context["ca_cert"]} for context in contexts]


def _chain(pod: Pod) -> list[x509.Certificate]:
    """The workload certificate chain the sidecar holds (its SDS secret, as Envoy dumps it)."""
    dump = json.loads(pod.admin("/config_dump?resource=dynamic_active_secrets"))
    for entry in dump["configs"]:
        if entry.get("name") == config.WORKLOAD_SECRET:
            pem = entry["secret"]["tls_certificate"]["certificate_chain"]["inline_string"]
            return x509.load_pem_x509_certificates(pem.encode())
    return []


def test_a_sidecar_holding_another_trust_domains_certificate_is_refused(mesh: Mesh, tmp_path: Path) -> None:
    """After meshd's trust domain changes (a restart), a sidecar that has not reconnected yet still holds
    a certificate of the old domain, from the same CA: the sidecars that did reconnect refuse it."""
    control_plane = mesh.cluster.control_plane
    assert isinstance(control_plane, harness.SecuredControlPlane)
    ca, caller, server = control_plane.certificates.ca, mesh.outsider, mesh.primary
    assert _as_a_sidecar_holding(ca, caller, server, tmp_path).startswith(
        "web-primary By=spiffe://cluster.local/"
    )
    other_domain = "spiffe://old.example.org/ns/default/sa/client"
    assert _as_a_sidecar_holding(ca, caller, server, tmp_path, other_domain) == ""


async def _sign_with(control_plane: harness.SecuredControlPlane, ca: CertificateAuthority) -> None:
    control_plane.certificates.use(ca)


def _as_a_sidecar_holding(
    ca: CertificateAuthority,
    caller: Pod,
    server: Pod,
    workdir: Path,
    identity: str = "spiffe://cluster.local/ns/default/sa/client",
) -> str:
    """What `server`'s sidecar answers a new mTLS connection from a sidecar that holds `ca`'s trust and a
    certificate from it for `identity`, "" if the handshake fails: a sidecar whose SDS push has not
    arrived yet, meeting one that has moved on."""
    pair = ca.issue_workload(identity)
    (workdir / "chain.pem").write_bytes(pair.cert)
    (workdir / "key.pem").write_bytes(pair.key)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False  # the server's name is a SPIFFE URI, which Python does not match
    context.load_verify_locations(cadata=ca.trust_pem.decode())
    context.load_cert_chain(workdir / "chain.pem", workdir / "key.pem")
    context.set_alpn_protocols([config.MTLS_ALPN])
    sock = harness.socket_in(caller.netns)
    sock.settimeout(5)
    try:
        sock.connect((server.ip, HTTP))
        with context.wrap_socket(sock) as tls:
            tls.sendall(b"GET /peer HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := tls.recv(4096):
                reply += chunk
        return reply.decode(errors="replace").rpartition("\r\n\r\n")[2]
    except (OSError, ssl.SSLError):
        return ""
    finally:
        sock.close()


def test_the_root_is_rotated_and_the_intermediate_renewed_under_load_without_a_failed_request(
    mesh: Mesh, tmp_path: Path
) -> None:
    """The documented rotation, as meshd applies each change of its CA Secret: add the new root to
    the bundle, sign with an intermediate under it, drop the old root; then cert-manager renews the
    intermediate. Every sidecar's trust and certificate move on their open streams while a caller
    keeps sending requests, and at each step a sidecar still holding the step before (its push not
    there yet) and one holding the new step both get through to a backend's sidecar."""
    control_plane = mesh.cluster.control_plane
    assert isinstance(control_plane, harness.SecuredControlPlane)
    old = control_plane.ca
    old_serial = x509.load_pem_x509_certificate(old.cert_pem).serial_number
    new_root = root("mesh root 2")
    first, renewed = new_root.issue("mesh intermediate"), new_root.issue("mesh intermediate")
    phases = [
        ("both roots trusted", CertificateAuthority(old.pair, old.cert_pem + new_root.cert), None),
        ("signed under the new root", first.signing(old.cert_pem + new_root.cert), first.serial),
        ("the old root dropped", first.signing(new_root.cert), first.serial),
        ("the intermediate renewed", renewed.signing(new_root.cert), renewed.serial),
    ]
    mesh.split("web", 50, 50)
    pods = (mesh.client, mesh.primary, mesh.canary)
    caller = mesh.outsider  # unmeshed: its connections reach the backend's sidecar as they are sent
    peer = "web-primary By=spiffe://cluster.local/ns/default/sa/web;"
    errors = mesh.client.counter("cluster.web-primary_default.ssl.connection_error")
    load = _Load(mesh.client, harness.SERVICE_PREFIX + "1", 80)
    load.start()
    reached: list[str] = []
    answers: list[tuple[str, bool, bool]] = []
    try:
        before = old
        for name, ca, signer in phases:
            trusted = {
                old_serial if cert == old.cert_pem else new_root.serial
                for cert in (old.cert_pem, new_root.cert)
                if cert in ca.trust_pem
            }
            mesh.cluster.call(_sign_with(control_plane, ca))

            def moved(trusted: set[int] = trusted, signer: int | None = signer) -> bool:
                return all(
                    all(held == trusted for held in _trusted(pod))
                    and (signer is None or signer in {cert.serial_number for cert in _chain(pod)})
                    for pod in pods
                )

            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not moved():
                time.sleep(0.2)
            if moved():
                reached.append(name)
            answers.append(
                (
                    name,
                    _as_a_sidecar_holding(before, caller, mesh.primary, tmp_path).startswith(peer),
                    _as_a_sidecar_holding(ca, caller, mesh.primary, tmp_path).startswith(peer),
                )
            )
            before = ca
        # Only a sidecar left behind two steps, holding the old root alone, is refused at the end.
        stale = _as_a_sidecar_holding(old, caller, mesh.primary, tmp_path)
    finally:
        load.stopping.set()
        load.join(30)
    assert reached == [name for name, _, _ in phases]
    assert answers == [(name, True, True) for name, _, _ in phases]
    assert stale == ""
    assert sum(load.statuses.values()) > 100 and set(load.statuses) == {200}, load.statuses
    assert mesh.client.counter("cluster.web-primary_default.ssl.connection_error") == errors
