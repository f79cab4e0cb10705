"""A Canary's counts of metrics, webhooks, alerts, steps and matches are bounded where the Canary is
written: an untrusted author must not make one tick query a shared metrics server thousands of times at
once, call thousands of hooks, grow the stored status past what the API server keeps, or make a router
build analysis.match x service.match route matches on the controller's event loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryctl.api.models import (
    MAX_ALERTS,
    MAX_MATCHES,
    MAX_METRICS,
    MAX_QUERY_CHARS,
    MAX_STEPS,
    MAX_WEBHOOKS,
)
from tests.api.test_flagger_fields import line_of, lint

REPO = Path(__file__).resolve().parents[2]
HEAD = (
    "apiVersion: canaryctl.dev/v1beta1\nkind: Canary\nmetadata: {name: podinfo}\nspec:\n"
    "  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}\n"
    "  service: {port: 9898}\n  analysis:\n"
)
ITEMS = {
    "metrics": lambda i: (
        f"{{name: latency-{i}, templateRef: {{name: latency}}, thresholdRange: {{max: 500}}}}"
    ),
    "webhooks": lambda i: f"{{name: hook-{i}, url: 'http://loadtester.test/'}}",
    "alerts": lambda i: f"{{name: alert-{i}, providerRef: {{name: slack}}}}",
    "steps": lambda i: f"{{setWeight: {i % 100}}}",
    "match": lambda i: f"{{headers: {{x-user: {{exact: user-{i}}}}}}}",
}
CAPS = {
    "metrics": MAX_METRICS,
    "webhooks": MAX_WEBHOOKS,
    "alerts": MAX_ALERTS,
    "steps": MAX_STEPS,
    "match": MAX_MATCHES,
}
STRATEGY = {"steps": "", "match": "    iterations: 10\n"}


def manifest(field: str, count: int) -> str:
    items = "".join(f"    - {ITEMS[field](i)}\n" for i in range(count))
    strategy = STRATEGY.get(field, "    stepWeight: 10\n")
    return f"{HEAD}{strategy}    {field}:\n{items}"


@pytest.mark.parametrize("field", sorted(CAPS))
def test_a_list_over_its_cap_is_refused_at_its_line(field: str) -> None:
    cap = CAPS[field]
    assert lint(manifest(field, cap)) == []
    text = manifest(field, cap + 1)
    errors = lint(text)
    assert [(line, path) for line, path, _, _ in errors] == [
        (line_of(text, f"    {field}:"), f"spec.analysis.{field}")
    ]
    assert f"at most {cap} items" in errors[0][2]


def steps(names: list[list[int]]) -> str:
    """Analysis steps, each checking the metrics ``latency-<n>`` for the numbers given."""
    return f"{HEAD}    steps:\n" + "".join(
        "    - analysis:\n        metrics:\n" + "".join(f"        - {ITEMS['metrics'](n)}\n" for n in step)
        for step in names
    )


def test_names_are_counted_over_the_steps() -> None:
    """Each list within its cap, but the status would hold an entry for each distinct name of them all."""
    errors = lint(steps([[s * 10 + i for i in range(10)] for s in range(4)]))
    assert [path for _, path, _, _ in errors] == ["spec.analysis"]
    assert f"40 metrics names over analysis and its steps; at most {MAX_METRICS}" in errors[0][2]
    assert lint(steps([list(range(10)) for _ in range(4)])) == [], "the same metric at every step counts once"


def test_the_crd_caps_each_list() -> None:
    crd: dict[str, Any] = yaml.safe_load((REPO / "crds" / "canaries.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    analysis = schema["analysis"]["properties"]
    assert {field: analysis[field]["maxItems"] for field in CAPS} == CAPS
    step = analysis["steps"]["items"]["properties"]["analysis"]["properties"]
    assert (step["metrics"]["maxItems"], step["webhooks"]["maxItems"]) == (MAX_METRICS, MAX_WEBHOOKS)


def test_service_match_over_its_cap_is_refused_at_its_line() -> None:
    """Routers AND each A/B match with each spec.service.match entry: both lists are capped."""

    def canary(count: int) -> str:
        items = "".join(f"    - {ITEMS['match'](i)}\n" for i in range(count))
        return manifest("match", 1).replace(
            "  service: {port: 9898}\n", f"  service:\n    port: 9898\n    match:\n{items}"
        )

    assert lint(canary(MAX_MATCHES)) == []
    text = canary(MAX_MATCHES + 1)
    errors = lint(text)
    assert [(line, path) for line, path, _, _ in errors] == [
        (line_of(text, "    match:"), "spec.service.match")
    ]
    assert f"at most {MAX_MATCHES} items" in errors[0][2]
    crd: dict[str, Any] = yaml.safe_load((REPO / "crds" / "canaries.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert schema["service"]["properties"]["match"]["maxItems"] == MAX_MATCHES


TEMPLATE = (
    "apiVersion: canaryctl.dev/v1beta1\nkind: MetricTemplate\nmetadata: {name: errors}\nspec:\n"
    "  provider: {type: prometheus, address: 'http://prometheus:9090'}\n  query: "
)


@pytest.mark.parametrize(
    ("head", "path"),
    [
        (
            f"{HEAD}    stepWeight: 10\n    metrics:\n    - name: errors\n"
            "      thresholdRange: {max: 1}\n      query: ",
            "spec.analysis.metrics[0].query",
        ),
        (TEMPLATE, "spec.query"),
    ],
)
def test_a_query_over_its_cap_is_refused_at_its_line(head: str, path: str) -> None:
    """A query is parsed each tick: its length bounds that work."""
    assert lint(head + "x" * MAX_QUERY_CHARS + "\n") == []
    text = head + "x" * (MAX_QUERY_CHARS + 1) + "\n"
    errors = lint(text)
    assert [(line, field) for line, field, _, _ in errors] == [(text.count("\n"), path)]
    assert f"at most {MAX_QUERY_CHARS} characters" in errors[0][2]
