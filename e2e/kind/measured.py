"""Whether a finished rollout's analysis measured data: every metric of the Canary has a value in its
status (``status.metrics``, kept after the rollout ends) that was judged pass or fail.

A scenario that ends Succeeded without data would prove nothing (a no-data check that does not fail
the rollout, a query that selects nothing), and one that ends Failed on a no-data timeout would pass for
the wrong reason; each kind scenario checks this on its final status. Pure, so it is tested without a
cluster.
"""

from __future__ import annotations

from typing import Any

JUDGED = ("pass", "fail")


def unmeasured(canary: dict[str, Any], status: dict[str, Any]) -> list[str]:
    """One line per metric of ``canary``'s analysis that has no measured value in ``status``."""
    analysis = canary["spec"].get("analysis") or {}
    wanted = [metric["name"] for metric in analysis.get("metrics") or []]
    reported = {entry.get("name"): entry for entry in status.get("metrics") or []}
    problems = []
    for name in wanted:
        entry = reported.get(name)
        if entry is None:
            problems.append(f"metric {name}: not in status.metrics")
        elif entry.get("value") is None or entry.get("verdict") not in JUDGED:
            verdict, message = entry.get("verdict"), entry.get("message") or ""
            problems.append(f"metric {name}: no measured value (verdict {verdict}) {message}".rstrip())
    if not wanted:
        problems.append("the Canary's analysis has no metrics: nothing can be measured")
    return problems
