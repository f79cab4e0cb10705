"""The Analyzer: resolve a Canary metric to a provider and query, render it for canary (and primary),
run it, and report what was measured.

Every failure (unreachable provider, missing template or Secret, bad template) becomes
``MetricObservation.error``, shortened; the engine decides what an error means, and a failure can never
pose as a value. Each Canary runs at most ``query_concurrency`` queries at once; the rest of its queries
wait for one of its own slots, never for another Canary's.
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from canaryctl import registry
from canaryctl.api.models import Canary, CanaryMetric, MetricTemplate, MetricTemplateProvider
from canaryctl.engine.types import ErrorSample, MetricObservation, MetricSample
from canaryctl.ports import KubeApi, MetricScope, MetricsProvider
from canaryctl_providers.metrics.builtin import BUILTIN_METRICS, SUCCESS_RATE, BuiltinQueries, mesh_queries
from canaryctl_providers.metrics.errors import ProviderConfigError
from canaryctl_providers.metrics.template import TemplateModel, render
from canaryctl_providers.outbound import QUERIES_PER_CANARY, Slots, canary_key, shorten

TemplateLookup = Callable[[str, str], Awaitable[MetricTemplate]]
"""(name, namespace) -> the MetricTemplate."""
SecretLookup = Callable[[str, str], Awaitable[dict[str, str]]]
"""(name, namespace) -> the Secret's data, decoded."""
ProviderFactory = Callable[..., MetricsProvider]

DEFAULT_PROMETHEUS = "http://prometheus:9090"
# Addresses whose Prometheus provider is kept between calls.
MAX_PROMETHEUS_PROVIDERS = 256


@dataclass(frozen=True)
class _Resolved:
    """What to run for one metric: provider, its type, the query template and optional count queries."""

    provider: MetricsProvider
    provider_type: str
    query: str
    counts: BuiltinQueries | None = None
    builtin: BuiltinQueries | None = None  # the builtin queries ``query`` is one of

    def model(self, canary: Canary, metric: CanaryMetric, primary: bool = False) -> TemplateModel:
        """The model the query renders with (a builtin may encode its names, as Skipper's)."""
        model = TemplateModel.for_canary(canary, metric.interval, metric.template_variables, primary=primary)
        return self.builtin.model_for(model) if self.builtin is not None else model


@dataclass(frozen=True)
class _Slotted:
    """A provider whose calls take one of a Canary's query slots."""

    provider: MetricsProvider
    slots: asyncio.Semaphore

    async def query(self, query: str) -> float | None:
        async with self.slots:
            return await self.provider.query(query)

    async def is_online(self) -> bool:
        async with self.slots:
            return await self.provider.is_online()


class MetricsAnalyzer:
    """Implements the Analyzer port over MetricTemplates, builtin queries and inline PromQL."""

    def __init__(
        self,
        templates: TemplateLookup | None = None,
        secrets: SecretLookup | None = None,
        default_address: str = DEFAULT_PROMETHEUS,
        provider_factory: ProviderFactory = registry.metrics_provider,
        query_concurrency: int = QUERIES_PER_CANARY,
        cluster: KubeApi | None = None,
    ) -> None:
        self._templates = templates
        self._cluster = cluster
        self._secrets = secrets
        self._default_address = default_address
        self._factory = provider_factory
        self._prometheus_by_address: OrderedDict[str, MetricsProvider] = OrderedDict()
        self._slots = Slots(query_concurrency)

    async def measure(self, canary: Canary, metric: CanaryMetric, caller_side: bool) -> MetricObservation:
        try:
            resolved = await self._resolve(canary, metric, caller_side)
        except Exception as exc:  # lookups are injected; whatever they raise is this metric's error
            return MetricObservation(metric.name, MetricSample(None), error=_describe(exc))
        model = resolved.model(canary, metric)
        query = None
        try:
            query = render(resolved.query, model)
            if metric.compare is None:
                sample = await self._sample(resolved, query, model)
                return MetricObservation(metric.name, sample, provider=resolved.provider_type, query=query)
            primary = resolved.model(canary, metric, primary=True)
            primary_query = render(resolved.query, primary)
            canary_sample, primary_sample = await asyncio.gather(
                self._sample(resolved, query, model), self._sample(resolved, primary_query, primary)
            )
            return MetricObservation(
                metric.name, canary_sample, primary_sample, provider=resolved.provider_type, query=query
            )
        except Exception as exc:  # provider, template and transport failures alike are reported
            return MetricObservation(
                metric.name,
                MetricSample(None),
                error=_describe(exc),
                provider=resolved.provider_type,
                query=query,
            )

    async def error_sample(self, canary: Canary, period_seconds: float) -> ErrorSample | None:
        """Canary requests and 5xx over the last period from the upstream stats; None when unknown.

        Upstream, not caller-side: during a fault step the injected errors are intended, not the
        canary's fault.
        """
        model = TemplateModel.for_canary(canary, f"{max(1, math.ceil(period_seconds))}s")
        try:
            queries = mesh_queries(canary.spec.provider).upstream
            model = queries.model_for(model)
            provider = self._slotted(canary, self._prometheus(canary))
            success_rate, requests = await asyncio.gather(
                provider.query(render(queries.success_rate, model)),
                provider.query(render(queries.requests, model)),
            )
        except Exception:  # no sample is the documented answer when the stats cannot be read
            return None
        errors = 0.0 if requests == 0 else _errors(requests, success_rate)
        return None if requests is None or errors is None else ErrorSample(requests, errors)

    async def availability(self, canary: Canary) -> list[str]:
        """Flagger's initialization check: every provider the analysis uses answers; problems listed."""
        problems: list[str] = []
        for metric in canary.spec.effective_analysis.metrics or []:
            try:
                resolved = await self._resolve(canary, metric, caller_side=False)
                online = await resolved.provider.is_online()
            except Exception as exc:  # report, do not raise: the caller records an event
                problems.append(f"metric {metric.name}: {_describe(exc)}")
                continue
            if not online:
                problems.append(f"metric {metric.name}: {resolved.provider_type} provider is not available")
        return problems

    async def _sample(self, resolved: _Resolved, query: str, model: TemplateModel) -> MetricSample:
        if resolved.counts is None:
            return MetricSample(await resolved.provider.query(query))
        value, requests = await asyncio.gather(
            resolved.provider.query(query), resolved.provider.query(render(resolved.counts.requests, model))
        )
        return MetricSample(value, requests, _errors(requests, value))

    async def _resolve(self, canary: Canary, metric: CanaryMetric, caller_side: bool) -> _Resolved:
        if metric.template_ref is not None:
            resolved = await self._from_template(canary, metric)
        elif metric.query:
            resolved = _Resolved(self._prometheus(canary), "prometheus", metric.query)
        elif metric.name in BUILTIN_METRICS:
            queries = mesh_queries(canary.spec.provider).select(caller_side)
            counts = queries if metric.name == SUCCESS_RATE else None
            query = queries.value_query(metric.name)
            resolved = _Resolved(self._prometheus(canary), "prometheus", query, counts, queries)
        else:
            raise ValueError(f"metric {metric.name!r} is not builtin and has neither templateRef nor query")
        return replace(resolved, provider=self._slotted(canary, resolved.provider))

    def _slotted(self, canary: Canary, provider: MetricsProvider) -> MetricsProvider:
        return _Slotted(provider, self._slots(canary_key(canary)))

    async def _from_template(self, canary: Canary, metric: CanaryMetric) -> _Resolved:
        assert metric.template_ref is not None
        if self._templates is None:
            raise ValueError(
                f"metric {metric.name!r} uses a templateRef but no template lookup is configured"
            )
        namespace = metric.template_ref.namespace or canary.metadata.namespace or "default"
        template = await self._templates(metric.template_ref.name, namespace)
        spec = template.spec.provider
        if spec.type == "prometheus" and not spec.address:
            if spec.secret_ref is not None:
                # The fallback address is the Canary's metricsServer: its author must not get the Secret.
                raise ProviderConfigError(
                    f"MetricTemplate {namespace}/{metric.template_ref.name} has a secretRef but no "
                    "spec.provider.address; its credentials are only sent to its own address"
                )
            spec = spec.model_copy(update={"address": self._address(canary)})
        secret = None
        own_namespace = template.metadata.namespace or namespace
        if spec.secret_ref is not None:
            if self._secrets is None:
                raise ValueError(
                    f"template {metric.template_ref.name!r} needs a Secret but no lookup is configured"
                )
            secret = await self._secrets(spec.secret_ref.name, own_namespace)
        scope = MetricScope(own_namespace, self._cluster)
        provider = self._factory(spec, secret, interval=metric.interval or "1m", scope=scope)
        return _Resolved(provider, spec.type, template.spec.query)

    def _address(self, canary: Canary) -> str:
        return canary.spec.metrics_server or self._default_address

    def _prometheus(self, canary: Canary) -> MetricsProvider:
        """The Prometheus for builtin and inline queries, one provider per address; only the
        MAX_PROMETHEUS_PROVIDERS most recently used addresses keep theirs (a Canary's author can name
        new addresses without end)."""
        address = self._address(canary)
        provider = self._prometheus_by_address.get(address)
        if provider is None:
            spec = MetricTemplateProvider(type="prometheus", address=address)
            provider = self._prometheus_by_address[address] = self._factory(spec, None)
            if len(self._prometheus_by_address) > MAX_PROMETHEUS_PROVIDERS:
                self._prometheus_by_address.popitem(last=False)
        self._prometheus_by_address.move_to_end(address)
        return provider


def _errors(requests: float | None, success_rate: float | None) -> float | None:
    """5xx count from the request count and the success rate.

    Derived rather than queried: two separate instant queries are extrapolated to slightly different
    evaluation times, and on a young series that skews their ratio far more than the test tolerates,
    while the success rate's own numerator and denominator come from one evaluation.
    """
    if requests is None or success_rate is None:
        return None
    return requests * (100.0 - success_rate) / 100.0


def _describe(exc: BaseException) -> str:
    """What status and events show: a provider's error text is the remote server's, so it is bounded."""
    return shorten(str(exc) or type(exc).__name__)
