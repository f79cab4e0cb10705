"""What the cluster-facing ``kubectl canary`` commands share: connection flags, the Objects port they read
and write through, one-line errors that name the object, and output format flags.

The plugin talks to the API server through canaryctl.cli.apiserver (standard library HTTP), not the
official client, so it starts fast and installs light. Commands are coroutines (the Objects port is
async); ``add_command`` registers one so that ``func`` runs
it with ``asyncio.run`` for the CLI and ``afunc`` awaits it from code that already has an event loop
(tests that serve an emulator in that loop).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import ssl
import sys
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any, TypeAlias

import yaml

from canaryctl.api.models import API_VERSION, UNCHECKED_PLUGINS, Canary
from canaryctl.cli.apiserver import (
    ApiError,
    ConfigError,
    Connection,
    Stream,
    context_namespace,
    load_connection,
    path_with_query,
)
from canaryctl_mesh.kinds import resource_path

Obj = dict[str, Any]
Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"  # generic for mypy only

OUTPUTS = ("json", "yaml")
WATCH_SECONDS = 300  # one watch request; then the watcher starts another
ERROR_EXIT = 1


class CommandError(Exception):
    """A failure the user gets as one line (``kubectl canary: error: ...``) and exit status 1."""


FIELD_MANAGER = "kubectl-canary"


class PluginObjects:
    """The Objects port over one Connection, plus a field-selected list and a merge patch."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    async def _call(
        self,
        method: str,
        path: str,
        body: Obj | None = None,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
    ) -> Obj:
        """Blocking HTTP in a worker thread, so a --watch redraw is never held up by a slow answer."""
        full = path_with_query(path, query or [])
        return await asyncio.to_thread(self.connection.request, method, full, body, content_type)

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        try:
            return await self._call("GET", resource_path(api_version, kind, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list_objects(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str | None = None
    ) -> list[Obj]:
        query = [("labelSelector", label_selector)] if label_selector else []
        found = await self._call("GET", resource_path(api_version, kind, namespace), query=query)
        return list(found.get("items") or [])

    async def list_selected(
        self, api_version: str, kind: str, namespace: str | None, field_selector: str
    ) -> list[Obj]:
        query = [("fieldSelector", field_selector)]
        found = await self._call("GET", resource_path(api_version, kind, namespace), query=query)
        return list(found.get("items") or [])

    async def merge_patch(self, api_version: str, kind: str, namespace: str, name: str, patch: Obj) -> Obj:
        path = resource_path(api_version, kind, namespace, name)
        return await self._call("PATCH", path, patch, "application/merge-patch+json")

    async def apply(self, obj: Obj) -> Obj:
        """Server-side apply as ``kubectl-canary``."""
        meta = obj.get("metadata") or {}
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        query = [("fieldManager", FIELD_MANAGER), ("force", "true")]
        return await self._call("PATCH", path, obj, "application/apply-patch+yaml", query)

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        try:
            await self._call("DELETE", resource_path(api_version, kind, namespace, name))
        except ApiError as exc:
            if exc.status != 404:
                raise

    async def list_versioned(
        self, api_version: str, kind: str, namespace: str | None
    ) -> tuple[list[Obj], str]:
        """The objects and the list's resourceVersion, where a watch of later changes starts."""
        found = await self._call("GET", resource_path(api_version, kind, namespace))
        return list(found.get("items") or []), str((found.get("metadata") or {}).get("resourceVersion") or "")

    def watch(self, api_version: str, kind: str, namespace: str | None, resource_version: str) -> Stream:
        """The watch events after ``resource_version`` (blocking: open and read it in a thread); the
        server ends it after at most WATCH_SECONDS, ``stop()`` from another thread before."""
        query = [("watch", "true"), ("allowWatchBookmarks", "true"), ("timeoutSeconds", str(WATCH_SECONDS))]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        path = path_with_query(resource_path(api_version, kind, namespace), query)
        return self.connection.stream(path, read_timeout=WATCH_SECONDS + 30)


def add_connection_flags(parser: argparse.ArgumentParser, all_namespaces: bool = False) -> None:
    parser.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
    if all_namespaces:
        parser.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    parser.add_argument("--kubeconfig", help="path to the kubeconfig file (default: $KUBECONFIG)")
    parser.add_argument("--context", help="kubeconfig context to use")
    # Tests and `kubectl proxy`: an API server URL, no credentials.
    parser.add_argument("--server", help=argparse.SUPPRESS)


def add_output_flags(parser: argparse.ArgumentParser, tables: tuple[str, ...] = ()) -> None:
    """``-o json|yaml`` (data instead of the table or tree) plus the command's own table formats."""
    choices = OUTPUTS + tables
    parser.add_argument("-o", "--output", choices=choices, help=f"output format: {'|'.join(choices)}")
    parser.add_argument("--no-color", action="store_true", help="no colors or icons, even on a terminal")


def add_command(parser: argparse.ArgumentParser, command: Command) -> None:
    safe = guarded(command)

    def run(args: argparse.Namespace) -> int:
        return asyncio.run(safe(args))

    parser.set_defaults(func=run, afunc=safe)


def guarded(command: Command) -> Command:
    """Errors become one line on stderr and exit status 1; the command never shows a traceback."""

    async def run(args: argparse.Namespace) -> int:
        try:
            return await command(args)
        except CommandError as exc:
            print(f"kubectl canary: error: {exc}", file=sys.stderr)
            return ERROR_EXIT

    return run


def require_extra(extra: str, needed: Mapping[str, str]) -> None:
    """Before any work, a CommandError naming what is missing of ``needed`` (module: what it is) and the
    extra that installs it: the light plugin install leaves out what only one command uses."""
    missing = [what for module, what in needed.items() if not _importable(module)]
    if missing:
        raise CommandError(f"this command needs {', '.join(missing)}: pip install 'canaryctl[{extra}]'")


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ModuleNotFoundError, ValueError):  # its parent package is missing, or a broken entry
        return False


@contextlib.contextmanager
def connect(args: argparse.Namespace) -> Iterator[PluginObjects]:
    """The Objects port for ``--server`` or the kubeconfig (each request opens its own connection)."""
    if args.server:
        yield PluginObjects(Connection(args.server))
        return
    try:
        connection = load_connection(args.kubeconfig, args.context)
    except (ConfigError, OSError, ssl.SSLError) as exc:
        raise CommandError(f"cannot load the kubeconfig: {exc}") from exc
    yield PluginObjects(connection)


def namespace_of(args: argparse.Namespace) -> str:
    """``-n``, else the kubeconfig context's namespace (in a pod without one: the pod's), else
    ``default`` (as kubectl)."""
    if args.namespace:
        return str(args.namespace)
    if args.server:
        return "default"
    return context_namespace(args.kubeconfig, args.context)


def describe_failure(what: str, exc: Exception) -> CommandError:
    """``canary test/podinfo: forbidden: ...`` from an API or connection error."""
    if isinstance(exc, ApiError):
        reason = {401: "unauthorized", 403: "forbidden", 404: "not found"}.get(exc.status, "")
        cause = (
            ": ".join(part for part in (reason, exc.message or exc.reason) if part) or f"HTTP {exc.status}"
        )
        return CommandError(f"{what}: {cause}")
    return CommandError(f"{what}: cannot reach the API server: {exc}")


# OSError: refused connections, DNS and TLS failures (urllib's URLError is one), answers that are not JSON.
API_ERRORS = (ApiError, OSError)


async def get_canary(objects: PluginObjects, namespace: str, name: str) -> Canary:
    what = f"canary {namespace}/{name}"
    try:
        found = await objects.get(API_VERSION, "Canary", namespace, name)
    except API_ERRORS as exc:
        raise describe_failure(what, exc) from exc
    if found is None:
        raise CommandError(f"{what}: not found")
    return parse_canary(found, what)


def parse_canary(obj: Obj, what: str) -> Canary:
    try:
        return Canary.model_validate(obj, context=UNCHECKED_PLUGINS)
    except ValueError as exc:
        first = str(exc).splitlines()[0]
        raise CommandError(f"{what}: not a valid Canary ({first}); run `kubectl canary lint`") from exc


def dump(data: Any, output: str) -> str:
    if output == "json":
        return json.dumps(data, indent=2)
    return yaml.safe_dump(data, sort_keys=False).rstrip("\n")
