"""What a report shows, whatever it was gathered from: series over time, spans, markers and the Canary."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from canaryctl.api.models import Canary

PRIMARY, CANARY = "primary", "canary"


class MarkerKind(StrEnum):
    STEP = "step"  # a step boundary
    PASS = "pass"  # a check passed
    FAIL = "fail"  # a check failed (or fastFail saw too many errors)
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled back"
    EVENT = "event"  # anything else worth a line (a cluster Event)


@dataclass
class Series:
    """One line: ``(time, value)`` points, a value None where nothing was measured."""

    name: str
    points: list[tuple[datetime, float | None]] = field(default_factory=list)

    def add(self, at: datetime, value: float | None) -> None:
        self.points.append((at, value))

    @property
    def values(self) -> list[float]:
        return [value for _, value in self.points if value is not None]


@dataclass(frozen=True)
class Marker:
    at: datetime
    kind: MarkerKind
    label: str


@dataclass(frozen=True)
class Span:
    """A stretch of time with something switched on: a fault step, a pause."""

    start: datetime
    end: datetime
    label: str


@dataclass
class History:
    """A rollout, ready to plot. Traffic and error series are keyed by side (primary, canary)."""

    canary: Canary  # as it ended (status: phase, message, last metric values)
    source: str  # where the data came from, shown under the title
    requests: dict[str, Series] = field(default_factory=dict)  # requests per second
    errors: dict[str, Series] = field(default_factory=dict)  # 5xx share in percent
    error_window: str = ""  # the window the error rate is measured over, e.g. "5s (the fastFail period)"
    weights: list[Series] = field(default_factory=list)  # percent of traffic
    metrics: dict[str, Series] = field(default_factory=dict)
    verdicts: dict[str, list[Marker]] = field(default_factory=dict)  # per metric: each check's verdict
    faults: list[Span] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)

    @property
    def start(self) -> datetime | None:
        times = [t for s in self._all_series() for t, _ in s.points] + [m.at for m in self.markers]
        return min(times) if times else None

    @property
    def end(self) -> datetime | None:
        times = [t for s in self._all_series() for t, _ in s.points] + [m.at for m in self.markers]
        return max(times) if times else None

    def _all_series(self) -> list[Series]:
        return [*self.requests.values(), *self.errors.values(), *self.weights, *self.metrics.values()]
