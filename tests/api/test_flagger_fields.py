"""Flagger fields canaryctl used to reject, typed Istio/Gateway API shapes, strict types and field lines.

Field names, types and enums are those of Flagger v1.44.0 (pkg/apis/flagger/v1beta1/canary.go and
artifacts/flagger/crd.yaml); the snippets are from its docs (usage/how-it-works.md, webhooks.md,
deployment-strategies.md) and its Gateway API session-affinity e2e test.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from canaryctl.api.lint import lint_sources
from canaryctl.api.models import Canary, SameSite, Severity, TrafficDistribution

CRD = Path(__file__).resolve().parents[2] / "crds" / "canaries.yaml"

FLAGGER_CANARY = """\
apiVersion: canaryctl.dev/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: sa-test
spec:
  provider: gatewayapi:v1
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  progressDeadlineSeconds: 60
  service:
    port: 9898
    portName: http
    targetPort: 9898
    portDiscovery: true
    headless: false
    trafficDistribution: PreferClose
    timeout: 5s
    # backendTimeout is only supported by the Gateway API provider and
    # maps to HTTPRouteTimeouts.BackendRequest.
    backendTimeout: 2s
    unmanagedMetadata:
      annotations: [example.com/managed-elsewhere]
      labels: [team]
    hosts:
     - www.example.com
    gatewayRefs:
      - name: gateway
        namespace: istio-ingress
  analysis:
    interval: 15s
    threshold: 15
    maxWeight: 50
    stepWeight: 10
    sessionAffinity:
      cookieName: canary-flagger-cookie
      primaryCookieName: primary-flagger-cookie
      maxAge: 21600
      domain: example.com
      path: /
      secure: true
      httpOnly: true
      sameSite: Strict
      partitioned: false
    alerts:
      - name: on-call
        severity: ""
        providerRef: {name: on-call}
    metrics:
      - name: error-rate
        templateRef: {name: error-rate, namespace: flagger-system}
        thresholdRange: {max: 1}
        interval: 1min
    webhooks:
      - name: load-test
        type: ""
        url: https://flagger-loadtester.test/
        timeout: 5s
        disableTLS: true
        metadata:
          cmd: "hey -z 2m -q 10 -c 2 -host www.example.com http://gateway-istio.istio-ingress"
"""


def lint(text: str) -> list[tuple[int, str, str, str]]:
    return [(e.line, e.field_path, e.message, e.severity) for e in lint_sources([("c.yaml", text)]).errors]


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), start=1) if needle in line)


def test_current_flagger_fields_lint_clean_and_keep_their_values() -> None:
    assert lint(FLAGGER_CANARY) == []
    canary = Canary.model_validate(yaml.safe_load(FLAGGER_CANARY))
    service, analysis = canary.spec.service, canary.spec.effective_analysis
    assert (service.backend_timeout, service.traffic_distribution) == ("2s", TrafficDistribution.PREFER_CLOSE)
    assert service.unmanaged_metadata is not None and service.unmanaged_metadata.labels == ["team"]
    affinity = analysis.session_affinity
    assert affinity is not None and (affinity.same_site, affinity.http_only) == (SameSite.STRICT, True)
    assert analysis.alerts is not None and analysis.alerts[0].severity is Severity.INFO
    assert analysis.metrics is not None and analysis.metrics[0].interval == "1min"
    webhook = (analysis.webhooks or [])[0]
    assert webhook.disable_tls is True
    assert canary.to_wire()["spec"]["analysis"]["webhooks"][0]["disableTLS"] is True


def test_a_canary_without_service_is_accepted_with_a_warning() -> None:
    text = re.sub(r"  service:\n(    .*\n|     .*\n|      .*\n)+", "", FLAGGER_CANARY)
    assert "service:" not in text
    problems = lint(text)
    assert [(path, severity) for _, path, _, severity in problems] == [("spec.service", "warning")]
    assert Canary.model_validate(yaml.safe_load(text)).spec.apex_name == "podinfo"


# --- typed shapes: typos are errors at their line ---------------------------------------------------

HOSTS = "    hosts:\n"
TYPOS = [
    (
        "trafficPolicy",
        HOSTS,
        "    trafficPolicy:\n      loadBalancer: {simpel: ROUND_ROBIN}\n",
        "simpel",
        "simple",
    ),
    ("trafficPolicy-enum", HOSTS, "    trafficPolicy:\n      tls: {mode: ISTIO_MUTAL}\n", "mode", None),
    (
        "corsPolicy",
        HOSTS,
        "    corsPolicy:\n      allowOrigins: [{exact: a}]\n      allowMethod: [GET]\n",
        "allowMethod",
        "allowMethods",
    ),
    ("rewrite", HOSTS, "    rewrite: {uri: /, authorty: example.com}\n", "authorty", "authority"),
    ("headers", HOSTS, "    headers:\n      request: {sett: {x: y}}\n", "sett", "set"),
    (
        "gatewayRefs",
        "        namespace: istio-ingress\n",
        "        sectionNmae: http\n",
        "sectionNmae",
        "sectionName",
    ),
    (
        "match",
        HOSTS,
        "    match:\n      - uri: {prefix: /}\n        ignoreUriCas: true\n",
        "ignoreUriCas",
        "ignoreUriCase",
    ),
]


@pytest.mark.parametrize(
    ("after", "block", "field", "suggestion"), [t[1:] for t in TYPOS], ids=[t[0] for t in TYPOS]
)
def test_typos_in_istio_and_gateway_api_shapes_are_errors_at_their_line(
    after: str, block: str, field: str, suggestion: str | None
) -> None:
    text = (
        FLAGGER_CANARY.replace(after, after + block)
        if after != HOSTS
        else FLAGGER_CANARY.replace(HOSTS, block + HOSTS)
    )
    ((line, path, message, severity),) = lint(text)
    assert severity == "error" and path.endswith(field)
    assert line == line_of(text, field + ":") or line == line_of(text, field)
    if suggestion is not None:
        assert message == f"unknown field {field!r} (did you mean {suggestion!r}?)"
    else:
        assert message.startswith("unknown value 'ISTIO_MUTAL'")


# --- strict types, as the CRD checks them ----------------------------------------------------------


@cache
def crd_validator() -> jsonschema.protocols.Validator:
    """The generated CRD's schema as the API server applies it with strict field validation (kubectl's
    default): unknown fields are errors, int-or-string is an integer or a string."""

    def strict(node: Any) -> Any:
        if isinstance(node, list):
            return [strict(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {key: strict(value) for key, value in node.items() if not key.startswith("x-kubernetes")}
        if node.get("x-kubernetes-int-or-string"):
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        typed_object = node.get("type") == "object" and "properties" in node
        if typed_object and not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out

    document = yaml.safe_load(CRD.read_text())
    schema = strict(document["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    return jsonschema.Draft4Validator(schema)


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node: Any = doc
    for step in parents:
        node = node[int(step)] if step.isdigit() else node[step]
    node[int(last) if last.isdigit() else last] = value
    return doc


TYPE_CASES = [
    ("spec.service.port", "9898", False),
    ("spec.service.port", 9898, True),
    ("spec.service.targetPort", "http", True),
    ("spec.service.targetPort", 80.5, False),
    ("spec.analysis.threshold", "15", False),
    ("spec.analysis.stepWeight", 10.5, False),
    ("spec.skipAnalysis", "true", False),
    ("spec.analysis.metrics.0.thresholdRange", {"max": "1"}, False),
    ("spec.analysis.metrics.0.interval", "1min", True),
    ("spec.analysis.metrics.0.interval", "1 minute", False),
    ("spec.analysis.alerts.0.severity", "", True),
    ("spec.analysis.alerts.0.severity", "critical", False),
    ("spec.analysis.webhooks.0.type", "", True),
    ("spec.analysis.webhooks.0.disableTLS", "yes", False),
    ("spec.analysis.sessionAffinity.sameSite", "Strictly", False),
    ("spec.service.trafficDistribution", "PreferFar", False),
    ("spec.service.gatewayRefs.0.port", 0, False),
    ("spec.service.gatewayRefs.0.namespace", "Not_A_Namespace", False),
    ("spec.service.unmanagedMetadata", {"labels": "team"}, False),
]


@pytest.mark.parametrize(("path", "value", "valid"), TYPE_CASES, ids=[f"{c[0]}={c[1]!r}" for c in TYPE_CASES])
def test_lint_accepts_exactly_what_the_crd_accepts(path: str, value: Any, valid: bool) -> None:
    doc = _set(yaml.safe_load(FLAGGER_CANARY), path, value)
    crd_ok = crd_validator().is_valid(doc)
    problems = [p for p in lint(yaml.safe_dump(doc, sort_keys=False)) if p[3] == "error"]
    assert (crd_ok, not problems) == (valid, valid), problems


def test_quoted_port_is_reported_as_the_crd_would_at_its_line() -> None:
    text = FLAGGER_CANARY.replace("    port: 9898\n", '    port: "9898"\n')
    assert lint(text) == [
        (line_of(text, 'port: "9898"'), "spec.service.port", "Input should be a valid integer", "error")
    ]


# --- lines ---------------------------------------------------------------------------------------------


def test_every_error_points_at_the_line_of_its_field() -> None:
    text = (
        FLAGGER_CANARY.replace("    portName: http\n", "    portName: 80\n")
        .replace("    threshold: 15\n", "    threshold: 15\n    stepWieght: 5\n")
        .replace("        thresholdRange: {max: 1}\n", "        thresholdRange: {max: 1, min: 5}\n")
        .replace("      maxAge: 21600\n", "      maxAge: 0\n")
        .replace("        timeout: 5s\n", "        timeout: 5 seconds\n")
    )
    found = {path: line for line, path, _, _ in lint(text)}
    assert found == {
        "spec.service.portName": line_of(text, "portName: 80"),
        "spec.analysis.stepWieght": line_of(text, "stepWieght"),
        "spec.analysis.metrics[0].thresholdRange": line_of(text, "thresholdRange: {max: 1, min: 5}"),
        "spec.analysis.sessionAffinity.maxAge": line_of(text, "maxAge: 0"),
        "spec.analysis.webhooks[0].timeout": line_of(text, "timeout: 5 seconds"),
    }


def test_a_missing_field_points_at_its_parent() -> None:
    text = FLAGGER_CANARY.replace("    port: 9898\n", "")
    assert lint(text) == [
        (line_of(text, "  service:"), "spec.service.port", "required field missing", "error")
    ]
