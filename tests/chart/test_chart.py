"""`helm lint` and `helm template` of charts/canaryctl with a real helm, for several value sets.

Every rendered manifest of a built-in kind (CRDs included) is validated with kubernetes-validate in
strict mode against KUBERNETES_VERSION. It has no schemas for custom resources (ServiceMonitor,
cert-manager's Certificate and Issuer, kopf's peering objects): those are checked for apiVersion, kind
and metadata only.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from canaryctl.loadtester.auth import token_hash
from tests.chart.conftest import (
    CHART,
    NAMESPACE,
    REQUIRED_FLAGS,
    VALUE_SETS,
    Manifest,
    render_values,
    run_helm,
)

KUBERNETES_VERSION = "1.34.0"
CUSTOM_RESOURCES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("cert-manager.io/v1", "Certificate"),
    ("cert-manager.io/v1", "Issuer"),
    ("kopf.dev/v1", "KopfPeering"),
    ("kopf.dev/v1", "ClusterKopfPeering"),
}
NAMESPACED_CUSTOM_RESOURCES = {
    "ServiceMonitor",
    "PodMonitor",
    "PrometheusRule",
    "Certificate",
    "Issuer",
    "KopfPeering",
}
RBAC_RULES = yaml.safe_load((CHART / "files" / "rbac.yaml").read_text())
REGISTRY = "ghcr.io/canaryctl"
APP_VERSION = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]

Render = Callable[[str], list[Manifest]]


def _find(manifests: list[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind and name in (None, m["metadata"]["name"])]


def _one(manifests: list[Manifest], kind: str, name: str) -> Manifest:
    found = _find(manifests, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def _args(deployment: Manifest) -> list[str]:
    args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def _resources(rules: list[Manifest]) -> set[str]:
    return {resource for rule in rules for resource in rule["resources"]}


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_helm_lint(helm: str, values: str, values_file: Callable[[str], Path]) -> None:
    result = run_helm(
        helm, "lint", str(CHART), "--strict", "--namespace", NAMESPACE, "--values", str(values_file(values))
    )
    assert result.returncode == 0, f"helm lint ({values}) failed:\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_rendered_manifests_are_valid(render: Render, values: str) -> None:
    manifests = render(values)
    assert _find(manifests, "Deployment"), "nothing rendered"
    for manifest in manifests:
        api_version, kind = manifest.get("apiVersion"), manifest.get("kind")
        metadata = manifest.get("metadata") or {}
        label = f"{values}: {kind} {metadata.get('name')}"
        if (api_version, kind) in CUSTOM_RESOURCES:
            assert metadata.get("name"), f"{label} has no metadata.name"
            assert ("namespace" in metadata) == (kind in NAMESPACED_CUSTOM_RESOURCES), f"{label} namespace"
            assert isinstance(metadata.get("labels"), dict), f"{label} has no labels"
            continue
        try:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{label} is invalid at {list(error.path)}: {error.message}")


def test_every_component_runs_the_image_of_its_role(render: Render) -> None:
    deployments = {d["metadata"]["name"]: d for d in _find(render("default"), "Deployment")}
    roles = {
        "canaryctl": "controller", "canaryctl-mesh": "meshd", "canaryctl-injector": "meshd",
        "canaryctl-loadtester": "loadtester",
    }  # fmt: skip
    assert set(deployments) == set(roles)
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["containers"][0]["image"] == f"{REGISTRY}/{roles[name]}:{APP_VERSION}"
        assert pod["securityContext"]["runAsUser"] == 10001
    injector = _args(deployments["canaryctl-injector"])
    sidecar = f"{REGISTRY}/sidecar:{APP_VERSION}"
    assert injector[injector.index("--sidecar-image") + 1] == sidecar
    assert injector[injector.index("--init-image") + 1] == sidecar  # it has sh and iptables
    loadtester = _one(render("options"), "Deployment", "canaryctl-loadtester")
    assert loadtester["spec"]["template"]["spec"]["containers"][0]["image"] == f"{REGISTRY}/loadtester:dev"


def test_controller_args_and_cluster_peering(render: Render) -> None:
    manifests = render("default")
    args = _args(_one(manifests, "Deployment", "canaryctl"))
    assert args[:2] == ["--peering", "canaryctl"]
    assert "--namespace" not in args
    assert args[args.index("--liveness") + 1] == "http://0.0.0.0:8081/healthz"
    assert args[args.index("--default-provider") + 1] == "canaryctl"
    assert _one(manifests, "ClusterKopfPeering", "canaryctl")
    assert not _find(manifests, "KopfPeering")
    pod = _one(manifests, "Deployment", "canaryctl")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 60  # ticks finish their status writes before a kill


def test_replicas_share_one_peering(render: Render) -> None:
    manifests = render("peering-ha")
    controller = _one(manifests, "Deployment", "canaryctl")
    assert controller["spec"]["replicas"] == 2
    assert _args(controller)[:4] == ["--peering", "canaryctl", "--peering-lifetime", "15"]
    assert _one(manifests, "ClusterKopfPeering", "canaryctl")


def test_optional_controller_args(render: Render) -> None:
    manifests = render("options")
    container = _one(manifests, "Deployment", "canaryctl")["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--prometheus-url") + 1] == "http://prometheus.monitoring:9090"
    assert args[args.index("--slack-channel") + 1] == "deploys"
    assert args[args.index("--slack-user") + 1] == "canaryctl"
    # The webhook URL is a credential: from a Secret into the environment, never into argv.
    assert not [arg for arg in args if "SLACK" in arg or "hooks.slack.com" in arg]
    slack_env = next(e for e in container["env"] if e["name"] == "SLACK_URL")
    secret = _one(manifests, "Secret", slack_env["valueFrom"]["secretKeyRef"]["name"])
    assert secret["stringData"]["url"] == "https://hooks.slack.com/services/T/B/X"
    default = _one(render("default"), "Deployment", "canaryctl")["spec"]["template"]["spec"]["containers"][0]
    assert "--slack-channel" not in default["args"]
    assert "SLACK_URL" not in {e["name"] for e in default["env"]}


def test_cluster_rbac_grants_the_listed_rules(render: Render) -> None:
    manifests = render("default")
    # Only the mesh CA's Role, in the release namespace: Secrets are never readable cluster-wide.
    assert [r["metadata"]["name"] for r in _find(manifests, "Role")] == ["canaryctl-mesh-ca"]
    operator = RBAC_RULES["operator"]
    expected = operator["namespaced"] + operator["cluster"] + operator["allNamespaces"]["cluster"]
    assert _one(manifests, "ClusterRole", "canaryctl-controller")["rules"] == expected
    binding = _one(manifests, "ClusterRoleBinding", "canaryctl-controller")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "canaryctl-controller", "namespace": NAMESPACE}
    ]
    mesh = _one(manifests, "ClusterRole", "canaryctl-mesh")["rules"]
    assert mesh == RBAC_RULES["meshControlPlane"]["namespaced"] + RBAC_RULES["meshControlPlane"]["cluster"]


def test_metric_provider_grants_are_opt_in(render: Render) -> None:
    """The external metrics API and Keptn are read with the controller's own access only where the
    values ask for it; the rules are the ones files/rbac.yaml lists, in the cluster and namespaced Roles."""
    opted = RBAC_RULES["operator"]["metricProviders"]
    default = _one(render("default"), "ClusterRole", "canaryctl-controller")["rules"]
    assert not any(rule in default for rules in opted.values() for rule in rules)
    both = {"rbac": {"metricProviders": {"externalMetrics": True, "keptn": True}}}
    granted = _one(render_values(both), "ClusterRole", "canaryctl-controller")["rules"]
    assert all(rule in granted for rules in opted.values() for rule in rules)
    role = next(
        r
        for r in _find(render("metric-providers"), "Role", "canaryctl-controller")
        if r["metadata"]["namespace"] == "team-a"
    )
    assert all(rule in role["rules"] for rules in opted.values() for rule in rules)


def test_namespaced_rbac_makes_roles_in_each_namespace(render: Render) -> None:
    manifests = render("namespaced")
    for namespace in ("team-a", "team-b"):
        roles = {
            r["metadata"]["name"]: r
            for r in _find(manifests, "Role")
            if r["metadata"]["namespace"] == namespace
            and "helm.sh/hook" not in (r["metadata"].get("annotations") or {})  # the uninstall hook's
        }
        assert set(roles) == {"canaryctl-controller", "canaryctl-mesh"}, namespace
        assert "canaries" in _resources(roles["canaryctl-controller"]["rules"])
        assert "kopfpeerings" in _resources(roles["canaryctl-controller"]["rules"])
        bindings = [
            b
            for b in _find(manifests, "RoleBinding")
            if b["metadata"]["namespace"] == namespace and b["metadata"]["name"] in roles
        ]
        assert {b["roleRef"]["name"] for b in bindings} == set(roles)
    cluster_resources = _resources(
        [rule for role in _find(manifests, "ClusterRole") for rule in role["rules"]]
    )
    assert cluster_resources == {
        "namespaces", "customresourcedefinitions", "tokenreviews", "mutatingwebhookconfigurations"
    }  # fmt: skip
    peerings = _find(manifests, "KopfPeering", "canaryctl")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["team-a", "team-b"]
    assert not _find(manifests, "ClusterKopfPeering")
    args = _args(_one(manifests, "Deployment", "canaryctl"))
    assert args[args.index("--namespace") :][:4] == ["--namespace", "team-a", "--namespace", "team-b"]
    assert "team-b" in _args(_one(manifests, "Deployment", "canaryctl-mesh"))


def test_managed_certificate_is_made_by_the_injector_not_the_chart(render: Render) -> None:
    manifests = render("default")
    webhook, pod_opt_in = _one(manifests, "MutatingWebhookConfiguration", "canaryctl-injector")["webhooks"]
    assert webhook["clientConfig"] == {
        "service": {"name": "canaryctl-injector", "namespace": NAMESPACE, "path": "/mutate", "port": 443},
    }  # no caBundle: the injector sets it
    assert webhook["failurePolicy"] == "Ignore"
    assert webhook["namespaceSelector"] == {"matchLabels": {"mesh.canaryctl.dev/inject": "enabled"}}
    # Pods labelled for the mesh are sent from any other namespace (not kube-system, not ours).
    assert pod_opt_in["objectSelector"] == {"matchLabels": {"mesh.canaryctl.dev/inject": "true"}}
    excluded = pod_opt_in["namespaceSelector"]["matchExpressions"][0]
    assert excluded["operator"] == "NotIn" and set(excluded["values"]) == {"kube-system", NAMESPACE}
    assert pod_opt_in["clientConfig"] == webhook["clientConfig"]
    assert not _find(manifests, "Secret"), "no key material in the rendered manifests"
    injector = _one(manifests, "Deployment", "canaryctl-injector")
    args = _args(injector)
    assert args[:3] == ["injector", "--port", "9443"]
    assert "--tls-cert" not in args
    assert args[args.index("--webhook-name") + 1] == "canaryctl-injector"
    names = [args[i + 1] for i, arg in enumerate(args) if arg == "--tls-dns-name"]
    assert f"canaryctl-injector.{NAMESPACE}.svc" in names
    xds_host = args[args.index("--xds-host") + 1]
    assert xds_host == f"canaryctl-mesh.{NAMESPACE}.svc.cluster.local"
    # Sidecars check the control plane's certificate against the name they dial.
    plane = _args(_one(manifests, "Deployment", "canaryctl-mesh"))
    assert xds_host in [plane[i + 1] for i, arg in enumerate(plane) if arg == "--xds-dns-name"]
    assert args[args.index("--xds-port") + 1] == _args(_one(manifests, "Deployment", "canaryctl-mesh"))[2]
    volumes = injector["spec"]["template"]["spec"]["volumes"]
    assert volumes == [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}]
    assert _one(manifests, "ClusterRole", "canaryctl-injector-webhook")["rules"] == [
        {
            "apiGroups": ["admissionregistration.k8s.io"],
            "resources": ["mutatingwebhookconfigurations"],
            "resourceNames": ["canaryctl-injector"],
            "verbs": ["get", "patch"],
        }
    ]


@pytest.mark.parametrize("values", ["default", "cert-manager"])
def test_two_renders_are_identical(helm: str, values: str, values_file: Callable[[str], Path]) -> None:
    """GitOps tools render the chart on every sync: nothing may change between two renders."""
    values_path = str(values_file(values))
    command = ["template", "canaryctl", str(CHART), "--namespace", NAMESPACE, "--values", values_path]
    renders = [run_helm(helm, *command) for _ in range(2)]
    assert all(r.returncode == 0 for r in renders), renders[0].stderr
    assert renders[0].stdout == renders[1].stdout


def test_cert_manager_certificate_is_injected(render: Render) -> None:
    manifests = render("cert-manager")
    configuration = _one(manifests, "MutatingWebhookConfiguration", "canaryctl-injector")
    annotations = configuration["metadata"]["annotations"]
    assert annotations["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/canaryctl-injector"
    assert "caBundle" not in configuration["webhooks"][0]["clientConfig"]
    certificate = _one(manifests, "Certificate", "canaryctl-injector")
    assert certificate["spec"]["secretName"] == "canaryctl-injector-tls"
    assert f"canaryctl-injector.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    assert certificate["spec"]["issuerRef"] == {"name": "canaryctl-selfsigned", "kind": "Issuer"}
    assert _one(manifests, "Issuer", "canaryctl-selfsigned")["spec"] == {"selfSigned": {}}
    assert not _find(manifests, "Secret", "canaryctl-injector-tls")
    assert not _find(manifests, "ClusterRole", "canaryctl-injector-webhook"), "cainjector sets the caBundle"
    args = _args(_one(manifests, "Deployment", "canaryctl-injector"))
    assert args[args.index("--tls-cert") + 1] == "/tls/tls.crt" and "--webhook-name" not in args


def test_loadtester_is_flagger_compatible_and_optional(render: Render) -> None:
    service = _one(render("default"), "Service", "canaryctl-loadtester")
    assert service["spec"]["ports"][0]["port"] == 80
    default = _one(render("default"), "Deployment", "canaryctl-loadtester")
    assert _args(default) == [
        "--port", "8080", "--timeout", "1h",
        "--allow-commands", "hey,curl,grpcurl,ghz,k6", "--max-per-namespace", "8",
    ]  # fmt: skip
    assert default["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    args = _args(_one(render("options"), "Deployment", "canaryctl-loadtester"))
    assert args[args.index("--namespaces") + 1] == "team-a,team-b"
    absent = [m for m in render("no-loadtester") if "loadtester" in m["metadata"]["name"]]
    assert not absent, [m["metadata"]["name"] for m in absent]


def test_loadtester_tokens_per_namespace(render: Render) -> None:
    """auth.mode=token: a token Secret in each namespace, only their SHA-256 with the load tester."""
    manifests = render("loadtester-token")
    tokens = {
        s["metadata"]["namespace"]: base64.b64decode(s["data"]["token"]).decode()
        for s in _find(manifests, "Secret", "canaryctl-loadtester-token")
    }
    assert set(tokens) == {"team-a", "team-b"} and len(set(tokens.values())) == 2
    assert all(len(token) == 48 for token in tokens.values())
    hashes = _one(manifests, "Secret", "canaryctl-loadtester-token-hashes")
    assert hashes["metadata"]["namespace"] == NAMESPACE
    assert hashes["stringData"] == {ns: token_hash(token) for ns, token in tokens.items()}
    loadtester = _one(manifests, "Deployment", "canaryctl-loadtester")
    pod = loadtester["spec"]["template"]["spec"]
    args = _args(loadtester)
    mount = args[args.index("--token-hashes") + 1]
    assert {"--allow-bash", "--namespaces", "team-a,team-b"} <= set(args)
    assert args[args.index("--allow-commands") + 1] == "hey,helm"
    assert args[args.index("--max-per-namespace") + 1] == "3"
    volume = next(m["name"] for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == mount)
    assert next(v for v in pod["volumes"] if v["name"] == volume)["secret"]["secretName"] == (
        "canaryctl-loadtester-token-hashes"
    )
    own = _one(render("loadtester-own-hashes"), "Deployment", "canaryctl-loadtester")["spec"]["template"][
        "spec"
    ]
    assert own["volumes"][-1]["secret"]["secretName"] == "my-token-hashes"
    assert not _find(render("loadtester-own-hashes"), "Secret", "canaryctl-loadtester-token")
    own_args = _args(_one(render("loadtester-own-hashes"), "Deployment", "canaryctl-loadtester"))
    assert own_args[own_args.index("--allow-commands") + 1] == ""  # nothing may run


def test_loadtester_per_namespace_with_service_account_tokens(render: Render) -> None:
    manifests = render("loadtester-per-namespace")
    deployments = _find(manifests, "Deployment", "canaryctl-loadtester")
    assert sorted(d["metadata"]["namespace"] for d in deployments) == ["team-a", "team-b"]
    for deployment in deployments:
        namespace = deployment["metadata"]["namespace"]
        args = _args(deployment)
        assert args[args.index("--namespaces") + 1] == namespace
        assert args[args.index("--token-audience") + 1] == "canaryctl-loadtester"
        assert "--token-review" in args
        assert deployment["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
        for kind in ("Service", "ServiceAccount", "NetworkPolicy"):
            assert [
                m
                for m in _find(manifests, kind, "canaryctl-loadtester")
                if m["metadata"]["namespace"] == namespace
            ]
    binding = _one(manifests, "ClusterRoleBinding", "canaryctl-loadtester")
    assert sorted(s["namespace"] for s in binding["subjects"]) == ["team-a", "team-b"]
    assert (
        _one(manifests, "ClusterRole", "canaryctl-loadtester")["rules"] == RBAC_RULES["loadtester"]["cluster"]
    )
    assert not _find(render("loadtester-token"), "ClusterRole", "canaryctl-loadtester")


def test_loadtester_values_are_checked(helm: str) -> None:
    for flags, message in (
        # Enumerations are refused by values.schema.json before any template runs.
        (["loadtester.deployment=everywhere"], "at '/loadtester/deployment': value must be one of"),
        (
            ["loadtester.deployment=perNamespace"],
            "loadtester.deployment=perNamespace needs loadtester.namespaces",
        ),
        (["loadtester.auth.mode=basic"], "at '/loadtester/auth/mode': value must be one of"),
        (["loadtester.auth.mode=token"], "loadtester.auth.mode=token needs loadtester.namespaces"),
    ):
        args = [arg for flag in flags for arg in ("--set", flag)]
        result = run_helm(helm, "template", "canaryctl", str(CHART), *REQUIRED_FLAGS, *args)
        assert result.returncode != 0 and message in result.stderr, (flags, result.stderr)


def test_the_mesh_trust_domain_reaches_meshd_and_must_be_a_dns_name(render: Render, helm: str) -> None:
    args = _args(_one(render("everything"), "Deployment", "delivery-mesh"))
    assert args[args.index("--trust-domain") + 1] == "mesh.example.org"
    args = _args(_one(render("mesh-only"), "Deployment", "canaryctl-mesh"))
    assert args[args.index("--trust-domain") + 1] == "cluster.local"
    for bad in ("Cluster.Local", "mesh_example", "-mesh.example", "mesh..example", "a" * 64 + ".org", ""):
        flags = ("--set-string", f"mesh.controlPlane.trustDomain={bad}")
        result = run_helm(helm, "template", "canaryctl", str(CHART), *REQUIRED_FLAGS, *flags)
        assert result.returncode != 0 and "at '/mesh/controlPlane/trustDomain'" in result.stderr, (
            bad,
            result,
        )


def test_service_monitor_scrapes_the_controller(render: Render) -> None:
    manifests = render("service-monitor")
    monitor = _one(manifests, "ServiceMonitor", "canaryctl")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    service = _one(manifests, "Service", "canaryctl")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True  # the Canary's namespace label wins
    assert not _find(render("default"), "ServiceMonitor")


def test_mesh_and_smi_crds_are_optional(render: Render) -> None:
    names = {m["metadata"]["name"] for m in _find(render("default"), "CustomResourceDefinition")}
    assert {
        "trafficsplits.split.smi-spec.io",
        "clusterkopfpeerings.kopf.dev",
        "canaries.canaryctl.dev",
    } <= names
    trimmed = render("options")
    names = {m["metadata"]["name"] for m in _find(trimmed, "CustomResourceDefinition")}
    assert "trafficsplits.split.smi-spec.io" not in names
    assert "canaries.canaryctl.dev" in names
    assert not _find(trimmed, "MutatingWebhookConfiguration")
    assert not [
        m for m in trimmed if m["metadata"]["name"].startswith(("canaryctl-mesh", "canaryctl-injector"))
    ]


def test_namespace_scope_without_namespaces_is_refused(helm: str) -> None:
    result = run_helm(
        helm, "template", "canaryctl", str(CHART), "--set", "rbac.scope=namespace",
        "--set", "controller.prometheusUrl=http://prometheus:9090",
    )  # fmt: skip
    assert result.returncode != 0
    assert "rbac.scope=namespace needs watchNamespaces" in result.stderr
