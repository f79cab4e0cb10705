"""Records a local run for its report: the Canary's status at every tick, and every second the requests
and 5xx answers of each version from Envoy's upstream stats (the counters fastFail judges)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from datetime import UTC, datetime

import httpx

from canaryctl.api.models import Canary, CanaryStatus, Phase, Verdict
from canaryctl.engine.steps import compile_steps
from canaryctl.local.envoy_stats import UPSTREAM, Snapshot, parse_stats, side_counts
from canaryctl.local.router import backend_name
from canaryctl.local.runtime import LocalRuntime
from canaryctl.report.history import CANARY, PRIMARY, History, Marker, MarkerKind, Series, Span
from canaryctl_mesh.duration import parse_duration

SAMPLE_SECONDS = 1.0
DEFAULT_ERROR_WINDOW_SECONDS = 10.0
ANALYSING = (Phase.PROGRESSING, Phase.WAITING_PROMOTION, Phase.PROMOTING)


def new_version_share(status: CanaryStatus) -> int:
    """Traffic served by the revision being rolled out: the canary's weight, then all of it once the
    primary runs it (so a promotion does not read as a drop to 0%)."""
    if status.phase in (Phase.FINALISING, Phase.SUCCEEDED):
        return 100
    return status.canary_weight if status.phase in ANALYSING else 0


class Recorder:
    """Attach to a LocalRuntime before ``run()``; ``history()`` after it returns."""

    def __init__(self, canary: Canary) -> None:
        self.canary = canary
        fast_fail = canary.spec.effective_analysis.fast_fail
        self.window = parse_duration(fast_fail.period) if fast_fail else DEFAULT_ERROR_WINDOW_SECONDS
        window_text = f"{self.window:g}s" + (" (the fastFail period)" if fast_fail else "")
        self.history = History(
            canary,
            source="this machine: Envoy's stats every second, the Canary's status at every tick",
            requests={side: Series(f"{side} requests/s") for side in (PRIMARY, CANARY)},
            errors={side: Series(f"{side} 5xx %") for side in (PRIMARY, CANARY)},
            error_window=window_text,
            weights=[
                Series("served by the new version (%)"),
                Series("canary weight (%)"),
                Series("mirror (%)"),
            ],
        )
        self._snapshots: deque[tuple[datetime, Snapshot]] = deque()
        self._sampler: asyncio.Task[None] | None = None
        self._last: CanaryStatus | None = None
        self._fault_since: datetime | None = None
        self._checked: dict[str, str | None] = {}

    def attach(self, runtime: LocalRuntime) -> None:
        def started(_: str) -> None:
            self._sampler = asyncio.get_running_loop().create_task(self._sample(runtime.mesh.stats_url))

        runtime.on_started = started
        runtime.on_tick = self.tick

    async def _sample(self, stats_url: str) -> None:
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    answer = await client.get(stats_url)
                    self._add(datetime.now(UTC), parse_stats(answer.text, 0.0))
                await asyncio.sleep(SAMPLE_SECONDS)

    def _add(self, at: datetime, snapshot: Snapshot) -> None:
        previous = self._snapshots[-1] if self._snapshots else None
        self._snapshots.append((at, snapshot))
        while (at - self._snapshots[0][0]).total_seconds() > self.window + SAMPLE_SECONDS:
            self._snapshots.popleft()
        if previous is None:
            return
        window_start = self._snapshots[0]
        for side in (PRIMARY, CANARY):
            backend = backend_name(self.canary, primary=side == PRIMARY)
            requests, _ = side_counts(snapshot.values, UPSTREAM, backend)
            before, _ = side_counts(previous[1].values, UPSTREAM, backend)
            seconds = (at - previous[0]).total_seconds() or SAMPLE_SECONDS
            self.history.requests[side].add(at, max(0.0, requests - before) / seconds)
            start_requests, start_errors = side_counts(window_start[1].values, UPSTREAM, backend)
            _, errors = side_counts(snapshot.values, UPSTREAM, backend)
            served = requests - start_requests
            self.history.errors[side].add(
                at, 100.0 * (errors - start_errors) / served if served > 0 else None
            )

    def tick(self, canary: Canary) -> None:
        status = canary.status or CanaryStatus()
        now = datetime.now(UTC)
        share, weight, mirror = self.history.weights
        share.add(now, new_version_share(status))
        weight.add(now, status.canary_weight)
        mirror.add(now, status.mirror_weight)
        self._faults(now, status)
        self._steps(now, canary, status)
        self._checks(now, status)
        self._last = status

    def _faults(self, now: datetime, status: CanaryStatus) -> None:
        if status.fault is not None and self._fault_since is None:
            self._fault_since = now
        elif status.fault is None and self._fault_since is not None:
            self.history.faults.append(Span(self._fault_since, now, "fault injected"))
            self._fault_since = None

    def _steps(self, now: datetime, canary: Canary, status: CanaryStatus) -> None:
        last = self._last
        if status.phase in ANALYSING and (last is None or last.current_step != status.current_step):
            steps = compile_steps(canary.spec)
            if status.current_step < len(steps):
                label = (
                    f"step {status.current_step + 1}/{len(steps)}: {steps[status.current_step].describe()}"
                )
                self.history.markers.append(Marker(now, MarkerKind.STEP, label))
        if last is not None and last.phase is not status.phase:
            if status.phase is Phase.PROMOTING:
                self.history.markers.append(Marker(now, MarkerKind.PROMOTED, status.message))
            elif status.phase is Phase.FAILED:
                self.history.markers.append(Marker(now, MarkerKind.ROLLED_BACK, status.message))

    def _checks(self, now: datetime, status: CanaryStatus) -> None:
        """A metric whose check time moved was checked this tick: its value and verdict."""
        for metric in status.metrics:
            if self._checked.get(metric.name) == metric.time:
                continue
            self._checked[metric.name] = metric.time
            self.history.metrics.setdefault(metric.name, Series(metric.name)).add(now, metric.value)
            kind = MarkerKind.PASS if metric.verdict is Verdict.PASS else MarkerKind.FAIL
            label = f"{metric.name} {metric.verdict.value}" + (
                f": {metric.message}" if metric.message else ""
            )
            self.history.verdicts.setdefault(metric.name, []).append(Marker(now, kind, label))

    async def finish(self, canary: Canary, alerts: list[str]) -> History:
        """Stops sampling; the history of the run that ended with ``canary``."""
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        self._faults(datetime.now(UTC), CanaryStatus())
        self.history.canary = canary
        self.history.alerts = list(alerts)
        return self.history
