"""The Go-template interpreter metric queries are rendered with.

Reference cases are Flagger's own (fluxcd/flagger v1.44.0): the templates and expected queries of
pkg/metrics/observers/render_test.go, skipper_test.go, apisix_test.go and linkerd_test.go, compared
after Flagger's Prometheus provider's whitespace folding (``\\s+`` to one space). printf cases are what
Go's fmt prints for the same verb and value.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from canaryctl.api.gotemplate import MAX_NESTING, MAX_OUTPUT, MAX_WIDTH, TemplateError, Value, parse, render

NAMES = ("name", "namespace", "target", "service", "ingress", "route", "interval", "backend", "variables")


def model(**values: Value) -> dict[str, Value]:
    """Flagger's MetricTemplateModel: every field a niladic function, empty unless given."""
    return {name: "" for name in NAMES} | {"variables": {}} | values


def run(text: str, values: dict[str, Value] | None = None) -> str:
    return render(parse(text, NAMES), values if values is not None else model())


def folded(query: str) -> str:
    """What Flagger's Prometheus provider sends: runs of whitespace as one space."""
    return re.sub(r"\s+", " ", query)


# --- Flagger's own templates and expected queries ------------------------------------------------

SKIPPER_ROUTE = (
    '{{- $route := printf "kube(ew)?_%s__%s_canary__.*__%s_canary(_[0-9]+)?" namespace ingress service }}'
)
APISIX_SUCCESS_RATE = """
\tsum(
\t\trate(
\t\t\tapisix_http_status{
\t\t\t\troute=~"{{ namespace }}_{{ route }}-{{ target }}-canary_.+",
\t\t\t\tcode!~"5.."
\t\t\t}[{{ interval }}]
\t\t)
\t)
\t/
\tsum(
\t\trate(
\t\t\tapisix_http_status{
\t\t\t\troute=~"{{ namespace }}_{{ route }}-{{ target }}-canary_.+"
\t\t\t}[{{ interval }}]
\t\t)
\t) * 100"""
LINKERD_SUCCESS_RATE = """
\tsum(
\t\trate(
\t\t\tresponse_total{
\t\t\t\tnamespace="{{ namespace }}",
\t\t\t\tdeployment=~"{{ target }}",
\t\t\t\tclassification!="failure",
\t\t\t\tdirection="inbound"
\t\t\t}[{{ interval }}]
\t\t)
\t)
\t/
\tsum(
\t\trate(
\t\t\tresponse_total{
\t\t\t\tnamespace="{{ namespace }}",
\t\t\t\tdeployment=~"{{ target }}",
\t\t\t\tdirection="inbound"
\t\t\t}[{{ interval }}]
\t\t)
\t)
\t* 100"""
SKIPPER_SUCCESS_RATE = (
    SKIPPER_ROUTE + "\n"
    '\tsum(rate(skipper_response_duration_seconds_bucket{route=~"{{ $route }}",code!~"5..",le="+Inf"}'
    "[{{ interval }}])) / \n"
    '\tsum(rate(skipper_response_duration_seconds_bucket{route=~"{{ $route }}",le="+Inf"}[{{ interval }}]))'
    " * 100"
)

FLAGGER_CASES = [
    (
        "render_test ok_without_variables",
        'sum(envoy_cluster_upstream_rq{envoy_cluster_name=~"{{ namespace }}_{{ target }}"})',
        model(name="standard", namespace="default", target="myapp", interval="1m"),
        'sum(envoy_cluster_upstream_rq{envoy_cluster_name=~"default_myapp"})',
    ),
    (
        "render_test ok_with_variables",
        'delta(max by (consumer_group) (kafka_consumer_current_offset{cluster="{{ variables.cluster }}", '
        'consumer_group="{{ variables.consumer_group }}"}[{{ interval }}]))',
        model(
            name="kafka_consumer_offset",
            namespace="default",
            interval="1m",
            variables={"cluster": "dev", "consumer_group": "my_consumer"},
        ),
        'delta(max by (consumer_group) (kafka_consumer_current_offset{cluster="dev", '
        'consumer_group="my_consumer"}[1m]))',
    ),
    (
        "skipper_test GetRequestSuccessRate",
        SKIPPER_SUCCESS_RATE,
        model(namespace="skipper", interval="1m", service="backend", ingress="skipper_ingress"),
        " sum(rate(skipper_response_duration_seconds_bucket"
        '{route=~"kube(ew)?_skipper__skipper_ingress_canary__.*__backend_canary(_[0-9]+)?",code!~"5..",'
        'le="+Inf"}[1m])) / sum(rate(skipper_response_duration_seconds_bucket'
        '{route=~"kube(ew)?_skipper__skipper_ingress_canary__.*__backend_canary(_[0-9]+)?",'
        'le="+Inf"}[1m])) * 100',
    ),
    (
        "apisix_test GetRequestSuccessRate",
        APISIX_SUCCESS_RATE,
        model(
            name="podinfo",
            namespace="default",
            target="podinfo",
            service="podinfo",
            route="podinfo",
            interval="1m",
        ),
        ' sum( rate( apisix_http_status{ route=~"default_podinfo-podinfo-canary_.+", code!~"5.." }[1m] ) ) / '
        'sum( rate( apisix_http_status{ route=~"default_podinfo-podinfo-canary_.+" }[1m] ) ) * 100',
    ),
    (
        "linkerd_test GetRequestSuccessRate",
        LINKERD_SUCCESS_RATE,
        model(name="podinfo", namespace="default", target="podinfo", service="podinfo", interval="1m"),
        ' sum( rate( response_total{ namespace="default", deployment=~"podinfo", classification!="failure", '
        'direction="inbound" }[1m] ) ) / sum( rate( response_total{ namespace="default", '
        'deployment=~"podinfo", direction="inbound" }[1m] ) ) * 100',
    ),
]


@pytest.mark.parametrize(
    ("template", "values", "expected"), [c[1:] for c in FLAGGER_CASES], ids=[c[0] for c in FLAGGER_CASES]
)
def test_flagger_templates_render_to_flaggers_queries(
    template: str, values: dict[str, Value], expected: str
) -> None:
    assert folded(run(template, values)) == expected


def test_missing_variable_key_is_an_error_as_in_flagger() -> None:
    template = FLAGGER_CASES[1][1]
    values = model(interval="1m", variables={"invalid": "dev", "consumer_group": "my_consumer"})
    with pytest.raises(TemplateError, match="map has no entry for key 'cluster'"):
        run(template, values)


# --- printf and printing, as Go's fmt ---------------------------------------------------------------

PRINTF_CASES = [
    ('{{ printf "%d|%5d|%-5d|%05d|%+d" 42 42 42 -42 5 }}', "42|   42|42   |-0042|+5"),
    ('{{ printf "%x|%X|%#x|%o|%b|%c" 255 255 255 8 5 65 }}', "ff|FF|0xff|10|101|A"),
    (
        '{{ printf "%f|%.2f|%08.3f|%6.2f|%e|%g|%.3g" '
        "1.5 3.14159 3.14159 -1.5 1234.5678 0.000012 1234.5678 }}",
        "1.500000|3.14|0003.142| -1.50|1.234568e+03|1.2e-05|1.23e+03",
    ),
    (
        '{{ printf "%s|%q|%v|%x|%.2s|%-4s|%4s" "a" "a\\"b" "v" "hi" "abc" "ab" "ab" }}',
        'a|"a\\"b"|v|6869|ab|ab  |  ab',
    ),
    ('{{ printf "%v|%v|%v|%v|%t" 1.0 100000.0 1000000.0 true false }}', "1|100000|1e+06|true|false"),
    ('{{ printf "%d|%s" "x" 1 }}', "%!d(string=x)|%!s(int=1)"),
    ('{{ printf "%s %s" "a" }}', "a %!s(MISSING)"),
    ('{{ printf "a" 1 "b" }}', "a%!(EXTRA int=1, string=b)"),
    ('{{ printf "100%%" }}', "100%"),
    ('{{ print 1 2 "a" 3 }}', "1 2a3"),
    ('{{ println 1 "a" }}', "1 a\n"),
    ("{{ 1.5 }} {{ 1e21 }} {{ 'a' }} {{ 0x10 }} {{ 017 }} {{ true }}", "1.5 1e+21 97 16 15 true"),
]


@pytest.mark.parametrize(("template", "expected"), PRINTF_CASES)
def test_printing_follows_go(template: str, expected: str) -> None:
    assert run(template) == expected


# --- the rest of the language --------------------------------------------------------------------------


LANGUAGE_CASES = [
    ("a  {{- 1 -}}  b", "a1b"),
    ("a {{/* a comment */}} b", "a  b"),
    ("a\n  {{- /* trimmed */ -}}\n  b", "ab"),
    ('{{ if eq namespace "prod" }}p{{ else if eq namespace "test" }}t{{ else }}o{{ end }}', "t"),
    ("{{ with variables.env }}{{ . }}{{ else }}none{{ end }}", "qa"),
    ('{{ with index variables "missing" }}{{ . }}{{ else }}none{{ end }}', "none"),
    ('{{ target | printf "%s-primary" }}', "web-primary"),
    ("{{ (variables).env }} {{ len namespace }} {{ len variables }}", "qa 4 1"),
    (
        '{{ urlquery "a b&c/~" }} {{ html "<a href=\'x\'>" }} {{ js "a\'b<" }}',
        "a+b%26c%2F~ &lt;a href=&#39;x&#39;&gt; a\\'b\\u003C",
    ),
    ('{{ slice "abcdef" 1 3 }} {{ index "ab" 1 }}', "bc 98"),
    (
        '{{ and 1 0 2 }} {{ or 0 "" "x" }} {{ not 0 }} {{ lt 1 2 }} {{ ne "a" "b" }} {{ eq 1 2 3 1 }}',
        "0 x true true true true",
    ),
    ("{{ and false (index 5) }}", "false"),  # short-circuit: the erroring argument is never evaluated
    ('{{ $x := printf "%s.%s" target namespace }}[{{ $x }}]', "[web.test]"),
]


@pytest.mark.parametrize(("template", "expected"), LANGUAGE_CASES)
def test_language(template: str, expected: str) -> None:
    assert run(template, model(target="web", namespace="test", variables={"env": "qa"})) == expected


# --- nothing but the model is reachable ----------------------------------------------------------------

INJECTIONS = [
    "{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}",
    "{{ self.__init__.__globals__.__builtins__.__import__('os').system('touch {marker}') }}",
    "{{ lipsum.__globals__['os'].popen('touch {marker}').read() }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ namespace.__class__.__mro__ }}",
    "{{ (variables).__class__ }}",
    "{{ variables.items }}",
    "{{ call namespace }}",
    '{{ namespace | attr "__class__" }}',
    "{{ range $i, $v := variables }}{{ $v }}{{ end }}",
    '{{ template "x" }}',
    '{{ define "x" }}y{{ end }}',
    "{{ .Os }}",
    "{% for x in [1] %}{{ x }}{% endfor %}",
]


@pytest.mark.parametrize("template", INJECTIONS)
def test_python_and_go_escapes_reach_nothing(template: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(TemplateError):
        run(template.replace("{marker}", str(marker)), model(namespace="test", variables={"a": "b"}))
    assert not marker.exists()


def test_unknown_function_is_a_parse_error_naming_it() -> None:
    with pytest.raises(TemplateError, match="function 'cycler' is not defined") as caught:
        parse("ok\n{{ cycler.__init__.__globals__.os.popen('id').read() }}", NAMES)
    assert caught.value.line == 2


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ namespace 1 }}", "wrong number of args for namespace: want 0 got 1"),
        ('{{ "a" 1 }}', "can't give an argument to a non-function"),
        ("{{ target ", "unclosed action"),
        ('{{ "open }}', "unterminated quoted string"),
        ("{{ if true }}x", "if without {{ end }}"),
        ("{{ end }}", "unexpected {{ end }}"),
        ("{{ $x = 1 }}", "assignment"),
        ("{{ $y }}", "undefined variable '$y'"),
        ("{{ eq 1 1.0 }}", "incompatible types for comparison"),
        ("{{ len 3 }}", "len of type int"),
    ],
)
def test_errors_name_the_problem(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=re.escape(message)):
        run(template)


# --- bounds ------------------------------------------------------------------------------------------


def test_output_is_bounded() -> None:
    assert len(run('{{ printf "%1000s" "x" }}' * (MAX_OUTPUT // MAX_WIDTH))) <= MAX_OUTPUT
    with pytest.raises(TemplateError, match=f"longer than {MAX_OUTPUT} characters"):
        run('{{ printf "%1000s" "x" }}' * (MAX_OUTPUT // MAX_WIDTH + 1))
    with pytest.raises(TemplateError, match=f"at most {MAX_WIDTH}"):
        run('{{ printf "%1000000000s" "x" }}')


def test_template_text_is_bounded_and_its_lines_counted_to_the_end() -> None:
    """Comments render nothing, so only a cap on the text bounds the work of parsing them."""
    comments = "{{/**/}}\n" * (MAX_OUTPUT // 9)
    assert run(comments) == "\n" * (MAX_OUTPUT // 9)
    with pytest.raises(TemplateError, match=f"line {MAX_OUTPUT // 9}: unclosed action"):
        run(comments[: -9 * 2] + "{{/**/}}\n{{ target ")
    with pytest.raises(TemplateError, match=f"template is longer than {MAX_OUTPUT} characters"):
        run(comments + "{{/**/}}")


def test_nesting_is_bounded() -> None:
    inside = "(" * MAX_NESTING + "1" + ")" * MAX_NESTING
    assert run("{{ " + inside + " }}") == "1"
    with pytest.raises(TemplateError, match="nested deeper"):
        run("{{ (" + inside + ") }}")
    blocks = "{{ if true }}" * (MAX_NESTING + 1) + "x" + "{{ end }}" * (MAX_NESTING + 1)
    with pytest.raises(TemplateError, match="nested deeper"):
        run(blocks)
