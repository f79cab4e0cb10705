"""Render metric queries with Flagger's template variables, strictly: a missing variable is an error.

Flagger templates are Go templates calling niladic functions (``{{ namespace }}``, ``{{ target }}``,
``{{ variables.foo }}``); in Jinja the same text reads plain variables, so they render unchanged.
canaryctl adds ``backend``: the mesh cluster of the side being measured (``<apex>-canary.<namespace>``
or ``<apex>-primary.<namespace>``), which is what the included mesh's per-backend stats are labelled with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import jinja2

from canaryctl.api.models import PRIMARY_SUFFIX, Canary
from canaryctl.mesh.translate import cluster_name
from canaryctl.providers.metrics.errors import TemplateRenderError

DEFAULT_INTERVAL = "1m"

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
_UNDEFINED = re.compile(r"'([^']+)' is undefined|has no attribute '([^']+)'")


@dataclass(frozen=True)
class TemplateModel:
    name: str
    namespace: str
    target: str
    service: str
    ingress: str
    interval: str
    backend: str
    variables: dict[str, str] = field(default_factory=dict)

    @classmethod
    def for_canary(
        cls,
        canary: Canary,
        interval: str | None = None,
        variables: dict[str, str] | None = None,
        primary: bool = False,
    ) -> TemplateModel:
        """Flagger's model; ``primary`` points target and service at the primary's objects."""
        spec = canary.spec
        apex = spec.apex_name
        suffix = PRIMARY_SUFFIX if primary else ""
        namespace = canary.metadata.namespace or "default"
        return cls(
            name=canary.metadata.name or "",
            namespace=namespace,
            target=spec.target_ref.name + suffix,
            service=apex + suffix,
            ingress=spec.ingress_ref.name if spec.ingress_ref else spec.target_ref.name,
            interval=interval or DEFAULT_INTERVAL,
            backend=cluster_name(spec.side_service(primary), namespace),
            variables=dict(variables or {}),
        )

    def context(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "namespace": self.namespace,
            "target": self.target,
            "service": self.service,
            "ingress": self.ingress,
            "interval": self.interval,
            "backend": self.backend,
            "variables": self.variables,
        }


def render(template: str, model: TemplateModel) -> str:
    """The query for ``model``; TemplateRenderError names a missing variable or the syntax error."""
    try:
        return _ENV.from_string(template).render(model.context())
    except jinja2.UndefinedError as exc:
        found = _UNDEFINED.search(exc.message or "")
        if found and found.group(2):
            missing = f"variables.{found.group(2)}"
            known = ", ".join(sorted(model.variables)) or "none"
            raise TemplateRenderError(
                f"template variable {missing!r} is not defined (templateVariables has: {known})"
            ) from exc
        name = found.group(1) if found else exc.message
        known = ", ".join(model.context())
        raise TemplateRenderError(f"template variable {name!r} is not defined (known: {known})") from exc
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateRenderError(
            f"query template does not parse: {exc.message} (line {exc.lineno})"
        ) from exc
