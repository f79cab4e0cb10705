"""Template rendering with Flagger's variables and the Analyzer's resolution, with providers faked at the
factory seam (the vendors and a real Prometheus are tested in their own modules)."""

from __future__ import annotations

import asyncio
import gc
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryctl.api.models import Canary, CanaryMetric, CanaryStatus, MetricTemplate, MetricTemplateProvider
from canaryctl.engine.types import ErrorSample, MetricSample
from canaryctl.ports import MetricScope
from canaryctl_providers.metrics import MetricQueryError, MetricsAnalyzer, TemplateRenderError
from canaryctl_providers.metrics.analyzer import MAX_PROMETHEUS_PROVIDERS
from canaryctl_providers.metrics.builtin import mesh_queries
from canaryctl_providers.metrics.template import TemplateModel, render

# Flagger's documentation example, verbatim apart from the apiVersion.
NOT_FOUND_PERCENTAGE = """
apiVersion: canaryctl.dev/v1beta1
kind: MetricTemplate
metadata:
  name: not-found-percentage
  namespace: istio-system
spec:
  provider:
    type: prometheus
    address: http://prometheus.istio-system:9090
  query: |
    100 - sum(
        rate(
            istio_requests_total{
              reporter="destination",
              destination_workload_namespace="{{ namespace }}",
              destination_workload="{{ target }}",
              response_code!="404"
            }[{{ interval }}]
        )
    )
    /
    sum(
        rate(
            istio_requests_total{
              reporter="destination",
              destination_workload_namespace="{{ namespace }}",
              destination_workload="{{ target }}"
            }[{{ interval }}]
        )
    ) * 100
"""

CANARY = {
    "apiVersion": "canaryctl.dev/v1beta1",
    "kind": "Canary",
    "metadata": {"name": "podinfo", "namespace": "test"},
    "spec": {
        "provider": "istio",
        "targetRef": {"kind": "Deployment", "name": "podinfo"},
        "service": {"name": "podinfo-svc", "port": 9898},
        "ingressRef": {"name": "podinfo-ingress"},
    },
}


def canary(**spec: Any) -> Canary:
    data = yaml.safe_load(yaml.safe_dump(CANARY))
    data["spec"].update(spec)
    return Canary.model_validate(data)


def metric(**fields: Any) -> CanaryMetric:
    return CanaryMetric.model_validate({"name": "m", **fields})


def test_flagger_template_renders_unchanged() -> None:
    template = MetricTemplate.model_validate(yaml.safe_load(NOT_FOUND_PERCENTAGE))
    query = render(template.spec.query, TemplateModel.for_canary(canary(), "2m"))
    assert 'destination_workload_namespace="test"' in query
    assert 'destination_workload="podinfo"' in query
    assert "[2m]" in query and "{{" not in query


def test_template_variables_and_primary_model() -> None:
    text = (
        'rate(x{svc="{{ service }}", ing="{{ ingress }}", n="{{ name }}", dir="{{ variables.direction }}"}'
        "[{{ interval }}])"
    )
    model = TemplateModel.for_canary(canary(), None, {"direction": "inbound"})
    assert (
        render(text, model)
        == 'rate(x{svc="podinfo-svc", ing="podinfo-ingress", n="podinfo", dir="inbound"}[1m])'
    )
    primary = TemplateModel.for_canary(canary(), "30s", {"direction": "in"}, primary=True)
    assert (primary.target, primary.service, primary.backend) == (
        "podinfo-primary",
        "podinfo-svc-primary",
        "podinfo-svc-primary_test",
    )
    assert TemplateModel.for_canary(canary()).backend == "podinfo-svc-canary_test"


@pytest.mark.parametrize("padding", [0, 5000], ids=["kept-parsed", "too-long-to-keep"])
def test_one_query_text_renders_each_canarys_own_values(padding: int) -> None:
    """Parsed queries are kept between ticks: the same text must still render each model's values."""
    text = "{{ target }}/{{ variables.direction }}" + " " * padding
    for direction in ("inbound", "outbound"):
        for primary in (False, True):
            model = TemplateModel.for_canary(canary(), None, {"direction": direction}, primary=primary)
            expected = f"{'podinfo-primary' if primary else 'podinfo'}/{direction}"
            assert render(text, model).rstrip() == expected
    with pytest.raises(TemplateRenderError, match="is not defined"):
        render(text, TemplateModel.for_canary(canary(), None, {}))


def test_missing_variables_are_named() -> None:
    model = TemplateModel.for_canary(canary(), None, {"a": "1"})
    with pytest.raises(
        TemplateRenderError, match=r"'variables.direction' is not defined \(templateVariables has: a\)"
    ):
        render("{{ variables.direction }}", model)
    with pytest.raises(TemplateRenderError, match="'deployment' is not defined"):
        render("{{ deployment }}", model)
    with pytest.raises(TemplateRenderError, match="does not parse: line 1: unclosed action"):
        render("{{ target ", model)


# --- the analyzer, with providers faked at the factory ------------------------------------------------


@dataclass
class FakeProvider:
    answers: dict[str, float | None]
    spec: MetricTemplateProvider
    secret: dict[str, str] | None
    queries: list[str] = field(default_factory=list)
    online: bool = True

    async def query(self, query: str) -> float | None:
        self.queries.append(query)
        for needle, value in self.answers.items():
            if needle in query:
                return value
        raise MetricQueryError(f"no answer for {query}")

    async def is_online(self) -> bool:
        return self.online


@dataclass
class Factory:
    answers: dict[str, float | None] = field(default_factory=dict)
    built: list[FakeProvider] = field(default_factory=list)
    options: list[dict[str, Any]] = field(default_factory=list)

    def __call__(
        self, spec: MetricTemplateProvider, secret: dict[str, str] | None, **options: Any
    ) -> FakeProvider:
        self.built.append(FakeProvider(self.answers, spec, secret))
        self.options.append(options)
        return self.built[-1]


def test_template_ref_with_secret_and_compare() -> None:
    template = MetricTemplate.model_validate(
        {
            "metadata": {"name": "errors", "namespace": "monitoring"},
            "spec": {
                "provider": {"type": "datadog", "secretRef": {"name": "dd"}},
                "query": "sum:errors{service:{{ target }},env:{{ variables.env }}}",
            },
        }
    )
    lookups: list[tuple[str, str]] = []

    async def templates(name: str, namespace: str) -> MetricTemplate:
        lookups.append((name, namespace))
        return template

    async def secrets(name: str, namespace: str) -> dict[str, str]:
        lookups.append((name, namespace))
        return {"datadog_api_key": "k"}

    factory = Factory({"service:podinfo-primary,": 1.0, "service:podinfo,": 3.0})
    cluster = object()
    analyzer = MetricsAnalyzer(templates, secrets, provider_factory=factory, cluster=cluster)  # type: ignore[arg-type]
    m = metric(
        templateRef={"name": "errors", "namespace": "monitoring"},
        templateVariables={"env": "prod"},
        compare={"maxDelta": 1},
    )
    observation = asyncio.run(analyzer.measure(canary(), m, caller_side=False))
    assert observation.error is None
    assert observation.canary == MetricSample(3.0) and observation.primary == MetricSample(1.0)
    assert (observation.provider, observation.query) == ("datadog", "sum:errors{service:podinfo,env:prod}")
    assert lookups == [("errors", "monitoring"), ("dd", "monitoring")]
    assert factory.built[0].secret == {"datadog_api_key": "k"}
    # The provider acts within the template's namespace (where its Secret was read), not the Canary's.
    assert factory.options[0]["scope"] == MetricScope("monitoring", cluster)  # type: ignore[arg-type]


def test_builtin_success_rate_counts_and_caller_side() -> None:
    factory = Factory({'response_code=~"5.*"': 4.0, "sum(increase(": 40.0, "* 100": 90.0})
    analyzer = MetricsAnalyzer(provider_factory=factory, default_address="http://prom:9090")
    observation = asyncio.run(
        analyzer.measure(canary(), metric(name="request-success-rate"), caller_side=True)
    )
    assert observation.canary == MetricSample(90.0, 40.0, 4.0)
    assert observation.provider == "prometheus" and 'reporter="source"' in (observation.query or "")
    assert factory.built[0].spec.address == "http://prom:9090"
    assert all('reporter="source"' in q and "[1m]" in q for q in factory.built[0].queries)
    assert len(factory.built[0].queries) == 2  # value and request count; 5xx = requests x error rate
    assert mesh_queries("istio").select(False).requests != mesh_queries("istio").select(True).requests


def test_inline_query_uses_metrics_server_and_errors_become_observations() -> None:
    factory = Factory({"up": 1.0})
    analyzer = MetricsAnalyzer(provider_factory=factory)
    observation = asyncio.run(
        analyzer.measure(canary(metricsServer="http://mine:9090"), metric(query="up"), False)
    )
    assert observation.canary.value == 1.0 and factory.built[0].spec.address == "http://mine:9090"

    failing = asyncio.run(analyzer.measure(canary(), metric(query="down"), False))
    assert failing.canary.value is None and "no answer" in (failing.error or "")
    unknown = asyncio.run(analyzer.measure(canary(), metric(name="latency"), False))
    assert "neither templateRef nor query" in (unknown.error or "")
    no_lookup = asyncio.run(analyzer.measure(canary(), metric(templateRef={"name": "x"}), False))
    assert "no template lookup" in (no_lookup.error or "")
    bad_template = asyncio.run(analyzer.measure(canary(), metric(query="{{ nope }}"), False))
    assert "'nope' is not defined" in (bad_template.error or "") and bad_template.canary.value is None


INJECTION = "{{ cycler.__init__.__globals__.os.popen('touch MARKER; echo 1').read() }}"


@pytest.mark.parametrize("where", ["inline", "template"])
def test_a_query_cannot_run_code_in_the_controller(where: str, tmp_path: Path) -> None:
    """The probe that ran ``id`` in the controller: now a template error, and nothing is queried."""
    marker = tmp_path / "ran"
    query = INJECTION.replace("MARKER", str(marker))
    template = MetricTemplate.model_validate({"metadata": {"name": "evil"}, "spec": {"query": query}})

    async def templates(name: str, namespace: str) -> MetricTemplate:
        return template

    factory = Factory({"1": 1.0})
    analyzer = MetricsAnalyzer(templates, provider_factory=factory)
    m = metric(query=query) if where == "inline" else metric(templateRef={"name": "evil"})
    observation = asyncio.run(analyzer.measure(canary(), m, caller_side=False))
    assert not marker.exists()
    assert "function 'cycler' is not defined" in (observation.error or "")
    assert observation.canary.value is None
    assert all(not provider.queries for provider in factory.built)


def test_route_is_flaggers_route_ref_or_target() -> None:
    assert TemplateModel.for_canary(canary()).route == "podinfo"
    routed = canary(routeRef={"apiVersion": "apisix.apache.org/v2", "kind": "ApisixRoute", "name": "r"})
    assert render("{{ route }}", TemplateModel.for_canary(routed)) == "r"


def test_template_lookup_failure_is_reported() -> None:
    async def templates(name: str, namespace: str) -> MetricTemplate:
        raise LookupError(f"metrictemplate {namespace}/{name} not found")

    analyzer = MetricsAnalyzer(templates, provider_factory=Factory())
    observation = asyncio.run(analyzer.measure(canary(), metric(templateRef={"name": "gone"}), False))
    assert observation.error == "metrictemplate test/gone not found"


def test_error_sample_and_availability() -> None:
    factory = Factory({"increase(": 30.0, "* 100": 90.0, "vector(1)": 1.0})
    analyzer = MetricsAnalyzer(provider_factory=factory)
    sample = asyncio.run(analyzer.error_sample(canary(), 4.2))
    assert sample is not None
    assert sample.requests == 30.0 and sample.errors == pytest.approx(3.0)
    assert "[5s]" in factory.built[-1].queries[0]
    factory.answers.update({"increase(": 0.0, "* 100": None})
    assert asyncio.run(analyzer.error_sample(canary(), 5)) == ErrorSample(0.0, 0.0)
    factory.answers.clear()
    assert asyncio.run(analyzer.error_sample(canary(), 5)) is None

    with_metrics = canary(analysis={"metrics": [{"name": "request-duration"}, {"name": "x", "query": "up"}]})
    assert asyncio.run(analyzer.availability(with_metrics)) == []
    factory.built.clear()

    class Offline(Factory):
        def __call__(
            self, spec: MetricTemplateProvider, secret: dict[str, str] | None, **_: Any
        ) -> FakeProvider:
            provider = super().__call__(spec, secret)
            provider.online = False
            return provider

    problems = asyncio.run(MetricsAnalyzer(provider_factory=Offline()).availability(with_metrics))
    assert problems == [
        "metric request-duration: prometheus provider is not available",
        "metric x: prometheus provider is not available",
    ]


def test_skipper_builtin_queries_name_routes_as_skipper_does() -> None:
    """Flagger's encodeModelForSkipper: non-word characters of the names become ``_``, as in Skipper's
    route ids; a MetricTemplate's model is left as it is."""
    manifest = canary().model_dump(by_alias=True, exclude_none=True, mode="json")
    manifest["metadata"]["namespace"] = "team-a"
    manifest["spec"] |= {"provider": "skipper", "ingressRef": {"kind": "Ingress", "name": "web.front"}}
    subject = Canary.model_validate(manifest)
    queries = mesh_queries("skipper").upstream
    model = TemplateModel.for_canary(subject, "1m")
    rendered = render(queries.success_rate, queries.model_for(model))
    assert 'route=~"kube(ew)?_team_a__web_front_canary__.*__podinfo_svc_canary(_[0-9]+)?"' in rendered
    assert model.namespace == "team-a" and mesh_queries("nginx").upstream.model_for(model) is model


def test_the_analyzer_measures_knative_revisions_and_skipper_routes_by_their_names() -> None:
    """What reaches Prometheus: Knative's revision under analysis (and the promoted one for a compare),
    Skipper's route names encoded, in the value and the request-count queries alike."""
    knative = canary(
        provider="knative",
        targetRef={"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "podinfo"},
    ).model_copy(
        update={"status": CanaryStatus(lastAppliedSpec="podinfo-00002", lastPromotedSpec="podinfo-00001")}
    )
    factory = Factory({"podinfo-00002": 99.0, "podinfo-00001": 98.0})
    analyzer = MetricsAnalyzer(provider_factory=factory)
    compared = metric(name="request-success-rate", compare={"maxDelta": 5})
    observation = asyncio.run(analyzer.measure(knative, compared, caller_side=False))
    assert observation.error is None and observation.canary.value == 99.0 and observation.primary is not None
    assert observation.primary.value == 98.0
    assert all("envoy_cluster_name=~" in q for q in factory.built[0].queries)

    skipper = canary(provider="skipper", ingressRef={"name": "web.front"})
    factory = Factory({"kube(ew)?_test__web_front_canary__": 97.0})
    observation = asyncio.run(
        MetricsAnalyzer(provider_factory=factory).measure(skipper, metric(name="request-success-rate"), False)
    )
    assert observation.error is None and observation.canary.value == 97.0
    assert len(factory.built[0].queries) == 2 and all(
        "web_front_canary" in q for q in factory.built[0].queries
    )


def test_builtin_queries_per_provider() -> None:
    model = TemplateModel.for_canary(canary(), "1m")
    istio = render(mesh_queries("istio").upstream.success_rate, model)
    selector = (
        'reporter="destination", destination_workload_namespace="test", destination_workload=~"podinfo"'
    )
    assert istio == (
        f'(sum(rate(istio_requests_total{{{selector}, response_code!~"5.*"}}[1m])) or vector(0))'
        f" / sum(rate(istio_requests_total{{{selector}}}[1m])) * 100"
    )
    assert render(mesh_queries("istio").upstream.duration, model) == (
        "histogram_quantile(0.99, sum(rate("
        f"istio_request_duration_milliseconds_bucket{{{selector}}}[1m])) by (le))"
    )
    assert mesh_queries("smi:v1alpha2") is mesh_queries("linkerd")
    assert mesh_queries("gatewayapi:v1") is mesh_queries("kubernetes")
    assert mesh_queries(None) is mesh_queries("canaryctl")
    assert 'envoy_cluster_name="podinfo-svc-canary_test"' in render(
        mesh_queries(None).upstream.requests, model
    )
    # Kuma: the side's kuma.io/service (Flagger's canary side, `{{ target }}-canary_...`, when the apex is
    # the target's name; here it is spec.service.name), and for the primary its own service.
    kuma = mesh_queries("kuma").upstream
    kuma_selector = 'service=~"podinfo-svc-canary_test_svc_[0-9a-zA-Z-]+"'
    requests = f"envoy_cluster_upstream_rq{{{kuma_selector}"
    assert render(kuma.success_rate, model) == (
        f'(sum(rate({requests}, envoy_response_code!~"5.*"}}[1m])) or vector(0))'
        f" / sum(rate({requests}}}[1m])) * 100"
    )
    primary = TemplateModel.for_canary(canary(), "1m", primary=True)
    assert 'service=~"podinfo-svc-primary_test_svc_' in render(kuma.duration, primary)
    osm_selector = 'destination_namespace="test", destination_kind="Deployment", destination_name="podinfo"'
    assert render(mesh_queries("osm").upstream.duration, model) == (
        f"histogram_quantile(0.99, sum(rate(osm_request_duration_ms_bucket{{{osm_selector}}}[1m])) by (le))"
    )
    # App Mesh: the pod under Flagger's relabelling or Prometheus Operator's labels.
    flagger = 'kubernetes_namespace="test", kubernetes_pod_name=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"'
    operator = 'namespace="test", pod=~"podinfo-[0-9a-zA-Z]+(-[0-9a-zA-Z]+)"'
    buckets = "envoy_cluster_upstream_rq_time_bucket"
    assert render(mesh_queries("appmesh:v1beta2").upstream.duration, model) == (
        f"histogram_quantile(0.99, sum(rate({buckets}{{{flagger}}}[1m]) or rate({buckets}{{{operator}}}[1m]))"
        " by (le))"
    )
    with pytest.raises(ValueError, match="no builtin metrics"):
        mesh_queries("ambassador")


def test_the_prometheus_kept_per_metrics_server_is_bounded() -> None:
    """A Canary author changing spec.metricsServer on every edit used to leave one provider behind per
    address, forever; the most recently used addresses keep theirs."""
    live: list[weakref.ref[FakeProvider]] = []
    built: list[str] = []

    def factory(spec: MetricTemplateProvider, secret: dict[str, str] | None, **_: Any) -> FakeProvider:
        built.append(spec.address or "")
        provider = FakeProvider({"up": 1.0}, spec, secret)
        live.append(weakref.ref(provider))
        return provider

    analyzer = MetricsAnalyzer(provider_factory=factory)

    async def main() -> None:
        for index in range(MAX_PROMETHEUS_PROVIDERS + 100):
            server = canary(metricsServer=f"http://prometheus-{index}:9090")
            assert (await analyzer.measure(server, metric(query="up"), False)).canary.value == 1.0
        newest = canary(metricsServer=f"http://prometheus-{MAX_PROMETHEUS_PROVIDERS + 99}:9090")
        await analyzer.measure(newest, metric(query="up"), False)
        assert len(built) == MAX_PROMETHEUS_PROVIDERS + 100  # the newest address kept its provider
        await analyzer.measure(canary(metricsServer="http://prometheus-0:9090"), metric(query="up"), False)
        assert built[-1] == "http://prometheus-0:9090"  # the oldest was dropped, so it is built again

    asyncio.run(main())
    gc.collect()
    assert sum(ref() is not None for ref in live) == MAX_PROMETHEUS_PROVIDERS
