"""``kubectl canary convert -f FLAGGER.yaml``: Flagger manifests in, canaryctl manifests out.

flagger.app/v1beta1 Canary, MetricTemplate and AlertProvider become canaryctl.dev/v1beta1; every other
document passes through unchanged (GitOps files mix kinds). Some things canaryctl cannot carry over:

- ``spec.provider`` values canaryctl has no router for (``supergloo``, which Flagger dropped, or one not
  supported yet): the operator's default router would apply instead;
- MetricTemplates whose provider type and AlertProviders whose type canaryctl lacks, and then the Canary
  metrics and alerts that refer to them;
- anything else ``canaryctl lint`` still rejects, field by field.

Dropping any of them changes what the rollout checks, so by default each is an error (with its file,
line and field path), nothing is written and the exit status is 1. With ``--allow-drop`` they are
removed, reported as warnings, and the converted manifests are written. The output lints clean, or the
command exits 1 naming what is left. Exit 2: a file could not be read. YAML comments are not kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import Any

import yaml

from canaryctl import registry
from canaryctl.api import models
from canaryctl.api.lint import field_path_steps, lint_sources
from canaryctl.api.yaml_loader import STDIN, YamlDocument, YamlError, load_documents, read_source
from canaryctl.cli.kube import Obj, Subparsers

OUR_KINDS = tuple(models.KINDS)
MAX_REPAIRS = 50  # lint-and-remove rounds; each removes one field or gives up on a document


@dataclass
class Document:
    file: str
    origin: YamlDocument  # as read: the lines of its fields, for messages
    body: Any
    removed: set[str] = field(default_factory=set)

    def where(self, path: str) -> str:
        return f"{self.file}:{self.origin.line_of(field_path_steps(path))}"

    @property
    def ours(self) -> bool:
        return isinstance(self.body, dict) and self.body.get("kind") in OUR_KINDS and self.api_group_ours

    @property
    def api_group_ours(self) -> bool:
        return str(self.body.get("apiVersion", "")).split("/")[0] in (models.GROUP, "flagger.app")

    @property
    def label(self) -> str:
        meta = _mapping(self.body.get("metadata"))
        return f"{self.body.get('kind')} {meta.get('namespace') or 'default'}/{meta.get('name')}"


@dataclass
class Conversion:
    documents: list[Document] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    drops: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def warn(self, doc: Document, path: str, message: str) -> None:
        self.warnings.append(f"{doc.where(path)}: {doc.label}: {path}: {message}")

    def drop(self, doc: Document, path: str, message: str) -> None:
        self.drops.append(f"{doc.where(path)}: {doc.label}: {path}: {message}")


def add_parser(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert Flagger manifests to canaryctl ones",
        description="Convert flagger.app/v1beta1 Canary, MetricTemplate and AlertProvider manifests to "
        "canaryctl.dev/v1beta1; fields canaryctl cannot carry over are reported on stderr.",
    )
    parser.add_argument(
        "-f", "--filename", action="append", required=True, metavar="FILE", help="YAML file or - (repeatable)"
    )
    parser.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml", help="output format")
    parser.add_argument(
        "--allow-drop",
        action="store_true",
        help="remove what canaryctl cannot carry over (warned on stderr) instead of failing",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    sources = []
    for path in args.filename:
        try:
            sources.append(("<stdin>" if path == STDIN else path, list(load_documents(read_source(path)))))
        except (OSError, UnicodeDecodeError, YamlError) as exc:
            print(f"kubectl canary: error: cannot read {path}: {exc}", file=sys.stderr)
            return 2
    result = convert(sources)
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for dropped in result.drops:
        print(f"{'warning' if args.allow_drop else 'error'}: {dropped}", file=sys.stderr)
    for error in result.errors:
        print(f"error: {error}", file=sys.stderr)
    if result.drops and not args.allow_drop:
        print(
            f"error: converting would drop {len(result.drops)} of the above; nothing written "
            "(--allow-drop converts anyway)",
            file=sys.stderr,
        )
        return 1
    if result.errors:
        return 1
    bodies = [doc.body for doc in result.documents]
    if args.output == "json":
        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": bodies}, indent=2))
    else:
        print(yaml.safe_dump_all(bodies, sort_keys=False), end="")
    return 0


def convert(sources: list[tuple[str, list[YamlDocument]]]) -> Conversion:
    result = Conversion()
    for file, documents in sources:
        for document in documents:
            if document.body is not None:
                result.documents.append(Document(file, document, document.body))
    dropped = _drop_unsupported(result)
    for doc in result.documents:
        if doc.ours:
            doc.body["apiVersion"] = models.API_VERSION
            if doc.body["kind"] == "Canary":
                _convert_canary(result, doc, dropped)
    _repair(result)
    return result


def _mapping(value: Any) -> dict[str, Any]:
    """``value`` when it is a mapping, else an empty one: malformed input is lint's to report."""
    return value if isinstance(value, dict) else {}


def _key(ref: Obj, doc: Document) -> tuple[str, str]:
    namespace = ref.get("namespace") or _mapping(doc.body.get("metadata")).get("namespace") or "default"
    # Malformed documents can carry any YAML value here; keys must stay hashable.
    return str(namespace), str(ref.get("name"))


def _unsupported_type(doc: Document) -> tuple[str, object] | None:
    """(field path, value) when ``doc`` is a MetricTemplate or AlertProvider of a type canaryctl lacks."""
    kind, spec = doc.body.get("kind"), _mapping(doc.body.get("spec"))
    known: tuple[str, ...]
    if kind == "MetricTemplate":
        path, known = "spec.provider.type", registry.names(registry.METRICS)
        value = _mapping(spec.get("provider")).get("type", "prometheus")
    elif kind == "AlertProvider":
        path, known = "spec.type", registry.names(registry.NOTIFIERS)
        value = spec.get("type")
    else:
        return None
    # A type that is not even a string is malformed, not unsupported: lint reports it.
    return (path, value) if isinstance(value, str) and value not in known else None


def _drop_unsupported(result: Conversion) -> dict[str, set[tuple[str, str]]]:
    """Remove MetricTemplates and AlertProviders of types canaryctl lacks; their (namespace, name)s."""
    dropped: dict[str, set[tuple[str, str]]] = {"MetricTemplate": set(), "AlertProvider": set()}
    kept = []
    for doc in result.documents:
        unsupported = _unsupported_type(doc) if doc.ours else None
        if unsupported is None:
            kept.append(doc)
            continue
        path, value = unsupported
        kind = doc.body["kind"]
        result.drop(doc, path, f"{value!r} is not supported by canaryctl; {kind} not converted")
        dropped[kind].add(_key(_mapping(doc.body.get("metadata")), doc))
    result.documents = kept
    return dropped


def _convert_canary(result: Conversion, doc: Document, dropped: dict[str, set[tuple[str, str]]]) -> None:
    spec = _mapping(doc.body.get("spec"))
    provider = spec.get("provider")
    if provider is not None and provider not in registry.names(registry.ROUTERS):
        del spec["provider"]
        result.drop(
            doc,
            "spec.provider",
            f"{provider!r} is not supported by canaryctl; removed, the operator's default router applies",
        )
        for ref_field in ("ingressRef", "upstreamRef", "routeRef"):
            if ref_field in spec:
                result.warn(doc, f"spec.{ref_field}", f"kept, but unused without provider {provider!r}")
    analysis_key = "analysis" if "analysis" in spec else "canaryAnalysis"
    analysis = _mapping(spec.get(analysis_key))
    for list_key, ref_key, ref_kind in (
        ("metrics", "templateRef", "MetricTemplate"),
        ("alerts", "providerRef", "AlertProvider"),
    ):
        items = analysis.get(list_key)
        items = items if isinstance(items, list) else []
        for index in reversed(range(len(items))):
            ref = items[index].get(ref_key) if isinstance(items[index], dict) else None
            if isinstance(ref, dict) and _key(ref, doc) in dropped[ref_kind]:
                result.drop(
                    doc,
                    f"spec.{analysis_key}.{list_key}[{index}]",
                    f"{items[index].get('name')!r} refers to {ref.get('name')!r}, not converted; removed",
                )
                del items[index]


def _repair(result: Conversion) -> None:
    """Lint the converted documents; remove the first field each erring document has, until clean."""
    ours = [doc for doc in result.documents if doc.ours]
    for _ in range(MAX_REPAIRS):
        text = yaml.safe_dump_all([doc.body for doc in ours], sort_keys=False)
        errors = [e for e in lint_sources([("converted", text)]).errors if e.severity == "error"]
        if not errors:
            return
        progressed = False
        for doc_index in sorted({e.doc_index for e in errors}):
            error = next(e for e in errors if e.doc_index == doc_index)
            doc = ours[doc_index - 1]
            if (
                error.field_path
                and error.field_path not in doc.removed
                and _remove(doc.body, error.field_path)
            ):
                doc.removed.add(error.field_path)
                result.drop(doc, error.field_path, f"{error.message}; removed")
                progressed = True
        if not progressed:
            break
    for error in errors:
        doc = ours[error.doc_index - 1]
        result.errors.append(
            f"{doc.where(error.field_path)}: {doc.label}: {error.field_path}: {error.message}"
        )


def _remove(body: Any, path: str) -> bool:
    """Delete the field at a lint path such as ``spec.analysis.metrics[0].interval``; False if absent."""
    *parents, last = list(field_path_steps(path))
    node = body
    for token in parents:
        try:
            node = node[token]
        except (KeyError, IndexError, TypeError):
            return False
    try:
        del node[last]
    except (KeyError, IndexError, TypeError):
        return False
    return True
