"""The chart's RBAC for the injector against the API calls the injector really makes.

The injector runs as a process with the arguments the chart renders for it (managed certificate: no
files, the webhook's caBundle kept by the injector), against kmock's emulator. Every request it sends
is recorded as (apiGroup, resource, verb, name). The test then reads, from a real `helm template`,
every rule bound to the injector's ServiceAccount and fails on a call no rule allows (a real API
server would refuse it: the webhook would never get its caBundle) and on a rule no call used (least
privilege), names included: the injector may patch its own MutatingWebhookConfiguration only.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import time
from typing import Any

import httpx
import kmock
import pytest
from kubernetes import client

from canaryctl.local.prometheus import free_port
from canaryctl_mesh.injector import INJECT_LABEL, PROXY_CONTAINER
from canaryctl_mesh.kube import KubeObjects
from tests.chart.conftest import CHART, NAMESPACE, RELEASE, REQUIRED_FLAGS, helm, run_helm  # noqa: F401
from tests.kube.emulator import emulator_url
from tests.meshd.test_injector import review
from tests.yaml_documents import documents

pytestmark = pytest.mark.asyncio

Call = tuple[str, str, str, str]  # (apiGroup, resource, verb, name or "")
TESTS_USER_AGENT = "canaryctl-tests"
WEBHOOK = f"{RELEASE}-injector"
WEBHOOK_API = ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration")
ACCOUNT = f"{RELEASE}-injector"


def record_calls(emulator: kmock.KubernetesEmulator) -> set[Call]:
    """Every request from anyone but the test itself, from now on."""
    calls: set[Call] = set()
    handle = emulator._handle

    async def recording(request: Any) -> Any:
        resource = request.resource
        if resource is not None and resource.plural and request.headers.get("User-Agent") != TESTS_USER_AGENT:
            method = str(getattr(request.method, "value", request.method)).upper()
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method)
            verb = verb or (
                "get" if request.name else "watch" if request.action == kmock.action.WATCH else "list"
            )
            calls.add((resource.group or "", resource.plural, verb, request.name or ""))
        return await handle(request)

    emulator._handle = recording  # type: ignore[method-assign]
    return calls


def rendered(helm: str) -> list[dict[str, Any]]:  # noqa: F811
    result = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *REQUIRED_FLAGS)
    assert result.returncode == 0, result.stderr
    return documents(result.stdout)


def granted_to_injector(manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rule of every Role and ClusterRole bound to the injector's ServiceAccount."""
    bound = {
        (binding["roleRef"]["kind"], binding["roleRef"]["name"], binding["metadata"].get("namespace"))
        for binding in manifests
        if binding["kind"] in ("RoleBinding", "ClusterRoleBinding")
        and {"kind": "ServiceAccount", "name": ACCOUNT, "namespace": NAMESPACE} in binding["subjects"]
    }
    return [
        rule
        for role in manifests
        if (role["kind"], role["metadata"]["name"], role["metadata"].get("namespace")) in bound
        or (role["kind"], role["metadata"]["name"], None) in bound
        for rule in role["rules"]
    ]


def allows(rule: dict[str, Any], call: Call) -> bool:
    group, resource, verb, name = call
    names = rule.get("resourceNames")
    return (
        group in rule["apiGroups"]
        and resource in rule["resources"]
        and verb in rule["verbs"]
        and (not names or name in names)
    )


def chart_args(manifests: list[dict[str, Any]], port: int, server: str) -> list[str]:
    deployment = next(m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"] == WEBHOOK)
    args: list[str] = list(deployment["spec"]["template"]["spec"]["containers"][0]["args"])
    assert args[:1] == ["injector"]  # the meshd image's entry point is canaryctl-meshd
    args[args.index("--port") + 1] = str(port)  # the chart's 9443 may be taken on this machine
    return [*args, "--server", server]


async def test_chart_rbac_grants_exactly_what_the_injector_uses(
    emulator: kmock.KubernetesEmulator,
    kube_api: client.ApiClient,
    objects: KubeObjects,
    meshd: Any,
    helm: str,  # noqa: F811
) -> None:
    kube_api.user_agent = TESTS_USER_AGENT
    emulator.resources["admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"] = kmock.ResourceInfo(
        kind="MutatingWebhookConfiguration", namespaced=False, verbs=["get", "list", "create", "patch"]
    )
    manifests = rendered(helm)
    webhook = next(m for m in manifests if m["kind"] == WEBHOOK_API[1])
    assert "caBundle" not in webhook["webhooks"][0]["clientConfig"]
    await objects.create(webhook)
    labelled = {"name": "shop", "labels": {INJECT_LABEL: "enabled"}}
    await objects.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": labelled})
    calls = record_calls(emulator)

    port = free_port()
    child = await meshd(*chart_args(manifests, port, emulator_url(emulator)))
    server_name = f"{WEBHOOK}.{NAMESPACE}.svc"
    deadline = time.monotonic() + 20
    bundle = ""
    while not bundle:
        assert time.monotonic() < deadline and child.proc.returncode is None, child.log.read_text()
        await asyncio.sleep(0.1)
        live = await objects.get(*WEBHOOK_API, "", WEBHOOK)
        bundle = ((live or {})["webhooks"][0].get("clientConfig") or {}).get("caBundle", "")

    # What the API server does with the caBundle: trust it for the webhook's Service name.
    trusted = ssl.create_default_context(cadata=base64.b64decode(bundle).decode())
    async with httpx.AsyncClient(verify=trusted, trust_env=False, timeout=10) as http:
        url = f"https://127.0.0.1:{port}/mutate"
        extensions = {"sni_hostname": server_name}
        for _ in range(100):
            try:
                answer = await http.post(url, json=review("shop"), extensions=extensions)
                break
            except httpx.ConnectError:
                await asyncio.sleep(0.1)
        patch = answer.json()["response"]["patch"]
        assert PROXY_CONTAINER in base64.b64decode(patch).decode()
        # A namespace the watch has not shown (here: none such) is looked up with a GET.
        unseen = await http.post(url, json=review("unseen"), extensions=extensions)
        assert unseen.json()["response"] == {"uid": "uid-unseen", "allowed": True}
    assert await child.terminate() == 0, child.log.read_text()

    rules = granted_to_injector(manifests)
    refused = sorted(call for call in calls if not any(allows(rule, call) for rule in rules))
    unused = sorted(
        (group, resource, verb, ",".join(rule.get("resourceNames") or []))
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        if not any(
            allows({**rule, "apiGroups": [group], "resources": [resource], "verbs": [verb]}, call)
            for call in calls
        )
    )
    print("used:", "\n  ".join(map(str, sorted(calls))))
    assert not refused, f"used but not granted: {refused}"
    assert not unused, f"granted but never used: {unused}"
    webhook_rules = [rule for rule in rules if "mutatingwebhookconfigurations" in rule["resources"]]
    assert webhook_rules and all(rule.get("resourceNames") == [WEBHOOK] for rule in webhook_rules)
