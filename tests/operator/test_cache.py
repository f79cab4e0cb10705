"""What the operator's watch cache holds of each object."""

from __future__ import annotations

import copy
import json
from typing import Any

from kubernetes import client

from canaryctl.operator.cache import WatchCache
from canaryctl_mesh.meshd.watch import Source

# The shape a real API server gives every object (metadata.managedFields, one entry per manager).
MANAGED_FIELDS = [
    {
        "manager": "kubectl-client-side-apply",
        "operation": "Update",
        "apiVersion": "apps/v1",
        "time": "2026-11-30T10:00:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {}}}}},
    },
    {
        "manager": "kube-controller-manager",
        "operation": "Update",
        "apiVersion": "apps/v1",
        "time": "2026-11-30T10:00:05Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:status": {"f:replicas": {}, "f:readyReplicas": {}}},
        "subresource": "status",
    },
]


def deployment(version: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "app",
            "namespace": "team",
            "resourceVersion": version,
            "annotations": {"team": "a"},
            "managedFields": copy.deepcopy(MANAGED_FIELDS),
        },
        "spec": {"replicas": 2},
    }


def test_cached_objects_keep_everything_but_managed_fields() -> None:
    """Listed, watched and written objects alike: the records of field managers are not held in memory
    for every cached object; the object itself, its annotations and its version are."""
    cache = WatchCache(client.ApiClient(client.Configuration()))  # no watch starts before a lookup
    source = Source("apps/v1", "Deployment", None)
    listed = deployment("1")
    cache.store.replace(source, [listed])
    assert cache.store.get(source, "team", "app") == {
        **listed,
        "metadata": {k: v for k, v in listed["metadata"].items() if k != "managedFields"},
    }
    assert listed["metadata"]["managedFields"] == MANAGED_FIELDS  # the list's own item is untouched
    cache.store.upsert(source, deployment("2"))
    stored = cache.store.get(source, "team", "app")
    assert stored is not None
    assert "managedFields" not in stored["metadata"]
    assert stored["metadata"]["resourceVersion"] == "2" and stored["metadata"]["annotations"] == {"team": "a"}


def test_cached_objects_share_their_keys() -> None:
    """Objects decoded one by one (each watch event, each write's answer) share their keys once cached:
    the cache holds eight objects per Canary, much of their size the same keys again."""
    cache = WatchCache(client.ApiClient(client.Configuration()))
    source = Source("apps/v1", "Deployment", None)
    first, second = (json.loads(json.dumps(deployment(version))) for version in ("1", "2"))
    second["metadata"]["name"] = "other"
    cache.store.replace(source, [first, second])
    stored = [cache.store.get(source, "team", name) or {} for name in ("app", "other")]
    keys = [next(key for key in obj["metadata"] if key == "annotations") for obj in stored]
    assert keys[0] is keys[1]
    kept = {key: value for key, value in first["metadata"].items() if key != "managedFields"}
    assert stored[0] == {**first, "metadata": kept}


def test_an_object_nested_too_deep_to_share_is_cached_as_it_is() -> None:
    """A field without a schema (a tenant's routing object, say) may nest deeper than interning can
    recurse; the object is kept unshared, and the watch that stores it goes on."""
    cache = WatchCache(client.ApiClient(client.Configuration()))
    source = Source("apps/v1", "Deployment", None)
    deep: dict[str, Any] = {}
    inner = deep
    for _ in range(900):  # json.loads takes it; interning would recurse twice per level
        inner["x"] = {}
        inner = inner["x"]
    obj = deployment("1") | {"spec": {"extra": deep}}
    cache.store.replace(source, [json.loads(json.dumps(obj))])
    cache.store.upsert(source, json.loads(json.dumps(deployment("2") | {"spec": {"extra": deep}})))
    stored = cache.store.get(source, "team", "app") or {}
    assert stored["metadata"]["resourceVersion"] == "2" and stored["spec"]["extra"] == deep
