"""What the cluster-facing ``kubectl canary`` commands share: connection flags, the Objects port they read
and write through, one-line errors that name the object, and output format flags.

Commands are coroutines (the Objects port is async); ``add_command`` registers one so that ``func`` runs
it with ``asyncio.run`` for the CLI and ``afunc`` awaits it from code that already has an event loop
(tests that serve an emulator in that loop).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeAlias

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from canaryctl.api.models import API_VERSION, Canary
from canaryctl.providers.kube import KubeObjects, api_client, api_client_for_host, resource_path

Obj = dict[str, Any]
Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"  # generic for mypy only

OUTPUTS = ("json", "yaml")
DEFAULT_KUBECONFIG = Path("~/.kube/config")
WATCH_SECONDS = 300  # one watch request; then the watcher starts another
POD_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
ERROR_EXIT = 1


class CommandError(Exception):
    """A failure the user gets as one line (``kubectl canary: error: ...``) and exit status 1."""


class PluginObjects(KubeObjects):
    """KubeObjects plus the two requests only the plugin makes: a field-selected list and a merge patch."""

    async def list_selected(
        self, api_version: str, kind: str, namespace: str | None, field_selector: str
    ) -> list[Obj]:
        path = resource_path(api_version, kind, namespace)
        query = [("fieldSelector", field_selector)]
        found = await asyncio.to_thread(self._call, "GET", path, None, "application/json", query)
        return list(found.get("items") or [])

    async def merge_patch(self, api_version: str, kind: str, namespace: str, name: str, patch: Obj) -> Obj:
        path = resource_path(api_version, kind, namespace, name)
        return await asyncio.to_thread(self._call, "PATCH", path, patch, "application/merge-patch+json")

    async def list_versioned(
        self, api_version: str, kind: str, namespace: str | None
    ) -> tuple[list[Obj], str]:
        """The objects and the list's resourceVersion, where a watch of later changes starts."""
        found = await asyncio.to_thread(self._call, "GET", resource_path(api_version, kind, namespace))
        return list(found.get("items") or []), str((found.get("metadata") or {}).get("resourceVersion") or "")

    def watch(self, api_version: str, kind: str, namespace: str | None, resource_version: str) -> WatchStream:
        """A watch of the changes after ``resource_version`` (blocking: open and read it in a thread); the
        server ends it after at most WATCH_SECONDS."""
        query = [("watch", "true"), ("allowWatchBookmarks", "true"), ("timeoutSeconds", str(WATCH_SECONDS))]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        request = self.api.param_serialize(
            method="GET",
            resource_path=resource_path(api_version, kind, namespace),
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*request, _request_timeout=(10, WATCH_SECONDS + 30))
        if not 200 <= response.status < 300:
            response.read()  # type: ignore[no-untyped-call]
            raise ApiException(status=response.status, reason=response.reason, http_resp=response)
        return WatchStream(response.response)


class WatchStream:
    """The events of one watch request, one JSON object a line; ``stop()`` from any thread ends it."""

    def __init__(self, response: urllib3.HTTPResponse) -> None:
        self.response = response

    def __iter__(self) -> Iterator[Obj]:
        try:
            for line in self.response:
                if line.strip():
                    yield json.loads(line)
        except (urllib3.exceptions.HTTPError, OSError, ValueError):
            if not self.response.closed:
                raise
        finally:
            self.response.release_conn()

    def stop(self) -> None:
        self.response.shutdown()


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


def kubeconfig_chosen(kubeconfig: str | None, context: str | None) -> bool:
    """kubectl's rule: ``--kubeconfig`` or ``--context``, ``$KUBECONFIG`` or ``~/.kube/config`` pick the
    kubeconfig; only without all of them does a command in a pod use the pod's service account."""
    return bool(
        kubeconfig or context or os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG.expanduser().exists()
    )


def _api_client(args: argparse.Namespace) -> client.ApiClient:
    if args.server:
        return api_client_for_host(args.server)
    if kubeconfig_chosen(args.kubeconfig, args.context):
        chosen: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=args.kubeconfig, context=args.context
        )
        return chosen
    return api_client()  # in a pod: its service account


@contextlib.contextmanager
def connect(args: argparse.Namespace) -> Iterator[PluginObjects]:
    """The Objects port for ``--server`` or the kubeconfig; its client is closed after the command."""
    try:
        api = _api_client(args)
    except (config.ConfigException, OSError) as exc:
        raise CommandError(f"cannot load the kubeconfig: {exc}") from exc
    try:
        yield PluginObjects(api)
    finally:
        api.close()  # type: ignore[no-untyped-call]


def namespace_of(args: argparse.Namespace) -> str:
    """``-n``, else the kubeconfig context's namespace (in a pod without one: the pod's), else
    ``default`` (as kubectl)."""
    if args.namespace:
        return str(args.namespace)
    if args.server:
        return "default"
    if not kubeconfig_chosen(args.kubeconfig, args.context):
        with contextlib.suppress(OSError):
            return POD_NAMESPACE.read_text(encoding="utf-8").strip() or "default"
        return "default"
    try:
        contexts, active = config.list_kube_config_contexts(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError):
        return "default"
    chosen = next((c for c in contexts if c.get("name") == args.context), active) if args.context else active
    return str(((chosen or {}).get("context") or {}).get("namespace") or "default")


def describe_failure(what: str, exc: Exception) -> CommandError:
    """``canary test/podinfo: forbidden: ...`` from an API or connection error."""
    if isinstance(exc, ApiException):
        reason = {401: "unauthorized", 403: "forbidden", 404: "not found"}.get(exc.status or 0, "")
        message = _api_message(exc)
        cause = ": ".join(part for part in (reason, message) if part) or f"HTTP {exc.status}"
        return CommandError(f"{what}: {cause}")
    return CommandError(f"{what}: cannot reach the API server: {exc}")


def _api_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except ValueError:
        return str(exc.reason or "")
    return str(body.get("message") or exc.reason or "") if isinstance(body, dict) else ""


API_ERRORS = (ApiException, urllib3.exceptions.HTTPError)


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
        return Canary.model_validate(obj)
    except ValueError as exc:
        first = str(exc).splitlines()[0]
        raise CommandError(f"{what}: not a valid Canary ({first}); run `kubectl canary lint`") from exc


def dump(data: Any, output: str) -> str:
    if output == "json":
        return json.dumps(data, indent=2)
    return yaml.safe_dump(data, sort_keys=False).rstrip("\n")
