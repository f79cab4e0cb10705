"""An AlertProvider's ``type`` names a notifier some installed distribution registers; the operator says
on the AlertProvider itself (a ``Ready`` condition, as ``kubectl get alertproviders`` shows) whether it
can be used, since the CRD cannot list the types of notifiers installed later."""

from __future__ import annotations

import asyncio
from typing import Any

import kmock
import pytest

from canaryctl import registry
from canaryctl.api.models import API_VERSION, AlertProviderSpec
from canaryctl.operator.handlers import alert_provider_status
from canaryctl_mesh.kube import KubeObjects
from tests.operator.conftest import StartOperator
from tests.operator.helpers import NS, wait_for

BUILT_IN = "discord, gchat, generic, msteams, rocket, slack"


def alert_provider(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "AlertProvider",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


async def ready(objects: KubeObjects, name: str, status: str) -> dict[str, Any]:
    """The AlertProvider's Ready condition, once it has the given status."""
    found: dict[str, Any] = {}

    async def reported() -> bool:
        stored = await objects.get(API_VERSION, "AlertProvider", NS, name) or {}
        conditions = (stored.get("status") or {}).get("conditions") or []
        found.update(next((c for c in conditions if c["type"] == "Ready"), {}))
        return found.get("status") == status

    await wait_for(reported, what=f"AlertProvider {name} Ready={status}")
    return found


@pytest.mark.asyncio
async def test_an_unknown_type_is_reported_on_the_alert_provider(
    objects: KubeObjects, emulator: kmock.KubernetesEmulator, start_operator: StartOperator
) -> None:
    await objects.apply(alert_provider("pager", type="opsgenie", address="http://127.0.0.1:9/"))
    await objects.apply(alert_provider("team", type="generic", address="http://127.0.0.1:9/"))
    await start_operator()

    refused = await ready(objects, "pager", "False")
    assert refused["reason"] == "InvalidSpec"
    assert "spec.type" in refused["message"]
    assert (
        f"alert provider type 'opsgenie' is not supported by canaryctl; use one of {BUILT_IN}"
        in (refused["message"])
    )
    accepted = await ready(objects, "team", "True")
    assert accepted["reason"] == "Valid"

    await objects.apply(alert_provider("pager", type="slack", address="http://127.0.0.1:9/"))
    fixed = await ready(objects, "pager", "True")
    assert fixed["lastTransitionTime"] >= refused["lastTransitionTime"]

    # The status write's own watch event writes nothing more: no loop of status updates.
    versions = emulator.objects["canaryctl.dev/v1beta1/alertproviders", NS, "team"].history
    before = len(versions)
    await asyncio.sleep(1.0)
    assert len(emulator.objects["canaryctl.dev/v1beta1/alertproviders", NS, "team"].history) == before


def test_the_status_is_rewritten_only_when_it_changes() -> None:
    body = alert_provider("team", type="generic", address="http://127.0.0.1:9/")
    first = alert_provider_status(body, "2026-01-01T00:00:00Z")
    assert first is not None and first["conditions"][0]["status"] == "True"
    assert alert_provider_status({**body, "status": first}, "2026-01-01T00:01:00Z") is None
    broken = {**body, "spec": {"type": "opsgenie"}, "status": first}
    second = alert_provider_status(broken, "2026-01-01T00:02:00Z")
    assert second is not None
    assert [(c["status"], c["lastTransitionTime"]) for c in second["conditions"]] == [
        ("False", "2026-01-01T00:02:00Z")
    ]


def test_a_notifier_a_third_party_registers_is_a_valid_type(monkeypatch: pytest.MonkeyPatch) -> None:
    """The type is checked against the registry, not a fixed list: installing a distribution that
    registers a notifier makes its name valid, with no CRD change."""
    with pytest.raises(ValueError, match="alert provider type 'opsgenie' is not supported"):
        AlertProviderSpec.model_validate({"type": "opsgenie"})
    names = {name: None for name in ("slack", "opsgenie")}
    monkeypatch.setattr(registry, "_registered", lambda group: names)
    assert AlertProviderSpec.model_validate({"type": "opsgenie"}).type == "opsgenie"
