"""The Kubernetes external metrics API against a stand-in API server over TLS: Flagger's query form,
the path and labelSelector the API serves, a real-shaped ExternalMetricValueList with Quantity values,
and whose credentials each request carries."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from kubernetes import client

from canaryctl.api.models import LocalObjectReference, MetricTemplateProvider
from canaryctl.ports import MetricScope
from canaryctl_providers.metrics import MetricQueryError, ProviderConfigError, provider_for
from canaryctl_providers.metrics.externalmetrics import _QUANTITY, parse_quantity, parse_query
from canaryctl_providers.metrics.kubeapi import ClusterApi
from tests.providers.metrics.conftest import KubeServer

GROUP = "/apis/external.metrics.k8s.io/v1beta1"
METRIC = "s0-prometheus-http_requests_per_second"


def value_list(*values: str) -> dict[str, Any]:
    """What the API serves (KEDA's metrics server, prometheus-adapter)."""
    items = [
        {
            "metricName": METRIC,
            "metricLabels": {"app": "podinfo"},
            "timestamp": "2026-11-30T15:00:00Z",
            "value": value,
        }
        for value in values
    ]
    return {
        "kind": "ExternalMetricValueList",
        "apiVersion": "external.metrics.k8s.io/v1beta1",
        "metadata": {},
        "items": items,
    }


def cluster(server: KubeServer) -> ClusterApi:
    """The controller's access as its kubernetes client is configured: the server's CA, a client
    certificate and a bearer token."""
    configuration = client.Configuration(host=server.api.url)
    configuration.ssl_ca_cert = str(server.ca_file)
    configuration.cert_file = str(server.client_cert)
    configuration.key_file = str(server.client_key)
    configuration.api_key = {"BearerToken": "controller-token"}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    return ClusterApi.from_configuration(configuration)


def external(**extra: Any) -> MetricTemplateProvider:
    return MetricTemplateProvider(type="externalmetrics", **extra)


def test_query_with_the_controllers_access_in_the_templates_namespace(fake_kube_api: KubeServer) -> None:
    api = fake_kube_api.api
    api.reply("GET", f"{GROUP}/namespaces/shop/{METRIC}", value_list("250m", "9"))
    provider = provider_for(external(), None, scope=MetricScope("shop", cluster(fake_kube_api)))
    query = f"shop/{METRIC}?labelSelector=app%3Dpodinfo%2Cenv%20in%20(prod)"
    assert asyncio.run(provider.query(query)) == 0.25  # the first item's Quantity
    request = api.last
    assert request.query == {"labelSelector": ["app=podinfo,env in (prod)"]}
    assert request.headers["authorization"] == "Bearer controller-token"
    assert request.client_certificate  # the controller's own client certificate, as its client sends it
    api.reply("GET", f"{GROUP}/namespaces/shop/{METRIC}", value_list())
    assert asyncio.run(provider.query(f"shop/{METRIC}")) is None
    assert "labelSelector" not in api.last.query


def test_the_controllers_access_reads_the_templates_namespace_only(fake_kube_api: KubeServer) -> None:
    provider = provider_for(external(), None, scope=MetricScope("shop", cluster(fake_kube_api)))
    with pytest.raises(MetricQueryError, match="may only read its own namespace"):
        asyncio.run(provider.query(f"kube-system/{METRIC}"))
    with pytest.raises(MetricQueryError, match="may only read its own namespace"):
        asyncio.run(provider.query(METRIC))  # Flagger's default namespace is "default"
    assert fake_kube_api.api.requests == []


def test_a_templates_own_token_replaces_the_controllers_credentials(fake_kube_api: KubeServer) -> None:
    api = fake_kube_api.api
    api.reply("GET", f"{GROUP}/namespaces/default/{METRIC}", value_list("1.5k"))
    spec = external(secret_ref=LocalObjectReference(name="metrics-reader"))
    provider = provider_for(
        spec, {"token": "tenant-token"}, scope=MetricScope("shop", cluster(fake_kube_api))
    )
    assert asyncio.run(provider.query(METRIC)) == 1500.0
    request = api.last
    assert request.headers["authorization"] == "Bearer tenant-token"
    assert not request.client_certificate  # nor the controller's certificate


def test_an_address_gets_the_templates_token_and_nothing_of_the_controllers(fake_api: Any) -> None:
    fake_api.reply("GET", f"{GROUP}/namespaces/other/{METRIC}", value_list("3"))
    fake_api.reply(
        "GET", GROUP, {"kind": "APIResourceList", "groupVersion": "external.metrics.k8s.io/v1beta1"}
    )
    spec = external(address=fake_api.url, secret_ref=LocalObjectReference(name="adapter"))
    provider = provider_for(spec, {"token": "adapter-token"}, scope=MetricScope("shop", None))
    assert asyncio.run(provider.query(f"other/{METRIC}")) == 3.0
    assert fake_api.last.headers["authorization"] == "Bearer adapter-token"
    assert asyncio.run(provider.is_online()) is True
    bare = provider_for(external(address=fake_api.url), None, scope=MetricScope("shop", None))
    assert asyncio.run(bare.query(f"other/{METRIC}")) == 3.0
    assert "authorization" not in fake_api.last.headers


def test_errors_and_availability(fake_kube_api: KubeServer) -> None:
    api = fake_kube_api.api
    provider = provider_for(external(), None, scope=MetricScope("shop", cluster(fake_kube_api)))
    not_found = {
        "kind": "Status",
        "status": "Failure",
        "reason": "NotFound",
        "code": 404,
        "message": f'no metric "{METRIC}"',
    }
    api.reply("GET", f"{GROUP}/namespaces/shop/{METRIC}", not_found, status=404)
    with pytest.raises(MetricQueryError, match="404"):
        asyncio.run(provider.query(f"shop/{METRIC}"))
    api.reply("GET", f"{GROUP}/namespaces/shop/{METRIC}", {"kind": "Status"})
    with pytest.raises(MetricQueryError, match="unexpected external metrics response"):
        asyncio.run(provider.query(f"shop/{METRIC}"))
    assert asyncio.run(provider.is_online()) is False  # the group is not served: 404
    api.reply(
        "GET",
        GROUP,
        {"kind": "APIResourceList", "groupVersion": "external.metrics.k8s.io/v1beta1", "resources": []},
    )
    assert asyncio.run(provider.is_online()) is True
    with pytest.raises(ProviderConfigError, match="no cluster"):
        provider_for(external(), None, scope=MetricScope("shop", None))


def test_query_form_and_quantities_as_flagger_reads_them() -> None:
    assert parse_query("requests") == ("default", "requests", None)
    assert parse_query("/requests") == ("default", "requests", None)
    assert parse_query("shop/requests?labelSelector=a%3Db") == ("shop", "requests", "a=b")
    with pytest.raises(MetricQueryError, match="too many '/'"):
        parse_query("a/b/c")
    with pytest.raises(MetricQueryError, match="names no metric"):
        parse_query("shop/")
    with pytest.raises(MetricQueryError, match="not a namespace name"):
        parse_query("Shop_1/requests")
    assert [parse_quantity(q) for q in ("250m", "1Ki", "2e3", "1.5M", "-3", "100n")] == [
        0.25,
        1024.0,
        2000.0,
        1500000.0,
        -3.0,
        1e-7,
    ]
    with pytest.raises(MetricQueryError, match="not a Kubernetes quantity"):
        parse_quantity("12 apples")


def test_quantities_are_read_as_kubernetes_reads_them() -> None:
    """Kubernetes' Quantity grammar (apimachinery resource/quantity.go): ``<digits>.``, ``.<digits>``, a
    signed exponent; values kept to the nano, a finer non-zero value rounded away from zero ("0.9n" is
    1n); a binary-SI value capped at 2^63-1."""
    cases = {
        "1.G": 1e9,
        ".5Ki": 512.0,
        "+2E": 2e18,
        "2E3": 2000.0,
        "5e-3": 0.005,
        "0.9n": 1e-9,
        "-0.1n": -1e-9,
        "1e-400": 1e-9,
        "0e999999": 0.0,
        "8Ei": float(2**63 - 1),
        "1e308": 1e308,
    }
    assert {text: parse_quantity(text) for text in cases} == cases
    for bad in ("1e", "1.2.3", ".", "1Kb", "1 k", "e3", "1e+"):
        with pytest.raises(MetricQueryError, match="not a Kubernetes quantity"):
            parse_quantity(bad)
    with pytest.raises(MetricQueryError, match="out of range"):
        parse_quantity("1e309")


def test_a_long_run_of_digits_from_an_adapter_is_refused_at_once(fake_api: Any) -> None:
    """The old pattern (``\\d+\\.?\\d*``) could split a run of digits in many ways and tried them all:
    8,000 digits and a letter held the event loop for 4.9 s, and twice as many took four times longer."""
    value = "1" * 8000 + "x"
    fake_api.reply("GET", f"{GROUP}/namespaces/shop/{METRIC}", value_list(value))
    provider = provider_for(external(address=fake_api.url), None, scope=MetricScope("shop", None))
    started = time.monotonic()
    with pytest.raises(MetricQueryError, match="not a Kubernetes quantity but a string of 8001 characters"):
        asyncio.run(provider.query(f"shop/{METRIC}"))
    assert time.monotonic() - started < 1.0
    started = time.monotonic()  # the pattern itself, without the length cap, is linear
    assert _QUANTITY.fullmatch(value) is None
    assert time.monotonic() - started < 0.5
