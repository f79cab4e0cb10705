"""An HTTP load tester that speaks Flagger's loadtester API, so existing Canary webhooks work unchanged.

Commands run as plain argv (``shlex.split`` + exec) unless a hook explicitly asks for ``type: bash``;
a webhook payload can therefore never smuggle shell syntax into a ``cmd``. Every child runs in its own
process group so shutdown and timeouts can stop it with everything it spawned.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import signal
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

log = logging.getLogger(__name__)

OUTPUT_TAIL_BYTES = 4096
KILL_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class Payload:
    """The part of Flagger's webhook payload the load tester uses."""

    name: str
    namespace: str
    metadata: dict[str, str]

    @property
    def canary(self) -> str:
        """Flagger keys gates by ``name.namespace``."""
        return f"{self.name}.{self.namespace}"


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text + "\n")


class _Refused(Exception):
    """A request the load tester answers with a 4xx and a plain message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class LoadTester:
    """State of one load tester: running commands, open gates, and its own metrics registry."""

    def __init__(self, namespaces: Iterable[str] = (), timeout: float = 3600.0) -> None:
        self.namespaces = frozenset(n for n in namespaces if n)
        self.timeout = timeout
        self.registry = CollectorRegistry()
        self._started = Counter(
            "canaryctl_loadtester_commands_started",
            "Commands started, by type",
            ["type"],
            registry=self.registry,
        )
        self._failed = Counter(
            "canaryctl_loadtester_commands_failed",
            "Commands that exited non-zero, timed out or could not start, by type",
            ["type"],
            registry=self.registry,
        )
        self._running_gauge = Gauge(
            "canaryctl_loadtester_commands_running", "Commands running now", registry=self.registry
        )
        self._gates_gauge = Gauge(
            "canaryctl_loadtester_gates_open",
            "Open gates, by kind (gate = confirm, rollback = rollback)",
            ["kind"],
            registry=self.registry,
        )
        self._gates: dict[str, set[str]] = {"gate": set(), "rollback": set()}
        for kind in self._gates:
            self._gates_gauge.labels(kind).set(0)
        self._running: set[tuple[str, str]] = set()
        self._processes: set[asyncio.subprocess.Process] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def pids(self) -> list[int]:
        """PIDs of the children running now (diagnostics and tests)."""
        return sorted(p.pid for p in self._processes if p.returncode is None)

    # --- requests ---------------------------------------------------------------------------------

    async def _payload(self, request: web.Request) -> Payload:
        try:
            body: Any = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _Refused(400, f"request body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise _Refused(400, "request body must be a JSON object (Flagger's webhook payload)")
        name, namespace, metadata = body.get("name"), body.get("namespace"), body.get("metadata") or {}
        if not isinstance(name, str) or not name or not isinstance(namespace, str) or not namespace:
            raise _Refused(400, "payload needs string fields name and namespace")
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise _Refused(400, "payload metadata must be an object of string values")
        if self.namespaces and namespace not in self.namespaces:
            raise _Refused(403, f"namespace {namespace!r} is not allowed on this load tester")
        return Payload(name, namespace, metadata)

    @web.middleware
    async def _refusals(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except _Refused as refused:
            log.info("%s %s refused: %s", request.method, request.path, refused)
            return _text(refused.status, str(refused))
        return response

    async def run_command(self, request: web.Request) -> web.Response:
        payload = await self._payload(request)
        kind = payload.metadata.get("type", "cmd") or "cmd"
        command = payload.metadata.get("cmd", "").strip()
        if not command:
            raise _Refused(400, "metadata.cmd is required: the command to run, e.g. 'hey -z 1m -q 10 URL'")
        log_output = payload.metadata.get("logCmdOutput", "").lower() == "true"
        if kind == "bash":
            return await self._run_bash(payload, command, log_output)
        if kind != "cmd":
            raise _Refused(400, f"metadata.type {kind!r} is not supported; use cmd (default) or bash")
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise _Refused(400, f"metadata.cmd cannot be split into arguments: {exc}") from exc
        key = (payload.canary, command)
        if key in self._running:
            return _text(200, f"command already running for {payload.canary}")
        self._running.add(key)  # claimed before the spawn's await, so a concurrent duplicate sees it
        try:
            process = await self._spawn(kind, argv, log_output)
        except _Refused:
            self._running.discard(key)
            raise
        self._running_gauge.set(len(self._running))
        task = asyncio.create_task(self._watch(key, process, log_output))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info("started %r for %s (pid %d)", command, payload.canary, process.pid)
        return _text(200, f"command started for {payload.canary}")

    async def _run_bash(self, payload: Payload, command: str, log_output: bool) -> web.Response:
        """Flagger runs bash tasks blocking and reports their exit status as the webhook's answer."""
        process = await self._spawn("bash", ["bash", "-c", command], capture=True)
        code, output = await self._finish(process, capture=True)
        if log_output and output:
            log.info("bash output for %s: %s", payload.canary, output)
        if code != 0:
            self._failed.labels("bash").inc()
            reason = "timed out" if code is None else f"exited with {code}"
            return _text(400, f"command {command!r} {reason}: {output}")
        return _text(200, output or "command succeeded")

    async def _spawn(self, kind: str, argv: list[str], capture: bool) -> asyncio.subprocess.Process:
        self._started.labels(kind).inc()
        out = asyncio.subprocess.PIPE if capture else asyncio.subprocess.DEVNULL
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT if capture else asyncio.subprocess.DEVNULL,
                start_new_session=True,  # its own process group: killpg stops its children too
            )
        except OSError as exc:
            self._failed.labels(kind).inc()
            raise _Refused(400, f"cannot start {argv[0]!r}: {exc.strerror or exc}") from exc
        self._processes.add(process)
        return process

    async def _finish(self, process: asyncio.subprocess.Process, capture: bool) -> tuple[int | None, str]:
        """Waits up to the timeout; returns the exit code (None on timeout) and the output's tail."""
        tail = b""
        try:
            async with asyncio.timeout(self.timeout):
                if capture and process.stdout is not None:
                    while chunk := await process.stdout.read(65536):
                        tail = (tail + chunk)[-OUTPUT_TAIL_BYTES:]
                code: int | None = await process.wait()
        except TimeoutError:
            await _stop(process)
            code = None
        finally:
            self._processes.discard(process)
        return code, tail.decode(errors="replace").strip()

    async def _watch(
        self, key: tuple[str, str], process: asyncio.subprocess.Process, log_output: bool
    ) -> None:
        try:
            code, output = await self._finish(process, capture=log_output)
        finally:
            self._running.discard(key)
            self._running_gauge.set(len(self._running))
        if log_output and output:
            log.info("output of %r for %s: %s", key[1], key[0], output)
        if code != 0:
            self._failed.labels("cmd").inc()
            log.warning("%r for %s %s", key[1], key[0], "timed out" if code is None else f"exited {code}")

    async def gate(self, request: web.Request) -> web.Response:
        """``/gate|rollback/{check,open,close}``: Flagger's manual gates, keyed by canary."""
        kind, action = request.match_info["kind"], request.match_info["action"]
        payload = await self._payload(request)
        opened = self._gates[kind]
        if action == "check":
            if payload.canary in opened:
                return _text(200, "Approved")
            return _text(403, "Forbidden")
        if action == "open":
            opened.add(payload.canary)
        else:
            opened.discard(payload.canary)
        self._gates_gauge.labels(kind).set(len(opened))
        log.info("%s %s for %s", kind, "opened" if action == "open" else "closed", payload.canary)
        return _text(202, f"{kind.capitalize()} {'opened' if action == 'open' else 'closed'}")

    async def metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    # --- lifecycle --------------------------------------------------------------------------------

    async def shutdown(self, _app: web.Application) -> None:
        """Stops every child by process group, then waits for the watchers to record it."""
        await asyncio.gather(*(_stop(p) for p in list(self._processes)))
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=KILL_GRACE_SECONDS)


async def _stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM the process group, SIGKILL it if it is still there after the grace period."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if process.returncode is not None:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            await asyncio.wait_for(process.wait(), timeout=KILL_GRACE_SECONDS)
        except TimeoutError:
            continue


def _fixed(status: int, text: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A handler with a constant answer (Flagger's approve/halt gates and the health check)."""

    async def handler(_request: web.Request) -> web.Response:
        return _text(status, text)

    return handler


LOADTESTER = web.AppKey("loadtester", LoadTester)


def build_app(namespaces: Iterable[str] = (), timeout: float = 3600.0) -> web.Application:
    """The aiohttp application; ``app[LOADTESTER]`` holds its state (tests read its registry)."""
    tester = LoadTester(namespaces, timeout)
    app = web.Application(middlewares=[tester._refusals])
    app[LOADTESTER] = tester
    app.router.add_post("/", tester.run_command)
    app.router.add_route("*", "/gate/approve", _fixed(200, "Approved"))
    app.router.add_route("*", "/gate/halt", _fixed(403, "Forbidden"))
    app.router.add_post(r"/{kind:gate|rollback}/{action:check|open|close}", tester.gate)
    app.router.add_get("/healthz", _fixed(200, "OK"))
    app.router.add_get("/metrics", tester.metrics)
    app.on_shutdown.append(tester.shutdown)
    return app


async def serve(
    host: str,
    port: int,
    namespaces: Iterable[str] = (),
    timeout: float = 3600.0,
    stop: asyncio.Event | None = None,
) -> None:
    """Serves until ``stop`` is set or SIGINT/SIGTERM arrives, then stops all running commands."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(build_app(namespaces, timeout))
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("load tester listening on %s:%d (namespaces: %s)", host, port, ",".join(namespaces) or "all")
        await stop.wait()
    finally:
        await runner.cleanup()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
