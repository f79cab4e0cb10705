"""Users of a loopback HTTP service: keep-alive clients whose every response is stamped with the
time its request was sent, so tests can tell what was served before and after a change."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from canaryctl_mesh.loopback import HttpConnection

CONNECTIONS = 4
MAX_REQUESTS_PER_CONNECTION = 20_000
MAX_TRAFFIC_SECONDS = 60.0


@dataclass(frozen=True)
class Response:
    sent: float
    status: int  # 0: the connection failed
    body: str


class Users:
    """Keep-alive clients sending to one port until stopped (bounded in requests and time)."""

    def __init__(self, port: int, connections: int = CONNECTIONS, pause: float = 0.0) -> None:
        self.port = port
        self.connections = connections
        self.pause = pause  # seconds between one connection's requests; 0: as fast as answered
        self.responses: list[Response] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _client(self) -> None:
        conn = HttpConnection("127.0.0.1", self.port)
        deadline = time.monotonic() + MAX_TRAFFIC_SECONDS
        try:
            for _ in range(MAX_REQUESTS_PER_CONNECTION):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                sent = time.monotonic()
                try:
                    status, body = await conn.request()
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    status, body = 0, b""
                    await conn.close()
                self.responses.append(Response(sent, status, body.decode(errors="replace")))
                await asyncio.sleep(self.pause)
        finally:
            await conn.close()

    def start(self) -> Users:
        self._tasks = [asyncio.create_task(self._client()) for _ in range(self.connections)]
        return self

    async def stop(self) -> list[Response]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.responses
