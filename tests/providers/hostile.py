"""HTTP servers a hostile tenant could point canaryctl at, scripted at the level of bytes and seconds.

Each runs on 127.0.0.1 in the caller's event loop and records what a test asserts from the far side of
the wire: requests (with headers), connections open now and at most, and body bytes it got to write.
Every behaviour is bounded in time, and ``stop`` aborts whatever is still open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

MIB = 1 << 20
CHUNK = 64 * 1024
MAX_SECONDS = 60.0  # how long a behaviour holds a connection unless told otherwise


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Behaviour = Callable[["HostileServer", Request, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class HostileServer:
    behaviour: Behaviour
    url: str = ""
    requests: list[Request] = field(default_factory=list)
    open: int = 0
    most_open: int = 0
    written: int = 0  # body bytes written (and drained) over all connections
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> HostileServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        """Refuse new connections and abort the open ones: a waiting client fails at once."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._handlers:  # each sees its connection lost and returns
            await asyncio.wait(self._handlers, timeout=MAX_SECONDS)
        if self._server is not None:
            await self._server.wait_closed()

    async def wait_open(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while self.open < count:
            assert time.monotonic() < deadline, f"{self.open} connections open, waited for {count}"
            await asyncio.sleep(0.02)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        self._writers.add(writer)
        try:
            request = await _read_request(reader)
            self.requests.append(request)
            self.open += 1
            self.most_open = max(self.most_open, self.open)
            try:
                await self.behaviour(self, request, reader, writer)
            finally:
                self.open -= 1
            writer.close()  # flushes what is buffered, unlike an abort
            await asyncio.wait_for(writer.wait_closed(), MAX_SECONDS)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client hung up: what a bounded client does
        finally:
            self._writers.discard(writer)
            self._handlers.discard(handler)
            writer.transport.abort()

    async def write_body(self, writer: asyncio.StreamWriter, size: int, prefix: bytes = b"") -> None:
        """``prefix`` then padding up to ``size`` bytes, counting what the client let through."""
        data = prefix
        remaining = size - len(prefix)
        while data or remaining > 0:
            if not data:
                data = b" " * min(CHUNK, remaining)
                remaining -= len(data)
            writer.write(data)
            await writer.drain()
            self.written += len(data)
            data = b""


async def _read_request(reader: asyncio.StreamReader) -> Request:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Request(method, path, headers, body)


def _head(status: int, length: int, content_type: str = "application/json") -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()


def drip(seconds_per_byte: float = 1.0, seconds: float = MAX_SECONDS) -> Behaviour:
    """200 and a long body, one byte at a time for ``seconds``: never a read timeout, no end in sight."""

    async def behaviour(
        server: HostileServer, _request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(_head(200, 1_000_000))
        for _ in range(round(seconds / seconds_per_byte)):
            writer.write(b" ")
            await writer.drain()
            server.written += 1
            with contextlib.suppress(TimeoutError):
                if not await asyncio.wait_for(reader.read(1), seconds_per_byte):
                    return  # the client hung up

    return behaviour


def hang() -> Behaviour:
    """Reads the request and never answers, until the client hangs up."""

    async def behaviour(
        _server: HostileServer, _request: Request, reader: asyncio.StreamReader, _writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(reader.read(), MAX_SECONDS)  # returns at EOF

    return behaviour


def huge(status: int, size: int, prefix: bytes = b"", content_type: str = "application/json") -> Behaviour:
    """``status`` and a ``size``-byte body as fast as the client reads it."""

    async def behaviour(
        server: HostileServer, _request: Request, _reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(_head(status, size, content_type))
        await server.write_body(writer, size, prefix)

    return behaviour


def answer(status: int, body: bytes, content_type: str = "application/json") -> Behaviour:
    return huge(status, len(body), body, content_type)


@contextlib.asynccontextmanager
async def serving(behaviour: Behaviour) -> AsyncIterator[HostileServer]:
    server = await HostileServer(behaviour).start()
    try:
        yield server
    finally:
        await server.stop()


PROBE = """
import asyncio, json, sys
from canaryctl.api.models import Canary, CanaryWebhook, MetricTemplateProvider
from canaryctl_providers.metrics import provider_for
from canaryctl_providers.webhooks import WebhookClient

def status_mib(field):
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024

async def call(kind, url):
    if kind == "metric":
        return await provider_for(MetricTemplateProvider(type="prometheus", address=url), None).query("up")
    canary = Canary.model_validate(
        {"metadata": {"name": "a", "namespace": "t"},
         "spec": {"targetRef": {"kind": "Deployment", "name": "a"}, "service": {"port": 80}}})
    client = WebhookClient()
    result = await client.call(canary, CanaryWebhook(name="h", url=url, timeout="30s"), None, None)
    await client.aclose()
    return result.message

async def main(kind, url):
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets the peak (VmHWM) to the current RSS: imports are not the call's
    before = status_mib("VmRSS")
    try:
        outcome = repr(await call(kind, url))
    except Exception as exc:
        outcome = type(exc).__name__
    print(json.dumps({"before_mib": before, "peak_mib": status_mib("VmHWM"), "outcome": outcome[:200]}))

asyncio.run(main(*sys.argv[1:3]))
"""
REPLY_MIB = 150
VECTOR = b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1"]}]}}'


async def huge_reply_rss(kind: str, reply_mib: int = REPLY_MIB) -> dict[str, Any]:
    """A ``kind`` ("metric" or "webhook") call answered ``reply_mib`` MiB, made by a child process: its
    RSS before the call and at the call's peak, and how much of the reply the server got to write."""
    async with serving(huge(200, reply_mib * MIB, prefix=VECTOR[:-2])) as server:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PROBE, kind, server.url, stdout=subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(process.communicate(), 120)
    report: dict[str, Any] = json.loads(out)
    return report | {"kind": kind, "reply_mib": reply_mib, "written_mib": round(server.written / MIB, 1)}
