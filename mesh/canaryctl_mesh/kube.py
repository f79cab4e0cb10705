"""Kubernetes objects as plain dicts over the official client: the ``Objects`` port.

Routers and workloads deal in whole manifests of many kinds (Deployments, TrafficSplits,
VirtualServices, ...), so this goes through the client's generic ``call_api`` with paths from the
kinds table (canaryctl_mesh.kinds) instead of one typed API class per kind. Blocking client calls run in
worker threads of their own executor, so the operator's event loop never stalls and no API call
queues behind other blocking work; each has a client timeout, so a half-open connection fails the
call instead of stalling it for good.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from canaryctl_mesh.kinds import KINDS, Kind, UnknownKind, resource_path

__all__ = [
    "FIELD_MANAGER",
    "KINDS",
    "Kind",
    "KubeObjects",
    "UnknownKind",
    "api_client",
    "api_client_for_host",
    "pool_size",
    "resource_path",
]


FIELD_MANAGER = "canaryctl"
# urllib3's total timeout: connect, then each read of the answer, within this many seconds.
KUBE_REQUEST_TIMEOUT_SECONDS = 30.0
KUBE_API_THREADS = 8


def pool_size(watchers: int = 0, threads: int = KUBE_API_THREADS) -> int:
    """Connections a client needs kept: one per thread making calls plus one per open watch stream.
    urllib3's default (5 per CPU) is smaller than that with many watches: it then logs "Connection pool
    is full", closes the connection and opens a new one for the next call."""
    return threads + watchers


def api_client(
    kubeconfig: str | None = None, context: str | None = None, *, connections: int | None = None
) -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (as kubectl finds it);
    ``connections`` sizes the connection pool (see ``pool_size``)."""
    configuration = client.Configuration()
    configuration.connection_pool_maxsize = connections or pool_size()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        return client.ApiClient(configuration)
    except config.ConfigException:
        loaded: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
        return loaded


def api_client_for_host(host: str, *, connections: int | None = None) -> client.ApiClient:
    """A client for an API server at ``host`` without credentials (local emulators, kubectl proxy)."""
    configuration = client.Configuration()
    configuration.host = host
    configuration.connection_pool_maxsize = connections or pool_size()
    return client.ApiClient(configuration)


class KubeObjects:
    """The ``Objects`` port over one ApiClient."""

    def __init__(
        self,
        api: client.ApiClient,
        field_manager: str = FIELD_MANAGER,
        *,
        executor: Executor | None = None,
        request_timeout: float = KUBE_REQUEST_TIMEOUT_SECONDS,
    ) -> None:
        self.api = api
        # Writers that own different fields of one object (the workloads own the apex Service, the
        # kubernetes router only its selector) apply under different managers, or each apply would
        # remove the fields the other set.
        self.field_manager = field_manager
        self.executor = executor or ThreadPoolExecutor(KUBE_API_THREADS, thread_name_prefix="kube-api")
        self.request_timeout = request_timeout

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        """One request; non-2xx answers raise ApiException with the server's status and message."""
        request = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*request, _request_timeout=self.request_timeout)
        response.read()  # type: ignore[no-untyped-call]
        result: Any = self.api.response_deserialize(response, {"2XX": "object"}).data
        return dict(result or {})

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        """``_call`` on this client's own executor."""
        call = functools.partial(self._call, method, path, body, content_type, query)
        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = await self.request("GET", resource_path(api_version, kind, namespace, name))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(found)

    async def list_objects(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        query = [("labelSelector", label_selector)] if label_selector else []
        found = await self.request(
            "GET", resource_path(api_version, kind, namespace), None, "application/json", query
        )
        return list(found.get("items") or [])

    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply as field manager ``canaryctl``: fields canaryctl stops setting are removed,
        fields other controllers own are kept. Created with POST where the server (an emulator) does
        not create on apply."""
        meta = obj.get("metadata") or {}
        api_version, kind = obj["apiVersion"], obj["kind"]
        namespace, name = meta.get("namespace") or "", meta["name"]
        path = resource_path(api_version, kind, namespace, name)
        try:
            return await self.request(
                "PATCH",
                path,
                obj,
                "application/apply-patch+yaml",
                [("fieldManager", self.field_manager), ("force", "true")],
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
        return await self.request("POST", resource_path(api_version, kind, namespace), obj)

    async def create(self, obj: dict[str, Any]) -> None:
        """POST without the GET that ``apply`` makes first; a name already taken raises (409)."""
        namespace = obj["metadata"].get("namespace")
        path = resource_path(obj["apiVersion"], obj["kind"], namespace)
        await self.request("POST", path, obj)

    async def json_patch(
        self, api_version: str, kind: str, namespace: str, name: str, operations: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """RFC 6902 patch; a failed ``test`` operation raises (422): writers guard on what they read."""
        path = resource_path(api_version, kind, namespace, name)
        return await self.request("PATCH", path, operations, "application/json-patch+json")

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        try:
            await self.request("DELETE", resource_path(api_version, kind, namespace, name))
        except ApiException as exc:
            if exc.status != 404:
                raise
