"""The model a canary's metric queries are rendered with, and the rendering (strict: a missing variable
is an error).

Flagger's MetricTemplates are Go templates calling niladic functions (``{{ namespace }}``,
``{{ variables.foo }}``, ``{{ printf "%s-%s" namespace target }}``); ``canaryctl.api.query_template``
renders them with a Go-template interpreter that reaches nothing but this model. canaryctl adds
``backend``: the mesh cluster of the side being measured (``<apex>-canary_<namespace>`` or
``<apex>-primary_<namespace>``), which is what the included mesh's per-backend stats are labelled with.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from canaryctl.api.models import PRIMARY_SUFFIX, Canary
from canaryctl.api.query_template import QueryTemplateError, render_query
from canaryctl_mesh.translate import cluster_name
from canaryctl_providers.metrics.errors import TemplateRenderError

DEFAULT_INTERVAL = "1m"


@dataclass(frozen=True)
class TemplateModel:
    name: str
    namespace: str
    target: str
    service: str
    ingress: str
    route: str
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
            route=_route(canary, primary),
            interval=interval or DEFAULT_INTERVAL,
            backend=cluster_name(spec.side_service(primary), namespace),
            variables=dict(variables or {}),
        )

    def functions(self) -> dict[str, str]:
        """The niladic functions of the model (``variables`` is the map beside them)."""
        return {
            "name": self.name,
            "namespace": self.namespace,
            "target": self.target,
            "service": self.service,
            "ingress": self.ingress,
            "route": self.route,
            "interval": self.interval,
            "backend": self.backend,
        }


def _route(canary: Canary, primary: bool) -> str:
    """``spec.routeRef``'s name, else the target's; for a Knative target the revision measured (Flagger:
    the latest created one), which the Canary's status names (its revisions are the revision names)."""
    spec, status = canary.spec, canary.status
    if spec.target_ref.knative and status is not None:
        revision = status.last_promoted_spec if primary else status.last_applied_spec
        if revision:
            return revision
    return spec.route_ref.name if spec.route_ref else spec.target_ref.name


def render(template: str, model: TemplateModel) -> str:
    """The query for ``model``; TemplateRenderError names a missing variable or the syntax error."""
    try:
        return render_query(template, model.functions(), model.variables)
    except QueryTemplateError as exc:
        raise TemplateRenderError(str(exc)) from exc
