"""Regexes checked with RE2 itself, under Envoy's limits, before any Envoy sees them.

Envoy compiles every ``safe_regex`` with RE2 and refuses a pattern RE2 cannot parse (lookarounds,
backreferences), an empty one, and one whose compiled program is larger than
``re2.max_program_size.error_level`` (100 by default: ``a{1000}`` is 1,004). A sidecar that meets
one such pattern rejects the whole update carrying it, so the control plane refuses the object that
holds the pattern instead.
"""

from __future__ import annotations

from typing import Annotated

import re2
from pydantic import AfterValidator

MAX_PROGRAM_SIZE = 100
"""Envoy's default ``re2.max_program_size.error_level``: larger programs are refused."""

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # as Envoy's RE2::Quiet: the error is returned, not logged to stderr


def _compile(pattern: str) -> tuple[object | None, str | None]:
    """(the compiled pattern, None), or (None, why RE2 cannot use it)."""
    if not pattern:
        return None, "empty regex"
    try:
        return re2.compile(pattern, _OPTIONS), None
    except re2.error as error:
        reason = error.args[0] if error.args else error
        text = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        return None, f"invalid RE2 regex: {text}"


def re2_problem(pattern: str) -> str | None:
    """Why RE2 (the engine of Envoy, Istio and most Gateway API implementations) cannot use `pattern`."""
    return _compile(pattern)[1]


def envoy_regex_problem(pattern: str) -> str | None:
    """Why Envoy, with its default limits, would refuse `pattern` as a ``safe_regex``."""
    compiled, problem = _compile(pattern)
    size: int = getattr(compiled, "programsize", 0)
    if problem is None and size > MAX_PROGRAM_SIZE:
        return f"regex too complex for Envoy: RE2 program size {size} > {MAX_PROGRAM_SIZE}"
    return problem


def envoy_regex(pattern: str) -> str:
    """`pattern` if Envoy accepts it, else ValueError (a pydantic validator)."""
    problem = envoy_regex_problem(pattern)
    if problem is not None:
        raise ValueError(f"{problem}: {pattern[:100]!r}")
    return pattern


EnvoyRegex = Annotated[str, AfterValidator(envoy_regex)]
"""A string field Envoy compiles as a ``safe_regex``."""
