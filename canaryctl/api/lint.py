"""Offline checks of Canary, MetricTemplate and AlertProvider manifests (the logic of ``canaryctl lint``).

Two layers: the pydantic models (with errors translated to camelCase wire paths such as
``spec.analysis.metrics[0].thresholdRange``), then semantic checks the schema cannot express —
strategy knobs that contradict each other, metrics that can never fail, references to templates and
alert providers that do not exist. Decisions worth knowing:

- ``flagger.app/v1beta1`` documents get one apiVersion error with the fix, and are then linted as
  ``canaryctl.dev/v1beta1`` anyway, so one run shows everything left to change.
- Other kinds (Deployments, Services... GitOps files mix them) are skipped and counted, not errors.
- ``templateRef`` / ``providerRef`` are checked only when the input defines at least one MetricTemplate /
  AlertProvider: lint cannot see the cluster, and warning on every reference would teach people to
  ignore warnings. When the input does define some, an unknown name is an error.
- Semantic checks run only on documents that pass the schema: they reason about a valid spec.
- Warnings do not fail lint. There are two: ``iterations`` next to ``stepWeight``/``stepWeights``
  (Flagger ignores the weights), and a Canary without ``spec.service`` (Flagger's schema allows it, but
  canaryctl's routers need its port; a Knative Service target needs none).
- Types are checked strictly, as the API server checks them against the CRD: ``port: "9898"`` is an
  error here because it would be one there.
- Every metric query (inline ``query``, MetricTemplate ``spec.query``) is rendered with a sample model,
  so an unknown function, a syntax error or a ``variables.<key>`` the metric's ``templateVariables``
  lack is found before the canary runs.
- Every error carries the line of the offending field (of its parent when the field is missing).
  YAML is read with ``canaryctl.api.yaml_loader``: aliases, nesting and size are bounded, duplicate keys
  are errors.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any, Literal

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from canaryctl.api import models
from canaryctl.api.crd import Schema, structural_schema
from canaryctl.api.query_template import check_query
from canaryctl.api.yaml_loader import FieldPath, YamlDocument, YamlError, load_documents
from canaryctl_mesh.duration import parse_duration
from canaryctl_mesh.regex import envoy_regex_problem

Severity = Literal["error", "warning"]

FLAGGER_HINT = (
    f"apiVersion {models.FLAGGER_API_VERSION} is Flagger's; use {models.API_VERSION} (the spec is compatible)"
)
BUILTIN_METRICS = ("request-success-rate", "request-duration")
MIN_INTERVAL_SECONDS = 10.0
_OUR_GROUPS = (models.GROUP, models.FLAGGER_API_VERSION.split("/")[0])
_TYPE_NAMES = {
    "int": "an integer",
    "str": "a string",
    "float": "a number",
    "bool": "a boolean",
    "list[str]": "a list of strings",
}


@dataclass(frozen=True)
class LintError:
    """One problem, located by file, line, document (counting from 1) and wire field path."""

    file: str
    line: int
    doc_index: int
    resource: str
    field_path: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        message = self.message if self.severity == "error" else f"warning: {self.message}"
        parts = [part for part in (self.resource, self.field_path) if part]
        return ": ".join([f"{self.file}:{self.line}", *parts, message])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LintResult:
    errors: list[LintError] = field(default_factory=list)
    documents: int = 0
    skipped: int = 0

    @property
    def ok(self) -> bool:
        return not any(error.severity == "error" for error in self.errors)


@dataclass(frozen=True)
class _Document:
    file: str
    source: YamlDocument
    kind: str
    body: dict[str, Any]

    @property
    def index(self) -> int:
        return self.source.index

    @property
    def name(self) -> str | None:
        metadata = self.body.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        return name if isinstance(name, str) else None

    @property
    def namespace(self) -> str | None:
        metadata = self.body.get("metadata")
        namespace = metadata.get("namespace") if isinstance(metadata, dict) else None
        return namespace if isinstance(namespace, str) else None

    @property
    def resource(self) -> str:
        return f"{self.kind}/{self.name or '<unnamed>'}"

    def error(
        self, path: str, message: str, severity: Severity = "error", at: FieldPath | None = None
    ) -> LintError:
        """An error at ``path``; its line is that of ``at`` (default: ``path`` read as field names)."""
        line = self.source.line_of(at if at is not None else field_path_steps(path))
        return LintError(self.file, line, self.index, self.resource, path, message, severity)


_PATH_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def field_path_steps(path: str) -> FieldPath:
    """``spec.analysis.metrics[0].interval`` as ``("spec", "analysis", "metrics", 0, "interval")``."""
    return tuple(
        found.group(1) if found.group(1) is not None else int(found.group(2))
        for found in _PATH_STEP.finditer(path)
    )


class _Names:
    """The resources of one kind defined in the input; ``None`` means "none defined"."""

    def __init__(self, documents: Iterable[_Document], kind: str) -> None:
        found = [doc for doc in documents if doc.kind == kind and doc.name]
        self.entries: list[_Document] | None = found or None

    def find(self, name: str, namespace: str | None) -> _Document | None:
        """The match (an unset namespace matches any), or None."""
        return next(
            (
                doc
                for doc in self.entries or []
                if doc.name == name
                and (doc.namespace is None or namespace is None or doc.namespace == namespace)
            ),
            None,
        )

    def missing(self, name: str, namespace: str | None) -> bool:
        """True only when the input defines this kind and none matches."""
        return self.entries is not None and self.find(name, namespace) is None


# ---------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------


def lint_sources(sources: Iterable[tuple[str, str]]) -> LintResult:
    """Lint (file name, YAML text) pairs together, so references may cross files."""
    result = LintResult()
    documents: list[_Document] = []
    order: dict[str, int] = {}
    for file, text in sources:
        order.setdefault(file, len(order))
        documents.extend(_split(file, text, result))
    result.documents = len(documents)
    templates = _Names(documents, "MetricTemplate")
    providers = _Names(documents, "AlertProvider")
    for doc in documents:
        result.errors.extend(_lint_document(doc, templates, providers))
    result.errors.sort(key=lambda error: (order[error.file], error.doc_index))  # stable: keeps field order
    return result


def _split(file: str, text: str, result: LintResult) -> Iterator[_Document]:
    """Our documents of one file; YAML errors and non-mappings go to ``result``, other kinds are counted."""
    index = 0
    try:
        for source in load_documents(text):
            index, body = source.index, source.body
            if body is None:
                continue
            if not isinstance(body, dict):
                result.errors.append(LintError(file, source.line, index, "", "", "document is not a mapping"))
                continue
            kind, api_version = body.get("kind"), body.get("apiVersion")
            if (
                isinstance(kind, str)
                and kind in models.KINDS
                and str(api_version).split("/")[0] in _OUR_GROUPS
            ):
                yield _Document(file, source, kind, body)
            else:
                result.skipped += 1
    except YamlError as exc:
        result.errors.append(LintError(file, exc.line, index + 1, "", "", f"invalid YAML: {exc.message}"))


def _lint_document(doc: _Document, templates: _Names, providers: _Names) -> Iterator[LintError]:
    api_version = doc.body.get("apiVersion")
    if api_version == models.FLAGGER_API_VERSION:
        yield doc.error("apiVersion", FLAGGER_HINT)
    elif api_version != models.API_VERSION:
        yield doc.error("apiVersion", f"apiVersion {api_version} is not served; use {models.API_VERSION}")
    model = models.KINDS[doc.kind]
    try:
        # Through JSON and strict, as the API server reads a manifest: "9898" is not an integer.
        wire = json.dumps({**doc.body, "apiVersion": models.API_VERSION})
        resource = model.model_validate_json(wire, strict=True)
    except ValidationError as exc:
        yield from _schema_errors(doc, exc.errors(include_url=False))
        return
    if not doc.name:
        yield doc.error("metadata.name", "required field missing")
    if isinstance(resource, models.Canary):
        yield from _check_canary(doc, resource, templates, providers)
    elif isinstance(resource, models.MetricTemplate):
        problem = check_query(resource.spec.query)
        if problem is not None:
            yield doc.error("spec.query", str(problem))


# ---------------------------------------------------------------------------------------------------
# Schema errors → wire paths
# ---------------------------------------------------------------------------------------------------


@cache
def _wire_schema(kind: str) -> Schema:
    return structural_schema(models.KINDS[kind].model_json_schema(by_alias=True, mode="validation"))


@dataclass(frozen=True)
class _Location:
    path: str  # as printed: spec.analysis.metrics[0].interval
    steps: FieldPath  # as looked up in the YAML document
    tag: str | None  # the union member tag that ends the loc, if any
    parent: Schema


def _locate(loc: Sequence[int | str], schema: Schema) -> _Location:
    """Wire path of a pydantic ``loc``, the union member tag that ends it (if any), and the parent node.

    Pydantic puts union member tags (``int``, ``list[str]``) into ``loc``; they are recognised as string
    steps below an untyped (union) node of the structural schema.
    """
    path, node, parent = "", schema, schema
    steps: list[str | int] = []
    for step in loc:
        if isinstance(step, int):
            path += f"[{step}]"
            steps.append(step)
            parent, node = node, node.get("items", {})
            continue
        if "type" not in node:
            return _Location(path, tuple(steps), str(step), parent)
        path += f".{step}" if path else str(step)
        steps.append(str(step))
        child = node.get("properties", {}).get(step, node.get("additionalProperties", {}))
        parent, node = node, child
    return _Location(path, tuple(steps), None, parent)


def _schema_errors(doc: _Document, details: list[ErrorDetails]) -> Iterator[LintError]:
    union_tags: dict[str, tuple[_Location, list[str]]] = {}
    for detail in details:
        where = _locate(detail["loc"], _wire_schema(doc.kind))
        if where.tag is not None:
            union_tags.setdefault(where.path, (where, []))[1].append(where.tag)
        else:
            yield doc.error(where.path, _message(detail, where.parent), at=where.steps)
    for path, (where, tags) in union_tags.items():
        message = "must be " + " or ".join(_TYPE_NAMES.get(tag, tag) for tag in tags)
        yield doc.error(path, message, at=where.steps)


def _message(detail: ErrorDetails, parent: Schema) -> str:
    kind, ctx = detail["type"], detail.get("ctx", {})
    if kind == "extra_forbidden":
        unknown = str(detail["loc"][-1])
        close = difflib.get_close_matches(unknown, list(parent.get("properties", {})), n=1)
        return f"unknown field {unknown!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    if kind == "missing":
        return "required field missing"
    if kind == "enum":
        return f"unknown value {_short(detail['input'])}; expected {ctx['expected']}"
    if kind == "value_error":
        return str(ctx["error"])
    return detail["msg"]


def _short(value: object, limit: int = 80) -> str:
    """A value for a message: its repr, cut (an error must not repeat a large input back)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------------
# Semantic checks (Canary)
# ---------------------------------------------------------------------------------------------------


def _check_canary(
    doc: _Document, canary: models.Canary, templates: _Names, providers: _Names
) -> Iterator[LintError]:
    spec = canary.spec
    knative_router = spec.provider == "knative"
    if spec.provider is not None and knative_router != spec.target_ref.knative:
        yield doc.error(
            "spec.provider",
            "knative routes a Knative Service target (apiVersion serving.knative.dev/v1, kind Service) "
            "and a Knative Service target needs provider knative",
        )
    if spec.service_spec is None and not spec.target_ref.knative:
        yield doc.error(
            "spec.service",
            "not set: the routers and generated Services need spec.service.port, so only a run without "
            "them (canaryctl local run) can use this Canary",
            "warning",
        )
    base, analysis = ("spec.analysis", spec.analysis)
    if analysis is None and spec.canary_analysis is not None:
        base, analysis = ("spec.canaryAnalysis", spec.canary_analysis)
    if analysis is None:
        return
    yield from _check_strategy(doc, base, analysis)
    if spec.provider in (None, models.INCLUDED_MESH):
        yield from _check_mesh_regexes(doc, base, analysis.match or [])
    metric_lists = [(base, analysis.metrics)] + [
        (f"{base}.steps[{i}].analysis", step.analysis.metrics)
        for i, step in enumerate(analysis.steps or [])
        if step.analysis is not None
    ]
    for owner, metrics in metric_lists:
        for i, metric in enumerate(metrics or []):
            yield from _check_metric(doc, f"{owner}.metrics[{i}]", metric, templates)
    for i, alert in enumerate(analysis.alerts or []):
        ref = alert.provider_ref
        if providers.missing(ref.name, ref.namespace or doc.namespace):
            yield doc.error(
                f"{base}.alerts[{i}].providerRef",
                f"AlertProvider {ref.name!r} is not defined in the linted files",
            )


def _check_mesh_regexes(
    doc: _Document, base: str, matches: list[models.HTTPMatchRequest]
) -> Iterator[LintError]:
    """The included mesh (the default router) hands A/B regexes to its sidecars' Envoy, which refuses
    programs above its size limit (the router also checks exact, prefix and suffix values, which it
    turns into regexes)."""
    for i, match in enumerate(matches):
        fields = [("uri", match.uri), *((f"headers.{k}", v) for k, v in (match.headers or {}).items())]
        for name, value in fields:
            problem = envoy_regex_problem(value.regex) if value is not None and value.regex else None
            if problem is not None:
                yield doc.error(f"{base}.match[{i}].{name}.regex", f"{problem}; the included mesh refuses it")


def _check_strategy(doc: _Document, base: str, analysis: models.CanaryAnalysis) -> Iterator[LintError]:
    """Flagger picks its strategy from which knobs are set; contradictory sets are errors here."""
    if parse_duration(analysis.interval) < MIN_INTERVAL_SECONDS:
        yield doc.error(f"{base}.interval", f"interval {analysis.interval} is below the 10s minimum")
    weights = analysis.step_weights or []
    for i in range(1, len(weights)):
        if weights[i] <= weights[i - 1]:
            yield doc.error(
                f"{base}.stepWeights[{i}]",
                f"stepWeights must increase strictly; {weights[i]} follows {weights[i - 1]}",
            )
    knobs = {
        "stepWeight": analysis.step_weight,
        "stepWeights": analysis.step_weights,
        "iterations": analysis.iterations,
        "match": analysis.match,
        "maxWeight": analysis.max_weight,
    }
    if analysis.steps:
        for knob, value in knobs.items():
            if value is not None:
                yield doc.error(f"{base}.{knob}", f"conflicts with steps: explicit steps replace {knob}")
        return
    if analysis.step_weight is not None and analysis.step_weights is not None:
        yield doc.error(f"{base}.stepWeight", "set stepWeight or stepWeights, not both")
    if analysis.match and not analysis.iterations:
        yield doc.error(f"{base}.match", "A/B testing (match) needs iterations")
    if analysis.iterations:
        for knob in ("stepWeight", "stepWeights"):
            if knobs[knob] is not None:
                message = f"ignored: iterations selects {'A/B testing' if analysis.match else 'blue/green'}"
                yield doc.error(f"{base}.{knob}", message, "warning")
    elif not (analysis.step_weight or analysis.step_weights):
        yield doc.error(base, "no strategy: set stepWeight, stepWeights, iterations or steps")
    if (
        analysis.max_weight is not None
        and analysis.step_weight
        and analysis.max_weight < analysis.step_weight
    ):
        yield doc.error(
            f"{base}.maxWeight",
            f"maxWeight {analysis.max_weight} is below stepWeight {analysis.step_weight}",
        )


def _check_metric(
    doc: _Document, path: str, metric: models.CanaryMetric, templates: _Names
) -> Iterator[LintError]:
    ref = metric.template_ref
    if ref is None and metric.query is None and metric.name not in BUILTIN_METRICS:
        yield doc.error(
            f"{path}.templateRef",
            f"required: {metric.name!r} is not a builtin metric ({', '.join(BUILTIN_METRICS)})",
        )
    if ref is not None and templates.missing(ref.name, ref.namespace or doc.namespace):
        yield doc.error(
            f"{path}.templateRef", f"MetricTemplate {ref.name!r} is not defined in the linted files"
        )
    yield from _check_queries(doc, path, metric, templates)
    bounds = metric.threshold_range
    if bounds is None and metric.threshold is None and metric.compare is None:
        yield doc.error(
            f"{path}.thresholdRange", "required: without thresholdRange the metric can never fail"
        )
    elif bounds is not None and bounds.min is None and bounds.max is None:
        yield doc.error(f"{path}.thresholdRange", "set min, max or both")


def _check_queries(
    doc: _Document, path: str, metric: models.CanaryMetric, templates: _Names
) -> Iterator[LintError]:
    """Render the metric's query with its templateVariables: inline here, a template's at its own
    ``spec.query`` (only the variables it reads are this metric's concern)."""
    variables = metric.template_variables or {}
    if metric.query is not None:
        problem = check_query(metric.query, variables)
        if problem is not None:
            yield doc.error(f"{path}.query", str(problem))
    ref = metric.template_ref
    template = templates.find(ref.name, ref.namespace or doc.namespace) if ref is not None else None
    spec = template.body.get("spec") if template is not None else None
    query = spec.get("query") if isinstance(spec, dict) else None
    if ref is not None and isinstance(query, str):
        problem = check_query(query, variables)
        if problem is not None and problem.missing_variable is not None:
            known = ", ".join(sorted(variables)) or "none"
            yield doc.error(
                f"{path}.templateVariables" if variables else path,
                f"MetricTemplate {ref.name!r} reads variables.{problem.missing_variable}, "
                f"which templateVariables does not set (it has: {known})",
            )
