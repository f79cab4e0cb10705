"""The chart's noCrossNamespaceRefs and sharedNamespaces values reach the controller as flags its real parser
accepts."""

from __future__ import annotations

import yaml

from canaryctl.cli.main import build_parser
from tests.chart.conftest import CHART, NAMESPACE, RELEASE, REQUIRED_FLAGS, run_helm


def _controller_args(helm: str, *values: str) -> list[str]:
    result = run_helm(
        helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *REQUIRED_FLAGS, *values
    )
    assert result.returncode == 0, result.stderr
    controller = next(
        doc
        for doc in yaml.safe_load_all(result.stdout)
        if doc and doc["kind"] == "Deployment" and doc["metadata"]["name"] == RELEASE
    )
    args: list[str] = controller["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def test_no_cross_namespace_refs_value_turns_the_flag_on(helm: str) -> None:
    assert "--no-cross-namespace-refs" not in _controller_args(helm)
    args = _controller_args(helm, "--set", "controller.noCrossNamespaceRefs=true")
    assert "--no-cross-namespace-refs" in args
    parsed = build_parser("canaryctl", "operator").parse_args(["operator", *args])  # the image's entry point
    assert parsed.no_cross_namespace_refs is True


def test_shared_namespaces_reach_the_controller(helm: str) -> None:
    assert "--shared-namespace" not in _controller_args(helm)
    args = _controller_args(helm, "--set", "controller.sharedNamespaces={istio-system,monitoring}")
    parsed = build_parser("canaryctl", "operator").parse_args(["operator", *args])
    assert parsed.shared_namespace == ["istio-system", "monitoring"]
    refused = run_helm(
        helm,
        "template",
        RELEASE,
        str(CHART),
        *REQUIRED_FLAGS,
        "--set",
        "controller.sharedNamespaces={Not_A_Name}",
    )
    assert refused.returncode != 0 and "sharedNamespaces" in refused.stderr
