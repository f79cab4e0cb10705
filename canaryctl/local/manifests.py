"""Reading a local run's manifests: one Canary plus the MetricTemplates and AlertProviders it uses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from canaryctl.api.lint import lint_sources
from canaryctl.api.models import AlertProvider, Canary, MetricTemplate
from canaryctl.api.yaml_loader import YamlError, load_documents, read_source


class ManifestError(ValueError):
    pass


@dataclass
class Bundle:
    canary: Canary
    templates: dict[str, MetricTemplate] = field(default_factory=dict)
    alert_providers: dict[str, AlertProvider] = field(default_factory=dict)

    async def template(self, name: str, namespace: str) -> MetricTemplate:
        if name not in self.templates:
            raise LookupError(f"MetricTemplate {name!r} is not in the given files")
        return self.templates[name]

    def alert_provider(self, name: str) -> AlertProvider:
        if name not in self.alert_providers:
            raise LookupError(f"AlertProvider {name!r} is not in the given files")
        return self.alert_providers[name]


def load_texts(sources: list[tuple[str, str]]) -> Bundle:
    """Lint first, so a local run rejects exactly what ``canaryctl lint`` rejects, with the same paths."""
    result = lint_sources(sources)
    errors = [str(e) for e in result.errors if e.severity == "error"]
    if errors:
        raise ManifestError("invalid manifests:\n  " + "\n  ".join(errors))
    canaries: list[Canary] = []
    bundle_templates: dict[str, MetricTemplate] = {}
    providers: dict[str, AlertProvider] = {}
    for _, text in sources:
        for loaded in load_documents(text):  # lint has read them all already: no YamlError here
            document = loaded.body
            kind = document.get("kind") if isinstance(document, dict) else None
            if kind == "Canary":
                canaries.append(Canary.model_validate(document))
            elif kind == "MetricTemplate":
                template = MetricTemplate.model_validate(document)
                bundle_templates[template.metadata.name or ""] = template
            elif kind == "AlertProvider":
                provider = AlertProvider.model_validate(document)
                providers[provider.metadata.name or ""] = provider
    if len(canaries) != 1:
        raise ManifestError(f"expected exactly one Canary in the given files, found {len(canaries)}")
    canary = canaries[0]
    if canary.metadata.namespace is None:
        canary.metadata.namespace = "local"
    return Bundle(canary, bundle_templates, providers)


def load_files(paths: list[Path]) -> Bundle:
    sources = []
    for path in paths:
        try:
            sources.append((str(path), read_source(str(path))))
        except OSError as exc:
            raise ManifestError(f"cannot read {path}: {exc.strerror}") from exc
        except (UnicodeDecodeError, YamlError) as exc:
            raise ManifestError(f"cannot read {path}: {exc}") from exc
    return load_texts(sources)
