"""A small JSONPath subset for the web provider: ``$.a.b[0]['c-d'][-1]`` picks one value.

Wildcards, filters and slices are not supported: a metric is one number, so the path must name one.
"""

from __future__ import annotations

import re
from typing import Any

from canaryctl_providers.metrics.errors import MetricQueryError

_STEP = re.compile(r"""\.([A-Za-z_][\w-]*)|\[(-?\d+)\]|\[\s*'([^']*)'\s*\]|\[\s*"([^"]*)"\s*\]""")


def parse(path: str) -> list[str | int]:
    """Steps of a path; a leading ``$`` is optional (``data.value`` works too)."""
    text = path.strip()
    text = text[1:] if text.startswith("$") else text
    if text and not text.startswith((".", "[")):
        text = "." + text
    steps: list[str | int] = []
    position = 0
    while position < len(text):
        match = _STEP.match(text, position)
        if match is None:
            raise ValueError(f"unsupported JSONPath {path!r} at {text[position:]!r}")
        name, index, single, double = match.groups()
        steps.append(
            int(index) if index is not None else next(s for s in (name, single, double) if s is not None)
        )
        position = match.end()
    return steps


def select(document: Any, path: str) -> Any:
    """The value at ``path``; a missing key or index raises MetricQueryError naming the step."""
    try:
        steps = parse(path)
    except ValueError as exc:
        raise MetricQueryError(str(exc)) from exc
    current = document
    for step in steps:
        try:
            current = current[step]
        except (KeyError, IndexError, TypeError) as exc:
            raise MetricQueryError(f"JSONPath {path!r}: no {step!r} in {current!r}"[:300]) from exc
    return current
