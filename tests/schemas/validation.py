"""Validate objects canaryctl writes against the real schemas: Kubernetes built-ins with
kubernetes-validate, Istio, Gateway API, KEDA, Contour, Gloo, Traefik and APISIX against their published CRDs
vendored beside this file (each file names its version), and the included mesh's TrafficPolicy against
the CRD generated into crds/.

A CRD's openAPIV3Schema is checked with jsonschema, strictly: an object schema that neither lists a
field nor preserves unknown fields rejects it (the API server would silently prune it, so a typo would
vanish). The CRDs' CEL rules (``x-kubernetes-validations``) are not evaluated here.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

HERE = Path(__file__).parent
CRD_FILES = (
    HERE / "istio-1.30.3-networking.yaml",
    HERE / "gateway-api-v1.6.1-httproutes.yaml",
    HERE / "keda-v2.20.2-scaledobjects.yaml",
    HERE / "keptn-metrics-operator-v2.1.0-analyses.yaml",
    HERE / "contour-v1.33.6-httpproxies.yaml",
    HERE / "gloo-v1.20.22-routetables-upstreams.yaml",
    HERE / "traefik-v3.7.9-traefikservices.yaml",
    HERE / "apisix-ingress-controller-2.2.0-apisixroutes.yaml",
    HERE.parent.parent / "crds" / "trafficpolicies.yaml",  # the included mesh's own, generated
)
KUBERNETES_VERSION = kubernetes_validate.latest_version()
ROOT_FIELDS = {"apiVersion": "string", "kind": "string", "metadata": "object"}

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


@functools.cache
def crd_schemas() -> dict[tuple[str, str], Obj]:
    """(apiVersion, kind) → the strict openAPIV3Schema of that served version."""
    schemas: dict[tuple[str, str], Obj] = {}
    for path in CRD_FILES:
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd:
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served"):
                    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
                    # The API server always accepts these at the root (metadata is ObjectMeta's to check).
                    schema["properties"] |= {k: {"type": t} for k, t in ROOT_FIELDS.items()}
                    schemas[f"{group}/{version['name']}", kind] = _strict(schema)
    return schemas


def _stored(obj: Obj) -> Obj:
    """What the schema sees: the object without the fields the API server sets itself."""
    result = copy.deepcopy(obj)
    result.pop("status", None)
    meta = result.get("metadata") or {}
    for server_set in ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields"):
        meta.pop(server_set, None)
    return result


def validate(obj: Obj) -> None:
    """Raise AssertionError naming the object and the first schema violation."""
    stored = _stored(obj)
    kind, api = stored["kind"], stored["apiVersion"]
    name = f"{kind} {stored['metadata'].get('name')} ({api})"
    schema = crd_schemas().get((api, kind))
    try:
        if schema is not None:
            # OpenAPI v3.0 schema objects follow JSON Schema draft 4 (e.g. a boolean exclusiveMinimum).
            jsonschema.Draft4Validator(schema).validate(stored)
        elif "." in api.split("/")[0] and not api.split("/")[0].endswith(".k8s.io"):
            raise AssertionError(f"{name}: no vendored schema for {api} {kind}")
        else:
            kubernetes_validate.validate(stored, KUBERNETES_VERSION, strict=True)
    except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as error:
        raise AssertionError(f"{name} does not validate: {error}") from error
