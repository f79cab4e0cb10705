"""The chart's operating parts with the real helm: a values schema that refuses typos, the required
Prometheus, probes, PDB and spread, the controller's flags through the real CLI parser, NOTES, the
Prometheus Operator objects checked against prometheus-operator's own CRD schemas (vendored, v0.93.0),
the alert rules through promtool, the `helm test` hook run against a live controller, and SMI CRDs left
to a cluster that already serves them."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from canaryctl.cli.main import build_parser
from canaryctl_mesh.injector import InjectorSettings, proxy_container
from tests.chart.conftest import CHART, NAMESPACE, RELEASE, Manifest, run_helm
from tests.chart.test_chart_commands import image_command
from tests.chart.test_network_policies import selects
from tests.yaml_documents import documents

Render = Callable[[str], list[Manifest]]
SCHEMAS = Path(__file__).parent / "schemas" / "prometheus-operator-0.93.0"
PROMETHEUS_URL = "controller.prometheusUrl=http://prometheus-operated.monitoring:9090"


def one(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def kinds(manifests: list[Manifest]) -> set[str]:
    return {m["kind"] for m in manifests}


def template(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)


def render_set(helm: str, *args: str) -> list[Manifest]:
    result = template(helm, "--set", PROMETHEUS_URL, *args)
    assert result.returncode == 0, result.stderr
    return documents(result.stdout)


# --- values ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("controler.replicas=2", "additional properties 'controler' not allowed"),
        ("controller.replica=2", "additional properties 'replica' not allowed"),
        ("serviceMonitor.enable=true", "additional properties 'enable' not allowed"),
        ("controller.logFormat=xml", "/controller/logFormat': value must be one of"),
        ("controller.metricsCompat=prometheus", "/controller/metricsCompat': value must be one of"),
        ("smi.installCRDs=maybe", "/smi/installCRDs': value must be one of"),
    ],
)
def test_the_values_schema_refuses_typos_and_bad_values(helm: str, setting: str, complaint: str) -> None:
    lint = run_helm(helm, "lint", str(CHART), "--strict", "--set", PROMETHEUS_URL, "--set", setting)
    assert lint.returncode != 0 and complaint in lint.stdout + lint.stderr, lint.stdout + lint.stderr
    rendered = template(helm, "--set", PROMETHEUS_URL, "--set", setting)
    assert rendered.returncode != 0 and complaint in rendered.stderr, rendered.stderr


def test_the_values_file_follows_its_schema(helm: str) -> None:
    """Every key of values.yaml is in the schema (a key added without one fails here and at install)."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator(schema).validate(yaml.safe_load((CHART / "values.yaml").read_text()))
    assert run_helm(helm, "lint", str(CHART), "--strict", "--set", PROMETHEUS_URL).returncode == 0


def test_prometheus_is_a_required_value(helm: str) -> None:
    result = template(helm)
    assert result.returncode != 0
    assert "controller.prometheusUrl is required" in result.stderr
    args = one(render_set(helm), "Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--prometheus-url") + 1] == PROMETHEUS_URL.split("=", 1)[1]


# --- the controller ---------------------------------------------------------------------------------


def operator_args(manifest: Manifest) -> argparse.Namespace:
    """The container's command line through the real CLI parser (it exits on an unknown flag)."""
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    return build_parser("canaryctl").parse_args(image_command("controller", container["args"])[1:])


def test_controller_probes_budget_spread_and_labels(render: Render) -> None:
    single = one(render("default"), "Deployment", RELEASE)["spec"]["template"]
    container = single["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http-health"}, probe
    assert "topologySpreadConstraints" not in single["spec"]
    manifests = render("peering-ha")
    pod = one(manifests, "Deployment", RELEASE)["spec"]["template"]
    assert pod["metadata"]["labels"]["team"] == "rollouts"
    (spread,) = pod["spec"]["topologySpreadConstraints"]
    selector = one(manifests, "Deployment", RELEASE)["spec"]["selector"]["matchLabels"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == selector
    budget = one(manifests, "PodDisruptionBudget", RELEASE)["spec"]
    assert budget == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
    service = one(manifests, "Service", RELEASE)
    assert {p["name"] for p in service["spec"]["ports"]} == {"http-metrics", "http-health"}


def test_controller_flags_reach_the_real_parser(render: Render) -> None:
    args = operator_args(one(render("monitoring"), "Deployment", RELEASE))
    assert (args.metrics_compat, args.log_format, args.log_level) == ("flagger", "json", "DEBUG")
    args = operator_args(one(render("default"), "Deployment", RELEASE))
    assert (args.metrics_compat, args.log_format, args.log_level) == ("canaryctl", "text", "INFO")
    hook = one(render("namespaced"), "Job", f"{RELEASE}-release-finalizers")
    args = operator_args(hook)
    assert args.release_finalizers and args.namespace == ["team-a", "team-b"]


def test_tracing_value_sets_the_sdks_variables(helm: str) -> None:
    endpoint = "http://otel-collector.monitoring:4318/v1/traces"
    manifests = render_set(helm, "--set", f"controller.tracing.otlpEndpoint={endpoint}")
    env = one(manifests, "Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0]["env"]
    values = {e["name"]: e.get("value") for e in env}
    assert values["OTEL_TRACES_EXPORTER"] == "otlp_json_http"
    assert values["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] == endpoint
    default = one(render_set(helm), "Deployment", RELEASE)["spec"]["template"]["spec"]["containers"][0]
    assert not [e for e in default["env"] if e["name"].startswith("OTEL_")]


def test_notes_name_the_api_group(helm: str) -> None:
    result = run_helm(helm, "install", RELEASE, str(CHART), "--dry-run=client", "--set", PROMETHEUS_URL)
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "kubectl get canaries.canaryctl.dev --all-namespaces" in notes
    assert "kubectl get canaries " not in notes  # next to Flagger this would be ambiguous


# --- Prometheus Operator objects ------------------------------------------------------------------


def crd_schema(plural: str) -> dict[str, Any]:
    crd = yaml.safe_load((SCHEMAS / f"monitoring.coreos.com_{plural}.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


MONITORING_KINDS = [
    ("ServiceMonitor", "servicemonitors"),
    ("PodMonitor", "podmonitors"),
    ("PrometheusRule", "prometheusrules"),
]


@pytest.mark.parametrize(("kind", "plural"), MONITORING_KINDS)
def test_monitoring_objects_follow_prometheus_operators_schema(
    render: Render, kind: str, plural: str
) -> None:
    objects = [m for m in render("monitoring") if m["kind"] == kind]
    assert objects, f"no {kind} rendered"
    validator = jsonschema.Draft7Validator(crd_schema(plural))
    for manifest in objects:
        errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(manifest)]
        assert not errors, errors
    assert not [m for m in render("default") if m["kind"] == kind], "opt-in only"


def test_the_schemas_catch_a_wrong_object(render: Render) -> None:
    monitor = next(m for m in render("monitoring") if m["kind"] == "PodMonitor")
    monitor["spec"]["podMetricsEndpoints"][0]["relabelings"][0]["action"] = "rewrite"
    assert list(jsonschema.Draft7Validator(crd_schema("podmonitors")).iter_errors(monitor))


def test_sidecar_pod_monitor_scrapes_the_injected_port(render: Render) -> None:
    monitor = one(render("monitoring"), "PodMonitor", f"{RELEASE}-sidecars")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    ports = {p["name"]: p["containerPort"] for p in proxy_container(InjectorSettings())["ports"]}
    assert endpoint["port"] in ports and endpoint["path"] == "/stats/prometheus"
    targets = {r["targetLabel"] for r in endpoint["relabelings"]}
    assert {"kubernetes_namespace", "kubernetes_pod_name"} <= targets  # Flagger's builtin query labels
    assert monitor["spec"]["namespaceSelector"] == {"any": True}


def rules_file(render: Render, directory: Path, value_set: str = "monitoring") -> Path:
    rule = next(m for m in render(value_set) if m["kind"] == "PrometheusRule")
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    return path


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool (Debian's prometheus package) is not installed")
    return found


def test_rules_pass_promtool_check(render: Render, tmp_path: Path, promtool: str) -> None:
    command = [promtool, "check", "rules", str(rules_file(render, tmp_path))]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


def expect(
    alertname: str, at: str, labels: dict[str, str] | None = None, description: str = ""
) -> dict[str, Any]:
    """promtool's expectation: ``alertname`` firing at ``at`` with ``labels``, or not at all (None)."""
    if labels is None:
        return {"eval_time": at, "alertname": alertname, "exp_alerts": []}
    summary = SUMMARIES[alertname]
    annotations = {"summary": summary, "description": description}
    alert = {"exp_labels": {"severity": "warning", **labels}, "exp_annotations": annotations}
    return {"eval_time": at, "alertname": alertname, "exp_alerts": [alert]}


SUMMARIES = {
    "CanaryFailed": "Canary rollout failed",
    "CanaryAnalysisHalted": "Canary analysis halted",
    "CanaryControllerDown": "canaryctl controller down",
    "MeshConfigRejected": "A mesh sidecar rejected its configuration",
}


def rejected(namespace: str) -> str:
    return (
        f"Sidecars in {namespace} rejected configuration the mesh control plane sent "
        "(canaryctl_mesh_xds_nacks_total; the control plane logs the error): they keep serving their last "
        "accepted routes, so weight changes and new routes do not reach them."
    )


def series(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    selector = ", ".join(f'{key}="{value}"' for key, value in labels.items())
    return {"series": f"{name}{{{selector}}}", "values": values}


def test_rules_fire_on_what_they_describe(render: Render, tmp_path: Path, promtool: str) -> None:
    """promtool's rule unit tests: each alert fires on its condition and stays quiet otherwise. podinfo
    fails at 2m; api progresses but has not moved since 0 (analysis interval 60 s, halted after 3)."""
    scrape = {"instance": "c:8080", "job": "canaryctl"}
    podinfo = {"name": "podinfo", "namespace": "test", **scrape}
    api = {"name": "api", "namespace": "test", **scrape}
    sidecar = {"namespace": "shop", "pod": "web-1", "instance": "10.0.0.7:15090"}
    # meshd's series carry the sidecars' namespace (its ServiceMonitor honours their labels).
    meshd = {"job": f"{RELEASE}-mesh", "instance": "10.0.0.9:8080"}
    progress, interval = (
        "canaryctl_canary_last_progress_timestamp_seconds",
        "canaryctl_canary_analysis_interval_seconds",
    )
    tests = {
        "rule_files": [str(rules_file(render, tmp_path))],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    series("flagger_canary_status", podinfo, "0 0 2 2 2 2"),
                    series(progress, podinfo, "0+60x10"),
                    series(interval, podinfo, "60x10"),
                    series("flagger_canary_status", api, "0x10"),
                    series(progress, api, "0x10"),
                    series(interval, api, "60x10"),
                    series("up", {"job": RELEASE, "namespace": NAMESPACE}, "1 1 1 0 0 0 0 0 0 0"),
                    series("envoy_cluster_manager_cds_update_rejected", sidecar, "0 0 0 0 0 1x10"),
                    series(
                        "canaryctl_mesh_xds_rejecting_sidecars",
                        {"namespace": "pay", **meshd},
                        "0 0 0 1 1 0x10",
                    ),
                    series(
                        "canaryctl_mesh_xds_nacks_total",
                        {"namespace": "cart", "type": "VirtualHost", **meshd},
                        "0x11 1 1 1",
                    ),
                ],
                "alert_rule_test": [
                    expect("CanaryFailed", "2m"),
                    expect(
                        "CanaryFailed",
                        "4m",
                        podinfo,
                        "The rollout of podinfo in test failed: traffic is back on the primary "
                        "(kubectl canary status).",
                    ),
                    expect("CanaryAnalysisHalted", "2m"),
                    expect(
                        "CanaryAnalysisHalted",
                        "4m",
                        api,
                        "The rollout of api in test has not moved for 3 analysis intervals (no metric data, "
                        "failing checks or a closed gate).",
                    ),
                    expect("CanaryControllerDown", "2m"),
                    expect(
                        "CanaryControllerDown",
                        "9m",
                        {},
                        "No canaryctl controller has been scraped successfully; rollouts do not progress.",
                    ),
                    expect("MeshConfigRejected", "2m"),
                    expect("MeshConfigRejected", "4m", {"namespace": "pay"}, rejected("pay")),
                    expect("MeshConfigRejected", "6m", {"namespace": "shop"}, rejected("shop")),
                    expect("MeshConfigRejected", "11m"),
                    expect("MeshConfigRejected", "13m", {"namespace": "cart"}, rejected("cart")),
                ],
            }
        ],
    }
    path = tmp_path / "rules_test.yaml"
    path.write_text(yaml.safe_dump(tests))
    command = [promtool, "test", "rules", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboards_ship_with_the_configured_names(render: Render) -> None:
    maps = {m["metadata"]["name"]: m for m in render("monitoring") if m["kind"] == "ConfigMap"}
    shipped = {path.stem for path in (CHART / "dashboards").glob("*.json")}
    assert set(maps) == {f"{RELEASE}-dashboard-{name}" for name in shipped} and shipped
    rollouts = maps[f"{RELEASE}-dashboard-rollouts"]
    assert rollouts["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(rollouts["data"]["canaryctl-rollouts.json"])
    prefix = next(v for v in dashboard["templating"]["list"] if v["name"] == "prefix")
    assert prefix["current"]["value"] == "flagger"  # the monitoring set runs --metrics-compat flagger


# --- install paths ------------------------------------------------------------------------------


def smi_crds(manifests: list[Manifest]) -> set[str]:
    return {
        m["metadata"]["name"]
        for m in manifests
        if m["kind"] == "CustomResourceDefinition" and m["metadata"]["name"].endswith("smi-spec.io")
    }


def test_smi_crds_are_left_to_a_cluster_that_serves_them(helm: str) -> None:
    specs = {"httproutegroups.specs.smi-spec.io", "tcproutes.specs.smi-spec.io"}
    access = {"traffictargets.access.smi-spec.io"}
    both = {"trafficsplits.split.smi-spec.io", *specs, *access}
    assert smi_crds(render_set(helm)) == both  # nothing there: install
    served = ("--api-versions", "split.smi-spec.io/v1alpha2", "--api-versions", "specs.smi-spec.io/v1alpha2")
    assert smi_crds(render_set(helm, *served)) == access  # Linkerd SMI or OSM installed the others
    assert smi_crds(render_set(helm, *served, "--api-versions", "access.smi-spec.io/v1alpha3")) == set()
    assert smi_crds(render_set(helm, "--api-versions", "split.smi-spec.io/v1alpha2")) == {*specs, *access}
    assert smi_crds(render_set(helm, *served, "--set", "smi.installCRDs=true")) == both
    assert smi_crds(render_set(helm, "--set", "smi.installCRDs=false")) == set()


def test_meshd_service_monitor_scrapes_the_control_plane_and_the_injector(render: Render) -> None:
    """It selects both meshd Services; each one's metrics port reaches the port meshd is told to serve."""
    manifests = render("monitoring")
    monitor = one(manifests, "ServiceMonitor", f"{RELEASE}-meshd")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["honorLabels"] is True
    selector = monitor["spec"]["selector"]
    services = [
        m
        for m in manifests
        if m["kind"] == "Service"
        and selects(selector, m["metadata"]["labels"])
        and any(p["name"] == endpoint["port"] for p in m["spec"]["ports"])
    ]
    assert {s["metadata"]["name"] for s in services} == {f"{RELEASE}-mesh", f"{RELEASE}-injector"}
    for service in services:
        (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
        (deployment,) = [
            m
            for m in manifests
            if m["kind"] == "Deployment"
            and selects(
                {"matchLabels": service["spec"]["selector"]}, m["spec"]["template"]["metadata"]["labels"]
            )
        ]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        (served,) = [p["containerPort"] for p in container["ports"] if p["name"] == port["targetPort"]]
        assert container["args"][container["args"].index("--metrics-port") + 1] == str(served)
