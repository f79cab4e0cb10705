"""The CRDs in crds/ are generated from the models, structural, and acceptable to Kubernetes."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryctl.api import crd, models
from canaryctl_mesh import api as mesh

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "crds"
WEIGHT_FIELDS = {
    "stepWeight",
    "stepWeights",
    "maxWeight",
    "mirrorWeight",
    "stepWeightPromotion",
    "setWeight",
    "canaryWeight",
}


@cache
def _load_all() -> dict[str, dict[str, Any]]:
    """Read-only: tests must not mutate what this returns."""
    return {
        path.relative_to(CRD_DIR).as_posix(): yaml.safe_load(path.read_text())
        for path in sorted(CRD_DIR.rglob("*.yaml"))
    }


def _version_schemas() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, doc in _load_all().items():
        for version in doc["spec"]["versions"]:
            yield f"{name}@{version['name']}", version["schema"]["openAPIV3Schema"]


def _walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with a readable path: ``.a.b``, ``[]`` for items, ``{}`` for map values."""
    yield path, node
    for key, sub in node.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{key}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")


def _canary_schema() -> dict[str, Any]:
    schema: dict[str, Any] = _load_all()["canaries.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _nodes_named(schema: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [node for path, node in _walk(schema) if path.rsplit(".", 1)[-1] == name]


def test_crds_directory_matches_the_models(tmp_path: Path) -> None:
    crd.write_crds(tmp_path)
    expected = {p.relative_to(tmp_path).as_posix(): p.read_text() for p in tmp_path.rglob("*.yaml")}
    actual = {p.relative_to(CRD_DIR).as_posix(): p.read_text() for p in CRD_DIR.rglob("*.yaml")}
    stale = sorted(name for name in expected.keys() | actual.keys() if expected.get(name) != actual.get(name))
    assert not stale, f"crds/ is out of date with canaryctl/api ({', '.join(stale)}): run `make crds`"


def test_generation_is_deterministic() -> None:
    assert crd.crd_files() == crd.crd_files()


@pytest.mark.parametrize(("where", "schema"), list(_version_schemas()))
def test_schema_is_structural(where: str, schema: dict[str, Any]) -> None:
    assert schema["type"] == "object"
    assert set(schema["properties"]["metadata"]) == {"type"}, "metadata must be left to the apiserver"
    for path, node in _walk(schema):
        at = f"{where}: {path or '<root>'}"
        assert {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not"}.isdisjoint(node), at
        assert {"title", "default", "const"}.isdisjoint(node), at
        if node.get("x-kubernetes-int-or-string"):
            assert "type" not in node, at
        else:
            assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), at
        assert not ("properties" in node and "additionalProperties" in node), at
        assert not isinstance(node.get("additionalProperties"), bool), at
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert isinstance(node.get(bound, False), bool), at


def test_enums_on_phase_webhook_type_target_kind_and_severity() -> None:
    schema = _canary_schema()
    status = schema["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == [phase.value for phase in models.Phase]
    spec = schema["properties"]["spec"]["properties"]
    assert spec["targetRef"]["properties"]["kind"]["enum"] == ["Deployment", "DaemonSet", "Service"]
    webhook_types = {path: node for path, node in _walk(schema) if path.endswith("webhooks[].type")}
    assert len(webhook_types) >= 3  # analysis, analysis steps, status
    for path, node in webhook_types.items():
        # Flagger's CRD takes "" for rollout in a spec; the status only ever holds a real type.
        empty = [] if path.startswith(".properties.status") or ".status." in path else [""]
        assert node["enum"] == [*empty, *(t.value for t in models.WebhookType)], path
    severity = spec["analysis"]["properties"]["alerts"]["items"]["properties"]["severity"]
    assert severity["enum"] == ["", "info", "warn", "error"]


def test_weights_are_bounded_0_to_100() -> None:
    schema = _canary_schema()
    found = set()
    for path, node in _walk(schema):
        name = path.rsplit(".", 1)[-1].removesuffix("[]")
        if name in WEIGHT_FIELDS and node.get("type") == "integer":
            assert (node["minimum"], node["maximum"]) == (0, 100), path
            found.add(name)
    assert found == WEIGHT_FIELDS


def test_istio_and_gateway_api_shapes_are_typed_and_target_port_is_int_or_string() -> None:
    """No open object is left in spec.service: a typo in trafficPolicy is an error, not kept silently."""
    service = _canary_schema()["properties"]["spec"]["properties"]["service"]
    assert service["properties"]["targetPort"] == {"x-kubernetes-int-or-string": True}
    open_nodes = [path for path, node in _walk(service) if node.get("x-kubernetes-preserve-unknown-fields")]
    assert open_nodes == []
    fields = service["properties"]
    assert set(fields["trafficPolicy"]["properties"]) == {
        "loadBalancer", "connectionPool", "outlierDetection", "tls", "portLevelSettings"
    }  # fmt: skip
    assert fields["gatewayRefs"]["items"]["required"] == ["name"]
    assert fields["gatewayRefs"]["items"]["properties"]["port"] == {
        "type": "integer", "minimum": 1, "maximum": 65535
    }  # fmt: skip
    assert "sourceNamespace" in fields["match"]["items"]["properties"]
    assert fields["rewrite"]["properties"]["type"]["enum"] == ["ReplaceFullPath", "ReplacePrefixMatch"]


def test_steps_set_exactly_one_field() -> None:
    steps = _canary_schema()["properties"]["spec"]["properties"]["analysis"]["properties"]["steps"]["items"]
    assert (steps["minProperties"], steps["maxProperties"]) == (1, 1)


def test_status_subresource_uses_a_real_schema() -> None:
    for name in ("canaries.yaml", "metrictemplates.yaml", "alertproviders.yaml"):
        (version,) = _load_all()[name]["spec"]["versions"]
        assert (version["name"], version["served"], version["storage"]) == ("v1beta1", True, True)
    (canary,) = _load_all()["canaries.yaml"]["spec"]["versions"]
    assert canary["subresources"] == {"status": {}}
    status = canary["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert "x-kubernetes-preserve-unknown-fields" not in status
    assert {"canaryWeight", "failedChecks", "conditions", "lastTransitionTime"} <= set(status["properties"])


def test_canary_names_and_printer_columns() -> None:
    doc = _load_all()["canaries.yaml"]
    assert doc["metadata"]["name"] == "canaries.canaryctl.dev"
    names = doc["spec"]["names"]
    assert names["shortNames"] == ["canary", "canaries"]
    assert names["categories"] == ["all"]
    columns = {
        c["name"]: (c["jsonPath"], c.get("priority", 0))
        for c in doc["spec"]["versions"][0]["additionalPrinterColumns"]
    }
    assert columns == {
        "Status": (".status.phase", 0),
        "Weight": (".status.canaryWeight", 0),
        "FailedChecks": (".status.failedChecks", 0),
        "Interval": (".spec.analysis.interval", 0),
        "LastTransitionTime": (".status.lastTransitionTime", 0),
        "StepWeight": (".spec.analysis.stepWeight", 1),
        "Mirror": (".status.mirrorWeight", 1),
    }


def test_mesh_traffic_policy_crd() -> None:
    doc = _load_all()["trafficpolicies.yaml"]
    assert doc["metadata"]["name"] == f"trafficpolicies.{mesh.MESH_GROUP}"
    (version,) = doc["spec"]["versions"]
    assert version["name"] == mesh.MESH_VERSION
    assert "spec" in version["schema"]["openAPIV3Schema"]["required"]


def test_smi_crds_serve_every_version_and_store_one() -> None:
    docs = _load_all()
    kinds = (("trafficsplits", "split.smi-spec.io"), ("httproutegroups", "specs.smi-spec.io"))
    for name, group in (*kinds, ("tcproutes", "specs.smi-spec.io")):
        doc = docs[f"smi/{name}.yaml"]
        assert doc["spec"]["group"] == group
        versions = doc["spec"]["versions"]
        assert [v["name"] for v in versions] == ["v1alpha1", "v1alpha2", "v1alpha3", "v1alpha4"]
        assert all(v["served"] for v in versions)
        assert [v["name"] for v in versions if v["storage"]] == ["v1alpha4"]


def test_smi_traffic_targets_serve_v1alpha1_to_v1alpha3_in_their_shapes() -> None:
    doc = _load_all()["smi/traffictargets.yaml"]
    assert doc["spec"]["group"] == "access.smi-spec.io"
    versions = {v["name"]: v for v in doc["spec"]["versions"]}
    assert list(versions) == ["v1alpha1", "v1alpha2", "v1alpha3"]
    assert [name for name, v in versions.items() if v["storage"]] == ["v1alpha3"]
    assert {"destination", "specs", "sources"} <= set(
        versions["v1alpha1"]["schema"]["openAPIV3Schema"]["properties"]
    )
    spec = versions["v1alpha2"]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert {"destination", "rules", "sources"} <= set(spec)


def test_smi_shapes_differ_by_version() -> None:
    split = {
        v["name"]: v["schema"]["openAPIV3Schema"]
        for v in _load_all()["smi/trafficsplits.yaml"]["spec"]["versions"]
    }

    def backend_weight(version: str) -> dict[str, Any]:
        spec = split[version]["properties"]["spec"]["properties"]
        return dict(spec["backends"]["items"]["properties"]["weight"])

    assert backend_weight("v1alpha1") == {"x-kubernetes-int-or-string": True}
    assert backend_weight("v1alpha2")["type"] == "integer"
    assert "matches" not in split["v1alpha2"]["properties"]["spec"]["properties"]
    assert "matches" in split["v1alpha4"]["properties"]["spec"]["properties"]
    groups = {
        v["name"]: v["schema"]["openAPIV3Schema"]
        for v in _load_all()["smi/httproutegroups.yaml"]["spec"]["versions"]
    }
    assert "matches" in groups["v1alpha1"]["properties"]
    assert "matches" in groups["v1alpha3"]["properties"]["spec"]["properties"]
    headers = groups["v1alpha4"]["properties"]["spec"]["properties"]["matches"]["items"]["properties"][
        "headers"
    ]
    assert headers == {"x-kubernetes-preserve-unknown-fields": True}


@pytest.mark.parametrize("name", sorted(_load_all()))
def test_crd_validates_against_kubernetes_openapi(name: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    doc = _load_all()[name]
    for version in ("1.25", "1.30", kubernetes_validate.latest_version()):
        kubernetes_validate.validate(doc, version, strict=True)
