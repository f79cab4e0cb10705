"""Tenants and xDS authentication, against kmock's API (TokenReview answered as a real API server does)
with REAL Envoy sidecars bootstrapped the way the injector does: TLS to meshd, projected-token file.

Two namespaces both have a service `pay` under a TrafficSplit. Each sidecar's `http://pay/` must
reach its own namespace's pay; an unauthenticated stream, a token for another namespace or pod, and
one stream too many are refused; a conflicting split is refused alone (with an Event) while the
other namespace keeps being updated.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import kmock
import pytest
import pytest_asyncio
from envoy.config.route.v3 import route_components_pb2
from kubernetes import client

from canaryctl_mesh import config
from canaryctl_mesh.ads import VIRTUAL_HOST_TYPE, AdsServer
from canaryctl_mesh.identity import POD_NAME_EXTRA, TOKEN_AUDIENCE, TokenAuthenticator
from canaryctl_mesh.kube import KubeObjects, api_client_for_host
from canaryctl_mesh.loopback import HttpConnection, UpstreamServers
from canaryctl_mesh.meshd.auth import KubeTokenReviewer
from canaryctl_mesh.meshd.control_plane import EVENT_REASON, ControlPlane
from canaryctl_mesh.meshd.pki import load_or_create_ca
from canaryctl_mesh.meshd.tls import IssuedCertificate, xds_credentials
from canaryctl_mesh.process import EnvoyProcess
from canaryctl_mesh.translate import EXPORT_ANNOTATION
from tests.mesh.delta_client import DeltaClient, unpack

pytestmark = pytest.mark.asyncio

SERVER_NAME = "canaryctl-mesh.canaryctl-system.svc"
TEAMS = ("team-a", "team-b")
# token -> (namespace, ServiceAccount, pod): what the API server knows about each token.
TOKENS = {f"token-{team}": (team, "web", "web-1") for team in TEAMS}
TOKENS["token-team-a-other-pod"] = ("team-a", "web", "web-2")


def token_review(request: Any) -> dict[str, Any]:
    """A TokenReview answered like kube-apiserver: spec echoed, audiences intersected, pod in extra."""
    spec = request.data["spec"]
    known = TOKENS.get(spec["token"])
    status: dict[str, Any] = {"authenticated": False, "error": "invalid bearer token"}
    if known and TOKEN_AUDIENCE in spec.get("audiences", []):
        namespace, account, pod = known
        user = {"username": f"system:serviceaccount:{namespace}:{account}", "extra": {POD_NAME_EXTRA: [pod]}}
        status = {"authenticated": True, "user": user, "audiences": [TOKEN_AUDIENCE]}
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec, "status": status}


def answer_token_reviews(emulator: kmock.KubernetesEmulator, failing: Callable[[], bool] = bool) -> None:
    """TokenReviews answered by `token_review`, or with HTTP 500 while `failing()` says so."""

    def answer(request: Any) -> dict[str, Any]:
        # kmock 0.8 stores every created object; kube-apiserver never stores TokenReviews.
        for key in [k for k in emulator.objects if "tokenreviews" in str(k[0])]:
            del emulator.objects[key]
        if failing():
            raise RuntimeError("the API server is failing")  # the emulator's server answers 500
        return token_review(request)

    emulator["post /apis/authentication.k8s.io/v1/tokenreviews"] << answer


def objects_for(team: str, upstreams: UpstreamServers, octet: int, weights: tuple[int, int]) -> list[Any]:
    def service(name: str, ip: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": team},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]},
        }

    def endpoints(name: str, upstream: str) -> dict[str, Any]:
        return {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-x",
                "namespace": team,
                "labels": {"kubernetes.io/service-name": name},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": upstreams[upstream].port}],
            "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
        }

    return [
        service("pay", f"10.96.{octet}.1"),
        service("pay-primary", f"10.96.{octet}.2"),
        service("pay-canary", f"10.96.{octet}.3"),
        endpoints("pay-primary", f"{team}-primary"),
        endpoints("pay-canary", f"{team}-canary"),
        split(team, "pay", weights),
    ]


def split(team: str, name: str, weights: tuple[int, int], **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "split.smi-spec.io/v1alpha4",
        "kind": "TrafficSplit",
        "metadata": {"name": name, "namespace": team, "annotations": annotations},
        "spec": {
            "service": "pay",
            "backends": [
                {"service": "pay-primary", "weight": weights[0]},
                {"service": "pay-canary", "weight": weights[1]},
            ],
        },
    }


@pytest.fixture
def upstreams() -> Iterator[UpstreamServers]:
    with UpstreamServers([f"{team}-{side}" for team in TEAMS for side in ("primary", "canary")]) as servers:
        yield servers


@pytest_asyncio.fixture
async def secured(
    emulator: kmock.KubernetesEmulator, kube_api: client.ApiClient, objects: KubeObjects
) -> AsyncIterator[tuple[ControlPlane, bytes]]:
    """meshd's control plane as `meshd control-plane` runs it: TLS from the mesh CA, TokenReview, limit 2."""

    answer_token_reviews(emulator)
    ca = await load_or_create_ca(objects, "canaryctl-system", "canaryctl-mesh-ca")
    # A second component starting later reads the same CA instead of making its own.
    assert (await load_or_create_ca(objects, "canaryctl-system", "canaryctl-mesh-ca")).cert_pem == ca.cert_pem
    ads = AdsServer(
        "127.0.0.1",
        0,
        credentials=xds_credentials(IssuedCertificate(ca, [SERVER_NAME, "127.0.0.1"])),
        authenticator=TokenAuthenticator(KubeTokenReviewer(kube_api)),
        max_streams_per_identity=2,
    )
    ports = config.SidecarPorts(outbound=0, inbound=0, prometheus=0, admin=0)
    plane = ControlPlane(kube_api, list(TEAMS), ports=ports, bind_host="127.0.0.1", ads=ads)
    async with plane:
        yield plane, ca.cert_pem


class RawSidecar(DeltaClient):
    """A delta ADS client over TLS carrying a bearer token, as Envoy's Google gRPC client sends it."""

    def __init__(self, port: int, ca_pem: bytes, token: str | None, node_id: str) -> None:
        credentials = grpc.ssl_channel_credentials(ca_pem)
        channel = grpc.aio.secure_channel(
            f"127.0.0.1:{port}", credentials, options=[("grpc.ssl_target_name_override", SERVER_NAME)]
        )
        super().__init__(channel, node_id, (("authorization", f"Bearer {token}"),) if token else ())
        self.subscribe(VIRTUAL_HOST_TYPE)

    async def outbound_hosts(self, *expected: str) -> dict[str, list[str]]:
        """Service → domains of the outbound virtual hosts received, once ``expected`` are all there:
        the control plane's watches may still be taking in the objects the test just applied."""
        hosts: dict[str, list[str]] = {}
        for _ in range(20):
            response = await self.receive(10)
            self.ack(response)
            for name, host in unpack(response, route_components_pb2.VirtualHost).items():
                hosts[name.removeprefix("outbound/")] = list(host.domains)
            if set(expected) <= set(hosts):
                return hosts
        raise AssertionError(f"{expected} not among the virtual hosts received: {sorted(hosts)}")


async def test_xds_refuses_unproven_and_foreign_streams_and_limits_each_identity(
    secured: tuple[ControlPlane, bytes], objects: KubeObjects, upstreams: UpstreamServers
) -> None:
    plane, ca_pem = secured
    for obj in objects_for("team-a", upstreams, 1, (100, 0)) + objects_for("team-b", upstreams, 2, (100, 0)):
        await objects.apply(obj)
    # team-b keeps one split to itself: team-a's sidecars must not even see it.
    await objects.apply({**split("team-b", "private", (1, 1), **{EXPORT_ANNOTATION: "."}), "spec": {
        "service": "pay-canary", "backends": [{"service": "pay-canary", "weight": 1}]}})  # fmt: skip
    port = plane.ads.port
    sidecars: list[RawSidecar] = []

    def sidecar(token: str | None, node_id: str) -> RawSidecar:
        sidecars.append(RawSidecar(port, ca_pem, token, node_id))
        return sidecars[-1]

    try:
        assert await sidecar(None, "web-1.team-a").refused() == grpc.StatusCode.UNAUTHENTICATED
        assert await sidecar("forged", "web-1.team-a").refused() == grpc.StatusCode.UNAUTHENTICATED
        # A valid token, but the node claims team-b (or another pod): refused.
        assert await sidecar("token-team-a", "web-1.team-b").refused() == grpc.StatusCode.PERMISSION_DENIED
        assert await sidecar("token-team-a", "web-2.team-a").refused() == grpc.StatusCode.PERMISSION_DENIED

        # team-b's sidecar seeing its private split proves the control plane has taken it in ...
        team_b = await sidecar("token-team-b", "web-1.team-b").outbound_hosts(
            "pay-canary_team-b", "pay_team-b"
        )
        assert "pay" in team_b["pay_team-b"]
        # ... so its absence from team-a's view below is the export rule, not a watch still catching up.
        hosts = await sidecar("token-team-a", "web-1.team-a").outbound_hosts("pay_team-a", "pay_team-b")
        assert {"pay", "pay:80", "pay.team-a.svc.cluster.local"} <= set(hosts["pay_team-a"])
        assert "pay" not in hosts["pay_team-b"] and "pay.team-b.svc.cluster.local" in hosts["pay_team-b"]
        assert "pay-canary_team-b" not in hosts  # exported to team-b only

        # The third stream of one identity (pod web-1 of team-a) is refused; another pod is not counted.
        assert await sidecar("token-team-a", "web-1.team-a").outbound_hosts()
        assert await sidecar("token-team-a", "web-1.team-a").refused() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert await sidecar("token-team-a-other-pod", "web-2.team-a").outbound_hosts()
    finally:
        for raw in sidecars:
            await raw.close()


async def served_by(conn: HttpConnection, expected: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        try:
            status, raw = await conn.request(headers={"host": "pay"})
            body = raw.decode() if status == 200 else f"{status}"
        except (OSError, asyncio.IncompleteReadError):
            await conn.close()
        if body == expected:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"http://pay/ answered {body!r}, expected {expected!r}")


@asynccontextmanager
async def team_sidecars(
    plane: ControlPlane, ca_pem: bytes, tmp_path: Path
) -> AsyncIterator[dict[str, HttpConnection]]:
    """A real Envoy per team, bootstrapped as the injector does: a connection to each one's outbound."""
    envoys: dict[str, EnvoyProcess] = {}
    conns: dict[str, HttpConnection] = {}
    try:
        for team in TEAMS:
            token = tmp_path / f"{team}.token"
            token.write_text(f"token-{team}")  # what the kubelet mounts: no trailing newline
            auth = config.XdsAuth(ca_pem.decode(), str(token), SERVER_NAME)
            envoys[team] = EnvoyProcess(
                config.ads_bootstrap(f"web-1.{team}", "127.0.0.1", plane.ads.port, admin_port=0, auth=auth)
            )
            await envoys[team].start()
            await plane.ads.wait_acked(f"web-1.{team}", timeout=15)
            conns[team] = HttpConnection("127.0.0.1", await envoys[team].listener_port("outbound"))
        yield conns
    finally:
        for conn in conns.values():
            await conn.close()
        for envoy in envoys.values():
            await envoy.stop()


async def warning_event(emulator: kmock.KubernetesEmulator, namespace: str, name: str) -> dict[str, Any]:
    """The Warning Event meshd left on the object `namespace`/`name` (waits up to 10 s for it)."""
    deadline = time.monotonic() + 10
    while True:
        events = [o.raw for k, o in emulator.objects.items() if k[0] == "v1/events" and not o.deleted]
        mine = [e for e in events if e["involvedObject"]["name"] == name]
        if mine or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert mine and mine[0]["reason"] == EVENT_REASON and mine[0]["type"] == "Warning"
    assert mine[0]["involvedObject"]["namespace"] == namespace
    return mine[0]


async def test_each_namespace_gets_its_own_pay_and_a_conflict_is_refused_alone(
    secured: tuple[ControlPlane, bytes],
    objects: KubeObjects,
    emulator: kmock.KubernetesEmulator,
    upstreams: UpstreamServers,
    tmp_path: Path,
) -> None:
    plane, ca_pem = secured
    for obj in objects_for("team-a", upstreams, 1, (100, 0)) + objects_for("team-b", upstreams, 2, (100, 0)):
        await objects.apply(obj)
    async with team_sidecars(plane, ca_pem, tmp_path) as conns:
        await served_by(conns["team-a"], "team-a-primary")
        await served_by(conns["team-b"], "team-b-primary")

        # A younger split for team-a's pay is refused alone: an Event on it, team-a keeps its route,
        # and team-b's weight change still reaches team-b's sidecar.
        await objects.apply(split("team-a", "pay-hijack", (0, 100)))
        await objects.apply(split("team-b", "pay", (0, 100)))
        await served_by(conns["team-b"], "team-b-canary")
        await served_by(conns["team-a"], "team-a-primary")
        refused = [r for r in plane.refused if r.ref.name == "pay-hijack"]
        assert refused and "already routes service 'pay'" in refused[0].message
        await warning_event(emulator, "team-a", "pay-hijack")


# Matches Envoy refuses (RE2 has no lookarounds or backreferences; `a{1000}` compiles to a program of
# 1,004 > 100 instructions; an empty regex; a method that is no token), each in an HTTPRouteGroup.
REFUSED_MATCHES: list[dict[str, Any]] = [
    {"headers": [{"x-user": "(?=a)"}]},
    {"headers": [{"x-user": "(a)\\1"}]},
    {"headers": {"x-user": "a{1000}"}},
    {"headers": [{"x-user": ""}]},
    {"pathRegex": "/(?!admin)"},
    {"methods": ["GET|(POST"]},
]


async def test_a_tenants_invalid_regex_is_refused_alone_and_other_namespaces_keep_being_updated(
    secured: tuple[ControlPlane, bytes],
    objects: KubeObjects,
    emulator: kmock.KubernetesEmulator,
    upstreams: UpstreamServers,
    tmp_path: Path,
) -> None:
    """team-a's header route (exported to every namespace, as by default) carries a match Envoy would
    refuse: meshd refuses that split alone, and team-b's weight changes keep reaching team-b's sidecar,
    which would otherwise reject every update that carries team-a's route."""
    plane, ca_pem = secured
    for obj in objects_for("team-a", upstreams, 1, (100, 0)) + objects_for("team-b", upstreams, 2, (100, 0)):
        await objects.apply(obj)
    async with team_sidecars(plane, ca_pem, tmp_path) as conns:
        await served_by(conns["team-b"], "team-b-primary")
        for index, match in enumerate(REFUSED_MATCHES):
            group = {
                "apiVersion": "specs.smi-spec.io/v1alpha4",
                "kind": "HTTPRouteGroup",
                "metadata": {"name": "pay", "namespace": "team-a"},
                "spec": {"matches": [{"name": "testers", **match}]},
            }
            header_route = split("team-a", "pay", (0, 100))
            header_route["spec"]["matches"] = [{"kind": "HTTPRouteGroup", "name": "pay"}]
            await objects.apply(group)
            await objects.apply(header_route)
            side = ("canary", "primary")[index % 2]
            await objects.apply(split("team-b", "pay", (0, 100) if side == "canary" else (100, 0)))
            await served_by(conns["team-b"], f"team-b-{side}")
            refused = [r.message for r in plane.refused if (r.ref.namespace, r.ref.name) == ("team-a", "pay")]
            assert refused and "HTTPRouteGroup pay matches[0]" in refused[0], (match, plane.refused)
        event = await warning_event(emulator, "team-a", "pay")
        assert "HTTPRouteGroup pay" in event["message"]


async def test_a_token_review_that_fails_ends_the_stream_unavailable_and_is_retried(
    emulator: kmock.KubernetesEmulator, kube_api: client.ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    """An API error or an unreachable API server is no verdict on the token: UNAVAILABLE, which Envoy
    retries, and nothing cached, while a token the API server rejects stays UNAUTHENTICATED."""
    api_down = True
    answer_token_reviews(emulator, lambda: api_down)
    unreachable = api_client_for_host("http://127.0.0.1:9")
    async with (
        AdsServer("127.0.0.1", 0, authenticator=TokenAuthenticator(KubeTokenReviewer(kube_api))) as ads,
        AdsServer("127.0.0.1", 0, authenticator=TokenAuthenticator(KubeTokenReviewer(unreachable))) as lost,
    ):

        async def stream(server: AdsServer, token: str) -> DeltaClient:
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
            sidecar = DeltaClient(channel, "web-1.team-a", (("authorization", f"Bearer {token}"),))
            sidecar.subscribe(VIRTUAL_HOST_TYPE)
            return sidecar

        sidecars = [await stream(ads, "token-team-a"), await stream(lost, "token-team-a")]
        try:
            assert await sidecars[0].refused() == grpc.StatusCode.UNAVAILABLE
            assert "TokenReview failed: the API server answered 500" in caplog.text
            assert await sidecars[1].refused() == grpc.StatusCode.UNAVAILABLE
            assert "TokenReview failed: MaxRetryError" in caplog.text
            assert ads.counters.refused_streams == {"review_unavailable": 1}

            api_down = False
            sidecars.append(await stream(ads, "forged"))
            assert await sidecars[-1].refused() == grpc.StatusCode.UNAUTHENTICATED
            sidecars.append(await stream(ads, "token-team-a"))  # the failure was not cached as a refusal
            assert await sidecars[-1].nothing_within(1.0), "the stream should stay open"
        finally:
            for sidecar in sidecars:
                await sidecar.close()
            unreachable.close()  # type: ignore[no-untyped-call]
