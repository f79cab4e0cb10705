"""Loopback HTTP upstreams and a keep-alive load client for mesh tests, the benchmark and demos.

Both speak just enough HTTP/1.1 to be fast in pure asyncio: each upstream answers with its own name
as the body, so a client can tell which backend served it; upstreams count the shadow copies Envoy
sends when mirroring (Envoy appends ``-shadow`` to their Host's name, before any port).
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial

_SHADOW_HOST = re.compile(rb"-shadow(:\d+)?\s*$")


@dataclass
class Upstream:
    name: str
    port: int = 0
    requests: int = 0
    shadow_requests: int = 0

    def reset(self) -> None:
        self.requests = 0
        self.shadow_requests = 0


class _Handler(asyncio.Protocol):
    def __init__(self, upstream: Upstream, open_transports: set[asyncio.Transport]) -> None:
        self.upstream = upstream
        self.open_transports = open_transports
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        body = upstream.name.encode()
        self.response = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s" % (
            len(body),
            body,
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.open_transports.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        assert self.transport is not None
        self.open_transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line.startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
                elif line.startswith(b"host:") and _SHADOW_HOST.search(line):
                    self.upstream.shadow_requests += 1
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.upstream.requests += 1
            assert self.transport is not None
            self.transport.write(self.response)


class UpstreamServers:
    """Named upstreams on 127.0.0.1 ephemeral ports, served from their own thread and event loop."""

    def __init__(self, names: list[str]) -> None:
        self.upstreams = {name: Upstream(name) for name in names}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="upstreams", daemon=True)
        self._servers: list[asyncio.Server] = []
        self._transports: set[asyncio.Transport] = set()

    def __getitem__(self, name: str) -> Upstream:
        return self.upstreams[name]

    async def _serve(self) -> None:
        for upstream in self.upstreams.values():
            factory = partial(_Handler, upstream, self._transports)
            server = await self._loop.create_server(factory, "127.0.0.1", 0)
            upstream.port = server.sockets[0].getsockname()[1]
            self._servers.append(server)

    async def _close(self) -> None:
        for server in self._servers:
            server.close()
        for transport in list(self._transports):
            transport.close()
        for server in self._servers:
            await server.wait_closed()

    def start(self) -> UpstreamServers:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=5)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def reset(self) -> None:
        for upstream in self.upstreams.values():
            upstream.reset()

    def __enter__(self) -> UpstreamServers:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


@dataclass
class LoadResult:
    statuses: Counter[int] = field(default_factory=Counter)
    bodies: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    latency_ms_by_path: dict[str, float] = field(default_factory=dict)
    """Each request's latency by its path, when `fire` numbered the paths."""


class HttpConnection:
    """One keep-alive HTTP/1.1 connection; reconnects when the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, path: str = "/", headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        sent = "".join(f"{k}: {v}\r\n" for k, v in ({"host": self.host} | (headers or {})).items())
        self._writer.write(f"GET {path} HTTP/1.1\r\n{sent}\r\n".encode())
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
        normalized = {k.strip().lower(): v.strip() for k, v in fields.items()}
        body = await self._reader.readexactly(int(normalized.get("content-length", "0")))
        if normalized.get("connection", "").lower() == "close":
            await self.close()
        return status, body

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


async def fire(
    host: str,
    port: int,
    requests: int,
    concurrency: int = 8,
    headers: dict[str, str] | None = None,
    rate: float | None = None,
    timeout: float = 60.0,
    numbered: bool = False,
) -> LoadResult:
    """Send `requests` GETs over `concurrency` keep-alive connections, optionally paced to `rate`/s.

    `numbered` sends request i to ``/i`` and keeps its latency by that path, so what the client saw
    of one request can be joined with Envoy's access-log line for it."""
    result = LoadResult()
    next_index = iter(range(requests))
    start = time.perf_counter()

    async def worker() -> None:
        conn = HttpConnection(host, port)
        try:
            for i in next_index:
                if rate:
                    await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
                path = f"/{i}" if numbered else "/"
                began = time.perf_counter()
                try:
                    status, body = await conn.request(path, headers)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    result.errors += 1
                    await conn.close()
                    continue
                latency_ms = (time.perf_counter() - began) * 1000
                result.latencies_ms.append(latency_ms)
                if numbered:
                    result.latency_ms_by_path[path] = latency_ms
                result.statuses[status] += 1
                result.bodies[body.decode(errors="replace")] += 1
        finally:
            await conn.close()

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(concurrency))), timeout)
    return result
