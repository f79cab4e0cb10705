"""Keptn metrics through the Kubernetes API, on kmock's emulator with a stand-in for Keptn's metrics
operator: a KeptnMetric's value, and an Analysis created as Flagger creates it (checked against Keptn's
published CRD), waited for and deleted."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx
import kmock
import pytest

from canaryctl.api.models import MetricTemplateProvider
from canaryctl.ports import MetricScope
from canaryctl_providers.metrics import MetricQueryError, ProviderConfigError, keptn, provider_for
from canaryctl_providers.metrics.keptn import parse_query
from canaryctl_providers.metrics.kubeapi import ClusterApi
from tests.kube.emulator import StampingEmulator, emulator_url, running_emulator
from tests.schemas.validation import validate

GROUP = "metrics.keptn.sh/v1beta1"
VERBS = ["list", "watch", "get", "create", "update", "patch", "delete"]


@contextlib.asynccontextmanager
async def keptn_cluster() -> AsyncIterator[StampingEmulator]:
    async with running_emulator() as emulator:
        for plural, kind in (("analyses", "Analysis"), ("keptnmetrics", "KeptnMetric")):
            emulator.resources[f"{GROUP}/{plural}"] = kmock.ResourceInfo(
                kind=kind, namespaced=True, verbs=VERBS, subresources=["status"]
            )
        yield emulator


def provider(emulator: StampingEmulator, namespace: str = "shop") -> Any:
    access = ClusterApi(
        emulator_url(emulator), ssl.create_default_context(), ssl.create_default_context(), lambda: None
    )
    return provider_for(MetricTemplateProvider(type="keptn"), None, scope=MetricScope(namespace, access))


async def keptn_operator(
    emulator: StampingEmulator, verdict: bool | None, seen: list[dict[str, Any]]
) -> None:
    """Keptn's metrics operator, as far as an Analysis goes: completes each new one with ``verdict``
    (None: never completes), through the API like the real operator."""
    base = f"{emulator_url(emulator)}/apis/{GROUP}/namespaces/shop/analyses"
    async with httpx.AsyncClient(timeout=5) as http:
        for _ in range(400):  # bounded: 20 s at most
            await asyncio.sleep(0.05)
            listed = (await http.get(base)).json()
            for analysis in listed.get("items") or []:
                name = analysis["metadata"]["name"]
                if name in {obj["metadata"]["name"] for obj in seen}:
                    continue
                seen.append(analysis)
                if verdict is not None:
                    status = {
                        "status": {"state": "Completed", "pass": verdict, "warning": False, "raw": "{}"}
                    }
                    reply = await http.patch(
                        f"{base}/{name}/status",
                        json=status,
                        headers={"Content-Type": "application/merge-patch+json"},
                    )
                    reply.raise_for_status()


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Look at the Analysis every 50 ms instead of Flagger's 1 s (still giving Keptn Flagger's 10 s)."""
    monkeypatch.setattr(keptn, "ANALYSIS_POLL_SECONDS", 0.05)


@pytest.mark.slow
def test_analysis_is_created_as_flagger_does_waited_for_and_deleted() -> None:
    async def scenario() -> None:
        async with keptn_cluster() as emulator:
            for verdict, expected in ((True, 1.0), (False, 0.0)):
                seen: list[dict[str, Any]] = []
                operator = asyncio.create_task(keptn_operator(emulator, verdict, seen))
                query = "analysis/shop/Podinfo-SLO/5m/Workload=podinfo;Env=prod"
                assert await provider(emulator).query(query) == expected
                operator.cancel()
                (created,) = seen
                validate(created)  # against Keptn's published Analysis CRD
                assert created["metadata"]["name"].startswith("podinfo-slo-")
                assert created["spec"] == {
                    "analysisDefinition": {"name": "podinfo-slo"},
                    "timeframe": {"recent": "5m"},
                    "args": {"workload": "podinfo", "env": "prod"},
                }
                # Removed once read, as Flagger does.
                assert (
                    "DELETE",
                    f"/apis/{GROUP}/namespaces/shop/analyses/{created['metadata']['name']}",
                ) in emulator.calls

    asyncio.run(scenario())


def test_an_analysis_keptn_never_completes_is_an_error_and_is_still_deleted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(keptn, "ANALYSIS_TIMEOUT_SECONDS", 1.0)

    async def scenario() -> None:
        async with keptn_cluster() as emulator:
            seen: list[dict[str, Any]] = []
            operator = asyncio.create_task(keptn_operator(emulator, None, seen))
            with pytest.raises(MetricQueryError, match="did not complete Analysis"):
                await provider(emulator).query("analysis/shop/podinfo-slo")
            operator.cancel()
            assert seen and seen[0]["spec"]["timeframe"] == {"recent": "1m"}  # Flagger's default
            assert any(method == "DELETE" for method, _ in emulator.calls)

    asyncio.run(scenario())


def test_keptn_metric_value() -> None:
    async def scenario() -> None:
        async with keptn_cluster() as emulator:
            metric = {
                "apiVersion": GROUP,
                "kind": "KeptnMetric",
                "metadata": {"name": "podinfo-rps", "namespace": "shop"},
                "spec": {
                    "provider": {"name": "prometheus"},
                    "query": "sum(rate(http_requests_total[1m]))",
                    "fetchIntervalSeconds": 10,
                },
            }
            emulator.objects[f"{GROUP}/keptnmetrics", "shop", "podinfo-rps"] = metric
            keptn_provider = provider(emulator)
            assert await keptn_provider.query("keptnmetric/shop/podinfo-rps") is None  # not fetched yet
            emulator.objects[f"{GROUP}/keptnmetrics", "shop", "podinfo-rps"] = {
                **metric,
                "status": {"value": "42.5", "rawValue": "NDIuNQ==", "lastUpdated": "2026-11-30T15:00:00Z"},
            }
            assert await keptn_provider.query("KeptnMetric/shop/podinfo-rps") == 42.5
            emulator.objects[f"{GROUP}/keptnmetrics", "shop", "podinfo-rps"] = {
                **metric,
                "status": {"value": "", "errMsg": "prometheus: connection refused"},
            }
            with pytest.raises(MetricQueryError, match="connection refused"):
                await keptn_provider.query("keptnmetric/shop/podinfo-rps")
            with pytest.raises(MetricQueryError, match="404"):
                await keptn_provider.query("keptnmetric/shop/missing")

    asyncio.run(scenario())


def test_a_template_reads_its_own_namespace_only() -> None:
    async def scenario() -> None:
        async with keptn_cluster() as emulator:
            calls = len(emulator.calls)
            for query in ("keptnmetric/kube-system/secret-metric", "analysis/other/slo"):
                with pytest.raises(MetricQueryError, match="may only read its own namespace"):
                    await provider(emulator, "shop").query(query)
            assert len(emulator.calls) == calls

    asyncio.run(scenario())


def test_query_form_and_configuration() -> None:
    parsed = parse_query("analyses/shop/slo/2m/a=1;broken;b=2\n")
    assert (parsed.resource, parsed.namespace, parsed.name, parsed.timeframe) == (
        "analyses",
        "shop",
        "slo",
        "2m",
    )
    assert parsed.args == {"a": "1", "b": "2"}
    for bad in ("keptnmetric/shop", "deployment/shop/x", "keptnmetric/../x"):
        with pytest.raises(MetricQueryError):
            parse_query(bad)
    with pytest.raises(ProviderConfigError, match="no cluster"):
        provider_for(MetricTemplateProvider(type="keptn"), None, scope=MetricScope("shop", None))
