"""Splunk Observability (SignalFx) SignalFlow against a local server: the HTTP execute call on the
realm's stream host (program as text, window of ten intervals in epoch milliseconds, ``immediate``,
``X-SF-Token``), answered as a Server-Sent Events stream shaped like the real one, and the REST host's
token check for availability."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from canaryctl.api.models import LocalObjectReference, MetricTemplateProvider
from canaryctl_providers.metrics import MetricQueryError, ProviderConfigError, provider_for
from canaryctl_providers.metrics.splunk import realm_addresses

TOKEN = "sf-access-token"
PROGRAM = "data('service.request.count', filter=filter('service.name', 'podinfo')).sum().publish()"


def event(kind: str, message: dict[str, Any]) -> str:
    """One SSE event as SignalFlow writes it: pretty-printed JSON, one ``data:`` line per JSON line."""
    lines = json.dumps(message, indent=2).splitlines()
    return f"event: {kind}\n" + "".join(f"data: {line}\n" for line in lines) + "\n"


def control(name: str, **extra: Any) -> str:
    return event("control-message", {"event": name, "timestampMs": 1764514800000, **extra})


def data(*points: tuple[str, float | None]) -> str:
    payload = [{"tsId": tsid, "value": value} for tsid, value in points]
    return event("data", {"data": payload, "logicalTimestampMs": 1764514800000})


def stream(*middle: str, end: bool = True) -> str:
    head = control("STREAM_START") + control("JOB_START", handle="AAAAAKf3dPc")
    head += event("metadata", {"tsId": "AAAAAKf3dPc", "properties": {"sf_metric": "service.request.count"}})
    return head + "".join(middle) + (control("END_OF_CHANNEL") if end else "")


@dataclass
class SignalFlow:
    """A stream host: answers execute with ``body`` (chunked), then holds the connection open until
    the test ends when ``hold`` is set, as a stream that does not close after its last message."""

    url: str = ""
    body: str = ""
    status: int = 200
    hold: bool = False
    requests: list[tuple[str, str, dict[str, list[str]], dict[str, str], bytes]] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)


def _handler(api: SignalFlow) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {name.lower(): value for name, value in self.headers.items()}
            api.requests.append((self.command, parts.path, parse_qs(parts.query), headers, body))
            if (self.command, parts.path) == ("GET", "/v2/metric"):
                status = 200 if headers.get("x-sf-token") == TOKEN else 401
                payload = json.dumps({"count": 1, "results": [{"name": "cpu.utilization"}]}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            self.send_response(api.status)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = api.body.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
            if api.hold:
                api.released.wait(30)
            self.wfile.write(b"0\r\n\r\n")

        do_GET = _serve
        do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            """Keep test output quiet."""

    return Handler


@pytest.fixture
def signalflow() -> Iterator[SignalFlow]:
    api = SignalFlow()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    server.daemon_threads = True
    api.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield api
    api.released.set()
    server.shutdown()
    server.server_close()


def splunk(address: str) -> MetricTemplateProvider:
    return MetricTemplateProvider(type="splunk", address=address, secret_ref=LocalObjectReference(name="sf"))


def test_execute_request_and_value(signalflow: SignalFlow) -> None:
    signalflow.body = stream(
        data(("AAAAAKf3dPc", 3.0)), data(("AAAAAKf3dPc", None)), data(("AAAAAKf3dPc", 7.5))
    )
    provider = provider_for(splunk(signalflow.url), {"sf_token_key": TOKEN}, interval="30s")
    before = int(time.time() * 1000)
    assert asyncio.run(provider.query(PROGRAM)) == 7.5  # the last non-null point, as Flagger
    method, path, query, headers, body = signalflow.requests[-1]
    assert (method, path) == ("POST", "/v2/signalflow/execute")
    assert body.decode() == PROGRAM
    assert headers["x-sf-token"] == TOKEN
    assert headers["content-type"] == "text/plain"
    assert headers["accept"] == "text/event-stream"
    assert query["immediate"] == ["true"]
    start, stop = int(query["start"][0]), int(query["stop"][0])
    assert stop - start == 10 * 30 * 1000
    assert before - 1000 <= stop <= int(time.time() * 1000) + 1000


def test_a_stream_left_open_after_its_end_is_read_to_the_end_only(signalflow: SignalFlow) -> None:
    """The computation's END_OF_CHANNEL ends the read; a server that keeps the connection open does not
    hold the query until its deadline."""
    signalflow.body = stream(data(("AAAAAKf3dPc", 2.0)))
    signalflow.hold = True
    provider = provider_for(splunk(signalflow.url), {"sf_token_key": TOKEN})
    assert asyncio.run(provider.query(PROGRAM)) == 2.0  # not "no complete answer within 5s"


def test_no_data_several_series_and_errors(signalflow: SignalFlow) -> None:
    provider = provider_for(splunk(signalflow.url), {"sf_token_key": TOKEN})
    signalflow.body = stream(data(("AAAAAKf3dPc", None)))
    assert asyncio.run(provider.query(PROGRAM)) is None
    signalflow.body = stream(data(("AAAAAKf3dPc", 1.0), ("AAAAAGq0Pbk", 2.0)))
    with pytest.raises(MetricQueryError, match="2 time series"):
        asyncio.run(provider.query(PROGRAM))
    signalflow.body = stream(
        control("CHANNEL_ABORT", abortInfo={"sf_job_abortReason": "bad program"}), end=False
    )
    with pytest.raises(MetricQueryError, match="bad program"):
        asyncio.run(provider.query(PROGRAM))
    signalflow.body = event("error", {"errors": [{"code": "ANALYTICS_PROGRAM_NAME_ERROR", "context": {}}]})
    with pytest.raises(MetricQueryError, match="ANALYTICS_PROGRAM_NAME_ERROR"):
        asyncio.run(provider.query("nosuch()"))
    signalflow.body = stream(data(("AAAAAKf3dPc", 1.0)), end=False)  # the server hung up mid-computation
    with pytest.raises(MetricQueryError, match="END_OF_CHANNEL"):
        asyncio.run(provider.query(PROGRAM))
    signalflow.status, signalflow.body = 401, ""
    with pytest.raises(MetricQueryError, match="401"):
        asyncio.run(provider.query(PROGRAM))


def test_is_online_checks_the_token_on_the_rest_host(signalflow: SignalFlow) -> None:
    assert asyncio.run(provider_for(splunk(signalflow.url), {"sf_token_key": TOKEN}).is_online()) is True
    method, path, query, headers, _ = signalflow.requests[-1]
    assert (method, path, query, headers["x-sf-token"]) == ("GET", "/v2/metric", {"limit": ["1"]}, TOKEN)
    assert asyncio.run(provider_for(splunk(signalflow.url), {"sf_token_key": "wrong"}).is_online()) is False


def test_realm_addresses_as_flagger_derives_them() -> None:
    realm = ("https://api.us1.signalfx.com", "https://stream.us1.signalfx.com")
    assert realm_addresses("https://api.us1.signalfx.com") == realm
    assert realm_addresses("wss://stream.us1.signalfx.com") == realm
    assert realm_addresses("http://127.0.0.1:8080/") == ("http://127.0.0.1:8080",) * 2
    with pytest.raises(ProviderConfigError, match="not a valid"):
        realm_addresses("ftp://api.us1.signalfx.com")


def test_configuration_errors() -> None:
    with pytest.raises(ProviderConfigError, match="address"):
        provider_for(
            MetricTemplateProvider(type="splunk", secret_ref=LocalObjectReference(name="sf")),
            {"sf_token_key": TOKEN},
        )
    with pytest.raises(ProviderConfigError, match="sf_token_key"):
        provider_for(splunk("https://api.us1.signalfx.com"), {"token": TOKEN})
