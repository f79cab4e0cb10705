"""`canaryctl lint` logic: Flagger manifests, wire field paths, semantic checks, robustness."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canaryctl.api.lint import FLAGGER_HINT, LintError, LintResult, lint_sources
from tests.schemas.validation import crd_schemas, validate

FLAGGER_DIR = Path(__file__).parent / "manifests" / "flagger"
FLAGGER_FILES = sorted(FLAGGER_DIR.glob("*.yaml"))
# Every Canary, MetricTemplate and AlertProvider in Flagger's docs, examples and e2e scripts that
# Flagger's own CRD accepts (each file names where it comes from).
FLAGGER_UPSTREAM = sorted((Path(__file__).parent / "manifests" / "flagger-upstream").glob("*.yaml"))

Doc = dict[str, Any]


def _as_canaryctl(text: str) -> str:
    return text.replace("apiVersion: flagger.app/v1beta1", "apiVersion: canaryctl.dev/v1beta1")


def _lint_docs(*docs: Doc) -> LintResult:
    return lint_sources([("c.yaml", yaml.safe_dump_all(docs))])


def _problems(result: LintResult) -> list[tuple[str, str]]:
    return [(e.field_path, e.message) for e in result.errors]


def valid_canary() -> Doc:
    return {
        "apiVersion": "canaryctl.dev/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": {
                "interval": "1m",
                "threshold": 5,
                "maxWeight": 50,
                "stepWeight": 10,
                "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99}}],
                "webhooks": [{"name": "load-test", "url": "http://loadtester/", "metadata": {"cmd": "hey"}}],
            },
        },
    }


# --- Flagger compatibility -------------------------------------------------------------------------


@pytest.mark.parametrize("path", FLAGGER_FILES, ids=lambda p: p.name)
def test_flagger_manifest_is_clean_after_changing_only_its_api_version(path: Path) -> None:
    result = lint_sources([(path.name, _as_canaryctl(path.read_text()))])
    assert result.errors == []
    assert result.ok and result.documents >= 1


def test_all_flagger_manifests_together_resolve_template_and_provider_refs() -> None:
    result = lint_sources([(p.name, _as_canaryctl(p.read_text())) for p in FLAGGER_FILES])
    assert result.errors == []
    assert (result.documents, result.skipped) == (5, 3)  # Deployment, HPA, Secret skipped


@pytest.mark.parametrize("path", FLAGGER_UPSTREAM, ids=lambda p: p.stem)
def test_document_from_flaggers_repository_lints_clean_after_changing_only_its_api_version(
    path: Path,
) -> None:
    documents = list(yaml.safe_load_all(path.read_text()))
    for document in documents:
        assert validate(document) == ["flagger"]
    result = lint_sources([(path.name, _as_canaryctl(path.read_text()))])
    assert [(e.field_path, e.message) for e in result.errors] == []
    assert result.documents == len(documents)


def _flagger_enum(kind: str, *path: str) -> list[str]:
    schema = crd_schemas("flagger")["flagger.app/v1beta1", kind]["properties"]["spec"]
    for field in path:
        schema = schema["properties"][field]
    return list(schema["enum"])


def test_every_value_flaggers_crd_allows_for_a_provider_is_accepted() -> None:
    canaries = []
    for provider in _flagger_enum("Canary", "provider"):
        canary = valid_canary()
        canary["metadata"]["name"] = provider.replace(":", "-")
        canary["spec"] |= {"provider": provider}
        if provider == "knative":
            canary["spec"]["targetRef"] = {
                "apiVersion": "serving.knative.dev/v1",
                "kind": "Service",
                "name": "podinfo",
            }
            del canary["spec"]["service"]
        if provider.startswith("appmesh"):
            canary["spec"]["service"]["meshName"] = "global"
        canaries.append(canary)
    templates = [
        {
            "apiVersion": "canaryctl.dev/v1beta1",
            "kind": "MetricTemplate",
            "metadata": {"name": kind, "namespace": "test"},
            "spec": {"provider": {"type": kind, "address": "http://metrics:9090"}, "query": "up"},
        }
        for kind in _flagger_enum("MetricTemplate", "provider", "type")
    ]
    alerts = [
        {
            "apiVersion": "canaryctl.dev/v1beta1",
            "kind": "AlertProvider",
            "metadata": {"name": kind, "namespace": "test"},
            "spec": {"type": kind, "address": "https://hooks.example.com/alerts"},
        }
        for kind in _flagger_enum("AlertProvider", "type")
    ]
    assert len(canaries) >= 19 and len(templates) >= 11 and len(alerts) >= 5
    assert _problems(_lint_docs(*canaries, *templates, *alerts)) == []


@pytest.mark.parametrize("path", FLAGGER_FILES, ids=lambda p: p.name)
def test_flagger_api_version_gets_exactly_one_hint(path: Path) -> None:
    result = lint_sources([(path.name, path.read_text())])
    assert [(e.field_path, e.message) for e in result.errors] == [
        ("apiVersion", FLAGGER_HINT)
    ] * result.documents
    assert not result.ok


def test_flagger_document_is_still_checked_beyond_the_hint() -> None:
    canary = valid_canary() | {"apiVersion": "flagger.app/v1beta1"}
    canary["spec"]["analysis"]["stepWieght"] = 5
    assert _problems(_lint_docs(canary)) == [
        ("apiVersion", FLAGGER_HINT),
        ("spec.analysis.stepWieght", "unknown field 'stepWieght' (did you mean 'stepWeight'?)"),
    ]


def test_unknown_version_of_our_group_is_an_error() -> None:
    canary = valid_canary() | {"apiVersion": "canaryctl.dev/v1"}
    assert _problems(_lint_docs(canary)) == [
        ("apiVersion", "apiVersion canaryctl.dev/v1 is not served; use canaryctl.dev/v1beta1")
    ]


def test_other_kinds_and_other_groups_are_skipped_and_counted() -> None:
    other_canary = {"apiVersion": "example.com/v1", "kind": "Canary", "spec": "anything"}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}}
    result = _lint_docs(service, valid_canary(), other_canary)
    assert (result.errors, result.documents, result.skipped) == ([], 1, 2)


# --- schema errors as wire paths -------------------------------------------------------------------


def _with(mutate: Callable[[Doc], object]) -> Doc:
    canary = valid_canary()
    mutate(canary)
    return canary


def _analysis(canary: Doc) -> Doc:
    analysis: Doc = canary["spec"]["analysis"]
    return analysis


SCHEMA_CASES: list[tuple[str, Callable[[Doc], object], str, str]] = [
    (
        "typo",
        lambda c: _analysis(c).update(stepWieght=5),
        "spec.analysis.stepWieght",
        "unknown field 'stepWieght' (did you mean 'stepWeight'?)",
    ),
    (
        "target-kind",
        lambda c: c["spec"]["targetRef"].update(kind="StatefulSet"),
        "spec.targetRef.kind",
        "unknown value 'StatefulSet'; expected 'Deployment', 'DaemonSet' or 'Service'",
    ),
    (
        "webhook-type",
        lambda c: _analysis(c)["webhooks"][0].update(type="pre-rolout"),
        "spec.analysis.webhooks[0].type",
        "unknown value 'pre-rolout'; expected 'confirm-rollout', 'pre-rollout', 'rollout', "
        "'confirm-traffic-increase', 'confirm-promotion', 'post-rollout', 'rollback' or 'event'",
    ),
    (
        "provider",
        lambda c: c["spec"].update(provider="supergloo"),
        "spec.provider",
        "provider 'supergloo' is not supported by canaryctl; use one of",
    ),
    (
        "threshold-range",
        lambda c: _analysis(c)["metrics"][0].update(thresholdRange={"min": 99, "max": 1}),
        "spec.analysis.metrics[0].thresholdRange",
        "min (99.0) must not be greater than max (1.0)",
    ),
    (
        "step-weight-range",
        lambda c: _analysis(c).update(stepWeight=None, stepWeights=[10, 120]),
        "spec.analysis.stepWeights[1]",
        "less than or equal to 100",
    ),
    (
        "interval-unparseable",
        lambda c: _analysis(c).update(interval="1 minute"),
        "spec.analysis.interval",
        "invalid duration '1 minute'",
    ),
    (
        "fast-fail",
        lambda c: _analysis(c).update(fastFail={"maxErrorRate": 150}),
        "spec.analysis.fastFail.maxErrorRate",
        "less than or equal to 100",
    ),
    (
        "target-port",
        lambda c: c["spec"]["service"].update(targetPort=[80]),
        "spec.service.targetPort",
        "must be an integer or a string",
    ),
    (
        "missing",
        lambda c: c["spec"].pop("targetRef"),
        "spec.targetRef",
        "required field missing",
    ),
    (
        "match-typo",
        lambda c: _analysis(c).update(iterations=5, match=[{"headers": {"x-canary": {"exac": "1"}}}]),
        "spec.analysis.match[0].headers.x-canary.exac",
        "unknown field 'exac' (did you mean 'exact'?)",
    ),
    (
        "empty-step",
        lambda c: _analysis(c).update(stepWeight=None, maxWeight=None, steps=[{"setWeight": 10}, {}]),
        "spec.analysis.steps[1]",
        "a step sets exactly one of",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "path", "message"), [c[1:] for c in SCHEMA_CASES], ids=[c[0] for c in SCHEMA_CASES]
)
def test_schema_error_is_reported_at_its_wire_path(
    mutate: Callable[[Doc], object], path: str, message: str
) -> None:
    (error,) = _lint_docs(_with(mutate)).errors
    assert (error.field_path, error.resource) == (path, "Canary/podinfo")
    assert message in error.message


def test_metric_template_provider_type_is_explained() -> None:
    template = {
        "apiVersion": "canaryctl.dev/v1beta1",
        "kind": "MetricTemplate",
        "metadata": {"name": "t"},
        "spec": {"provider": {"type": "prom"}, "query": "up"},
    }
    (error,) = _lint_docs(template).errors
    assert error.field_path == "spec.provider.type"
    assert error.message.startswith("metric provider type 'prom' is not supported by canaryctl; use one of")
    assert "prometheus" in error.message


def test_alert_provider_type_is_explained() -> None:
    provider = {"apiVersion": "canaryctl.dev/v1beta1", "kind": "AlertProvider", "metadata": {"name": "p"}}
    provider["spec"] = {"type": "pagerduty"}
    (error,) = _lint_docs(provider).errors
    assert error.field_path == "spec.type"
    assert error.message == (
        "alert provider type 'pagerduty' is not supported by canaryctl; "
        "use one of discord, gchat, generic, msteams, rocket, slack"
    )


# --- semantic checks -------------------------------------------------------------------------------

SEMANTIC_CASES: list[tuple[str, Callable[[Doc], object], list[tuple[str, str]]]] = [
    (
        "interval-below-10s",
        lambda c: _analysis(c).update(interval="5s"),
        [("spec.analysis.interval", "interval 5s is below the 10s minimum")],
    ),
    (
        "step-weights-not-increasing",
        lambda c: _analysis(c).update(stepWeight=None, stepWeights=[5, 10, 10, 40, 30]),
        [
            ("spec.analysis.stepWeights[2]", "stepWeights must increase strictly; 10 follows 10"),
            ("spec.analysis.stepWeights[4]", "stepWeights must increase strictly; 30 follows 40"),
        ],
    ),
    (
        "step-weight-and-step-weights",
        lambda c: _analysis(c).update(stepWeights=[10, 20]),
        [("spec.analysis.stepWeight", "set stepWeight or stepWeights, not both")],
    ),
    (
        "steps-with-flagger-knobs",
        lambda c: _analysis(c).update(iterations=3, steps=[{"setWeight": 20}, {"pause": {}}]),
        [
            ("spec.analysis.stepWeight", "conflicts with steps: explicit steps replace stepWeight"),
            ("spec.analysis.iterations", "conflicts with steps: explicit steps replace iterations"),
            ("spec.analysis.maxWeight", "conflicts with steps: explicit steps replace maxWeight"),
        ],
    ),
    (
        "match-without-iterations",
        lambda c: _analysis(c).update(match=[{"headers": {"x-canary": {"exact": "insider"}}}]),
        [("spec.analysis.match", "A/B testing (match) needs iterations")],
    ),
    (
        "max-weight-below-step-weight",
        lambda c: _analysis(c).update(maxWeight=5),
        [("spec.analysis.maxWeight", "maxWeight 5 is below stepWeight 10")],
    ),
    (
        "no-strategy",
        lambda c: _analysis(c).update(stepWeight=None, maxWeight=None),
        [("spec.analysis", "no strategy: set stepWeight, stepWeights, iterations or steps")],
    ),
    (
        "metric-without-threshold-range",
        lambda c: _analysis(c)["metrics"][0].pop("thresholdRange"),
        [
            (
                "spec.analysis.metrics[0].thresholdRange",
                "required: without thresholdRange the metric can never fail",
            )
        ],
    ),
    (
        "empty-threshold-range",
        lambda c: _analysis(c)["metrics"][0].update(thresholdRange={}),
        [("spec.analysis.metrics[0].thresholdRange", "set min, max or both")],
    ),
    (
        "custom-metric-without-template",
        lambda c: _analysis(c)["metrics"].append({"name": "error-rate", "thresholdRange": {"max": 1}}),
        [
            (
                "spec.analysis.metrics[1].templateRef",
                "required: 'error-rate' is not a builtin metric (request-success-rate, request-duration)",
            )
        ],
    ),
    (
        "metric-in-analysis-step",
        lambda c: _analysis(c).update(
            stepWeight=None, maxWeight=None, steps=[{"analysis": {"metrics": [{"name": "request-duration"}]}}]
        ),
        [
            (
                "spec.analysis.steps[0].analysis.metrics[0].thresholdRange",
                "required: without thresholdRange the metric can never fail",
            )
        ],
    ),
    (
        "deprecated-canary-analysis",
        lambda c: c["spec"].update(canaryAnalysis=c["spec"].pop("analysis") | {"interval": "1s"}),
        [("spec.canaryAnalysis.interval", "interval 1s is below the 10s minimum")],
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [c[1:] for c in SEMANTIC_CASES], ids=[c[0] for c in SEMANTIC_CASES]
)
def test_semantic_check(mutate: Callable[[Doc], object], expected: list[tuple[str, str]]) -> None:
    result = _lint_docs(_with(mutate))
    assert _problems(result) == expected
    assert not result.ok


def test_iterations_with_step_weight_is_only_a_warning() -> None:
    result = _lint_docs(_with(lambda c: _analysis(c).update(iterations=10)))
    assert _problems(result) == [("spec.analysis.stepWeight", "ignored: iterations selects blue/green")]
    assert result.errors[0].severity == "warning"
    assert result.ok


def _template(name: str, namespace: str | None = None) -> Doc:
    metadata = {"name": name} | ({"namespace": namespace} if namespace else {})
    return {
        "apiVersion": "canaryctl.dev/v1beta1",
        "kind": "MetricTemplate",
        "metadata": metadata,
        "spec": {"query": "up"},
    }


def _uses_template(name: str, namespace: str | None = None) -> Doc:
    ref = {"name": name} | ({"namespace": namespace} if namespace else {})
    metric = {"name": "custom", "templateRef": ref, "thresholdRange": {"max": 1}}
    return _with(lambda c: _analysis(c)["metrics"].append(metric))


def test_template_ref_is_not_checked_when_no_template_is_linted() -> None:
    assert _lint_docs(_uses_template("elsewhere")).errors == []


def test_template_ref_must_resolve_when_templates_are_linted() -> None:
    result = _lint_docs(_uses_template("latency"), _template("errors"))
    assert _problems(result) == [
        (
            "spec.analysis.metrics[1].templateRef",
            "MetricTemplate 'latency' is not defined in the linted files",
        )
    ]


@pytest.mark.parametrize(
    ("template_ns", "ref_ns", "ok"),
    [
        (None, None, True),
        ("test", None, True),
        ("monitoring", "monitoring", True),
        ("monitoring", None, False),
    ],
)
def test_template_ref_namespaces(template_ns: str | None, ref_ns: str | None, ok: bool) -> None:
    # The canary lives in "test": a ref without namespace means "test"; a template without one matches any.
    result = _lint_docs(_uses_template("latency", ref_ns), _template("latency", template_ns))
    assert result.ok is ok


def test_template_ref_resolves_across_files() -> None:
    canary = yaml.safe_dump(_uses_template("latency"))
    template = yaml.safe_dump(_template("latency"))
    assert lint_sources([("canary.yaml", canary), ("template.yaml", template)]).errors == []


def test_alert_provider_ref_must_resolve_when_providers_are_linted() -> None:
    alert = {"name": "slack", "providerRef": {"name": "on-call", "namespace": "flagger"}}
    canary = _with(lambda c: _analysis(c).update(alerts=[alert]))
    provider = {
        "apiVersion": "canaryctl.dev/v1beta1",
        "kind": "AlertProvider",
        "metadata": {"name": "team", "namespace": "flagger"},
        "spec": {"type": "slack"},
    }
    assert _problems(_lint_docs(canary, provider)) == [
        ("spec.analysis.alerts[0].providerRef", "AlertProvider 'on-call' is not defined in the linted files")
    ]
    assert _lint_docs(canary).errors == []


# --- documents and output --------------------------------------------------------------------------


def test_missing_name_and_non_mapping_documents() -> None:
    canary = valid_canary()
    del canary["metadata"]["name"]
    text = yaml.safe_dump(canary)
    result = lint_sources([("f.yaml", text + "---\n- a list\n---\n")])
    metadata_line = text.splitlines().index("metadata:") + 1
    list_line = len(text.splitlines()) + 2
    assert [str(e) for e in result.errors] == [
        f"f.yaml:{metadata_line}: Canary/<unnamed>: metadata.name: required field missing",
        f"f.yaml:{list_line}: document is not a mapping",
    ]


def test_invalid_yaml_names_the_document() -> None:
    text = yaml.safe_dump(valid_canary()) + "---\nkind: Canary\nspec: [unclosed\n"
    (error,) = lint_sources([("f.yaml", text)]).errors
    assert error.doc_index == 2
    assert error.message.startswith("invalid YAML:")


def test_error_line_format() -> None:
    error = LintError("a.yaml", 12, 3, "Canary/web", "spec.analysis.interval", "too short")
    assert str(error) == "a.yaml:12: Canary/web: spec.analysis.interval: too short"
    warning = LintError("a.yaml", 14, 3, "Canary/web", "spec.analysis.stepWeight", "ignored", "warning")
    assert str(warning) == "a.yaml:14: Canary/web: spec.analysis.stepWeight: warning: ignored"


# --- robustness --------------------------------------------------------------------------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _paths(value, (*prefix, i))
    return found


_BASE = valid_canary()
_BASE["spec"]["analysis"].update(
    alerts=[{"name": "a", "providerRef": {"name": "p"}}],
    steps=[{"setWeight": 5}, {"fault": {"abort": {"httpStatus": 500, "percentage": 5}, "duration": "1m"}}],
    fastFail={"maxErrorRate": 5},
)
_BASE["spec"]["service"].update(targetPort="http", match=[{"headers": {"x": {"exact": "1"}}}])
_BASE_PATHS = _paths(_BASE)


@st.composite
def _mutated(draw: st.DrawFn) -> Doc:
    doc = copy.deepcopy(_BASE)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_BASE_PATHS))
        parent: Any = doc
        try:
            for step in path[:-1]:
                parent = parent[step]
            if not path:
                return doc
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "delete" and isinstance(parent, dict):
                parent.pop(path[-1], None)
            elif action == "add" and isinstance(parent, dict):
                parent[draw(st.text(max_size=10))] = draw(_VALUES)
            else:
                parent[path[-1]] = draw(_VALUES)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed this path
    return doc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutated())
def test_random_mutations_never_crash(doc: Doc) -> None:
    result = lint_sources([("m.yaml", yaml.safe_dump(doc))])
    assert all(isinstance(error, LintError) and str(error) for error in result.errors)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2000), st.text(max_size=20))
def test_random_text_edits_never_crash(position: int, insert: str) -> None:
    text = yaml.safe_dump(_BASE)
    result = lint_sources([("m.yaml", text[:position] + insert + text[position:])])
    assert isinstance(result.errors, list)
