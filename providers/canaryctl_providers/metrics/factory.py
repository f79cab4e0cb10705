"""Build the built-in provider a MetricTemplate names (the factory of their ``canaryctl.metrics`` entry
points); unknown types fail loudly instead of measuring nothing."""

from __future__ import annotations

from canaryctl.api.models import MetricTemplateProvider
from canaryctl.ports import MetricScope, MetricsProvider
from canaryctl_providers.metrics.cloudwatch import CloudWatchProvider
from canaryctl_providers.metrics.datadog import DatadogProvider
from canaryctl_providers.metrics.dynatrace import DynatraceProvider
from canaryctl_providers.metrics.errors import ProviderConfigError
from canaryctl_providers.metrics.externalmetrics import ExternalMetricsProvider
from canaryctl_providers.metrics.graphite import GraphiteProvider
from canaryctl_providers.metrics.influxdb import InfluxDBProvider
from canaryctl_providers.metrics.keptn import KeptnProvider
from canaryctl_providers.metrics.newrelic import NewRelicProvider
from canaryctl_providers.metrics.prometheus import PrometheusProvider
from canaryctl_providers.metrics.splunk import SplunkProvider
from canaryctl_providers.metrics.stackdriver import StackdriverProvider
from canaryctl_providers.metrics.web import WebProvider

PROVIDER_TYPES = (
    "prometheus",
    "datadog",
    "newrelic",
    "cloudwatch",
    "graphite",
    "influxdb",
    "web",
    "dynatrace",
    "stackdriver",
    "splunk",
    "externalmetrics",
    "keptn",
)


def provider_for(
    spec: MetricTemplateProvider,
    secret: dict[str, str] | None,
    *,
    interval: str = "1m",
    scope: MetricScope | None = None,
) -> MetricsProvider:
    """The provider for ``spec``; ``interval`` sets the look-back of providers whose API needs a window,
    ``scope`` the namespace and cluster access of those that read the Kubernetes API.

    Raises ProviderConfigError for an unknown type, a bad address or missing credentials.
    """
    if spec.secret_ref is not None and secret is None:
        raise ProviderConfigError(
            f"{spec.type} provider refers to Secret {spec.secret_ref.name!r}, none given"
        )
    match spec.type:
        case "prometheus":
            return PrometheusProvider(spec, secret)
        case "datadog":
            return DatadogProvider(spec, secret, interval)
        case "newrelic":
            return NewRelicProvider(spec, secret, interval)
        case "cloudwatch":
            return CloudWatchProvider(spec, secret, interval)
        case "graphite":
            return GraphiteProvider(spec, secret)
        case "influxdb":
            return InfluxDBProvider(spec, secret)
        case "web":
            return WebProvider(spec, secret)
        case "dynatrace":
            return DynatraceProvider(spec, secret, interval)
        case "stackdriver":
            return StackdriverProvider(spec, secret)
        case "splunk":
            return SplunkProvider(spec, secret, interval)
        case "externalmetrics":
            return ExternalMetricsProvider(spec, secret, scope or MetricScope())
        case "keptn":
            return KeptnProvider(scope or MetricScope())
    raise ProviderConfigError(
        f"unknown metric provider type {spec.type!r}; use one of {', '.join(PROVIDER_TYPES)}"
    )
