"""Metric providers (one module per vendor; their names in ``PROVIDER_TYPES``), the builtin per-mesh
queries, template rendering and the Analyzer that ties them to a Canary."""

from canaryctl_providers.metrics.analyzer import MetricsAnalyzer, SecretLookup, TemplateLookup
from canaryctl_providers.metrics.errors import MetricQueryError, ProviderConfigError, TemplateRenderError
from canaryctl_providers.metrics.factory import PROVIDER_TYPES, provider_for

__all__ = [
    "PROVIDER_TYPES",
    "MetricQueryError",
    "MetricsAnalyzer",
    "ProviderConfigError",
    "SecretLookup",
    "TemplateLookup",
    "TemplateRenderError",
    "provider_for",
]
