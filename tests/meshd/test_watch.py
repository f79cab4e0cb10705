"""The reflectors: reconnect backoff, the object store, and what a watch survives."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from canaryctl_mesh import config
from canaryctl_mesh.kube import api_client_for_host
from canaryctl_mesh.meshd.watch import Backoff, ObjectStore, Reflector, Source
from tests.meshd.conftest import NS


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    backoff = Backoff(initial=0.2, maximum=3.0)
    delays = [backoff.next() for _ in range(8)]
    for delay, nominal in zip(delays, (0.2, 0.4, 0.8, 1.6, 3.0, 3.0, 3.0, 3.0), strict=True):
        assert nominal * 0.8 <= delay <= nominal * 1.2
    backoff.reset()
    assert backoff.next() <= 0.2 * 1.2


def test_store_counts_an_object_served_under_several_versions_once() -> None:
    changes: list[int] = []
    store = ObjectStore(lambda: changes.append(1))
    split: dict[str, Any] = {"metadata": {"name": "web", "namespace": NS}, "spec": {"service": "web"}}
    for version in ("v1alpha2", "v1alpha4"):
        store.replace(Source(f"split.smi-spec.io/{version}", "TrafficSplit", None), [split])
    store.replace(Source("v1", "Service", NS), [{"metadata": {"name": "web", "namespace": NS}}])
    found = {(o["apiVersion"], o["kind"]) for o in store.namespace_objects(NS)}
    assert found == {("split.smi-spec.io/v1alpha4", "TrafficSplit"), ("v1", "Service")}
    store.remove(Source("split.smi-spec.io/v1alpha4", "TrafficSplit", None), split)
    assert {o["apiVersion"] for o in store.namespace_objects(NS)} == {"split.smi-spec.io/v1alpha2", "v1"}
    assert len(changes) == 4


def test_store_reports_only_the_namespaces_that_changed() -> None:
    store = ObjectStore(lambda: None)
    services = Source("v1", "Service", None)

    def svc(namespace: str, port: int) -> dict[str, Any]:
        return {"metadata": {"name": "web", "namespace": namespace}, "spec": {"ports": [{"port": port}]}}

    store.replace(services, [svc("a", 80), svc("b", 80)])
    assert store.take_dirty() == {"a", "b"} and store.take_dirty() == set()
    store.replace(services, [svc("a", 80), svc("b", 81)])  # a relist where only b differs
    assert store.take_dirty() == {"b"}
    store.upsert(services, svc("c", 80))
    store.remove(services, svc("a", 80))
    assert store.take_dirty() == {"a", "c"} and store.namespaces() == {"b", "c"}


def test_store_keeps_what_mtls_reads_of_a_pod_and_ignores_its_status() -> None:
    store = ObjectStore(lambda: None)
    pods = Source("v1", "Pod", NS)
    pod: dict[str, Any] = {
        "metadata": {
            "name": "web-1",
            "namespace": NS,
            "resourceVersion": "7",
            "annotations": {
                config.STATUS_ANNOTATION: "injected",
                "kubectl.kubernetes.io/last-applied": "x" * 9000,
            },
            "managedFields": [{"manager": "kubelet"}],
        },
        "spec": {"serviceAccountName": "web", "containers": [{"name": "app", "image": "app"}]},
        "status": {"phase": "Pending"},
    }
    store.upsert(pods, pod)
    assert store.take_dirty() == {NS}
    (kept,) = store.namespace_objects(NS)
    assert kept == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": NS, "resourceVersion": "7",
                     "annotations": {config.STATUS_ANNOTATION: "injected"}},
        "spec": {"serviceAccountName": "web"},
        "status": {},
    }  # fmt: skip
    running = {"phase": "Running", "podIP": "10.1.0.7", "conditions": [{"type": "Ready"}]}
    store.upsert(pods, {**pod, "metadata": {**pod["metadata"], "resourceVersion": "8"}, "status": running})
    assert store.take_dirty() == {NS}, "its IP is what pass-through mTLS looks for"
    (kept,) = store.namespace_objects(NS)
    assert kept["status"] == {"podIP": "10.1.0.7"}
    ready = {**running, "conditions": [{"type": "Ready", "status": "True"}]}
    store.upsert(pods, {**pod, "metadata": {**pod["metadata"], "resourceVersion": "9"}, "status": ready})
    assert store.take_dirty() == set(), "a status change is nothing the mesh routes by"
    done = {**ready, "phase": "Succeeded"}
    store.upsert(pods, {**pod, "metadata": {**pod["metadata"], "resourceVersion": "10"}, "status": done})
    assert store.take_dirty() == {NS}, "its IP may go to another pod now"
    store.upsert(
        pods,
        {
            **pod,
            "metadata": {**pod["metadata"], "resourceVersion": "11"},
            "spec": {"serviceAccountName": "pay"},
        },
    )
    assert store.take_dirty() == {NS}


def test_store_keeps_a_namespace_with_itself() -> None:
    store = ObjectStore(lambda: None)
    store.replace(Source("v1", "Namespace", None), [{"metadata": {"name": "team-a", "labels": {"x": "y"}}}])
    assert store.take_dirty() == {"team-a"}
    assert [o["kind"] for o in store.namespace_objects("team-a")] == ["Namespace"]


def service_named(name: str, version: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    meta = {"name": name, "namespace": NS, "resourceVersion": version}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": {"extra": extra or {}}}


class DeepObjectServer:
    """An API server whose Services list and watch carry an object nested deeper than ``json.loads``
    recurses (a field without a schema); the list only while ``poisoned_list`` is set."""

    def __init__(self) -> None:
        self.poisoned_list = True
        self.lists = 0
        depth = 5000  # written out by hand: json.dumps recurses too
        extra = '{"x": ' * depth + "{}" + "}" * depth
        self.deep = json.dumps(service_named("deep", "2")).replace('"extra": {}', f'"extra": {extra}')

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("watch") != "true":
            self.lists += 1
            items = [service_named("a", "1")]
            text = json.dumps({"items": items, "metadata": {"resourceVersion": "1"}})
            if self.poisoned_list:
                text = text.replace('"items": [', '"items": [' + self.deep + ", ")
            return web.Response(text=text, content_type="application/json")
        stream = web.StreamResponse()
        await stream.prepare(request)
        if request.query.get("resourceVersion") == "1":
            for event in ('{"type": "ADDED", "object": ' + self.deep + "}", self.added("b", "3")):
                await stream.write(event.encode() + b"\n")
        await asyncio.sleep(float(request.query.get("timeoutSeconds", "1")))
        return stream

    @staticmethod
    def added(name: str, version: str) -> str:
        return json.dumps({"type": "ADDED", "object": service_named(name, version)})


@pytest.mark.asyncio
async def test_an_object_nested_too_deep_to_decode_does_not_end_the_watch() -> None:
    """Listed, it fails the list (retried with backoff) instead of ending the reflector's thread, which
    would have frozen that kind's cache for every namespace; watched, only its event is dropped."""
    server = DeepObjectServer()
    app = web.Application()
    app.router.add_get("/api/v1/namespaces/{namespace}/services", server.handle)
    async with TestServer(app, host="127.0.0.1") as http:
        source = Source("v1", "Service", NS)
        store = ObjectStore(lambda: None)
        reflector = Reflector(api_client_for_host(f"http://127.0.0.1:{http.port}"), source, store, 2.0)
        reflector.backoff = Backoff(initial=0.05, maximum=0.05)
        reflector.start()
        try:
            for _ in range(200):  # bounded: 10 s
                if server.lists >= 3:
                    break
                await asyncio.sleep(0.05)
            assert server.lists >= 3 and not reflector.synced.is_set()  # failed, retried, not dead
            server.poisoned_list = False
            for _ in range(200):
                if store.get(source, NS, "b") is not None:
                    break
                await asyncio.sleep(0.05)
            assert store.get(source, NS, "a") is not None and store.get(source, NS, "b") is not None
            assert store.get(source, NS, "deep") is None
            assert reflector.synced.is_set() and reflector._thread.is_alive()
        finally:
            reflector.stop()
            await asyncio.to_thread(reflector.join, 5.0)
