"""Regexes are checked before any Envoy sees them, and the check agrees with a real Envoy's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from canaryctl_mesh import config
from canaryctl_mesh.regex import envoy_regex_problem
from tests.mesh.conftest import envoy_validate

# RE2 syntax Envoy refuses, sizes on both sides of its program size limit (100), and patterns in use.
PATTERNS = [
    "(?=a)",
    "(?<!a)b",
    "(a)\\1",
    "a{1000}",
    "a{1001}",
    "",
    "[z-a]",
    "a{96}",
    "a{97}",
    "(?i)x-canary",
    ".*Firefox.*",
    "^(.*?;)?(canary=always)(;.*)?$",
    "\\p{Greek}+",
    "GET|POST",
]


def _bootstrap(pattern: str) -> dict[str, Any]:
    """A listener whose one route matches a header against `pattern`."""
    header = {"name": "x", "string_match": {"safe_regex": {"regex": pattern}}}
    route = {"match": {"prefix": "/", "headers": [header]}, "direct_response": {"status": 200}}
    hcm = {
        "@type": config.HCM_TYPE,
        "stat_prefix": "l",
        "http_filters": [{"name": "router", "typed_config": {"@type": config.ROUTER_TYPE}}],
        "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [route]}]},
    }
    listener = {
        "name": "l",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}],
    }
    return {"static_resources": {"listeners": [listener]}}


@pytest.mark.parametrize("pattern", PATTERNS)
def test_the_check_refuses_exactly_what_envoy_refuses(pattern: str, tmp_path: Path) -> None:
    done = envoy_validate(_bootstrap(pattern), tmp_path)
    problem = envoy_regex_problem(pattern)
    assert (done.returncode == 0) == (problem is None), (problem, done.stdout + done.stderr)


def test_route_specs_refuse_what_envoy_would_refuse() -> None:
    with pytest.raises(ValueError, match="invalid RE2 regex: invalid perl operator"):
        config.HeaderMatch(name="x-user", regex="(?=a)")
    with pytest.raises(ValueError, match="program size 1004 > 100"):
        config.HttpMatch(backend="b", path_regex="a{1000}")
    with pytest.raises(ValueError, match="should match pattern"):
        config.HttpMatch(backend="b", methods=("GET|(POST",))
    with pytest.raises(ValueError, match="should match pattern"):
        config.HeaderMatch(name="x-user\n", exact="a")
    # Tokens each, but together too large a regex (RE2 shares common prefixes, so no METHOD1, METHOD2).
    many = tuple("".join(chr(65 + (i * 7 + k * 3) % 26) for k in range(8)) for i in range(20))
    with pytest.raises(ValueError, match="program size"):
        config.HttpMatch(backend="b", methods=many)
    webdav = ("GET", "HEAD", "POST", "PUT", "DELETE", "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE")
    assert config.HttpMatch(backend="b", methods=(*webdav, "LOCK", "UNLOCK", "VERSION-CONTROL")).methods
