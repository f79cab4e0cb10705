"""Validate objects canaryctl writes against the real schemas: Kubernetes built-ins with
kubernetes-validate, other projects' kinds against their published CRDs vendored beside this file (each
file names its project and version), and the included mesh's own kinds against the CRDs generated into
crds/.

A CRD's openAPIV3Schema is checked with jsonschema, strictly: an object schema that neither lists a
field nor preserves unknown fields rejects it (the API server would silently prune it, so a typo would
vanish). The exception is an ``apiextensions.k8s.io/v1beta1`` CRD that does not set
``preserveUnknownFields: false``: such an API server keeps unknown fields, so they pass, as there. The
CRDs' CEL rules (``x-kubernetes-validations``) are not evaluated here.

Several projects serve the same kind (OSM and the Linkerd SMI extension both serve TrafficSplit
v1alpha2): ``validate`` checks an object against every default source that serves its kind, or against
the one named.
"""

from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate

from tests.yaml_documents import documents

HERE = Path(__file__).parent
CRDS = HERE.parent.parent / "crds"
# Where each project's CRDs come from. Sources whose name carries a version are older releases kept to
# show what they reject; they are checked only when named.
SOURCES: dict[str, tuple[Path, ...]] = {
    "istio": (HERE / "istio-1.30.3-networking.yaml",),
    "gateway-api": (HERE / "gateway-api-v1.6.1-httproutes.yaml",),
    "gateway-api-v1.2.1": (HERE / "gateway-api-v1.2.1-standard-httproutes.yaml",),
    "keda": (HERE / "keda-v2.20.2-scaledobjects.yaml",),
    "canaryctl": (CRDS / "trafficpolicies.yaml", *sorted((CRDS / "smi").glob("*.yaml"))),  # generated
    "smi": tuple(
        HERE / f"smi-sdk-go-a143f8b-{plural}.yaml"
        for plural in ("trafficsplits", "httproutegroups", "traffictargets", "tcproutes")
    ),
    # Upstream served one TrafficTarget version at a time; these are the releases that served the older ones.
    "smi-access-v1alpha2": (HERE / "smi-sdk-go-9175aaf-traffictargets-v1alpha2.yaml",),
    "smi-access-v1alpha1": (HERE / "smi-sdk-go-f2ec795-traffictargets-v1alpha1.yaml",),
    "osm": (HERE / "osm-v1.2.4-smi-trafficsplits.yaml", HERE / "osm-v1.2.4-smi-httproutegroups.yaml"),
    "linkerd-smi": (HERE / "linkerd-smi-v0.2.7-trafficsplits.yaml",),
    "linkerd": (HERE / "linkerd-2.20-policy-httproutes.yaml",),
    "kuma": (HERE / "kuma-v2.14.3-meshhttproutes.yaml",),
    "appmesh": tuple(
        HERE / f"appmesh-controller-v1.13.3-{kind}.yaml"
        for kind in ("virtualnodes", "virtualrouters", "virtualservices")
    ),
    "appmesh-v1beta1": (HERE / "appmesh-controller-v0.5.0-all.yaml",),
    "knative": (HERE / "knative-serving-v1.23.0-services.yaml",),
    "keptn": (HERE / "keptn-metrics-operator-v2.1.0-analyses.yaml",),
    "contour": (HERE / "contour-v1.33.6-httpproxies.yaml",),
    "gloo": (HERE / "gloo-v1.20.22-routetables-upstreams.yaml",),
    "traefik": (HERE / "traefik-v3.7.9-traefikservices.yaml",),
    "apisix": (HERE / "apisix-ingress-controller-2.2.0-apisixroutes.yaml",),
    "flagger": (HERE / "flagger-v1.44.0-crd.yaml",),
}
ALTERNATES = frozenset({"gateway-api-v1.2.1"})
KUBERNETES_VERSION = kubernetes_validate.latest_version()
ROOT_FIELDS = {"apiVersion": "string", "kind": "string", "metadata": "object"}
# A Helm template's directives: whole lines ({{- if ... }}, {{ include ... }}) and inline values.
_TEMPLATE_LINE = re.compile(r"^\s*\{\{.*\}\}\s*$")
_TEMPLATE_VALUE = re.compile(r"\{\{.*?\}\}")

Obj = dict[str, Any]


def _strict(schema: Any) -> Any:
    """The schema with unknown fields rejected wherever the CRD lists the fields it knows."""
    if isinstance(schema, dict):
        result = {key: _strict(value) for key, value in schema.items()}
        closed = "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields")
        if closed and "additionalProperties" not in schema:
            result["additionalProperties"] = False
        return result
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


def _documents(path: Path) -> list[Obj]:
    """The CRDs in ``path``; a Helm template's directives are dropped, other kinds skipped."""
    lines = [line for line in path.read_text().splitlines() if not _TEMPLATE_LINE.match(line)]
    text = _TEMPLATE_VALUE.sub("template", "\n".join(lines))
    return [doc for doc in documents(text) if doc.get("kind") == "CustomResourceDefinition"]


def _served(crd: Obj) -> list[tuple[str, Obj, bool]]:
    """(version, openAPIV3Schema, prunes unknown fields) of each served version of one CRD."""
    spec = crd["spec"]
    if crd["apiVersion"] == "apiextensions.k8s.io/v1beta1":
        prunes = spec.get("preserveUnknownFields") is False
        shared = (spec.get("validation") or {}).get("openAPIV3Schema")
        served = []
        for version in spec.get("versions") or [{"name": spec["version"], "served": True}]:
            schema = (version.get("schema") or {}).get("openAPIV3Schema") or shared
            if version.get("served") and schema is not None:
                served.append((version["name"], schema, prunes))
        return served
    return [
        (version["name"], version["schema"]["openAPIV3Schema"], True)
        for version in spec["versions"]
        if version.get("served")
    ]


@functools.cache
def crd_schemas(source: str) -> dict[tuple[str, str], Obj]:
    """(apiVersion, kind) → the openAPIV3Schema (strict where the API server prunes) of one source."""
    schemas: dict[tuple[str, str], Obj] = {}
    for path in SOURCES[source]:
        for crd in _documents(path):
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version, found, prunes in _served(crd):
                schema = copy.deepcopy(found)
                # The API server always accepts these at the root (metadata is ObjectMeta's to check).
                schema.setdefault("properties", {})
                schema["properties"] |= {k: {"type": t} for k, t in ROOT_FIELDS.items()}
                schemas[f"{group}/{version}", kind] = _strict(schema) if prunes else schema
    return schemas


def sources_serving(api_version: str, kind: str) -> list[str]:
    """The default sources with a schema for this kind and version."""
    return [
        source
        for source in SOURCES
        if source not in ALTERNATES and (api_version, kind) in crd_schemas(source)
    ]


def _stored(obj: Obj) -> Obj:
    """What the schema sees: the object without the fields the API server sets itself."""
    result = copy.deepcopy(obj)
    result.pop("status", None)
    meta = result.get("metadata") or {}
    for server_set in ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields"):
        meta.pop(server_set, None)
    return result


def validate(obj: Obj, source: str | None = None) -> list[str]:
    """Raise AssertionError naming the object and the first schema violation; returns the sources
    checked (none for a built-in kind). ``source`` names one of SOURCES to check against alone."""
    stored = _stored(obj)
    kind, api = stored["kind"], stored["apiVersion"]
    name = f"{kind} {stored['metadata'].get('name')} ({api})"
    checked = [source] if source is not None else sources_serving(api, kind)
    try:
        for each in checked:
            schema = crd_schemas(each).get((api, kind))
            if schema is None:
                raise AssertionError(f"{name}: {each} serves no schema for {api} {kind}")
            try:
                # OpenAPI v3.0 schema objects follow JSON Schema draft 4 (e.g. a boolean exclusiveMinimum).
                jsonschema.Draft4Validator(schema).validate(stored)
            except jsonschema.ValidationError as error:
                raise AssertionError(f"{name} does not validate against {each}'s CRD: {error}") from error
        if not checked:
            if "." in api.split("/")[0] and not api.split("/")[0].endswith(".k8s.io"):
                raise AssertionError(f"{name}: no vendored schema for {api} {kind}")
            kubernetes_validate.validate(stored, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        raise AssertionError(f"{name} does not validate: {error}") from error
    return checked
