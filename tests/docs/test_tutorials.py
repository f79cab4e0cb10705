"""The tutorials stay true: the kind tutorial installs canaryctl with exactly the commands the kind suite
runs (e2e/kind/cluster.py), every manifest and page they point to exists, and `make demo` announces what
it installs and how long it takes."""

from __future__ import annotations

import ast
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from e2e.kind import cluster

REPO = Path(__file__).parents[2]
TUTORIALS = REPO / "docs" / "tutorials"
PAGES = [
    *sorted(TUTORIALS.glob("*.md")),
    *(
        REPO / "docs" / name
        for name in ("dashboard.md", "reports.md", "migrate-from-flagger.md", "troubleshooting.md")
    ),
    REPO / "README.md",
]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def shell_commands(page: Path) -> list[list[str]]:
    """The commands of the page's ```sh blocks, continuation lines joined, comments dropped."""
    blocks = re.findall(r"```sh\n(.*?)```", page.read_text(encoding="utf-8"), re.S)
    text = "\n".join(blocks).replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in text.splitlines() if line.strip()]


def suite_helm_command() -> list[str]:
    """The helm argv of Cluster.install, its f-strings evaluated with the module's constants."""
    tree = ast.parse(Path(cluster.__file__).read_text(encoding="utf-8"))
    names = {**vars(cluster), "helm": "helm"}
    for node in ast.walk(tree):
        first = node.elts[0] if isinstance(node, ast.List) and node.elts else None
        if isinstance(first, ast.Name) and first.id == "helm":
            assert isinstance(node, ast.List)
            return [_value(element, names) for element in node.elts]
    raise AssertionError("no helm command in e2e/kind/cluster.py")


def _value(element: ast.expr, names: dict[str, object]) -> str:
    """A literal or f-string of the command; the cluster's own kubeconfig path stays a placeholder."""
    if "self" in ast.unparse(element):
        return "<kubeconfig>"
    return str(eval(compile(ast.Expression(element), "cluster.py", "eval"), names))


def test_kind_tutorial_installs_as_the_kind_suite_does() -> None:
    commands = shell_commands(TUTORIALS / "kind-first-canary.md")
    helm = next(c for c in commands if c[0] == "helm")
    suite = suite_helm_command()
    kubeconfig = suite.index("--kubeconfig")
    expected = [*suite[:kubeconfig], *suite[kubeconfig + 2 :]]
    expected[4] = "./charts/canaryctl"  # the suite passes the chart's absolute path
    assert helm == expected
    loaded = next(c for c in commands if c[:3] == ["kind", "load", "docker-image"])
    for role in cluster.ROLES:  # every image the suite builds, built and loaded the same way
        assert [
            "docker",
            "build",
            "-f",
            f"docker/{role}.Dockerfile",
            "-t",
            cluster.image(role),
            ".",
        ] in commands
        assert cluster.image(role) in loaded
    assert ["kubectl", "apply", "-f", "e2e/kind/manifests/prometheus.yaml"] in commands
    rollout = ["kubectl", "rollout", "status", "deployment/prometheus", "-n", "monitoring", "--timeout=5m"]
    assert rollout in commands
    gateway = shell_commands(TUTORIALS / "gateway-api.md")
    assert ["kubectl", "apply", "--server-side", "-f", cluster.GATEWAY_API_CRDS] in gateway


def test_tutorial_manifests_exist() -> None:
    for page in PAGES:
        for command in shell_commands(page):
            for word in command:
                if word.startswith(("examples/", "e2e/")):
                    assert (REPO / word).exists(), f"{page.name}: {word}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_resolve(page: Path) -> None:
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if "://" in target:
            continue
        assert (page.parent / target).resolve().exists(), f"{page.name}: {target}"


def test_make_demo_says_what_it_installs_and_how_long_it_takes() -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    plan = subprocess.run(
        [make, "--no-print-directory", "-C", str(REPO), "demo-plan"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "pip" in plan and "apt-get" in plan and "prometheus" in plan
    assert re.search(r"\d+-\d+ minutes", plan) and "about 35 s" in plan
    dry = subprocess.run(
        [make, "-n", "-C", str(REPO), "demo"], capture_output=True, text=True, check=True
    ).stdout
    assert dry.index("make demo:") < dry.index("canaryctl demo"), "the plan is printed before anything runs"
