"""Fixtures for the metrics tests: a recording HTTP server that plays a vendor API, and real Prometheus
processes (canaryctl.local.prometheus.LocalPrometheus: Debian's binary, ephemeral loopback port, generated
config, stopped by PID)."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from canaryctl.local.prometheus import LocalPrometheus, PrometheusError, prometheus_binary
from tests.tls import self_signed_certificate


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    # Whether the client presented a TLS certificate (servers that ask for one).
    client_certificate: bool = False

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    content_type: str = "application/json"

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body).encode()


@dataclass
class FakeAPI:
    """A vendor API stand-in: replies per (method, path), records every request it gets."""

    url: str = ""
    replies: dict[tuple[str, str], Reply] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)

    def reply(
        self, method: str, path: str, body: Any = None, status: int = 200, content_type: str = ""
    ) -> None:
        self.replies[(method, path)] = Reply(status, body, content_type or "application/json")

    @property
    def last(self) -> Recorded:
        return self.requests[-1]


def _handler(api: FakeAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers: dict[str, str] = {}
            for name, value in self.headers.items():
                key = name.lower()
                headers[key] = f"{headers[key]}, {value}" if key in headers else value
            presented = isinstance(self.connection, ssl.SSLSocket) and bool(self.connection.getpeercert())
            recorded = Recorded(self.command, parts.path, parse_qs(parts.query), headers, body, presented)
            api.requests.append(recorded)
            reply = api.replies.get((self.command, parts.path), Reply(404, {"error": "not found"}))
            payload = reply.encoded()
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _serve
        do_POST = _serve
        do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

    return Handler


def _serve_fake_api(context: ssl.SSLContext | None = None) -> tuple[FakeAPI, ThreadingHTTPServer]:
    api = FakeAPI()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    scheme = "https" if context else "http"
    api.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return api, server


@pytest.fixture
def fake_api() -> Iterator[FakeAPI]:
    api, server = _serve_fake_api()
    yield api
    server.shutdown()
    server.server_close()


@pytest.fixture
def fake_tls_api(tmp_path: Path) -> Iterator[FakeAPI]:
    """The same fake API over HTTPS with a fresh self-signed certificate (no CA trusts it)."""
    cert, key = self_signed_certificate(tmp_path, "127.0.0.1")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    api, server = _serve_fake_api(context)
    yield api
    server.shutdown()
    server.server_close()


@dataclass(frozen=True)
class KubeServer:
    """A stand-in API server over TLS and the client files a kubeconfig would name for it."""

    api: FakeAPI
    ca_file: Path
    client_cert: Path
    client_key: Path


@pytest.fixture
def fake_kube_api(tmp_path: Path) -> Iterator[KubeServer]:
    """The fake API over HTTPS as an API server serves it: its own CA, client certificates asked for
    (and recorded) but not required, as with token authentication."""
    (tmp_path / "server").mkdir()
    (tmp_path / "client").mkdir()
    cert, key = self_signed_certificate(tmp_path / "server", "kube-apiserver")
    client_cert, client_key = self_signed_certificate(tmp_path / "client", "canaryctl-controller")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.load_verify_locations(client_cert)
    context.verify_mode = ssl.CERT_OPTIONAL
    api, server = _serve_fake_api(context)
    yield KubeServer(api, cert, client_cert, client_key)
    server.shutdown()
    server.server_close()


@pytest.fixture
def start_prometheus() -> Iterator[Callable[[list[dict[str, Any]]], LocalPrometheus]]:
    """Start real Prometheus processes for a test; every one is stopped by PID afterwards."""
    try:
        prometheus_binary()
    except PrometheusError as missing:
        pytest.skip(str(missing))
    started: list[LocalPrometheus] = []

    def start(scrape_configs: list[dict[str, Any]]) -> LocalPrometheus:
        started.append(LocalPrometheus(scrape_configs))
        started[-1].start()
        return started[-1]

    yield start
    for prometheus in started:
        prometheus.stop()
