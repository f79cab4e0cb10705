"""The chart only renders command lines the binaries accept.

Every container of every value set is run, as the image would run it, through canaryctl's own
argparse parser in this process: the image's ENTRYPOINT (read from the Dockerfile) plus the
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


def _instruction(name: str) -> list[str]:
    """The exec (JSON) form of a Dockerfile instruction of the final stage."""
    lines = (REPO / "Dockerfile").read_text().splitlines()
    final = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    found = [line[len(name) + 1 :] for line in lines[final:] if line.startswith(f"{name} ")]
    assert len(found) == 1, f"the image's final stage should have one {name}"
    value: list[str] = json.loads(found[0])
    return value


def _console_script(name: str) -> str:
    scripts: dict[str, str] = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    return scripts[name]


ENTRYPOINT = _instruction("ENTRYPOINT")
DEFAULT_ARGS = _instruction("CMD")


def parse(argv: list[str]) -> Any:
    """What ``canaryctl ARGV`` does before it runs anything: main's parser, here; raises on a bad line."""
    command = argv[0] if argv and not argv[0].startswith("-") else None
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            return main.build_parser("canaryctl", command).parse_args(argv)
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise AssertionError(f"canaryctl {shlex.join(argv)}\n{stderr.getvalue()}") from None
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


def test_the_image_runs_canaryctl() -> None:
    """tini hands everything after ``--`` to ``canaryctl``, the project's console script."""
    assert ENTRYPOINT == ["tini", "--", "canaryctl"]
    assert _console_script("canaryctl") == "canaryctl.cli.main:main"
    assert parse(DEFAULT_ARGS) is None  # CMD ["--help"]: help, exit 0
    with pytest.raises(AssertionError, match="unrecognized arguments: --slack-url"):
        parse(["operator", "--slack-url", "https://hooks.slack.com/services/T/B/X"])


@pytest.mark.parametrize("values", sorted(VALUE_SETS))
def test_every_container_command_line_parses(render: Render, values: str) -> None:
    seen = 0
    for where, container in containers(render(values)):
        if container["image"].split("/")[-1].split(":")[0] in ("envoy", "proxyv2"):
            continue  # the mesh's sidecar images are not canaryctl (none is in the chart's own pods)
        assert container.get("command") in (None, ENTRYPOINT), f"{where} overrides the entry point"
        argv = expand(container.get("args") or DEFAULT_ARGS, container.get("env", []), where)
        parsed = parse(argv)
        assert parsed is not None and callable(parsed.func), f"{where}: {argv} runs nothing"
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
