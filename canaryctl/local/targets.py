"""Local endpoints as a Service-kind canary: the primary and canary are URLs of running processes.

There is nothing to scale or copy on one machine, so "promotion" means the primary backend now points
at what the canary serves, exactly the effect a promoted Deployment has on its primary Service.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from canaryctl.api.models import Canary
from canaryctl.engine.revision import revision_hash
from canaryctl.engine.types import Readiness, WorkloadOp
from canaryctl.ports import Revision

READINESS_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class Endpoint:
    url: str

    @property
    def host(self) -> str:
        return httpx.URL(self.url).host

    @property
    def port(self) -> int:
        parsed = httpx.URL(self.url)
        return parsed.port or (443 if parsed.scheme == "https" else 80)


def endpoint_revision(endpoint: Endpoint) -> str:
    return revision_hash({"url": endpoint.url}, {})


@dataclass
class LocalTargets:
    """Which process serves as primary and which as canary, and what has been done to them."""

    primary: Endpoint
    canary: Endpoint
    canary_scaled_up: bool = False
    operations: list[WorkloadOp] = field(default_factory=list)


async def probe(endpoint: Endpoint) -> Readiness:
    """Ready when the process answers HTTP at all: a canary that returns 500s is up but unhealthy,
    which is for the analysis to judge, not readiness."""
    try:
        async with httpx.AsyncClient(timeout=READINESS_TIMEOUT_SECONDS) as client:
            await client.get(endpoint.url)
    except httpx.HTTPError as exc:
        return Readiness(False, f"{endpoint.url} does not answer: {exc or type(exc).__name__}")
    return Readiness(True)


class LocalWorkloads:
    """The Workloads port over two local endpoints."""

    def __init__(self, targets: LocalTargets) -> None:
        self.targets = targets

    async def revision(self, canary: Canary) -> Revision:
        return Revision(endpoint_revision(self.targets.canary), {})

    async def readiness(self, canary: Canary, primary: bool) -> Readiness:
        return await probe(self.targets.primary if primary else self.targets.canary)

    async def apply(self, canary: Canary, op: WorkloadOp) -> None:
        self.targets.operations.append(op)
        if op is WorkloadOp.SCALE_CANARY_UP:
            self.targets.canary_scaled_up = True
        elif op is WorkloadOp.SCALE_CANARY_DOWN:
            self.targets.canary_scaled_up = False
        elif op is WorkloadOp.PROMOTE:
            self.targets.primary = self.targets.canary
