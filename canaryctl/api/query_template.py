"""Metric queries as Flagger renders them: Go templates over the canary's model.

The model is Flagger's ``MetricTemplateModel`` (``name``, ``namespace``, ``target``, ``service``,
``ingress``, ``route``, ``interval`` and the ``variables`` map) plus canaryctl's ``backend``; each is a
niladic function, as in Flagger. Rendering is ``canaryctl.api.gotemplate``: nothing but the model is
reachable. Lint renders every query with ``SAMPLE`` values to find unknown names before a canary runs.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Final

from canaryctl.api.gotemplate import BUILTINS, MissingKeyError, Template, TemplateError, parse, render

MODEL_FUNCTIONS: Final = ("name", "namespace", "target", "service", "ingress", "route", "interval", "backend")
VARIABLES: Final = "variables"
SAMPLE: Final = {name: f"sample-{name}" for name in MODEL_FUNCTIONS} | {"interval": "1m"}

_NAMES: Final = (*MODEL_FUNCTIONS, VARIABLES)
# Parsed queries kept: each tick renders its metrics' queries again (many Canaries share a template), and
# parsing was 4 % of the operator's CPU in rollouts. Only short texts are kept, so that the cache holds at
# most about 1 MB of query text whatever tenants write.
PARSED_KEPT: Final = 256
PARSED_MAX_LENGTH: Final = 4096


@functools.lru_cache(maxsize=PARSED_KEPT)
def _parsed_short(text: str) -> Template:
    return parse(text, _NAMES)


def _parsed(text: str) -> Template:
    """The query parsed (a Template is immutable: one serves every render)."""
    return _parsed_short(text) if len(text) <= PARSED_MAX_LENGTH else parse(text, _NAMES)


class QueryTemplateError(ValueError):
    """A query that does not render; the message says what is known, ``line`` is the query's line."""

    def __init__(self, message: str, line: int = 0, missing_variable: str | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.missing_variable = missing_variable


class AnyVariables(Mapping[str, str]):
    """``variables`` of a MetricTemplate linted on its own: any key reads as a sample value."""

    def __getitem__(self, key: str) -> str:
        return f"sample-{key}"

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def render_query(text: str, functions: Mapping[str, str], variables: Mapping[str, str]) -> str:
    """``text`` rendered; QueryTemplateError names an unknown function or variable, or the syntax error."""
    try:
        template = _parsed(text)
    except TemplateError as exc:
        raise QueryTemplateError(f"query does not parse: {_explain(exc)}", exc.line) from None
    try:
        return render(template, {**functions, VARIABLES: variables})
    except MissingKeyError as exc:
        known = ", ".join(sorted(variables)) or "none"
        raise QueryTemplateError(
            f"template variable 'variables.{exc.key}' is not defined (templateVariables has: {known})",
            exc.line,
            exc.key,
        ) from None
    except TemplateError as exc:
        raise QueryTemplateError(f"query does not render: {_explain(exc)}", exc.line) from None


def _explain(error: TemplateError) -> str:
    message = f"line {error.line}: {error.message}" if error.line else error.message
    if error.message.startswith("function "):
        message += (
            f"; a query may use {', '.join(MODEL_FUNCTIONS)}, {VARIABLES}.<key> "
            f"and the Go template functions {', '.join(BUILTINS)}"
        )
    return message


def check_query(text: str, variables: Mapping[str, str] | None = None) -> QueryTemplateError | None:
    """The problem rendering ``text`` with the sample model; ``variables`` None: any key is defined."""
    try:
        render_query(text, SAMPLE, AnyVariables() if variables is None else variables)
    except QueryTemplateError as exc:
        return exc
    return None
