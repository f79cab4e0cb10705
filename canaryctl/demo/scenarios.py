"""The demo's scenarios: each a canary version (error rate, latency) and the Canary that judges it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from canaryctl.api.models import Phase

LOAD_SECONDS = 180
INTERVAL = "10s"


@dataclass(frozen=True)
class Wiring:
    """Where the demo's parts listen, known before the Canary is written."""

    listen_url: str
    loadtester_url: str
    slack_url: str


def load_hook(
    wiring: Wiring, kind: str, name: str = "load-test", header: str | None = None
) -> dict[str, Any]:
    """Traffic through the load tester, as a Flagger user would drive it."""
    extra = f'-H "{header}" ' if header else ""
    command = f"hey -z {LOAD_SECONDS}s -q 25 -c 2 {extra}{wiring.listen_url}/"
    return {
        "name": name,
        "type": kind,
        "url": f"{wiring.loadtester_url}/",
        "timeout": "5s",
        "metadata": {"type": "cmd", "cmd": command},
    }


def golden_metrics(success_min: float = 99) -> list[dict[str, Any]]:
    return [
        {"name": "request-success-rate", "interval": "30s", "thresholdRange": {"min": success_min}},
        {"name": "request-duration", "interval": "30s", "thresholdRange": {"max": 500}},
    ]


def _healthy(w: Wiring) -> dict[str, Any]:
    return {
        "stepWeight": 25,
        "maxWeight": 50,
        "metrics": golden_metrics(),
        "webhooks": [load_hook(w, "pre-rollout"), load_hook(w, "rollout")],
    }


def _faulty(w: Wiring) -> dict[str, Any]:
    return _healthy(w) | {"fastFail": {"period": "5s", "maxErrorRate": 10, "minRequests": 20}}


def _ab(w: Wiring) -> dict[str, Any]:
    header = "x-canary: insider"
    return {
        "iterations": 2,
        "match": [{"headers": {"x-canary": {"exact": "insider"}}}],
        "metrics": golden_metrics(),
        "webhooks": [
            load_hook(w, "pre-rollout"),
            load_hook(w, "pre-rollout", "insiders", header),
            load_hook(w, "rollout", "insiders", header),
        ],
    }


def _mirror(w: Wiring) -> dict[str, Any]:
    return {
        "steps": [
            {"mirror": {"percentage": 50, "duration": "20s"}},
            {"setWeight": 50},
            {"analysis": {"iterations": 1}},
        ],
        "metrics": golden_metrics(),
        "webhooks": [load_hook(w, "pre-rollout")],
    }


def _fault_step(w: Wiring) -> dict[str, Any]:
    return {
        "steps": [
            {"setWeight": 20},
            {"fault": {"abort": {"httpStatus": 503, "percentage": 10}, "duration": "20s"}},
            {"setWeight": 50},
            {"analysis": {"iterations": 1}},
        ],
        "metrics": golden_metrics(success_min=80),
        "webhooks": [load_hook(w, "pre-rollout")],
    }


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    expected: Phase
    analysis: Callable[[Wiring], dict[str, Any]]
    canary_error_rate: float = 0.0
    canary_latency_ms: float = 5.0


SCENARIOS = {
    s.name: s
    for s in (
        Scenario(
            "healthy", "v2 is as good as v1: weights 25%, 50%, then promotion", Phase.SUCCEEDED, _healthy
        ),
        Scenario(
            "faulty",
            "v2 answers 30% 5xx: fastFail rolls it back",
            Phase.FAILED,
            _faulty,
            canary_error_rate=0.3,
        ),
        Scenario("ab", "only requests with x-canary: insider reach v2", Phase.SUCCEEDED, _ab),
        Scenario("mirror", "v2 gets a 50% shadow copy first; users never see it", Phase.SUCCEEDED, _mirror),
        Scenario(
            "fault-step",
            "10% of v2's traffic is aborted on purpose; judged by caller-side metrics",
            Phase.SUCCEEDED,
            _fault_step,
        ),
    )
}


def manifests(scenario: Scenario, wiring: Wiring) -> str:
    """The YAML a user would write for this scenario: the Canary and its Slack AlertProvider."""
    canary = {
        "apiVersion": "canaryctl.dev/v1beta1",
        "kind": "Canary",
        "metadata": {"name": f"demo-{scenario.name}", "namespace": "demo"},
        "spec": {
            "provider": "canaryctl",
            "targetRef": {"kind": "Service", "name": "demo"},
            "service": {"port": 80},
            "progressDeadlineSeconds": 120,
            "analysis": {
                "interval": INTERVAL,
                "threshold": 2,
                "alerts": [{"name": "team", "severity": "info", "providerRef": {"name": "demo-slack"}}],
                **scenario.analysis(wiring),
            },
        },
    }
    provider = {
        "apiVersion": "canaryctl.dev/v1beta1",
        "kind": "AlertProvider",
        "metadata": {"name": "demo-slack", "namespace": "demo"},
        "spec": {"type": "slack", "channel": "deploys", "address": f"{wiring.slack_url}/services/demo"},
    }
    return yaml.safe_dump_all([canary, provider], sort_keys=False)
