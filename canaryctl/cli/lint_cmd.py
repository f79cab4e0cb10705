"""``canaryctl lint FILE...`` or ``-f FILE`` (repeatable, like kubectl): check manifests offline, before
they reach a cluster or a GitOps repo.

Exit status: 0 clean (warnings allowed), 1 any error, 2 a file could not be read (or is larger than
the loader's limit). Every message names the file and line.
"""

from __future__ import annotations

import argparse
import json
import sys

from canaryctl.api.lint import LintResult, lint_sources
from canaryctl.api.yaml_loader import STDIN, YamlError, read_source


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "lint",
        help="validate Canary, MetricTemplate and AlertProvider manifests offline",
        description="Validate multi-document YAML files offline; other kinds in them are skipped. "
        "Flagger manifests (flagger.app/v1beta1) are checked as canaryctl.dev/v1beta1.",
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="YAML file, or - for stdin")
    parser.add_argument(
        "-f", "--filename", action="append", default=[], metavar="FILE", help="YAML file (repeatable)"
    )
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    paths = [*args.files, *args.filename]
    if not paths:
        print("canaryctl lint: no files given (FILE... or -f FILE)", file=sys.stderr)
        return 2
    sources = []
    for path in paths:
        try:
            text = read_source(path)
        except (OSError, UnicodeDecodeError, YamlError) as exc:
            print(f"canaryctl lint: cannot read {path}: {exc}", file=sys.stderr)
            return 2
        sources.append(("<stdin>" if path == STDIN else path, text))
    result = lint_sources(sources)
    print(_render_json(result) if args.output == "json" else _render_text(result))
    return 0 if result.ok else 1


def _render_text(result: LintResult) -> str:
    errors = sum(error.severity == "error" for error in result.errors)
    warnings = len(result.errors) - errors
    counts = f"{_plural(result.documents, 'document')}, {_plural(result.skipped, 'other document')} skipped"
    if errors:
        summary = f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')} in {counts}"
    else:
        summary = f"ok: {counts}" + (f", {_plural(warnings, 'warning')}" if warnings else "")
    return "\n".join([*map(str, result.errors), summary])


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _render_json(result: LintResult) -> str:
    report = {
        "ok": result.ok,
        "documents": result.documents,
        "skipped": result.skipped,
        "errors": [error.to_dict() for error in result.errors],
    }
    return json.dumps(report, indent=2)
