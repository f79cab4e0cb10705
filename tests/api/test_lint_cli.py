"""`canaryctl lint` command: argument parsing, output formats and exit codes."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from canaryctl.cli import lint_cmd

MANIFESTS = Path(__file__).parent / "manifests" / "flagger"


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="canaryctl")
    lint_cmd.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["lint", *argv])
    code = lint_cmd.run(args)
    assert args.func is lint_cmd.run  # how the main CLI dispatches
    return code


def _converted(tmp_path: Path, name: str) -> Path:
    text = (MANIFESTS / name).read_text().replace("flagger.app/v1beta1", "canaryctl.dev/v1beta1")
    path = tmp_path / name
    path.write_text(text)
    return path


def test_clean_files_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(_converted(tmp_path, p.name)) for p in sorted(MANIFESTS.glob("*.yaml"))]
    assert _run(files) == 0
    assert capsys.readouterr().out == "ok: 5 documents, 3 other documents skipped\n"


def test_flagger_file_exits_1_with_the_hint(capsys: pytest.CaptureFixture[str]) -> None:
    path = MANIFESTS / "blue-green.yaml"
    assert _run([str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"{path}:2: Canary/podinfo: apiVersion: apiVersion flagger.app/v1beta1 is Flagger's; "
        "use canaryctl.dev/v1beta1 (the spec is compatible)",
        "1 error, 0 warnings in 1 document, 0 other documents skipped",
    ]


def test_stdin_and_json_output(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    text = (
        (MANIFESTS / "ab-testing.yaml")
        .read_text()
        .replace("interval: 1m\n    threshold", "interval: 5s\n    threshold")
    )
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    assert _run(["-o", "json", "-"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert (report["ok"], report["documents"], report["skipped"]) == (False, 1, 0)
    assert [(e["file"], e["doc_index"], e["field_path"]) for e in report["errors"]] == [
        ("<stdin>", 1, "apiVersion"),
        ("<stdin>", 1, "spec.analysis.interval"),
    ]
    assert report["errors"][1] == {
        "file": "<stdin>",
        "line": 34,
        "doc_index": 1,
        "resource": "Canary/abtest",
        "field_path": "spec.analysis.interval",
        "message": "interval 5s is below the 10s minimum",
        "severity": "error",
    }


def test_warnings_do_not_fail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _converted(tmp_path, "blue-green.yaml")
    path.write_text(path.read_text().replace("iterations: 10", "iterations: 10\n    stepWeight: 5"))
    assert _run([str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "ok: 1 document, 0 other documents skipped, 1 warning"


def test_unreadable_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run([str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err
