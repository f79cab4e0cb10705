"""A fault-injecting proxy between the operator and kmock's emulator: the ways a real API server (or the
load balancer in front of it) misbehaves, modelled as the real one does them.

- ``conflicts``: the next N status writes of a Canary meet another writer first. The proxy changes the
  Canary (an annotation, as another controller would) before it forwards the write, so the emulator
  answers the write's stale resourceVersion with 409 Conflict by itself, as a real API server does.
- ``lost_answers``: the next N status writes are stored, but the client gets a 504 (the API server's
  "the request may still be processing" timeout): the write happened, the writer does not know.
- ``throttled``: the next N requests are answered 429 with ``Retry-After`` (API priority and fairness).
- ``errors``: the next N requests that are not watches are answered 500.
- ``down``: every request is answered 503 and open watch streams are cut (an outage behind a balancer).
- ``forbidden``: in these namespaces everything but Canaries is answered 403 (a RoleBinding missing).
- ``slow_events``: Event creations are held this many seconds before they are forwarded (a slow API
  server): a test can stop the operator while a tick waits on one, between its actions and its status.
- ``cut_watches()``: open watch streams end mid-stream; ``expire_watches()`` also answers every later
  watch that resumes from a resourceVersion older than now with the ERROR event 410 Gone ("too old
  resource version") that a real API server sends after its etcd compaction; a fresh list works.

``status_writes`` records (monotonic time, namespace, name, HTTP status) of each Canary status write
that reached the proxy, for tests that time when each Canary was written again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tests.kube.emulator import StampingEmulator, emulator_url

HOP_HEADERS = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host"})
CANARIES = "/apis/canaryctl.dev/v1beta1/namespaces/"
CONFLICTING_ANNOTATION = "example.com/touched-by"


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _answer(code: int, reason: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(_status(code, reason, message), status=code, headers=headers)


def _namespace(path: str) -> str | None:
    parts = path.strip("/").split("/")
    return parts[parts.index("namespaces") + 1] if "namespaces" in parts[:-1] else None


def _canary_status(method: str, path: str) -> tuple[str, str] | None:
    """(namespace, name) when this is a write of a Canary's status subresource."""
    if method not in ("PATCH", "PUT") or not path.startswith(CANARIES) or not path.endswith("/status"):
        return None
    parts = path.strip("/").split("/")  # apis, group, version, namespaces, NS, canaries, NAME, status
    return parts[4], parts[6]


@dataclass
class ApiFaults:
    emulator: StampingEmulator
    conflicts: int = 0
    lost_answers: int = 0
    throttled: int = 0
    retry_after: int = 1
    errors: int = 0
    down: bool = False
    slow_events: float = 0.0
    events_in_flight: int = 0
    forbidden: set[str] = field(default_factory=set)
    url: str = ""
    served: dict[int, int] = field(default_factory=dict)  # injected answers by HTTP status
    status_writes: list[tuple[float, str, str, int]] = field(default_factory=list)
    _expired_before: int = 0
    # Open watch streams by id: the operator's request and the emulator's answer.
    _watches: dict[int, tuple[web.Request, aiohttp.ClientResponse]] = field(default_factory=dict)
    _session: aiohttp.ClientSession | None = None

    def cut_watches(self) -> int:
        """End every open watch stream abruptly; returns how many were cut."""
        cut = list(self._watches.values())
        for request, answer in cut:
            answer.close()
            if request.transport is not None:
                request.transport.close()
        self._watches.clear()
        return len(cut)

    def expire_watches(self) -> int:
        """Compact: watches resuming from any resourceVersion handed out so far get 410 Gone."""
        self._expired_before = next(self.emulator._versions)
        return self.cut_watches()

    def _count(self, code: int) -> None:
        self.served[code] = self.served.get(code, 0) + 1

    def _fault(self, request: web.Request, watch: bool) -> web.StreamResponse | None:
        path = request.path
        if self.down:
            self._count(503)
            return _answer(503, "ServiceUnavailable", "the server is currently unable to handle the request")
        namespace = _namespace(path)
        if namespace in self.forbidden and not path.startswith(CANARIES):
            self._count(403)
            return _answer(403, "Forbidden", f"forbidden: cannot access {path} in namespace {namespace}")
        if self.throttled > 0:
            self.throttled -= 1
            self._count(429)
            headers = {"Retry-After": str(self.retry_after)}
            return _answer(429, "TooManyRequests", "too many requests, please try again later", headers)
        if self.errors > 0 and not watch:
            self.errors -= 1
            self._count(500)
            return _answer(500, "InternalError", "an error on the server has prevented the request")
        return None

    def _expired(self, request: web.Request) -> bool:
        version = request.query.get("resourceVersion", "")
        return version.isdigit() and 0 < int(version) < self._expired_before

    async def _conflict(self, namespace: str, name: str) -> None:
        """Another writer changes the Canary first: its resourceVersion moves on."""
        found = next(
            (k for k in self.emulator.objects if k[0].plural == "canaries" and k[1:] == (namespace, name)),
            None,
        )
        if found is not None:
            self.emulator.modify(found, {"metadata": {"annotations": {CONFLICTING_ANNOTATION: "other"}}})
            self._count(409)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        watch = request.query.get("watch") in ("true", "1")
        fault = self._fault(request, watch)
        target = _canary_status(request.method, request.path)
        if fault is not None:
            if target is not None:
                self.status_writes.append((time.monotonic(), *target, fault.status))
            return fault
        if watch and self._expired(request):
            self._count(410)
            gone = _status(410, "Expired", "too old resource version")
            return web.json_response({"type": "ERROR", "object": gone})
        if target is not None and self.conflicts > 0:
            self.conflicts -= 1
            await self._conflict(*target)
        if self.slow_events and request.method == "POST" and request.path.endswith("/events"):
            self.events_in_flight += 1
            try:
                await asyncio.sleep(self.slow_events)
            finally:
                self.events_in_flight -= 1
        lose = target is not None and self.lost_answers > 0
        if lose:
            self.lost_answers -= 1
        assert self._session is not None
        upstream = f"{emulator_url(self.emulator)}{request.path_qs}"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        body = await request.read()
        async with self._session.request(request.method, upstream, headers=headers, data=body) as answer:
            if target is not None:
                self.status_writes.append((time.monotonic(), *target, 504 if lose else answer.status))
            if lose:
                await answer.read()
                self._count(504)
                return _answer(
                    504, "Timeout", "the server was unable to return a response in the time allotted"
                )
            reply_headers = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS}
            if not watch:
                return web.Response(body=await answer.read(), status=answer.status, headers=reply_headers)
            return await self._stream(request, answer, reply_headers)

    async def _stream(
        self, request: web.Request, answer: aiohttp.ClientResponse, headers: dict[str, str]
    ) -> web.StreamResponse:
        reply = web.StreamResponse(status=answer.status, headers=headers)
        self._watches[id(request)] = (request, answer)
        try:
            await reply.prepare(request)
            async for line in answer.content:
                if request.transport is None or request.transport.is_closing():
                    break
                await reply.write(line)
        except (aiohttp.ClientError, ConnectionError):
            pass
        finally:
            self._watches.pop(id(request), None)
        with contextlib.suppress(ConnectionError):
            await reply.write_eof()
        return reply


@contextlib.asynccontextmanager
async def fault_proxy(emulator: StampingEmulator) -> AsyncIterator[ApiFaults]:
    """The proxy on 127.0.0.1 (random port) in the current event loop, forwarding to ``emulator``."""
    faults = ApiFaults(emulator)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", faults.handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    faults.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        faults._session = session
        try:
            yield faults
        finally:
            faults.cut_watches()
            await runner.cleanup()
