"""The chart without canaryctl's controller: the included mesh alone, for any SMI writer.

`controller.enabled=false, loadtester.enabled=false` must render the mesh (control plane, injector,
their accounts, RBAC, NetworkPolicies, webhook, SMI CRDs) and nothing of the controller, with no
Prometheus to name; the mesh's RBAC must cover what `canaryctl-meshd control-plane` watches.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable

import pytest
import yaml

from canaryctl_mesh.kube import KINDS
from canaryctl_mesh.meshd.watch import WATCHED
from tests.chart.conftest import CHART, NAMESPACE, RELEASE, REPO, Manifest, render_values, run_helm
from tests.chart.test_network_policies import allowed, component, pod
from tests.yaml_documents import documents

Render = Callable[[str], list[Manifest]]
MESH_ONLY = ("--set", "controller.enabled=false", "--set", "loadtester.enabled=false")
RBAC_RULES = yaml.safe_load((CHART / "files" / "rbac.yaml").read_text())

# Everything `helm install` creates for the mesh alone (crds/ included: helm installs that folder
# whatever the values say), by kind and name.
MESH_OBJECTS = {
    ("ServiceAccount", "canaryctl-mesh"),
    ("ServiceAccount", "canaryctl-injector"),
    ("ClusterRole", "canaryctl-mesh"),
    ("ClusterRoleBinding", "canaryctl-mesh"),
    ("ClusterRole", "canaryctl-injector"),
    ("ClusterRoleBinding", "canaryctl-injector"),
    ("ClusterRole", "canaryctl-injector-webhook"),
    ("ClusterRoleBinding", "canaryctl-injector-webhook"),
    ("Role", "canaryctl-mesh-ca"),
    ("RoleBinding", "canaryctl-mesh-ca"),
    ("Deployment", "canaryctl-mesh"),
    ("Service", "canaryctl-mesh"),
    ("Deployment", "canaryctl-injector"),
    ("Service", "canaryctl-injector"),
    ("MutatingWebhookConfiguration", "canaryctl-injector"),
    ("NetworkPolicy", "canaryctl-mesh"),
    ("NetworkPolicy", "canaryctl-injector"),
    ("CustomResourceDefinition", "trafficsplits.split.smi-spec.io"),
    ("CustomResourceDefinition", "httproutegroups.specs.smi-spec.io"),
    ("CustomResourceDefinition", "tcproutes.specs.smi-spec.io"),
    ("CustomResourceDefinition", "traffictargets.access.smi-spec.io"),
    ("CustomResourceDefinition", "trafficpolicies.mesh.canaryctl.dev"),
    # crds/: helm cannot leave these out by value.
    ("CustomResourceDefinition", "canaries.canaryctl.dev"),
    ("CustomResourceDefinition", "metrictemplates.canaryctl.dev"),
    ("CustomResourceDefinition", "alertproviders.canaryctl.dev"),
    ("CustomResourceDefinition", "kopfpeerings.kopf.dev"),
    ("CustomResourceDefinition", "clusterkopfpeerings.kopf.dev"),
}


def _objects(manifests: list[Manifest]) -> set[tuple[str, str]]:
    return {(m["kind"], m["metadata"]["name"]) for m in manifests}


def _one(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    (found,) = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    return found


def test_the_mesh_alone_renders_only_the_mesh_and_needs_no_prometheus(helm: str) -> None:
    result = run_helm(
        helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--include-crds", *MESH_ONLY
    )
    assert result.returncode == 0, result.stderr
    manifests = documents(result.stdout)
    assert _objects(manifests) == MESH_OBJECTS
    components = {(m["metadata"].get("labels") or {}).get("app.kubernetes.io/component") for m in manifests}
    assert components <= {"mesh", "injector", None}, components  # None: the CRDs


def _documented_command(page: str) -> list[str]:
    """The `helm upgrade --install` line of ``page`` that installs the mesh alone, as words."""
    text = (REPO / page).read_text().replace("\\\n", " ")
    lines = [
        line
        for line in text.splitlines()
        if "helm upgrade --install" in line and "loadtester.enabled=false" in line
    ]
    assert len(lines) == 1, f"{page}: {len(lines)} mesh-only install commands"
    words = shlex.split(lines[0][lines[0].index("helm upgrade") :].split("`")[0])
    assert words[:5] == ["helm", "upgrade", "--install", RELEASE, "./charts/canaryctl"], words
    return words[5:]


@pytest.mark.parametrize("page", ["README.md", "docs/deploy.md", "docs/mesh.md"])
def test_the_documented_command_installs_the_mesh_alone(helm: str, page: str) -> None:
    flags = [word for word in _documented_command(page) if word != "--create-namespace"]
    result = run_helm(helm, "template", RELEASE, str(CHART), "--include-crds", *flags)
    assert result.returncode == 0, result.stderr
    assert _objects(documents(result.stdout)) == MESH_OBJECTS


def test_the_mesh_rbac_covers_what_meshd_watches(render: Render) -> None:
    manifests = render("mesh-only")
    rules = _one(manifests, "ClusterRole", "canaryctl-mesh")["rules"]
    assert rules == RBAC_RULES["meshControlPlane"]["namespaced"] + RBAC_RULES["meshControlPlane"]["cluster"]
    granted = {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    # The control plane's reflectors list and watch each kind it translates (canaryctl_mesh.meshd.watch).
    for api_version, kind in WATCHED:
        group = api_version.rpartition("/")[0]
        for verb in ("list", "watch"):
            assert (group, KINDS[(api_version, kind)].plural, verb) in granted, (api_version, kind, verb)
    # Sidecars' tokens (TokenReview) and the Events on refused splits.
    assert ("authentication.k8s.io", "tokenreviews", "create") in granted
    assert {("", "events", "create"), ("", "events", "patch")} <= granted
    for name in ("canaryctl-mesh", "canaryctl-injector"):
        account = _one(manifests, "Deployment", name)["spec"]["template"]["spec"]["serviceAccountName"]
        binding = _one(manifests, "ClusterRoleBinding", name)
        assert binding["roleRef"]["name"] == name
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    assert (
        _one(manifests, "ClusterRole", "canaryctl-injector")["rules"] == RBAC_RULES["meshInjector"]["cluster"]
    )


def test_the_mesh_alone_in_listed_namespaces_gets_roles_there(helm: str) -> None:
    manifests = render_values(
        {
            "controller": {"enabled": False},
            "loadtester": {"enabled": False},
            "rbac": {"scope": "namespace"},
            "watchNamespaces": ["team-a", "team-b"],
        }
    )
    roles = {(m["metadata"]["namespace"], m["metadata"]["name"]) for m in manifests if m["kind"] == "Role"}
    assert roles == {
        ("team-a", "canaryctl-mesh"),
        ("team-b", "canaryctl-mesh"),
        (NAMESPACE, "canaryctl-mesh-ca"),
    }
    args = _one(manifests, "Deployment", "canaryctl-mesh")["spec"]["template"]["spec"]["containers"][0][
        "args"
    ]
    assert args[args.index("--namespace") :][:4] == ["--namespace", "team-a", "--namespace", "team-b"]
    assert not [m for m in manifests if m["kind"] in ("KopfPeering", "ClusterKopfPeering", "Job", "Pod")]


def test_without_the_controller_only_the_mesh_is_monitored(render: Render) -> None:
    """serviceMonitor, prometheusRule and dashboards asked for: what is left is about the mesh."""
    manifests = render("no-controller")
    monitors = {m["metadata"]["name"] for m in manifests if m["kind"] == "ServiceMonitor"}
    assert monitors == {"canaryctl-meshd"}
    rule = _one(manifests, "PrometheusRule", "canaryctl")
    assert [r["alert"] for group in rule["spec"]["groups"] for r in group["rules"]] == ["MeshConfigRejected"]
    dashboards = {m["metadata"]["name"] for m in manifests if m["kind"] == "ConfigMap"}
    assert dashboards == {"canaryctl-dashboard-mesh", "canaryctl-dashboard-meshd"}
    assert _one(manifests, "PodMonitor", "canaryctl-sidecars")
    deployments = {m["metadata"]["name"] for m in manifests if m["kind"] == "Deployment"}
    assert deployments == {"canaryctl-mesh", "canaryctl-injector", "canaryctl-loadtester"}


def test_a_load_tester_without_the_controller_takes_the_named_callers(render: Render) -> None:
    flagger = pod(
        "flagger-system", {"app.kubernetes.io/name": "flagger", "app.kubernetes.io/instance": "flagger"}
    )
    standalone = render("no-controller")
    tester = component(standalone, "canaryctl-loadtester")
    http = tester.ports["http"]
    assert allowed(standalone, flagger, tester, http)
    assert not allowed(standalone, pod("team-a"), tester, http)
    # The label alone is not enough: a tenant's pod cannot pose as Flagger.
    posing = pod("team-a", {"app.kubernetes.io/name": "flagger"})
    assert not allowed(standalone, posing, tester, http)
    assert not allowed(standalone, pod(NAMESPACE), tester, http)
    # Next to canaryctl's controller only the controller calls it.
    with_controller = render("default")
    assert not allowed(with_controller, flagger, component(with_controller, "canaryctl-loadtester"), http)


def test_notes_of_the_mesh_alone(helm: str) -> None:
    result = run_helm(helm, "install", RELEASE, str(CHART), "--dry-run=client", *MESH_ONLY)
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert "without its controller" in notes and "smi:v1alpha3" in notes
    assert "kubectl label namespace NAME mesh.canaryctl.dev/inject=enabled" in notes
    for controller_only in (
        "helm test",
        "canaries.canaryctl.dev",
        "Builtin metrics",
        "The controller watches",
    ):
        assert controller_only not in notes


def test_a_chart_with_nothing_enabled_is_refused(helm: str) -> None:
    result = run_helm(helm, "template", RELEASE, str(CHART), *MESH_ONLY, "--set", "mesh.enabled=false")
    assert result.returncode != 0
    assert "controller.enabled, mesh.enabled and loadtester.enabled are all false" in result.stderr


def test_a_load_tester_without_the_controller_needs_its_callers_named(helm: str) -> None:
    """Without the controller nothing would be left to admit: refused, not rendered open or closed."""
    result = run_helm(helm, "template", RELEASE, str(CHART), "--set", "controller.enabled=false")
    assert result.returncode != 0
    assert "controller.enabled=false: name the load tester's callers in loadtester.networkPolicy.from" in (
        result.stderr
    )
