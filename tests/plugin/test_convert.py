"""``convert``: Flagger manifests become canaryctl manifests that lint clean; what cannot be carried over
is reported with its field path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canaryctl.api.lint import lint_sources
from canaryctl.api.yaml_loader import load_documents
from canaryctl.cli.convert_cmd import convert as convert_documents
from canaryctl.cli.main import main

FLAGGER = sorted((Path(__file__).parents[1] / "api" / "manifests" / "flagger").glob("*.yaml"))

UNSUPPORTED = """\
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata: {name: apdex, namespace: test}
spec:
  provider: {type: skywalking, address: http://skywalking-oap.istio-system:12800}
  query: builtin:apps.web.apdex
---
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata: {name: errors, namespace: test}
spec:
  query: sum(rate(errors[1m]))
---
apiVersion: flagger.app/v1beta1
kind: AlertProvider
metadata: {name: pager, namespace: test}
spec: {type: opsgenie}
---
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: web, namespace: test}
spec:
  provider: supergloo
  ingressRef: {apiVersion: networking.k8s.io/v1, kind: Ingress, name: web}
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  service: {port: 80, futureField: yes}
  analysis:
    interval: 1m
    stepWeight: 10
    alerts:
      - {name: page, providerRef: {name: pager}}
    metrics:
      - {name: apdex, templateRef: {name: apdex}, thresholdRange: {min: 0.9}}
      - {name: errors, templateRef: {name: errors}, thresholdRange: {max: 1}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: test}
"""


def convert(capsys: pytest.CaptureFixture[str], *files: str) -> tuple[int, list[dict[str, Any]], str]:
    code = main(["convert", *(arg for f in files for arg in ("-f", f))])
    captured = capsys.readouterr()
    return code, list(yaml.safe_load_all(captured.out)), captured.err


@pytest.mark.parametrize("path", FLAGGER, ids=lambda p: p.name)
def test_flagger_manifests_convert_and_lint_clean(capsys: pytest.CaptureFixture[str], path: Path) -> None:
    code, docs, err = convert(capsys, str(path))
    assert code == 0 and err == ""
    ours = [d for d in docs if str(d.get("apiVersion", "")).startswith("canaryctl.dev/")]
    assert ours and not any(d.get("apiVersion") == "flagger.app/v1beta1" for d in docs)
    result = lint_sources([("converted", yaml.safe_dump_all(docs))])
    assert result.ok, [str(e) for e in result.errors]
    assert len(docs) == len([d for d in yaml.safe_load_all(path.read_text()) if d is not None])


def line(text: str, needle: str) -> int:
    """The 1-based line of the first line of ``text`` containing ``needle``."""
    return next(i for i, content in enumerate(text.splitlines(), start=1) if needle in content)


def dropped_lines(file: str) -> list[str]:
    """What converting UNSUPPORTED drops, each at the line of the field in the source file."""
    at = {needle: f"{file}:{line(UNSUPPORTED, needle)}" for needle in ("skywalking", "opsgenie", "supergloo")}
    at |= {
        needle: f"{file}:{line(UNSUPPORTED, needle)}" for needle in ("futureField", "- {name: page", "apdex}")
    }
    return [
        f"{at['skywalking']}: MetricTemplate test/apdex: spec.provider.type: 'skywalking' is not supported "
        "by canaryctl; MetricTemplate not converted",
        f"{at['opsgenie']}: AlertProvider test/pager: spec.type: 'opsgenie' is not supported by canaryctl; "
        "AlertProvider not converted",
        f"{at['supergloo']}: Canary test/web: spec.provider: 'supergloo' is not supported by canaryctl; "
        "removed, the operator's default router applies",
        f"{at['apdex}']}: Canary test/web: spec.analysis.metrics[0]: 'apdex' refers to 'apdex', not "
        "converted; removed",
        f"{at['- {name: page']}: Canary test/web: spec.analysis.alerts[0]: 'page' refers to 'pager', not "
        "converted; removed",
        f"{at['futureField']}: Canary test/web: spec.service.futureField: unknown field 'futureField'; "
        "removed",
    ]


def convert_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> tuple[Path, int, list[dict[str, Any]], str]:
    source = tmp_path / "flagger.yaml"
    source.write_text(text)
    return source, *convert(capsys, str(source))


def test_dropping_anything_fails_without_allow_drop(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, code, docs, err = convert_text(tmp_path, capsys, UNSUPPORTED)
    assert (code, docs) == (1, [])  # nothing written
    file = str(source)
    ingress = f"{file}:{line(UNSUPPORTED, 'ingressRef')}"
    assert err.splitlines() == [
        f"warning: {ingress}: Canary test/web: spec.ingressRef: kept, but unused without provider "
        "'supergloo'",
        *(f"error: {dropped}" for dropped in dropped_lines(file)),
        "error: converting would drop 6 of the above; nothing written (--allow-drop converts anyway)",
    ]


ONLY_METRIC_UNSUPPORTED = """\
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata: {name: apdex, namespace: test}
spec:
  provider: {type: skywalking}
  query: builtin:apps.web.apdex
---
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {name: web, namespace: test}
spec:
  targetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  service: {port: 80}
  analysis:
    interval: 1m
    stepWeight: 10
    metrics:
      - {name: apdex, templateRef: {name: apdex}, thresholdRange: {min: 0.9}}
"""


def test_a_canary_whose_only_metric_is_dropped_does_not_convert(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Converted, it would be a Canary with ``metrics: []`` that lints clean and checks nothing."""
    source, code, docs, err = convert_text(tmp_path, capsys, ONLY_METRIC_UNSUPPORTED)
    assert (code, docs) == (1, [])
    metric_line = line(ONLY_METRIC_UNSUPPORTED, "- {name: apdex")
    assert (
        f"error: {source}:{metric_line}: Canary test/web: spec.analysis.metrics[0]: 'apdex' refers to "
        "'apdex', not converted; removed"
    ) in err.splitlines()


def test_allow_drop_removes_and_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "flagger.yaml"
    source.write_text(UNSUPPORTED)
    code = main(["convert", "-f", str(source), "--allow-drop"])
    captured = capsys.readouterr()
    docs = list(yaml.safe_load_all(captured.out))
    assert code == 0
    file = str(source)
    ingress = f"{file}:{line(UNSUPPORTED, 'ingressRef')}"
    assert captured.err.splitlines() == [
        f"warning: {ingress}: Canary test/web: spec.ingressRef: kept, but unused without provider "
        "'supergloo'",
        *(f"warning: {dropped}" for dropped in dropped_lines(file)),
    ]
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("MetricTemplate", "errors"),
        ("Canary", "web"),
        ("Deployment", "web"),
    ]
    canary = docs[1]
    assert canary["apiVersion"] == "canaryctl.dev/v1beta1"
    assert "provider" not in canary["spec"]
    assert [m["name"] for m in canary["spec"]["analysis"]["metrics"]] == ["errors"]
    assert lint_sources([("converted", yaml.safe_dump_all(docs))]).ok


def test_unreadable_file_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", "-f", "/nonexistent.yaml"]) == 2
    assert "cannot read /nonexistent.yaml" in capsys.readouterr().err


_JUNK = (
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=6) | st.lists(st.integers(), max_size=2)
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_malformed_documents_never_crash_convert(data: st.DataObject) -> None:
    """Any field of any document replaced by junk: convert answers (exit 0 or 1), it never raises."""
    docs = [d for d in yaml.safe_load_all(UNSUPPORTED) if d]
    for _ in range(data.draw(st.integers(1, 3))):
        doc = data.draw(st.sampled_from(docs))
        node: Any = doc
        while isinstance(node, dict) and node and data.draw(st.booleans()):
            key = data.draw(st.sampled_from(sorted(node)))
            if isinstance(node[key], dict) and node[key]:
                node = node[key]
                continue
            node[key] = data.draw(_JUNK)
            break
        else:
            if isinstance(node, dict) and node:
                node[data.draw(st.sampled_from(sorted(node)))] = data.draw(_JUNK)
    documents = list(load_documents(yaml.safe_dump_all(docs)))
    result = convert_documents([("m.yaml", documents)])
    assert all(isinstance(line, str) for line in [*result.warnings, *result.drops, *result.errors])
