"""Pins every direct dependency of the given pyproject.toml files to its declared floor.

Prints a pip constraints file: ``name==floor`` for each ``name>=floor`` in [project] dependencies
and optional dependencies (dependencies on the repository's own distributions are skipped). Installing
with it and running the unit tests proves the floors are true: the oldest versions we claim to
support really work. Usage: python scripts/lowest-versions.py pyproject.toml [more/pyproject.toml]
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*?)\s*(?:;.*)?$")


def floors(pyprojects: list[Path]) -> dict[str, str]:
    projects = [tomllib.loads(path.read_text(encoding="utf-8"))["project"] for path in pyprojects]
    own = {p["name"].lower() for p in projects}
    pinned: dict[str, str] = {}
    for project in projects:
        requirements = list(project.get("dependencies", []))
        for extra in project.get("optional-dependencies", {}).values():
            requirements.extend(extra)
        for requirement in requirements:
            match = REQUIREMENT.match(requirement)
            if match is None:
                raise SystemExit(f"cannot read requirement {requirement!r}")
            name, spec = match.group(1).lower(), match.group(2)
            if name in own:
                continue
            floor = re.search(r"(?:>=|==)\s*([0-9][^,\s]*)", spec)
            if floor is None:
                raise SystemExit(f"{requirement!r} has no floor: give it one (>=) so it can be checked")
            version = floor.group(1)
            if pinned.get(name, version) != version:
                raise SystemExit(f"{name} has two floors ({pinned[name]} and {version}): use one")
            pinned[name] = version
    return pinned


def main(argv: list[str]) -> int:
    for name, version in sorted(floors([Path(a) for a in argv]).items()):
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
