"""1,000 generated Canary, MetricTemplate and AlertProvider documents through lint and the engine.

Whatever the mutations (``tests.reliability.documents``) make of them: lint never crashes, every
document the models reject gets an error with a field path, and every document lint accepts runs: a
Canary compiles to steps and the engine's first reconcile decides without raising.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, event, given, settings

from canaryctl.api import models
from canaryctl.api.lint import lint_sources
from canaryctl.engine import compile_steps, reconcile
from canaryctl.engine.types import Observations
from tests.reliability.documents import documents, model_rejects

NOW = datetime(2026, 1, 1, tzinfo=UTC)
EXAMPLES = 1000


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_generated_documents_lint_and_run(doc: dict[str, Any]) -> None:
    result = lint_sources([("generated.yaml", json.dumps(doc))])  # JSON is YAML, and quicker to write
    if result.documents == 0:  # apiVersion or kind mutated away: another kind's document, skipped
        event("skipped as another kind")
        assert result.skipped == 1
        return
    if model_rejects(doc):
        event(f"{doc['kind']}: rejected by the model")
        errors = [e for e in result.errors if e.severity == "error"]
        assert errors and any(e.field_path for e in errors), errors
        return
    if not result.ok or doc["kind"] != "Canary":
        event(f"{doc['kind']}: {'valid' if result.ok else 'rejected by a semantic check'}")
        return
    event("Canary: valid, compiled and reconciled")
    canary = models.Canary.model_validate(doc)
    assert compile_steps(canary.spec)
    reconcile(canary, Observations(now=NOW))
