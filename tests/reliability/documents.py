"""Generated Canary, MetricTemplate and AlertProvider documents: valid ones with random mutations.

Documents start valid (the engine suite's generated analyses, every metric provider and alert
provider type) and get up to three mutations: wrong types, unknown fields, out-of-range weights, bad
durations, missing required fields, dropped fields.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st
from pydantic import ValidationError

from canaryctl import registry
from canaryctl.api import models
from tests.engine.test_properties import analyses

JUNK = [None, "x", -1, 0, 150, 3.5, True, [], {}, [1], "-5s", "ten seconds", "1h", {"x": 1}]
OUT_OF_RANGE = [-10, 101, 1000]
BAD_DURATIONS = ["fast", "-1s", "10", "1 minute", "", 10]
WEIGHT_FIELDS = ["stepWeight", "maxWeight", "mirrorWeight", "threshold", "iterations"]
DURATION_FIELDS = ["interval"]
REQUIRED = {
    "Canary": [("spec",), ("spec", "targetRef"), ("spec", "service"), ("spec", "service", "port")],
    "MetricTemplate": [("spec",), ("spec", "query")],
    "AlertProvider": [("spec",), ("spec", "type")],
}


def _document(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    metadata = {"name": name, "namespace": "test"}
    return {"apiVersion": models.API_VERSION, "kind": kind, "metadata": metadata, "spec": spec}


@st.composite
def canaries(draw: st.DrawFn) -> dict[str, Any]:
    spec = {
        "provider": draw(st.sampled_from(["canaryctl", "istio", "kubernetes", "gatewayapi:v1"])),
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
        "service": {"port": draw(st.integers(1, 65535))},
        "analysis": {"interval": f"{draw(st.integers(10, 120))}s", **draw(analyses())},
    }
    return _document("Canary", "podinfo", spec)


metric_templates = st.builds(
    lambda provider: _document(
        "MetricTemplate",
        "latency",
        {"provider": {"type": provider, "address": "http://metrics.test"}, "query": "sum(up)"},
    ),
    st.sampled_from(registry.names(registry.METRICS)),
)
alert_providers = st.builds(
    lambda kind: _document("AlertProvider", "on-call", {"type": kind, "channel": "#deploys"}),
    st.sampled_from(registry.names(registry.NOTIFIERS)),
)


def _containers(node: Any, path: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], Any]]:
    """Every dict and list in the document with its path, the document itself first."""
    found: list[tuple[tuple[str | int, ...], Any]] = []
    if isinstance(node, dict | list):
        found.append((path, node))
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            found.extend(_containers(child, (*path, key)))
    return found


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A generated document with up to three random mutations."""
    doc = copy.deepcopy(draw(base))
    kind = doc["kind"]
    for _ in range(draw(st.integers(0, 3))):
        mutation = draw(st.sampled_from(["junk", "unknown", "range", "duration", "missing", "drop"]))
        _, container = draw(st.sampled_from(_containers(doc)))
        analysis = doc.get("spec", {}).get("analysis") if isinstance(doc.get("spec"), dict) else None
        if mutation == "junk" and container:
            key = draw(
                st.sampled_from(list(container) if isinstance(container, dict) else range(len(container)))
            )
            container[key] = copy.deepcopy(draw(st.sampled_from(JUNK)))  # never share a junk list
        elif mutation == "unknown" and isinstance(container, dict):
            container[draw(st.sampled_from(["stepWieght", "bogus", "extra_field"]))] = 1
        elif mutation == "range" and isinstance(analysis, dict):
            analysis[draw(st.sampled_from(WEIGHT_FIELDS))] = draw(st.sampled_from(OUT_OF_RANGE))
        elif mutation == "duration" and isinstance(analysis, dict):
            analysis[draw(st.sampled_from(DURATION_FIELDS))] = draw(st.sampled_from(BAD_DURATIONS))
        elif mutation == "missing":
            _drop(doc, draw(st.sampled_from(REQUIRED[kind])))
        elif mutation == "drop" and isinstance(container, dict) and container:
            del container[draw(st.sampled_from(sorted(container, key=str)))]
    return doc


def _drop(doc: dict[str, Any], path: tuple[str, ...]) -> None:
    parent: Any = doc
    for key in path[:-1]:
        parent = parent.get(key) if isinstance(parent, dict) else None
    if isinstance(parent, dict):
        parent.pop(path[-1], None)


documents = st.one_of(mutated(canaries()), mutated(metric_templates), mutated(alert_providers))


def model_rejects(doc: dict[str, Any]) -> bool:
    try:
        models.KINDS[doc["kind"]].model_validate(doc)
    except ValidationError:
        return True
    return False
