"""SMI TrafficTarget authorization in pods: sidecars fed by the secured control plane (tokens, workload
certificates, automatic mTLS), the destination's sidecar enforcing the RBAC meshd sends it alone.

One cluster for the module: `api` (ServiceAccount api, behind a TrafficSplit so its callers reach it
over mTLS), a meshed caller running as `web`, and an unmeshed pod. Its identities are in a trust domain
other than the default, so the certificates issued, the peers expected and the sources authorized must
all follow the setting for anything to pass (tests/netns/test_capture.py runs in the default one).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.netns import harness
from tests.netns.harness import Cluster, Pod, ServicePort

pytestmark = pytest.mark.slow

HTTP, ECHO = 8080, 9000
TRUST_DOMAIN = "mesh.example.org"
CLIENT = "tests.netns.client"


@dataclass
class Mesh:
    cluster: Cluster
    api: Pod
    web: Pod
    outsider: Pod


SPLIT = {
    "apiVersion": "split.smi-spec.io/v1alpha2",
    "kind": "TrafficSplit",
    "metadata": {"name": "api", "namespace": "default"},
    "spec": {"service": "api", "backends": [{"service": "api", "weight": 100}]},
}
ROUTES = {
    "apiVersion": "specs.smi-spec.io/v1alpha4",
    "kind": "HTTPRouteGroup",
    "metadata": {"name": "api-routes", "namespace": "default"},
    "spec": {"matches": [{"name": "peer", "pathRegex": "/peer", "methods": ["GET"]}]},
}
TCP_ROUTE = {
    "apiVersion": "specs.smi-spec.io/v1alpha4",
    "kind": "TCPRoute",
    "metadata": {"name": "echo", "namespace": "default"},
    "spec": {"matches": {"ports": [ECHO]}},
}
TARGET: dict[str, Any] = {
    "apiVersion": "access.smi-spec.io/v1alpha3",
    "kind": "TrafficTarget",
    "metadata": {"name": "api-callers", "namespace": "default"},
    "spec": {
        "destination": {"kind": "ServiceAccount", "name": "api", "namespace": "default"},
        "rules": [{"kind": "HTTPRouteGroup", "name": "api-routes"}],
        "sources": [{"kind": "ServiceAccount", "name": "web", "namespace": "default"}],
    },
}


WARM: list[dict[str, Any]] = [
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "warm", "namespace": "default"},
        "spec": {"clusterIP": f"{harness.SERVICE_PREFIX}250", "ports": [{"name": "http", "port": 80}]},
    },
    {
        **SPLIT,
        "metadata": {"name": "warm", "namespace": "default"},
        "spec": {"service": "warm", "backends": [{"service": "warm", "weight": 100}]},
    },
]


def _target(*sources: str, tcp: bool = False) -> dict[str, Any]:
    rules = TARGET["spec"]["rules"] + ([{"kind": "TCPRoute", "name": "echo"}] if tcp else [])
    spec = {
        **TARGET["spec"],
        "rules": rules,
        "sources": [{"kind": "ServiceAccount", "name": s, "namespace": "default"} for s in sources],
    }
    return {**TARGET, "spec": spec}


@pytest.fixture(scope="module")
def mesh() -> Iterator[Mesh]:
    with harness.cluster(
        functools.partial(harness.SecuredControlPlane, trust_domain=TRUST_DOMAIN)
    ) as cluster:
        cluster.apply(*WARM)  # a route to hand out, so sidecars do not wait out VHDS's 15 s initial fetch
        api = cluster.pod("api-1", workload="api", service_account="api")
        api.start_app("--name", "api", "--http", str(HTTP), "--echo", str(ECHO))
        web = cluster.pod("web-1", service_account="web")
        outsider = cluster.pod("outsider", meshed=False)
        cluster.service("api", [api], ServicePort(80, HTTP, "http"), ServicePort(ECHO, ECHO, "tcp-echo"))
        cluster.apply(SPLIT)
        yield Mesh(cluster, api, web, outsider)


def _get(pod: Pod, path: str) -> tuple[int, str]:
    answer = pod.python(CLIENT, "get", f"http://api{path}")
    return int(answer["status"]), str(answer["body"])


PING = "70696e67"


def _echo(pod: Pod, host: str = "api") -> str:
    try:
        return str(pod.python(CLIENT, "tcp", host, str(ECHO), "--send", PING)["received"])
    except RuntimeError:
        return "reset"


DENIED = (403, "RBAC: access denied")
COMMAND_TIMEOUT = 10.0


def _closed(pod: Pod, host: str = "api") -> bool:
    """Whether a TCP exchange with api is cut. The listener change is ACKed once Envoy took it in; new
    connections meet it once the listener is warm, which is soon after on a loaded machine."""
    return _eventually(lambda: _echo(pod, host) in ("", "reset"))


def _echoed(pod: Pod, host: str = "api") -> bool:
    return _eventually(lambda: _echo(pod, host) == PING)


def _eventually(check: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + COMMAND_TIMEOUT
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


def test_a_traffictarget_admits_its_sources_routes_and_refuses_everyone_else(mesh: Mesh) -> None:
    # No TrafficTarget selects api yet: everybody passes, as without authorization.
    assert _get(mesh.web, "/status/200")[0] == 200
    assert _echo(mesh.web) == PING
    mesh.cluster.apply(SPLIT, ROUTES, _target("web"))
    # web's certificate on a granted route passes (the app sees who called) ...
    status, body = _get(mesh.web, "/peer")
    assert status == 200 and body.endswith(f";URI=spiffe://{TRUST_DOMAIN}/ns/default/sa/web"), body
    assert _get(mesh.web, "/status/200") == DENIED  # ... a route no rule grants does not
    direct = harness.http_get(mesh.outsider.netns, mesh.api.ip, HTTP, "/peer", timeout=COMMAND_TIMEOUT)
    assert direct == DENIED, "plaintext carries no identity"
    assert _closed(mesh.web)  # no TCPRoute grant: the connection is closed
    # A TCPRoute grant naming web: its sidecar wraps the raw TCP in mesh mTLS (through the Service and
    # to the pod's IP alike), and the destination lets its identity through; nobody else's.
    mesh.cluster.apply(SPLIT, ROUTES, TCP_ROUTE, _target("web", tcp=True))
    assert _echoed(mesh.web) and _echoed(mesh.web, mesh.api.ip)
    assert _echo(mesh.outsider) in ("", "reset"), "plaintext TCP carries no identity"
    mesh.cluster.apply(SPLIT, ROUTES, TCP_ROUTE, _target("payments", tcp=True))
    assert _closed(mesh.web) and _closed(mesh.web, mesh.api.ip)
    assert mesh.api.counter("inbound_mtls_tcp_authz.rbac.denied") >= 2
    # Another source instead of web: web is refused (connections it holds included: see
    # tests/mesh/test_access.py).
    assert _get(mesh.web, "/peer") == DENIED
    assert mesh.api.counter("http.inbound.rbac.denied") >= 3
    # The target gone, api is open again.
    mesh.cluster.apply(SPLIT, ROUTES)
    assert _get(mesh.web, "/status/200")[0] == 200
