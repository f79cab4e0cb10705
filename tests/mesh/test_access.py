"""SMI TrafficTarget (v1alpha1-3) + HTTPRouteGroup + TCPRoute → Envoy RBAC, checked by real Envoys.

The objects fed in validate against SMI's published CRDs (tests/schemas). The generated inbound
listener and route configuration pass ``envoy --mode validate``; the RBAC they carry, placed into
listeners that terminate mTLS with client certificates carrying SPIFFE IDs, refuse and allow real
requests and connections.
"""

from __future__ import annotations

import asyncio
import datetime
import http.client
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from canaryctl_mesh import config
from canaryctl_mesh.access import (
    Authorization,
    authorized_listener,
    authorized_routes,
    http_rbac_per_route,
    translate_access,
)
from canaryctl_mesh.identity import Identity
from canaryctl_mesh.loopback import UpstreamServers
from canaryctl_mesh.process import EnvoyProcess
from tests.mesh.conftest import envoy_validate
from tests.schemas.validation import validate
from tests.tls import self_signed_certificate

NS = "shop"
API = Identity(NS, "api")


def _spiffe(sa: str, ns: str = NS) -> str:
    return f"spiffe://cluster.local/ns/{ns}/sa/{sa}"


def _routes() -> list[dict[str, Any]]:
    return [
        {
            "apiVersion": "specs.smi-spec.io/v1alpha4",
            "kind": "HTTPRouteGroup",
            "metadata": {"name": "api-routes", "namespace": NS},
            "spec": {
                "matches": [
                    {"name": "api", "pathRegex": "/api/.*", "methods": ["*"]},
                    {"name": "metrics", "pathRegex": "/metrics", "methods": ["GET"]},
                    {"name": "admin", "pathRegex": "/admin", "headers": [{"x-admin": "yes|true"}]},
                ]
            },
        },
        {
            "apiVersion": "specs.smi-spec.io/v1alpha4",
            "kind": "TCPRoute",
            "metadata": {"name": "db-port", "namespace": NS},
            "spec": {"matches": {"ports": [5432]}},
        },
    ]


def _target(name: str, rules: list[dict[str, Any]], sources: list[str], **destination: Any) -> dict[str, Any]:
    return {
        "apiVersion": "access.smi-spec.io/v1alpha3",
        "kind": "TrafficTarget",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "destination": {"kind": "ServiceAccount", "name": "api", "namespace": NS, **destination},
            "rules": rules,
            "sources": [{"kind": "ServiceAccount", "name": s, "namespace": NS} for s in sources],
        },
    }


METRICS = _target(
    "metrics", [{"kind": "HTTPRouteGroup", "name": "api-routes", "matches": ["metrics"]}], ["prometheus"]
)
WEB = _target(
    "web",
    [
        {"kind": "HTTPRouteGroup", "name": "api-routes", "matches": ["api", "admin"]},
        {"kind": "TCPRoute", "name": "db-port"},
    ],
    ["web", "payments"],
)


def _only(objects: list[dict[str, Any]]) -> Authorization:
    translation = translate_access(objects)
    assert translation.refused == []
    (authorization,) = translation.authorizations
    return authorization


def _app_cluster(port: int) -> dict[str, Any]:
    """The destination app on loopback, as the inbound side's cluster."""
    address = {"socket_address": {"address": "127.0.0.1", "port_value": port}}
    return {
        "name": "app",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "app",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
        },
    }


def test_the_fed_objects_validate_against_smis_published_crds() -> None:
    for obj in [*_routes(), METRICS, WEB, V1ALPHA1, V1ALPHA2]:
        assert validate(obj), obj["kind"]


def test_sources_routes_and_ports_become_one_policy_per_target() -> None:
    authorization = _only([*_routes(), METRICS, WEB])
    assert authorization.destination == API
    by_target = {g.target: g for g in authorization.grants}
    assert by_target["metrics"].sources == (_spiffe("prometheus"),)
    assert [(r.path_regex, r.methods) for r in by_target["metrics"].http] == [("/metrics", ("GET",))]
    assert by_target["metrics"].tcp_ports is None  # HTTP only: no TCP at all
    web = by_target["web"]
    assert web.sources == (_spiffe("web"), _spiffe("payments"))
    assert [(r.path_regex, r.methods) for r in web.http] == [("/api/.*", ()), ("/admin", ())]
    assert web.http[1].headers[0].name == "x-admin"
    assert web.tcp_ports == (5432,)


def test_no_target_leaves_everything_open_and_other_destinations_alone() -> None:
    assert translate_access(_routes()).authorizations == []
    other = {**WEB, "spec": {**WEB["spec"], "destination": {"kind": "ServiceAccount", "name": "db"}}}
    destinations = {a.destination for a in translate_access([*_routes(), METRICS, other]).authorizations}
    assert destinations == {API, Identity(NS, "db")}


V1ALPHA1 = {
    "apiVersion": "access.smi-spec.io/v1alpha1",
    "kind": "TrafficTarget",
    "metadata": {"name": "old", "namespace": NS},
    "destination": {"kind": "ServiceAccount", "name": "api", "namespace": NS, "port": 8080},
    "specs": [{"kind": "HTTPRouteGroup", "name": "api-routes", "matches": ["metrics"]}],
    "sources": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"}],
}
V1ALPHA2 = {
    **WEB,
    "apiVersion": "access.smi-spec.io/v1alpha2",
    "spec": {**WEB["spec"], "destination": {**WEB["spec"]["destination"], "port": 8080}},
}


def test_v1alpha1_and_v1alpha2_shapes_and_their_destination_port() -> None:
    (grant,) = _only([*_routes(), V1ALPHA1]).grants
    assert (grant.port, grant.sources) == (8080, (_spiffe("prometheus", "monitoring"),))
    (grant,) = _only([*_routes(), V1ALPHA2]).grants
    assert grant.port == 8080
    # The port narrows every rule: TCP only where the TCPRoute's ports and the destination port agree.
    network = _filter(authorized_listener(_tcp_listener(), _only([*_routes(), V1ALPHA2])))
    assert network["rules"]["policies"] == {}


def _refusals(objects: list[dict[str, Any]]) -> list[str]:
    return [r.message for r in translate_access(objects).refused]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"destination": {"kind": "ServiceAccount", "name": "api", "namespace": "bank"}}, "own namespace"),
        ({"destination": {"kind": "Pod", "name": "api"}}, "destination.kind"),
        ({"sources": []}, "at least one source"),
        ({"rules": [{"kind": "HTTPRouteGroup", "name": "nope"}]}, "'nope' not found"),
        ({"rules": [{"kind": "HTTPRouteGroup", "name": "api-routes", "matches": ["x"]}]}, "['x'] are not"),
        ({"rules": [{"kind": "UDPRoute", "name": "db-port"}]}, "'UDPRoute' is not supported"),
        ({"sources": [{"kind": "Group", "name": "devs"}]}, "sources[0].kind"),
    ],
)
def test_an_invalid_target_is_refused_alone_with_the_reason(change: dict[str, Any], expected: str) -> None:
    bad = {**WEB, "metadata": {"name": "bad", "namespace": NS}, "spec": {**WEB["spec"], **change}}
    translation = translate_access([*_routes(), METRICS, bad])
    (refusal,) = translation.refused
    assert (refusal.ref.name, expected in refusal.message) == ("bad", True), refusal.message
    by_destination = {a.destination: [g.target for g in a.grants] for a in translation.authorizations}
    assert by_destination == {API: ["metrics"]}  # the valid target still applies


def test_a_refused_target_still_closes_its_destination() -> None:
    """A typo must not open a workload: the refused target selects its destination, granting nothing."""
    broken = {**WEB, "spec": {**WEB["spec"], "rules": [{"kind": "TCPRoute", "name": "typo"}]}}
    translation = translate_access([*_routes(), broken])
    assert [a.destination for a in translation.authorizations] == [API]
    assert translation.authorizations[0].grants == ()
    filters = _filter(authorized_listener(_tcp_listener(), translation.authorizations[0]))
    assert filters["rules"] == {"action": "ALLOW", "policies": {}}  # Envoy denies all
    assert http_rbac_per_route(translation.authorizations[0])["rbac"]["rules"] == filters["rules"]


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("pathRegex", "/api/(unclosed", "missing ): /api/(unclosed"),
        ("pathRegex", "/(?!admin)", "invalid perl operator"),  # Python's re would take it, RE2 not
        ("pathRegex", "/a{1000}", "program size"),
        ("headers", {"x-user": "(a)\\1"}, "invalid escape sequence"),
    ],
)
def test_regexes_envoy_would_refuse_are_refused_before_envoy_sees_them(
    field: str, value: Any, why: str
) -> None:
    routes = _routes()
    routes[0]["spec"]["matches"][0][field] = value
    (refusal,) = _refusals([*routes, WEB])
    assert why in refusal


# ---------------------------------------------------------------------------------------------------
# Envoy
# ---------------------------------------------------------------------------------------------------


def _tcp_listener() -> dict[str, Any]:
    return {"name": "l", "filter_chains": [{"filters": [config.tcp_proxy("l", "c")]}]}


def _filter(listener: dict[str, Any]) -> dict[str, Any]:
    typed: dict[str, Any] = listener["filter_chains"][0]["filters"][0]["typed_config"]
    return typed


WEB_ID, API_ID = "spiffe://cluster.local/ns/shop/sa/web", "spiffe://cluster.local/ns/shop/sa/api"
PEERS = (
    config.Peer("10.1.0.1", (WEB_ID,), (15021, 15090)),
    config.Peer("10.1.0.2", (WEB_ID,), (9200, 15021, 15090)),  # a pod excluding 9200 from capture
    config.Peer("10.0.0.1", (API_ID, WEB_ID), (), True, (80, 9200)),  # a TrafficSplit's apex ClusterIP
)
"""Pass-through mTLS destinations: the outbound listener's chains for them go through validation too."""
SDS_OVER_ADS = ', "sds_config": ' + json.dumps(config.ads_source())


@pytest.mark.parametrize("mtls", [None, config.PERMISSIVE, config.STRICT])
def test_the_sidecars_authorized_inbound_listener_passes_envoy_validation(
    tmp_path: Path, mtls: str | None
) -> None:
    resources = config.sidecar_resources([], mtls=mtls, peers=PEERS if mtls else ())
    authorization = _only([*_routes(), METRICS, WEB, V1ALPHA1])
    listeners = [
        authorized_listener(listener, authorization) if listener["name"] == "inbound" else listener
        for listener in resources.listeners
    ]
    inbound = next(listener for listener in listeners if listener["name"] == "inbound")
    inbound_routes = next(r for r in resources.routes if r["name"] == "inbound")
    for chain in inbound["filter_chains"]:  # plaintext HTTP, and mTLS when on: rules from the routes
        if chain["name"] == "inbound-mtls-tcp":  # TCP from a sidecar: its TCPRoute rules
            assert [f["name"] for f in chain["filters"]] == [
                "envoy.filters.network.rbac",
                "envoy.filters.network.tcp_proxy",
            ]
            continue
        hcm = chain["filters"][0]["typed_config"]
        assert [f["name"] for f in hcm["http_filters"]][-2:] == [
            "envoy.filters.http.rbac",
            "envoy.filters.http.router",
        ]
        del hcm["rds"]  # validate mode fetches nothing: the authorized routes inline
        hcm["route_config"] = {
            k: v for k, v in authorized_routes(inbound_routes, authorization).items() if k != "@type"
        }
    if mtls != config.STRICT:
        assert [f["name"] for f in inbound["default_filter_chain"]["filters"]] == [
            "envoy.filters.network.rbac",
            "envoy.filters.network.tcp_proxy",
        ]
    bootstrap = config.ads_bootstrap("api-0.shop", "127.0.0.1", 15010)
    bootstrap["static_resources"]["listeners"] = [
        {k: v for k, v in x.items() if k != "@type"} for x in listeners
    ]
    # Static clusters whose secrets come over ADS crash Envoy's validate mode (1.40): the peers' mTLS
    # clusters name the same secrets as static ones here.
    cert, key = self_signed_certificate(tmp_path, "web")
    bootstrap["static_resources"]["secrets"] = config.secrets(
        Path(cert).read_text(), Path(key).read_text(), Path(cert).read_text()
    )
    for secret in bootstrap["static_resources"]["secrets"]:
        del secret["@type"]
    bootstrap["static_resources"]["clusters"] += [
        json.loads(json.dumps({k: v for k, v in c.items() if k != "@type"}).replace(SDS_OVER_ADS, ""))
        for c in resources.clusters
    ]
    assert sum("mtls-" in c["name"] for c in resources.clusters) == (4 if mtls else 0)
    done = envoy_validate(bootstrap, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


# -- real requests --------------------------------------------------------------------------------------


class _Pki:
    """A CA and workload certificates with SPIFFE URI SANs, as the mesh's identities carry."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test mesh CA")])
        self.cert = self._sign(
            x509.CertificateBuilder().subject_name(name).public_key(self.key.public_key()),
            x509.BasicConstraints(ca=True, path_length=None),
        )
        self.ca_path = self._write("ca.pem", self.cert.public_bytes(serialization.Encoding.PEM))

    def _sign(self, builder: x509.CertificateBuilder, constraints: x509.BasicConstraints) -> x509.Certificate:
        now = datetime.datetime.now(datetime.UTC)
        issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test mesh CA")])
        return (
            builder.issuer_name(issuer)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(constraints, critical=True)
            .sign(self.key, hashes.SHA256())
        )

    def _write(self, name: str, data: bytes) -> str:
        path = self.directory / name
        path.write_bytes(data)
        return str(path)

    def issue(self, name: str, uri: str) -> tuple[str, str]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .public_key(key.public_key())
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri), x509.IPAddress(_LOOPBACK)]),
                critical=True,
            )
        )
        cert = self._sign(builder, x509.BasicConstraints(ca=False, path_length=None))
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return (
            self._write(f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM)),
            self._write(f"{name}.key", key_pem),
        )


_LOOPBACK = ipaddress.ip_address("127.0.0.1")
DOWNSTREAM_TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"


def _mtls(pki: _Pki, server: tuple[str, str]) -> dict[str, Any]:
    """Client certificates required and checked against the mesh CA: the peer identity RBAC reads."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": DOWNSTREAM_TLS_TYPE,
            "require_client_certificate": True,
            "common_tls_context": {
                "tls_certificates": [
                    {"certificate_chain": {"filename": server[0]}, "private_key": {"filename": server[1]}}
                ],
                "validation_context": {"trusted_ca": {"filename": pki.ca_path}},
            },
        },
    }


def _listener(name: str, filters: list[dict[str, Any]], tls: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": filters, "transport_socket": tls}],
    }


def _hcm(cluster: str) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": config.HCM_TYPE,
            "stat_prefix": "inbound",
            "route_config": {
                "virtual_hosts": [
                    {
                        "name": "app",
                        "domains": ["*"],
                        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}],
                    }
                ]
            },
            "http_filters": [
                config.authorization_filter(),
                {"name": "envoy.filters.http.router", "typed_config": {"@type": config.ROUTER_TYPE}},
            ],
        },
    }


@pytest.fixture(scope="module")
def enforcing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EnvoyProcess, _Pki, int, int]]:
    """An Envoy terminating mTLS for the destination `api`, upstream a loopback HTTP server: an HTTP
    listener with the RBAC `authorized_routes` adds for METRICS and WEB, and a TCP listener open to
    `web` on any port."""
    directory = tmp_path_factory.mktemp("access")
    pki = _Pki(directory)
    server = pki.issue("api", _spiffe("api"))
    authorization = _only([*_routes(), METRICS, WEB])
    any_port = {
        **_routes()[1],
        "metadata": {"name": "any", "namespace": NS},
        "spec": {"matches": {"ports": []}},
    }
    tcp_only = _only([any_port, _target("tcp", [{"kind": "TCPRoute", "name": "any"}], ["web"])])
    with UpstreamServers(["app"]) as upstreams:
        app = _app_cluster(upstreams["app"].port)
        tls = _mtls(pki, server)
        hcm = _hcm("app")
        hcm["typed_config"]["route_config"] = authorized_routes(
            hcm["typed_config"]["route_config"], authorization
        )
        http = _listener("http", [hcm], tls)
        tcp = authorized_listener(_listener("tcp", [config.tcp_proxy("tcp", "app")], tls), tcp_only)
        bootstrap = {
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "static_resources": {"listeners": [http, tcp], "clusters": [app]},
        }
        envoy = EnvoyProcess(bootstrap)
        asyncio.run(envoy.start())
        try:
            http_port = asyncio.run(envoy.listener_port("http"))
            tcp_port = asyncio.run(envoy.listener_port("tcp"))
            yield envoy, pki, http_port, tcp_port
        finally:
            asyncio.run(envoy.stop())


def _context(pki: _Pki, sa: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ca_path)
    if sa is not None:
        context.load_cert_chain(*pki.issue(sa, _spiffe(sa)))
    return context


def _status(pki: _Pki, port: int, sa: str | None, method: str, path: str, **headers: str) -> int:
    with httpx.Client(verify=_context(pki, sa), timeout=10.0) as client:
        return client.request(method, f"https://127.0.0.1:{port}{path}", headers=headers).status_code


def test_http_requests_are_allowed_only_as_the_targets_say(
    enforcing: tuple[EnvoyProcess, _Pki, int, int],
) -> None:
    _, pki, port, _ = enforcing
    assert _status(pki, port, "prometheus", "GET", "/metrics") == 200
    assert _status(pki, port, "prometheus", "POST", "/metrics") == 403  # method not granted
    assert _status(pki, port, "prometheus", "GET", "/api/orders") == 403  # path not granted to it
    assert _status(pki, port, "web", "DELETE", "/api/orders") == 200  # methods: ["*"]
    assert _status(pki, port, "payments", "GET", "/api/orders") == 200
    assert _status(pki, port, "web", "GET", "/metrics") == 403
    assert _status(pki, port, "web", "GET", "/admin", **{"X-Admin": "true"}) == 200
    assert _status(pki, port, "web", "GET", "/admin", **{"X-Admin": "maybe"}) == 403
    assert _status(pki, port, "intruder", "GET", "/api/orders") == 403  # a mesh identity no target names
    assert _status(pki, port, "api-other", "GET", "/metrics") == 403


def _tcp_exchange(pki: _Pki, port: int, sa: str) -> bytes:
    """A raw exchange over the TCP listener: the app's answer, or b"" when the connection is closed."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        _context(pki, sa).wrap_socket(raw, server_hostname="127.0.0.1") as conn,
    ):
        conn.sendall(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        received = b""
        try:
            while b"\r\n\r\n" not in received and (chunk := conn.recv(4096)):
                received += chunk
        except (ssl.SSLError, ConnectionResetError):
            pass
        return received


def test_tcp_connections_are_closed_unless_a_tcproute_grant_allows_the_port(
    enforcing: tuple[EnvoyProcess, _Pki, int, int],
) -> None:
    envoy, pki, _, port = enforcing
    assert _tcp_exchange(pki, port, "web").startswith(b"HTTP/1.1 200")
    assert _tcp_exchange(pki, port, "prometheus") == b""
    assert _tcp_exchange(pki, port, "intruder") == b""
    stats = asyncio.run(envoy.stats("tcp_authz"))
    assert stats, "the network RBAC filter counted nothing"


def test_the_documented_example_is_valid_smi_and_grants_what_the_docs_say() -> None:
    text = (Path(__file__).parents[2] / "docs" / "mesh.md").read_text()
    section = text.split("## Authorization: SMI TrafficTarget", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    documents = [doc for doc in yaml.safe_load_all(block) if doc]
    for doc in documents:
        validate(doc)
    translation = translate_access(documents)
    assert translation.refused == []
    (authorization,) = translation.authorizations
    grants = {g.target: g for g in authorization.grants}
    assert grants["api-callers"].sources == (_spiffe("web"), _spiffe("payments"))
    assert grants["api-callers"].tcp_ports == (5432,)
    assert [r.path_regex for r in grants["api-callers"].http] == ["/api/.*", "/admin"]
    assert grants["api-metrics"].sources == (_spiffe("prometheus", "monitoring"),)


def test_a_destination_with_too_many_sources_is_closed_with_a_reason() -> None:
    crowd = _target("crowd", [{"kind": "TCPRoute", "name": "db-port"}], [f"sa-{i}" for i in range(1000)])
    translation = translate_access([*_routes(), crowd])
    assert translation.authorizations == [Authorization(API, ())]
    assert "more than 1000" in translation.refused[0].message


def _write_xds(directory: Path, name: str, resources: list[dict[str, Any]]) -> None:
    """Envoy reloads file xDS on a rename into the watched directory."""
    staged = directory / f".{name}"
    staged.write_text(json.dumps({"version_info": str(time.monotonic_ns()), "resources": resources}))
    staged.rename(directory / name)


def test_a_route_change_reaches_a_connection_already_open(tmp_path: Path) -> None:
    """Rules ride on the routes: a caller holding a keep-alive connection meets a new TrafficTarget at
    its next request (a listener change would reach only new connections)."""
    inbound = {"@type": config.ROUTE_TYPE, **_hcm("app")["typed_config"]["route_config"], "name": "inbound"}
    closed = _only([*_routes(), METRICS])  # grants nothing to a caller without a certificate
    hcm = _hcm("app")
    del hcm["typed_config"]["route_config"]
    hcm["typed_config"]["rds"] = {
        "route_config_name": "inbound",
        "config_source": config.file_source(str(tmp_path), "rds.json"),
    }
    listener = {"@type": config.LISTENER_TYPE, **_listener("http", [hcm], {})}
    del listener["filter_chains"][0]["transport_socket"]
    with UpstreamServers(["app"]) as upstreams:
        app = {"@type": config.CLUSTER_TYPE, **_app_cluster(upstreams["app"].port)}
        _write_xds(tmp_path, "cds.json", [app])
        _write_xds(tmp_path, "rds.json", [inbound])
        _write_xds(tmp_path, "lds.json", [listener])
        envoy = EnvoyProcess(config.local_bootstrap("inbound", str(tmp_path)))
        asyncio.run(envoy.start())
        try:
            port = asyncio.run(envoy.listener_port("http"))
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

            def status() -> int:
                connection.request("GET", "/peer")
                response = connection.getresponse()
                response.read()
                return response.status

            assert status() == 200
            opened = connection.sock
            _write_xds(tmp_path, "rds.json", [authorized_routes(inbound, closed)])
            deadline = time.monotonic() + 10
            while (answer := status()) == 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert answer == 403
            assert connection.sock is opened  # on the connection opened before the change
            connection.close()
        finally:
            asyncio.run(envoy.stop())
