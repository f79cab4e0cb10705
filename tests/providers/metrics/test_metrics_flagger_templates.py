"""The MetricTemplate examples of Flagger's metrics documentation for the providers canaryctl took over
from Flagger, verbatim but for the apiVersion: lint accepts each, so a migrating user's templates load.
(Where canaryctl refuses one at run time, such as a keptn query into another namespace, the provider's
own tests and docs/metrics.md say so.)"""

from __future__ import annotations

import pytest

from canaryctl.api.lint import lint_sources

TEMPLATES = {
    "dynatrace": """apiVersion: canaryctl.dev/v1beta1
kind: MetricTemplate
metadata:
  name: response-time-95pct
  namespace: istio-system
spec:
  provider:
    type: dynatrace
    address: https://xxxxxxxx.live.dynatrace.com
    secretRef:
      name: dynatrace
  query: |
    builtin:service.response.time:filter(eq(dt.entity.service,SERVICE-ABCDEFG0123456789)):percentile(95)
""",
    "stackdriver": """apiVersion: canaryctl.dev/v1beta1
kind: MetricTemplate
metadata:
  name: bytes-sent
  namespace: test
spec:
  provider:
    type: stackdriver
    secretRef:
      name: gcloud-sa
  query: |
    fetch k8s_container
    | metric 'istio.io/service/server/response_latencies'
    | filter
        (metric.destination_service_name == '{{ service }}-canary'
        && metric.destination_service_namespace == '{{ namespace }}')
    | align delta(1m)
    | every 1m
    | group_by [],
        [value_response_latencies_percentile:
          percentile(value.response_latencies, 99)]
""",
    "splunk": """apiVersion: canaryctl.dev/v1beta1
kind: MetricTemplate
metadata:
  name: success-rate
  namespace: istio-system
spec:
  provider:
    type: splunk
    address: https://api.<REALM>.signalfx.com
    secretRef:
      name: splunk
  query: |
    total = data('traces.count', filter=filter('sf_service', '{{target}}')).sum().publish(enable=False)
    success = data('traces.count', filter=filter('sf_service', '{{target}}') and filter('sf_error', 'false')).sum().publish(enable=False)
    ((success/total) * 100).publish()
""",  # noqa: E501
    "externalmetrics": """apiVersion: canaryctl.dev/v1beta1
kind: MetricTemplate
metadata:
  name: my-external-metric
  namespace: default
spec:
  provider:
    type: externalmetrics
    address: https://external-metrics-server.default.svc.cluster.local:8443
    secretRef: # Optional
      name: external-metric-server-token
  query: webapp-frontend/job-success-rate?labelSelector=env%3Dproduction
""",
    "keptn": """apiVersion: canaryctl.dev/v1beta1
kind: MetricTemplate
metadata:
  name: response-time
  namespace: istio-system
spec:
  provider:
    type: keptn
  query: keptnmetric/my-namespace/response-time/2m/reporter=destination
""",
}


@pytest.mark.parametrize("provider", sorted(TEMPLATES))
def test_flaggers_template_lints_clean(provider: str) -> None:
    assert lint_sources([(f"{provider}.yaml", TEMPLATES[provider])]).errors == []
