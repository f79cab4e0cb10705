"""Fixtures for the metrics tests: a recording HTTP server that plays a vendor API, and a real Prometheus
(Debian's binary) started on an ephemeral loopback port with a generated config and killed by PID."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

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
            api.requests.append(Recorded(self.command, parts.path, parse_qs(parts.query), headers, body))
            reply = api.replies.get((self.command, parts.path), Reply(404, {"error": "not found"}))
            payload = reply.encoded()
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _serve
        do_POST = _serve

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
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    api, server = _serve_fake_api(context)
    yield api
    server.shutdown()
    server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Prometheus:
    """One real Prometheus process with its own config and data dir; stopped by its PID."""

    def __init__(self, scrape_configs: list[dict[str, Any]]) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="canaryctl-prom-"))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": scrape_configs,
        }
        (self._dir / "prometheus.yml").write_text(json.dumps(config))  # JSON is valid YAML
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = (self._dir / "prometheus.log").open("wb")
        self.process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={self._dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self._dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"Prometheus did not become ready: {(self._dir / 'prometheus.log').read_text()[-2000:]}"
        )

    def query(self, promql: str) -> list[Any]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=2.0).json()
        result: list[Any] = answer["data"]["result"]
        return result

    def wait_for(self, promql: str, expected: float, timeout: float = 10.0) -> None:
        """Until ``promql`` returns ``expected`` (a scrape has seen it), bounded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(promql)
            if result and float(result[0]["value"][1]) == expected:
                return
            time.sleep(0.2)
        raise AssertionError(f"{promql} never reached {expected}: {self.query(promql)}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # by PID: Popen.kill signals exactly this child
            self.process.wait(timeout=10)
        self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)


@pytest.fixture
def start_prometheus() -> Iterator[Callable[[list[dict[str, Any]]], Prometheus]]:
    """Start real Prometheus processes for a test; every one is killed by PID afterwards."""
    if not Path(PROMETHEUS).exists():
        pytest.skip("the prometheus binary is missing (apt-get install prometheus)")
    started: list[Prometheus] = []

    def start(scrape_configs: list[dict[str, Any]]) -> Prometheus:
        started.append(Prometheus(scrape_configs))
        return started[-1]

    yield start
    for prometheus in started:
        prometheus.stop()
