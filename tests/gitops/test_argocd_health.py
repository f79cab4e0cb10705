"""The Argo CD health check (examples/gitops/argocd/health.lua) run by Lua 5.1, the language version of
Argo CD's Lua VM, against Canary objects whose statuses the engine and the operator produced: the same
``obj`` global and ``{status, message}`` answer as Argo CD's resource customizations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

from tests.gitops.rollouts import ROLLOUTS

ARGOCD = Path(__file__).parents[2] / "examples" / "gitops" / "argocd"
SCRIPT = (ARGOCD / "health.lua").read_text(encoding="utf-8")
CUSTOMIZATION_KEY = "resource.customizations.health.canaryctl.dev_Canary"

EXPECTED = {
    "created": "Progressing",
    "initialized": "Healthy",
    "progressing": "Progressing",
    "paused": "Suspended",
    "waiting": "Suspended",
    "waiting-promotion": "Suspended",
    "promoting": "Progressing",
    "succeeded": "Healthy",
    "failed": "Degraded",
    "fast-failed": "Degraded",
    "invalid": "Degraded",
    "edited": "Progressing",
}


def health(obj: dict[str, Any], script: str = SCRIPT) -> dict[str, str]:
    """Runs the script as Argo CD does: ``obj`` is a global table, the chunk returns ``hs``."""
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = runtime.table_from(obj, recursive=True)
    answer = runtime.execute(script)
    return {key: answer[key] for key in ("status", "message")}


@pytest.mark.parametrize("stage", sorted(EXPECTED))
def test_health_of_each_stage(stage: str) -> None:
    obj = ROLLOUTS[stage]()
    assert health(obj)["status"] == EXPECTED[stage]


def test_messages_say_where_the_rollout_is_and_why_it_failed() -> None:
    assert health(ROLLOUTS["progressing"]())["message"].startswith("Progressing, canary weight 50%: Step ")
    assert health(ROLLOUTS["fast-failed"]())["message"] == (
        "Failed: fastFail: canary error rate 40.0% over 100 requests exceeds 10%"
    )
    invalid = health(ROLLOUTS["invalid"]())["message"]
    assert invalid.startswith("InvalidSpec: spec.analysis.stepWeight")
    assert health(ROLLOUTS["edited"]())["message"] == "Waiting for canaryctl to observe generation 4"
    assert "approval ship" in health(ROLLOUTS["waiting-promotion"]())["message"]


def test_the_argocd_cm_example_carries_the_script_unchanged() -> None:
    config = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text(encoding="utf-8"))
    assert config["kind"] == "ConfigMap" and config["metadata"]["name"] == "argocd-cm"
    assert config["data"][CUSTOMIZATION_KEY] == SCRIPT
