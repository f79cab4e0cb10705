"""The dashboard's web server: the Canaries as JSON, their changes as Server-Sent Events fed by one API
watch, and the control verbs as POSTs that write the command annotation.

It serves on loopback for the person who started it, with that person's credentials, so a web page in
the same browser must not be able to drive it: requests must name this server in ``Host`` (no DNS
rebinding), a POST must carry the token embedded in the page (a cross-site request cannot read it or set
the header) and, when the browser sends ``Origin``, come from the page itself; no page may frame it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import threading
from collections.abc import AsyncIterator
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from aiohttp import web

from canaryctl.api.control import CommandKind
from canaryctl.api.models import API_VERSION, Canary, CanaryStatus, ObjectMeta
from canaryctl.cli.apiserver import Stream
from canaryctl.cli.control_cmd import VERBS, effect, request_command
from canaryctl.cli.kube import API_ERRORS, CommandError, Obj, PluginObjects, parse_canary
from canaryctl.cli.render import failed_checks_text, fault_text, step_text, strategy_text, time_left
from canaryctl.cli.view import events
from canaryctl.engine.machine import fast_fail_reason

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-Canaryctl-Token"
DASHBOARD_VERBS = ("promote", "pause", "resume", "retry", "abort")
RETRY_SECONDS = 2.0  # after a failed list or watch
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STATIC = resources.files(__package__) / "static"
CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css"}


def _key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace')}/{meta.get('name')}"


def canary_view(obj: Obj, recent: list[dict[str, str]], now: datetime) -> dict[str, Any]:
    """What the page shows of one Canary; an invalid one is listed with the reason."""
    meta = obj.get("metadata") or {}
    base: dict[str, Any] = {"key": _key(obj), "namespace": meta.get("namespace"), "name": meta.get("name")}
    try:
        canary = parse_canary(obj, f"canary {_key(obj)}")
    except CommandError as exc:
        return base | {"invalid": str(exc), "events": recent}
    status = canary.status or CanaryStatus()
    step, following = step_text(canary)
    return base | {
        "phase": status.phase.value if status.phase else "Pending",
        "message": status.message,
        "paused": status.paused,
        "weight": status.canary_weight,
        "mirror": status.mirror_weight,
        "fault": fault_text(status) if status.fault else "",
        "strategy": strategy_text(canary),
        "provider": canary.spec.provider or "default",
        "step": step,
        "next": following,
        "timeLeft": time_left(canary, now),
        "failedChecks": failed_checks_text(canary).plain,
        "fastFail": fast_fail_reason(status),
        "metrics": [m.to_wire() for m in status.metrics],
        "webhooks": [h.to_wire() for h in status.webhooks],
        "events": recent,
        "effects": {verb: effect(VERBS[verb][0], canary) for verb in DASHBOARD_VERBS},
    }


class Board:
    """The Canaries in scope, kept current by one watch; every change goes to every open page."""

    def __init__(self, objects: PluginObjects, namespace: str | None) -> None:
        self.objects, self.namespace = objects, namespace
        self.views: dict[str, dict[str, Any]] = {}
        self.subscribers: set[asyncio.Queue[dict[str, Any] | None]] = set()

    async def _view(self, obj: Obj) -> dict[str, Any]:
        reference = Canary.model_construct(metadata=ObjectMeta.model_validate(obj.get("metadata") or {}))  # type: ignore[call-arg]
        try:
            found = [asdict(e) for e in await events(self.objects, reference)]
        except API_ERRORS:
            found = []
        return canary_view(obj, found, datetime.now(UTC))

    def _publish(self, message: dict[str, Any]) -> None:
        for queue in self.subscribers:
            queue.put_nowait(message)

    async def _upsert(self, obj: Obj) -> None:
        view = await self._view(obj)
        self.views[view["key"]] = view
        self._publish({"type": "upsert", "canary": view})

    async def _replace(self, items: list[Obj]) -> None:
        fresh = {_key(obj) for obj in items}
        for key in set(self.views) - fresh:
            del self.views[key]
            self._publish({"type": "delete", "key": key})
        for obj in items:
            await self._upsert(obj)

    async def follow(self) -> None:
        """List, then watch from the list's version; list again whenever a watch fails or expires
        (an expired version is answered 410 Gone, or an ERROR event)."""
        while True:
            try:
                items, version = await self.objects.list_versioned(API_VERSION, "Canary", self.namespace)
                await self._replace(items)
                await self._watch(version)
            except API_ERRORS as exc:
                log.warning("dashboard: reading canaries failed, retrying: %s", exc)
                await asyncio.sleep(RETRY_SECONDS)

    async def _watch(self, version: str) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Obj | Exception | None] = asyncio.Queue()
        opened: list[Stream] = []
        stopping = threading.Event()

        def post(item: Obj | Exception | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody reads any more
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def stream() -> None:
            try:
                watch = self.objects.watch(API_VERSION, "Canary", self.namespace, version)
                opened.append(watch)
                if stopping.is_set():
                    watch.stop()
                for event in watch:
                    post(event)
            except Exception as exc:  # handed to the loop, which decides
                post(exc)
            else:
                post(None)

        reader = threading.Thread(target=stream, name="canaryctl-dashboard-watch", daemon=True)
        reader.start()
        try:
            while (event := await queue.get()) is not None:
                if isinstance(event, Exception):
                    raise event
                kind, obj = event.get("type"), event.get("object") or {}
                if kind in ("ADDED", "MODIFIED"):
                    await self._upsert(obj)
                elif kind == "DELETED" and self.views.pop(_key(obj), None) is not None:
                    self._publish({"type": "delete", "key": _key(obj)})
                elif kind == "ERROR":
                    return  # e.g. 410 Gone: list again
        finally:
            stopping.set()
            for watch in opened:
                watch.stop()

    def close(self) -> None:
        """Ends every open stream (None is their last message)."""
        for queue in self.subscribers:
            queue.put_nowait(None)

    @contextlib.asynccontextmanager
    async def subscription(self) -> AsyncIterator[asyncio.Queue[dict[str, Any] | None]]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.subscribers.add(queue)
        try:
            yield queue
        finally:
            self.subscribers.discard(queue)


class Dashboard:
    """The aiohttp application around a Board."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self.token = secrets.token_urlsafe(24)
        self.hosts: set[str] = set()
        self.url = ""

    def bind(self, port: int) -> None:
        """The port it listens on: the only one it answers for."""
        self.hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
        self.url = f"http://127.0.0.1:{port}/"

    @web.middleware
    async def guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.host not in self.hosts:
            return web.Response(status=421, text="this dashboard answers on 127.0.0.1 and localhost only\n")
        if request.method != "GET":
            origin = request.headers.get("Origin")
            if request.headers.get(TOKEN_HEADER) != self.token or (
                origin is not None and origin not in {f"http://{host}" for host in self.hosts}
            ):
                return web.Response(status=403, text="missing or wrong dashboard token\n")
        response: web.StreamResponse = await handler(request)
        if not response.prepared:  # a stream sent its headers already
            response.headers.update(SECURITY_HEADERS)
        return response

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.guard])
        app.router.add_get("/", self.index)
        app.router.add_get("/static/{name}", self.static)
        app.router.add_get("/api/canaries", self.canaries)
        app.router.add_get("/api/stream", self.stream)
        app.router.add_post("/api/canaries/{namespace}/{name}/{verb}", self.command)
        app.on_shutdown.append(self._shutdown)
        return app

    async def _shutdown(self, _: web.Application) -> None:
        self.board.close()

    async def index(self, _: web.Request) -> web.Response:
        page = (STATIC / "index.html").read_text(encoding="utf-8").replace("{{TOKEN}}", self.token)
        return web.Response(text=page, content_type="text/html")

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        suffix = name[name.rfind(".") :]
        if suffix not in CONTENT_TYPES or "/" in name or not (STATIC / name).is_file():
            raise web.HTTPNotFound()
        return web.Response(
            text=(STATIC / name).read_text(encoding="utf-8"), content_type=CONTENT_TYPES[suffix]
        )

    async def canaries(self, _: web.Request) -> web.Response:
        return web.json_response({"items": sorted(self.board.views.values(), key=lambda v: v["key"])})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **SECURITY_HEADERS})
        await response.prepare(request)
        async with self.board.subscription() as queue:
            snapshot = {
                "type": "snapshot",
                "items": sorted(self.board.views.values(), key=lambda v: v["key"]),
            }
            await response.write(f"data: {json.dumps(snapshot)}\n\n".encode())
            while (change := await queue.get()) is not None:
                await response.write(f"data: {json.dumps(change)}\n\n".encode())
        return response

    async def command(self, request: web.Request) -> web.Response:
        namespace, name, verb = (request.match_info[k] for k in ("namespace", "name", "verb"))
        if verb not in DASHBOARD_VERBS:
            raise web.HTTPNotFound()
        kind: CommandKind = VERBS[verb][0]
        try:
            value, will = await request_command(self.board.objects, namespace, name, kind)
        except CommandError as exc:
            return web.json_response({"error": str(exc)}, status=502)
        return web.json_response({"requested": value, "effect": will})


@contextlib.asynccontextmanager
async def serving(objects: PluginObjects, namespace: str | None, port: int) -> AsyncIterator[Dashboard]:
    """The dashboard on 127.0.0.1:``port`` (0: any free port), following the API, until the block ends."""
    board = Board(objects, namespace)
    dashboard = Dashboard(board)
    runner = web.AppRunner(dashboard.app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", port)
        await site.start()
        dashboard.bind(int(runner.addresses[0][1]))
        follower = asyncio.create_task(board.follow())
        try:
            yield dashboard
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
    finally:
        await runner.cleanup()
