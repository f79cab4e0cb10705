"""A/B match regexes are RE2's: `canaryctl lint` refuses one RE2 cannot compile for every router, and
one the included mesh's Envoy would refuse (program size above 100) where the included mesh routes."""

from __future__ import annotations

import pytest

from tests.api.test_flagger_fields import line_of, lint


def manifest(regex: str, provider: str | None = None) -> str:
    return (
        "apiVersion: canaryctl.dev/v1beta1\nkind: Canary\nmetadata: {name: podinfo}\nspec:\n"
        + (f"  provider: {provider}\n" if provider else "")
        + "  targetRef: {apiVersion: apps/v1, kind: Deployment, name: podinfo}\n"
        "  service: {port: 9898}\n  analysis:\n    iterations: 10\n    match:\n"
        "    - headers:\n        x-user:\n          exact: alice\n"
        f"    - headers:\n        x-canary:\n          regex: '{regex}'\n"
    )


@pytest.mark.parametrize(
    ("regex", "why"),
    [("(?=a)", "invalid perl operator"), ("(a)\\1", "invalid escape sequence"), ("", "at least 1 character")],
)
@pytest.mark.parametrize("provider", [None, "istio"])
def test_a_regex_re2_cannot_compile_is_refused_at_its_line(
    regex: str, why: str, provider: str | None
) -> None:
    text = manifest(regex, provider)
    ((line, path, message, severity),) = lint(text)
    assert (line, path, severity) == (
        line_of(text, "regex:"),
        "spec.analysis.match[1].headers.x-canary.regex",
        "error",
    )
    assert why in message


def test_a_regex_too_large_for_the_included_mesh_is_refused_where_it_routes() -> None:
    for provider in (None, "canaryctl"):
        text = manifest("a{1000}", provider)
        ((line, path, message, _),) = lint(text)
        assert (line, path) == (line_of(text, "regex:"), "spec.analysis.match[1].headers.x-canary.regex")
        assert "RE2 program size 1004 > 100" in message
    assert lint(manifest("a{1000}", "istio")) == []  # other routers: their proxies set their own limits
    assert lint(manifest("a{96}")) == []
