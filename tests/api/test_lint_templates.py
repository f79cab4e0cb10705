"""Lint renders every metric query: template injection, unknown names and unset variables are reported
at the field, with its line, before a canary runs."""

from __future__ import annotations

from canaryctl.api.lint import lint_sources

INJECTION = "{{ cycler.__init__.__globals__.os.popen('id').read() }}"

CANARY = """\
apiVersion: canaryctl.dev/v1beta1
kind: Canary
metadata: {name: web, namespace: test}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  service: {port: 80}
  analysis:
    interval: 1m
    stepWeight: 10
    metrics:
METRIC
"""
INLINE = "      - name: custom\n        thresholdRange: {max: 1}\n        query: "


def canary(metric: str) -> str:
    return CANARY.replace("METRIC\n", metric)


def template(name: str, query: str) -> str:
    return (
        "apiVersion: canaryctl.dev/v1beta1\nkind: MetricTemplate\n"
        f"metadata: {{name: {name}, namespace: test}}\nspec:\n  query: |\n"
        + "".join(f"    {line}\n" for line in query.splitlines())
    )


def errors(*texts: str) -> list[str]:
    return [str(e) for e in lint_sources([("m.yaml", "---\n".join(texts))]).errors]


def test_injection_in_an_inline_query_is_an_error_at_its_line() -> None:
    text = canary(f'{INLINE}"{INJECTION}"\n')
    (error,) = errors(text)
    assert error.startswith("m.yaml:13: Canary/web: spec.analysis.metrics[0].query: query does not parse: ")
    assert "line 1: function 'cycler' is not defined; a query may use name, namespace" in error


def test_injection_in_a_metric_template_is_an_error_at_its_line() -> None:
    text = template("evil", f"sum(up)\n{INJECTION}")
    (error,) = errors(text)
    assert error.startswith("m.yaml:5: MetricTemplate/evil: spec.query: query does not parse: line 2: ")
    assert "function 'cycler' is not defined" in error


def test_attribute_walks_on_model_values_are_errors() -> None:
    (error,) = errors(template("walk", "{{ namespace.__class__ }}"))
    assert "query does not render: line 1: can't evaluate field __class__ in type string" in error


def test_flagger_templates_lint_clean() -> None:
    """Templates from Flagger's docs: skipper's printf, apisix's route, linkerd's variables."""
    skipper = (
        "histogram_quantile(0.99, sum(rate(skipper_serve_route_duration_seconds_bucket{\n"
        '  route=~"{{ printf "kube(ew)?_%s__%s_canary__.*__%s_canary(_[0-9]+)?" '
        'namespace ingress service }}",\n'
        '  le="+Inf"}[1m])) by (le))'
    )
    apisix = (
        'sum(rate(apisix_http_status{route=~"{{ namespace }}_{{ route }}-{{ target }}-canary_.+"}'
        "[{{ interval }}]))"
    )
    linkerd = 'sum(rate(response_latency_ms_bucket{direction="{{ variables.direction }}"}[{{ interval }}]))'
    uses = (
        "      - name: linkerd\n        templateRef: {name: linkerd}\n        thresholdRange: {max: 500}\n"
        "        templateVariables: {direction: inbound}\n"
    )
    assert (
        errors(template("skipper", skipper), template("apisix", apisix), template("linkerd", linkerd)) == []
    )
    assert errors(canary(uses), template("linkerd", linkerd)) == []


def test_a_variable_the_metric_does_not_set_is_reported_at_its_template_variables() -> None:
    linkerd = 'sum(rate(response_total{direction="{{ variables.direction }}"}[{{ interval }}]))'
    uses = (
        "      - name: linkerd\n        templateRef: {name: linkerd}\n        thresholdRange: {max: 500}\n"
        "        templateVariables: {dir: inbound}\n"
    )
    (error,) = errors(canary(uses), template("linkerd", linkerd))
    assert error == (
        "m.yaml:14: Canary/web: spec.analysis.metrics[0].templateVariables: MetricTemplate 'linkerd' reads "
        "variables.direction, which templateVariables does not set (it has: dir)"
    )


def test_an_unknown_flagger_variable_names_what_exists() -> None:
    (error,) = errors(canary(INLINE + '"sum(up{d=\\"{{ deployment }}\\"})"\n'))
    assert "function 'deployment' is not defined; a query may use name, namespace, target, service" in error
    assert "variables.<key> and the Go template functions printf" in error
