"""An HTTP load tester that speaks Flagger's loadtester API, so existing Canary webhooks work unchanged.

What a caller may run is the operator's choice, not the caller's: ``type: cmd`` runs one executable
from an allow-list as plain argv (``shlex.split`` + exec, never a shell); ``type: bash`` only runs when
the load tester was started with bash allowed; Flagger's ``helm``/``helmv3``/``kubectl`` types run that
tool only when it is on the allow-list. Every child runs in its own process group, so a timeout, a
caller that hangs up on a waited-for task, and shutdown stop it with everything it spawned. Each
namespace may run a bounded number of commands at once, and with authentication on a caller acts only
for the namespace its token stands for.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from canaryctl.loadtester.auth import Authenticator, Denied, Identity, identify
from canaryctl_mesh.children import die_with_parent

log = logging.getLogger(__name__)

OUTPUT_TAIL_BYTES = 4096
KILL_GRACE_SECONDS = 5.0
MAX_BODY_BYTES = 64 * 1024  # a webhook payload is a few hundred bytes
MAX_GATES_PER_NAMESPACE = 1000
DEFAULT_MAX_PER_NAMESPACE = 8
# Load generators and probes that run one request pattern and cannot start other programs.
# canaryctl itself is not one: `canaryctl loadtester --allow-bash` would be a second, unrestricted
# load tester inside the pod.
DEFAULT_COMMANDS = ("hey", "curl", "grpcurl", "ghz", "k6")
# Flagger's task types that run one tool with the cmd as its arguments and wait for it.
TOOL_TYPES = {"helm": "helm", "helmv3": "helm", "kubectl": "kubectl"}
# Flagger's task types that make the load tester call a server the payload names, with credentials it
# reads from a path the payload names: not built in.
NOT_BUILT_IN = ("concord", "ngrinder")
SUPPORTED_TYPES = ("cmd", "bash", *TOOL_TYPES)
BEARER = "Bearer "
REFUSAL_REASONS = {401: "unauthenticated", 403: "forbidden", 429: "limit", 503: "unavailable"}


@dataclass(frozen=True)
class Policy:
    """What callers may do; set by whoever runs the load tester (flags, chart values)."""

    namespaces: frozenset[str] = frozenset()  # empty: every namespace
    timeout: float = 3600.0
    allow_commands: frozenset[str] = frozenset(DEFAULT_COMMANDS)
    allow_bash: bool = False
    max_per_namespace: int = DEFAULT_MAX_PER_NAMESPACE
    authenticators: Sequence[Authenticator] = field(default=(), hash=False, compare=False)


@dataclass(frozen=True)
class Payload:
    """The part of Flagger's webhook payload the load tester uses, with the namespace it acts for."""

    name: str
    namespace: str
    metadata: dict[str, str]
    caller: str  # for logs: the authenticated subject, or "anonymous"

    @property
    def canary(self) -> str:
        """Flagger keys gates by ``name.namespace``."""
        return f"{self.name}.{self.namespace}"


@dataclass(eq=False)  # compared and hashed by identity: one per child
class _Running:
    """One child: its process, the namespace whose slot it holds and the task that reaps it."""

    process: asyncio.subprocess.Process
    namespace: str
    kind: str
    done: asyncio.Task[tuple[int | None, str]] = field(init=False)


def _text(status: int, text: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=text + "\n", headers=headers)


class _Refused(Exception):
    """A request the load tester answers with a 4xx/5xx and a plain message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class LoadTester:
    """State of one load tester: running commands, open gates, and its own metrics registry."""

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()
        self.registry = CollectorRegistry()
        self._started = Counter(
            "canaryctl_loadtester_commands_started",
            "Commands started, by type",
            ["type"],
            registry=self.registry,
        )
        self._failed = Counter(
            "canaryctl_loadtester_commands_failed",
            "Commands that exited non-zero, timed out, were stopped or could not start, by type",
            ["type"],
            registry=self.registry,
        )
        self._refused = Counter(
            "canaryctl_loadtester_requests_refused",
            "Requests refused, by reason (unauthenticated, forbidden, limit, unavailable, invalid)",
            ["reason"],
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
        self._gates: dict[str, set[tuple[str, str]]] = {"gate": set(), "rollback": set()}
        for kind in self._gates:
            self._gates_gauge.labels(kind).set(0)
        self._background: set[tuple[str, str]] = set()  # (canary, command) of each running cmd
        self._running: set[_Running] = set()
        self._slots: dict[str, int] = {}  # namespace -> children starting or running
        self._tasks: set[asyncio.Task[Any]] = set()

    def pids(self) -> list[int]:
        """PIDs of the children running now (diagnostics and tests)."""
        return sorted(r.process.pid for r in self._running if r.process.returncode is None)

    def _track(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- requests ---------------------------------------------------------------------------------

    async def _caller(self, request: web.Request) -> Identity | None:
        if not self.policy.authenticators:
            return None
        header = request.headers.get("Authorization", "")
        token = header[len(BEARER) :].strip() if header.startswith(BEARER) else ""
        try:
            return await identify(self.policy.authenticators, token)
        except Denied as denied:
            raise _Refused(denied.status, str(denied)) from denied

    async def _payload(self, request: web.Request) -> Payload:
        caller = await self._caller(request)
        try:
            body: Any = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _Refused(400, f"request body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise _Refused(400, "request body must be a JSON object (Flagger's webhook payload)")
        name, claimed, metadata = body.get("name"), body.get("namespace"), body.get("metadata") or {}
        if caller is not None and claimed in (None, ""):
            claimed = caller.namespace
        if not isinstance(name, str) or not name or not isinstance(claimed, str) or not claimed:
            raise _Refused(400, "payload needs string fields name and namespace")
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise _Refused(400, "payload metadata must be an object of string values")
        if caller is not None and claimed != caller.namespace:
            raise _Refused(
                403, f"the token is for namespace {caller.namespace!r}; the payload names {claimed!r}"
            )
        if self.policy.namespaces and claimed not in self.policy.namespaces:
            raise _Refused(403, f"namespace {claimed!r} is not allowed on this load tester")
        return Payload(name, claimed, metadata, caller.subject if caller else "anonymous")

    @web.middleware
    async def _refusals(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
        except _Refused as refused:
            reason = REFUSAL_REASONS.get(refused.status, "invalid")
            self._refused.labels(reason).inc()
            log.info("%s %s refused: %s", request.method, request.path, refused)
            headers = {"WWW-Authenticate": 'Bearer realm="canaryctl-loadtester"'}
            return _text(refused.status, str(refused), headers if refused.status == 401 else None)
        return response

    def _allowed(self, executable: str) -> None:
        if executable not in self.policy.allow_commands:
            allowed = ", ".join(sorted(self.policy.allow_commands)) or "none"
            raise _Refused(403, f"{executable!r} is not an allowed command on this load tester ({allowed})")

    async def run_command(self, request: web.Request) -> web.Response:
        payload = await self._payload(request)
        kind = payload.metadata.get("type", "cmd") or "cmd"
        if kind in NOT_BUILT_IN:
            raise _Refused(400, f"metadata.type {kind!r} is not built in; run its client as a command")
        if kind not in SUPPORTED_TYPES:
            raise _Refused(
                400, f"metadata.type {kind!r} is not supported; use one of {', '.join(SUPPORTED_TYPES)}"
            )
        command = payload.metadata.get("cmd", "").strip()
        if not command:
            raise _Refused(400, "metadata.cmd is required: the command to run, e.g. 'hey -z 1m -q 10 URL'")
        log_output = payload.metadata.get("logCmdOutput", "").lower() == "true"
        if kind == "bash":
            if not self.policy.allow_bash:
                raise _Refused(403, "type: bash is disabled on this load tester (start it with --allow-bash)")
            return await self._run_waited(payload, kind, ["bash", "-c", command], command)
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise _Refused(400, f"metadata.cmd cannot be split into arguments: {exc}") from exc
        if kind in TOOL_TYPES:
            argv = [TOOL_TYPES[kind], *argv]
        if not argv:
            raise _Refused(400, "metadata.cmd is required: the command to run, e.g. 'hey -z 1m -q 10 URL'")
        self._allowed(argv[0])
        if kind in TOOL_TYPES:
            return await self._run_waited(payload, kind, argv, command)
        return await self._run_background(payload, argv, command, log_output)

    async def _run_background(
        self, payload: Payload, argv: list[str], command: str, log_output: bool
    ) -> web.Response:
        """Flagger's ``cmd``: started and answered at once; one copy per canary and command."""
        key = (payload.canary, command)
        if key in self._background:
            return _text(200, f"command already running for {payload.canary}")
        self._background.add(key)  # claimed before the spawn's await, so a concurrent duplicate sees it
        try:
            starting = self._spawn(payload.namespace, "cmd", argv, capture=log_output)
        except _Refused:
            self._background.discard(key)
            raise
        starting.add_done_callback(lambda task: self._follow(key, task, log_output))
        running = await asyncio.shield(starting)
        log.info(
            "started %r for %s by %s (pid %d)", command, payload.canary, payload.caller, running.process.pid
        )
        return _text(200, f"command started for {payload.canary}")

    def _follow(self, key: tuple[str, str], starting: asyncio.Task[_Running], log_output: bool) -> None:
        """Once a background command has started (its caller may be gone by then), report its end."""
        if starting.cancelled() or starting.exception() is not None:
            self._background.discard(key)
            return
        self._track(self._report(key, starting.result(), log_output))

    async def _report(self, key: tuple[str, str], running: _Running, log_output: bool) -> None:
        try:
            code, output = await running.done
        finally:
            self._background.discard(key)
        if log_output and output:
            log.info("output of %r for %s: %s", key[1], key[0], output)
        if code != 0:
            log.warning("%r for %s %s", key[1], key[0], "timed out" if code is None else f"exited {code}")

    async def _run_waited(self, payload: Payload, kind: str, argv: list[str], command: str) -> web.Response:
        """Flagger's bash, helm and kubectl tasks: the answer is the exit status. A caller that hangs up
        (its webhook timeout) takes the task with it: the handler is cancelled and the group stopped."""
        starting = self._spawn(payload.namespace, kind, argv, capture=True)
        log.info("running %s %r for %s by %s", kind, command, payload.canary, payload.caller)
        try:
            running = await asyncio.shield(starting)
            code, output = await asyncio.shield(running.done)
        except asyncio.CancelledError:
            log.info("caller of %s %r for %s went away: stopping it", kind, command, payload.canary)
            starting.add_done_callback(self._stop_started)
            raise
        if code != 0:
            reason = "timed out" if code is None else f"exited with {code}"
            return _text(400, f"command {command!r} {reason}: {output}")
        return _text(200, output or "command succeeded")

    def _stop_started(self, starting: asyncio.Task[_Running]) -> None:
        if not starting.cancelled() and starting.exception() is None:
            self._track(_stop(starting.result().process))

    def _spawn(self, namespace: str, kind: str, argv: list[str], capture: bool) -> asyncio.Task[_Running]:
        """Takes one of the namespace's slots now (no await between the check and the take) and starts
        the child in a task of its own, so a caller gone mid-start cannot leave an untracked child."""
        if self._slots.get(namespace, 0) >= self.policy.max_per_namespace:
            raise _Refused(
                429, f"namespace {namespace!r} already runs {self.policy.max_per_namespace} commands"
            )
        self._slots[namespace] = self._slots.get(namespace, 0) + 1
        return self._track(self._start(namespace, kind, argv, capture))

    def _release(self, namespace: str) -> None:
        self._slots[namespace] -= 1
        if self._slots[namespace] <= 0:
            del self._slots[namespace]

    async def _start(self, namespace: str, kind: str, argv: list[str], capture: bool) -> _Running:
        """Spawns a child in its own process group; it holds its namespace's slot until it exits."""
        out = asyncio.subprocess.PIPE if capture else asyncio.subprocess.DEVNULL
        try:
            process = await asyncio.create_subprocess_exec(
                # Killed if the load tester is: started on the event loop's thread, which runs as long
                # as the server does.
                *die_with_parent(argv),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT if capture else asyncio.subprocess.DEVNULL,
                start_new_session=True,  # its own process group: killpg stops its children too
            )
        except OSError as exc:
            self._release(namespace)
            self._failed.labels(kind).inc()
            raise _Refused(400, f"cannot start {argv[0]!r}: {exc.strerror or exc}") from exc
        self._started.labels(kind).inc()
        running = _Running(process, namespace, kind)
        self._running.add(running)
        self._running_gauge.set(len(self._running))
        running.done = self._track(self._reap(running, capture))
        return running

    async def _reap(self, running: _Running, capture: bool) -> tuple[int | None, str]:
        """Waits for the child up to the timeout (then stops it); returns the exit code (None on
        timeout) and the output's tail, and frees the namespace slot once the child is gone."""
        process = running.process
        tail = b""
        try:
            async with asyncio.timeout(self.policy.timeout):
                if capture and process.stdout is not None:
                    while chunk := await process.stdout.read(65536):
                        tail = (tail + chunk)[-OUTPUT_TAIL_BYTES:]
                code: int | None = await process.wait()
        except TimeoutError:
            await _stop(process)
            code = None
        finally:
            self._running.discard(running)
            self._running_gauge.set(len(self._running))
            self._release(running.namespace)
        if code != 0:
            self._failed.labels(running.kind).inc()
        return code, tail.decode(errors="replace").strip()

    async def gate(self, request: web.Request) -> web.Response:
        """``/gate|rollback/{check,open,close}``: Flagger's manual gates, keyed by canary."""
        kind, action = request.match_info["kind"], request.match_info["action"]
        payload = await self._payload(request)
        opened = self._gates[kind]
        key = (payload.namespace, payload.name)
        if action == "check":
            return _text(200, "Approved") if key in opened else _text(403, "Forbidden")
        if action == "open":
            if key not in opened and sum(1 for ns, _ in opened if ns == payload.namespace) >= (
                MAX_GATES_PER_NAMESPACE
            ):
                raise _Refused(
                    429, f"namespace {payload.namespace!r} has {MAX_GATES_PER_NAMESPACE} open gates"
                )
            opened.add(key)
        else:
            opened.discard(key)
        self._gates_gauge.labels(kind).set(len(opened))
        verb = "opened" if action == "open" else "closed"
        log.info("%s %s for %s by %s", kind, verb, payload.canary, payload.caller)
        return _text(202, f"{kind.capitalize()} {verb}")

    async def metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    # --- lifecycle --------------------------------------------------------------------------------

    async def shutdown(self, _app: web.Application) -> None:
        """Stops every child by process group, then waits for the reapers to record it."""
        await asyncio.gather(*(_stop(r.process) for r in list(self._running)))
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


def build_app(policy: Policy | None = None) -> web.Application:
    """The aiohttp application; ``app[LOADTESTER]`` holds its state (tests read its registry).

    Serve it with ``handler_cancellation=True`` (as ``serve`` does): that is how a caller hanging up
    on a bash, helm or kubectl task stops the task.
    """
    tester = LoadTester(policy)
    app = web.Application(middlewares=[tester._refusals], client_max_size=MAX_BODY_BYTES)
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
    host: str, port: int, policy: Policy | None = None, stop: asyncio.Event | None = None
) -> None:
    """Serves until ``stop`` is set or SIGINT/SIGTERM arrives, then stops all running commands."""
    policy = policy or Policy()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = web.AppRunner(build_app(policy), handler_cancellation=True)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info(
            "load tester listening on %s:%d (namespaces: %s; commands: %s; bash: %s; auth: %s)",
            host,
            port,
            ",".join(sorted(policy.namespaces)) or "all",
            ",".join(sorted(policy.allow_commands)) or "none",
            "allowed" if policy.allow_bash else "off",
            "on" if policy.authenticators else "off",
        )
        await stop.wait()
    finally:
        await runner.cleanup()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
