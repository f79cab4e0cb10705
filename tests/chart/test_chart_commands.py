"""The chart only renders command lines the binaries accept.

Every container of every value set is run, as the image of its role would run it, through canaryctl's
own argparse parser in this process: the ENTRYPOINT and CMD of ``docker/<role>.Dockerfile`` plus the
container's args, with Kubernetes' ``$(VAR)`` expansion. An unknown flag, a bad value or a credential
expanded into argv fails the render's test. A value set covers every value in values.yaml, so a value
the chart renders into a flag the binary lacks cannot hide.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import tomllib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from canaryctl.cli import main
from tests.chart.conftest import CHART, REPO, VALUE_SETS, Manifest

Render = Callable[[str], list[Manifest]]
POD_KINDS = {"Deployment", "DaemonSet", "StatefulSet", "Job"}
VARIABLE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


# The chart's containers and the image each runs (values.yaml: `<image.registry>/<role>`).
ROLES = {
    "operator": "controller",
    "release-finalizers": "controller",  # the post-delete hook's Job
    "control-plane": "meshd",
    "injector": "meshd",
    "loadtester": "loadtester",
}


def _instruction(role: str, name: str) -> list[str] | None:
    """The exec (JSON) form of an instruction of the final stage of the role's Dockerfile."""
    lines = (REPO / "docker" / f"{role}.Dockerfile").read_text().splitlines()
    final = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    found = [line[len(name) + 1 :] for line in lines[final:] if line.startswith(f"{name} ")]
    assert len(found) <= 1, f"the {role} image's final stage should have at most one {name}"
    return json.loads(found[0]) if found else None


def _console_scripts() -> dict[str, str]:
    scripts: dict[str, str] = {}
    for pyproject in (REPO / "pyproject.toml", REPO / "mesh" / "pyproject.toml"):
        scripts.update(tomllib.loads(pyproject.read_text())["project"]["scripts"])
    return scripts


def image_command(role: str, args: list[str] | None) -> list[str]:
    """What the container runs: the entry point without tini, then args (else CMD)."""
    entrypoint = _instruction(role, "ENTRYPOINT")
    assert entrypoint, f"the {role} image has no ENTRYPOINT"
    if entrypoint[:2] == ["tini", "--"]:
        entrypoint = entrypoint[2:]
    return entrypoint + (args if args is not None else _instruction(role, "CMD") or [])


def parse(command: list[str]) -> Any:
    """What the command does before it runs anything: canaryctl's parser, here; raises on a bad line.
    ``canaryctl-meshd ARGS`` is ``canaryctl meshd ARGS`` (mesh/canaryctl_mesh/meshd/__main__.py)."""
    executable, argv = command[0], command[1:]
    assert executable in ("canaryctl", "canaryctl-meshd"), f"{executable} is not a canaryctl console script"
    if executable == "canaryctl-meshd" and argv[:1] != ["meshd"]:
        argv = ["meshd", *argv]
    name = argv[0] if argv and not argv[0].startswith("-") else None
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            return main.build_parser("canaryctl", name).parse_args(argv)
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise AssertionError(f"{shlex.join(command)}\n{stderr.getvalue()}") from None
        return None


def expand(argv: list[str], env: list[dict[str, Any]], where: str) -> list[str]:
    """Kubernetes' ``$(VAR)`` expansion of args; a variable from a Secret must never get there."""
    values: dict[str, str | None] = {}
    for variable in env:
        source = variable.get("valueFrom") or {}
        assert "secretKeyRef" not in source or not any(f"$({variable['name']})" in arg for arg in argv), (
            f"{where}: the Secret behind ${variable['name']} would be on the command line"
        )
        values[variable["name"]] = variable.get("value")
    return [VARIABLE.sub(lambda m: values.get(m.group(1)) or m.group(0), arg) for arg in argv]


def containers(manifests: list[Manifest]) -> Iterator[tuple[str, dict[str, Any]]]:
    for manifest in manifests:
        if manifest["kind"] not in POD_KINDS:
            continue
        spec = manifest["spec"]["template"]["spec"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            where = f"{manifest['kind']} {manifest['metadata']['namespace']}/{manifest['metadata']['name']}"
            yield f"{where} container {container['name']}", container


def test_the_images_run_canaryctl() -> None:
    """Each role's image runs a console script of the project, through canaryctl's parser."""
    scripts = _console_scripts()
    assert scripts["canaryctl"] == "canaryctl.cli.main:main"
    assert scripts["canaryctl-meshd"] == "canaryctl_mesh.meshd.__main__:main"
    for role in set(ROLES.values()):
        assert image_command(role, [])[0] in scripts
    with pytest.raises(AssertionError, match="unrecognized arguments: --slack-url"):
        parse(image_command("controller", ["--slack-url", "https://hooks.slack.com/services/T/B/X"]))


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_every_container_command_line_parses(render: Render, values: str) -> None:
    seen = 0
    for where, container in containers(render(values)):
        assert container["name"] in ROLES, f"{where}: which role's image runs it?"
        assert container.get("command") is None, f"{where} overrides the entry point"
        args = expand(container.get("args") or [], container.get("env", []), where)
        parsed = parse(image_command(ROLES[container["name"]], args or None))
        assert parsed is not None and callable(parsed.func), f"{where}: {args} runs nothing"
        seen += 1
    assert seen, f"{values}: no canaryctl container rendered"


def _leaves(values: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for key, value in values.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, (*path, key))
        else:
            yield (*path, key)


def _sets(values: dict[str, Any], path: tuple[str, ...]) -> bool:
    for key in path:
        if not isinstance(values, dict) or key not in values:
            return False
        values = values[key]
    return True


def test_every_value_is_rendered_by_some_value_set() -> None:
    """A new value must be set in a value set, so its command line goes through the parser above."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    unset = [
        ".".join(path)
        for path in _leaves(defaults)
        if not any(_sets(values, path) for values in VALUE_SETS.values())
    ]
    assert not unset, f"values no value set in tests/chart/conftest.py renders: {unset}"
