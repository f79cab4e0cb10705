"""spec.service fields the routers write where Flagger's routers write them (``pkg/router/*.go``), each
object checked against the schema of the project that reads it (Istio 1.30, Gateway API 1.6)."""

from __future__ import annotations

from typing import Any

import pytest

from canaryctl.engine.types import RouteState
from canaryctl_providers.routers import gatewayapi, istio
from tests.api.test_flagger_fields import lint
from tests.providers.routers.cases import STATES, make_canary
from tests.schemas.validation import validate

REWRITE = {"uri": "/v2/", "authority": "api.example.com", "type": "ReplacePrefixMatch"}


@pytest.mark.parametrize("state", ["weights-90-10", "ab"])
def test_istio_rewrite_carries_uri_and_authority_only(state: str) -> None:
    """Flagger's istio.go sets every HTTP route's rewrite from ``GetIstioRewrite()`` (canary.go), which
    copies ``uri`` and ``authority``: ``type`` is Gateway API's path modifier, and Istio's
    VirtualService schema has no such field (an API server with Istio's CRD refuses it)."""
    canary = make_canary({"port": 9898, "rewrite": REWRITE})
    service = istio.virtual_service(canary, STATES[state])
    validate(service)
    rewrites = [route["rewrite"] for route in service["spec"]["http"]]
    assert rewrites and all(r == {"uri": "/v2/", "authority": "api.example.com"} for r in rewrites)


def rules(service: dict[str, Any], state: RouteState) -> list[dict[str, Any]]:
    route = gatewayapi.http_route(make_canary(service), state)
    validate(route)
    found: list[dict[str, Any]] = route["spec"]["rules"]
    return found


@pytest.mark.parametrize("state", ["weights-90-10", "ab"])
def test_gateway_api_backend_timeout(state: str) -> None:
    """TestGatewayAPIRouter_Reconcile (gateway_api_test.go): ``timeout`` is each rule's
    ``timeouts.request`` and ``backendTimeout`` its ``timeouts.backendRequest``
    (makeHTTPRouteTimeouts), on the weighted rule and on the A/B rule alike."""
    service = {"port": 80, "targetPort": 9898, "timeout": "10s", "backendTimeout": "5s"}
    found = rules(service, STATES[state])
    assert len(found) == (2 if state == "ab" else 1)
    assert all(rule["timeouts"] == {"request": "10s", "backendRequest": "5s"} for rule in found)


def test_gateway_api_backend_timeout_alone() -> None:
    """Either timeout may be set without the other."""
    found = rules({"port": 9898, "backendTimeout": "2s"}, STATES["weights-90-10"])
    assert found[0]["timeouts"] == {"backendRequest": "2s"}


@pytest.mark.parametrize(
    ("timeouts", "valid"),
    [
        ({"timeout": "10s", "backendTimeout": "5s"}, True),
        ({"timeout": "0s", "backendTimeout": "5s"}, True),
        ({"timeout": "5s", "backendTimeout": "10s"}, False),
    ],
)
def test_a_backend_timeout_longer_than_the_request_is_refused_at_its_line(
    timeouts: dict[str, str], valid: bool
) -> None:
    """Gateway API's HTTPRoute schema refuses it (CEL: "backendRequest timeout cannot be longer than
    request timeout"); lint and the CRD say so where the Canary is written, not at the HTTPRoute."""
    service = "".join(f"    {key}: {value}\n" for key, value in timeouts.items())
    text = (
        "apiVersion: canaryctl.dev/v1beta1\nkind: Canary\nmetadata: {name: podinfo}\nspec:\n"
        "  provider: gatewayapi:v1\n  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}\n"
        f"  service:\n    port: 9898\n{service}"
    )
    errors = [problem for problem in lint(text) if problem[3] == "error"]
    if valid:
        assert errors == []
    else:
        assert [(line, path) for line, path, _, _ in errors] == [(7, "spec.service")]
        assert "backendTimeout 10s must not be longer than timeout 5s" in errors[0][2]
