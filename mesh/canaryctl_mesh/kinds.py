"""The kinds canaryctl reads and writes, and their REST paths: a table, no client.

Routers and workloads deal in whole manifests of many kinds, so requests go to paths built from this
table instead of one typed API class per kind. Nothing here imports a Kubernetes client, so the plugin
builds paths without loading one.
"""

from __future__ import annotations

from dataclasses import dataclass


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
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): Kind(
        "customresourcedefinitions", namespaced=False
    ),
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
    # Meshes
    ("policy.linkerd.io/v1beta3", "HTTPRoute"): Kind("httproutes"),
    ("kuma.io/v1alpha1", "MeshHTTPRoute"): Kind("meshhttproutes"),
    ("appmesh.k8s.aws/v1beta1", "VirtualNode"): Kind("virtualnodes"),
    ("appmesh.k8s.aws/v1beta1", "VirtualService"): Kind("virtualservices"),
    ("appmesh.k8s.aws/v1beta2", "VirtualNode"): Kind("virtualnodes"),
    ("appmesh.k8s.aws/v1beta2", "VirtualRouter"): Kind("virtualrouters"),
    ("appmesh.k8s.aws/v1beta2", "VirtualService"): Kind("virtualservices"),
    ("serving.knative.dev/v1", "Service"): Kind("services"),
    ("serving.knative.dev/v1", "Revision"): Kind("revisions"),
    # Ingress controllers
    ("networking.k8s.io/v1", "Ingress"): Kind("ingresses"),
    ("projectcontour.io/v1", "HTTPProxy"): Kind("httpproxies"),
    ("gateway.solo.io/v1", "RouteTable"): Kind("routetables"),
    ("gloo.solo.io/v1", "Upstream"): Kind("upstreams"),
    ("traefik.io/v1alpha1", "TraefikService"): Kind("traefikservices"),
    ("apisix.apache.org/v2", "ApisixRoute"): Kind("apisixroutes"),
    **{
        (f"split.smi-spec.io/{v}", "TrafficSplit"): Kind("trafficsplits")
        for v in ("v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4")
    },
    **{
        (f"specs.smi-spec.io/{v}", "HTTPRouteGroup"): Kind("httproutegroups")
        for v in ("v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4")
    },
}


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
