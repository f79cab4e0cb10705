"""Kubernetes objects as plain dicts over the official client: the ``Objects`` port.

Routers and workloads deal in whole manifests of many kinds (Deployments, TrafficSplits,
VirtualServices, ...), so this goes through the client's generic ``call_api`` with paths built from
a small table of the kinds canaryctl touches, instead of one typed API class per kind. Blocking
client calls run in a worker thread so the operator's event loop never stalls.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException


@dataclass(frozen=True)
class Kind:
    plural: str
    namespaced: bool = True


KINDS: dict[tuple[str, str], Kind] = {
    ("v1", "Service"): Kind("services"),
    ("v1", "ConfigMap"): Kind("configmaps"),
    ("v1", "Secret"): Kind("secrets"),
    ("v1", "Pod"): Kind("pods"),
    ("v1", "Event"): Kind("events"),
    ("v1", "Namespace"): Kind("namespaces", namespaced=False),
    ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"): Kind(
        "mutatingwebhookconfigurations", namespaced=False
    ),
    ("apps/v1", "Deployment"): Kind("deployments"),
    ("apps/v1", "DaemonSet"): Kind("daemonsets"),
    ("apps/v1", "ReplicaSet"): Kind("replicasets"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"): Kind("horizontalpodautoscalers"),
    ("keda.sh/v1alpha1", "ScaledObject"): Kind("scaledobjects"),
    ("discovery.k8s.io/v1", "EndpointSlice"): Kind("endpointslices"),
    ("canaryctl.dev/v1beta1", "Canary"): Kind("canaries"),
    ("canaryctl.dev/v1beta1", "MetricTemplate"): Kind("metrictemplates"),
    ("canaryctl.dev/v1beta1", "AlertProvider"): Kind("alertproviders"),
    ("mesh.canaryctl.dev/v1alpha1", "TrafficPolicy"): Kind("trafficpolicies"),
    ("networking.istio.io/v1beta1", "VirtualService"): Kind("virtualservices"),
    ("networking.istio.io/v1beta1", "DestinationRule"): Kind("destinationrules"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): Kind("httproutes"),
    ("gateway.networking.k8s.io/v1beta1", "HTTPRoute"): Kind("httproutes"),
    **{
        (f"split.smi-spec.io/{v}", "TrafficSplit"): Kind("trafficsplits")
        for v in ("v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4")
    },
    **{
        (f"specs.smi-spec.io/{v}", "HTTPRouteGroup"): Kind("httproutegroups")
        for v in ("v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4")
    },
}


FIELD_MANAGER = "canaryctl"


class UnknownKind(ValueError):
    pass


def resource_path(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
    known = KINDS.get((api_version, kind))
    if known is None:
        raise UnknownKind(f"canaryctl does not manage {kind} of {api_version}")
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    scope = f"/namespaces/{namespace}" if known.namespaced and namespace else ""
    path = f"{base}{scope}/{known.plural}"
    return f"{path}/{name}" if name else path


def api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (as kubectl finds it)."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
        return client.ApiClient()
    except config.ConfigException:
        loaded: client.ApiClient = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, context=context
        )
        return loaded


def api_client_for_host(host: str) -> client.ApiClient:
    """A client for an API server at ``host`` without credentials (local emulators, kubectl proxy)."""
    configuration = client.Configuration()
    configuration.host = host
    return client.ApiClient(configuration)


class KubeObjects:
    """The ``Objects`` port over one ApiClient."""

    def __init__(self, api: client.ApiClient, field_manager: str = FIELD_MANAGER) -> None:
        self.api = api
        # Writers that own different fields of one object (the workloads own the apex Service, the
        # kubernetes router only its selector) apply under different managers, or each apply would
        # remove the fields the other set.
        self.field_manager = field_manager

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
        response = self.api.call_api(*request)
        response.read()  # type: ignore[no-untyped-call]
        result: Any = self.api.response_deserialize(response, {"2XX": "object"}).data
        return dict(result or {})

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = await asyncio.to_thread(
                self._call, "GET", resource_path(api_version, kind, namespace, name)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(found)

    async def list_objects(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        query = [("labelSelector", label_selector)] if label_selector else []
        found = await asyncio.to_thread(
            self._call, "GET", resource_path(api_version, kind, namespace), None, "application/json", query
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
            return await asyncio.to_thread(
                self._call,
                "PATCH",
                path,
                obj,
                "application/apply-patch+yaml",
                [("fieldManager", self.field_manager), ("force", "true")],
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
        return await asyncio.to_thread(self._call, "POST", resource_path(api_version, kind, namespace), obj)

    async def create(self, obj: dict[str, Any]) -> None:
        """POST without the GET that ``apply`` makes first; a name already taken raises (409)."""
        namespace = obj["metadata"].get("namespace")
        path = resource_path(obj["apiVersion"], obj["kind"], namespace)
        await asyncio.to_thread(self._call, "POST", path, obj)

    async def json_patch(
        self, api_version: str, kind: str, namespace: str, name: str, operations: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """RFC 6902 patch; a failed ``test`` operation raises (422): writers guard on what they read."""
        path = resource_path(api_version, kind, namespace, name)
        return await asyncio.to_thread(self._call, "PATCH", path, operations, "application/json-patch+json")

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        try:
            await asyncio.to_thread(self._call, "DELETE", resource_path(api_version, kind, namespace, name))
        except ApiException as exc:
            if exc.status != 404:
                raise
