"""How fast a bad canary is caught: a version answering 50% 5xx, ``interval: 10s`` with fastFail on.

Runs on the local platform with real Envoy and real apps; prints one JSON object as its last line:
``time_to_rollback_s`` (first canary response a user saw -> all traffic back on the primary),
``bad_requests_served`` (5xx the canary answered to users), ``interval_s``. Goal: < 15 s.

    python -m bench.detection
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from canaryctl.api.models import Phase
from e2e.platform import Run, Scenario, Version, run_scenario

INTERVAL_SECONDS = 10


def analysis(_loadtester: str, _listen: str) -> dict[str, Any]:
    return {
        "interval": f"{INTERVAL_SECONDS}s",
        "stepWeight": 20,
        "metrics": [{"name": "request-success-rate", "interval": "30s", "thresholdRange": {"min": 99}}],
        "fastFail": {"period": "2s", "maxErrorRate": 20, "minRequests": 10},
    }


SCENARIO = Scenario("detection", analysis, canary=Version(error_rate=0.5), rps=40)


def figures(run: Run) -> dict[str, Any]:
    first_canary = next((s.at for s in run.seen if s.version == "v2"), None)
    failed = run.first(lambda tick: tick.phase is Phase.FAILED)
    if first_canary is None or failed is None:
        raise SystemExit(f"no rollback measured: phase {run.phase}, {len(run.seen)} requests seen")
    return {
        "time_to_rollback_s": round(failed.at - first_canary, 2),
        "bad_requests_served": run.served["v2"][500],
        "interval_s": INTERVAL_SECONDS,
        "verdict": run.phase.value if run.phase else None,
        "rollback_reason": failed.message,
    }


def main() -> None:
    print(json.dumps(figures(asyncio.run(run_scenario(SCENARIO)))))


if __name__ == "__main__":
    main()
