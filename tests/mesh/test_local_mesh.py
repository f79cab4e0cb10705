"""Local mode against a real Envoy and real loopback upstreams."""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from canaryctl_mesh import config, telemetry
from canaryctl_mesh.local import LocalMesh, MeshConfigRejected
from canaryctl_mesh.loopback import LoadResult, UpstreamServers, fire
from tests.mesh.conftest import CANARY, PRIMARY, split


async def _load(
    mesh: LocalMesh,
    requests: int,
    concurrency: int = 16,
    headers: dict[str, str] | None = None,
    rate: float | None = None,
    numbered: bool = False,
) -> LoadResult:
    return await fire(
        "127.0.0.1", mesh.listen_port, requests, concurrency, headers=headers, rate=rate, numbered=numbered
    )


def _samples(mesh: LocalMesh) -> list[telemetry.Sample]:
    return telemetry.parse_samples(httpx.get(mesh.stats_url, timeout=5).text)


def test_split_90_10_is_binomial(local_mesh: LocalMesh, fresh_upstreams: UpstreamServers) -> None:
    async def run() -> None:
        await local_mesh.apply(split(fresh_upstreams, 90, 10))
        # apply() returns when Envoy's main thread serves the routes; its workers get them by a post to
        # their event loops, which a loaded machine can delay: the session's Envoy may hold another
        # test's split there for a few more requests.
        await asyncio.sleep(0.2)
        result = await _load(local_mesh, 5000)
        assert result.statuses == {200: 5000}
        canary = result.bodies[CANARY]
        sigma = math.sqrt(5000 * 0.1 * 0.9)
        assert abs(canary - 500) <= 4 * sigma, result.bodies  # binomial, 4σ
        assert fresh_upstreams[CANARY].requests == canary

    asyncio.run(run())


def test_weight_change_mid_stream_drops_nothing(
    local_mesh: LocalMesh, fresh_upstreams: UpstreamServers
) -> None:
    async def run() -> None:
        await local_mesh.apply(split(fresh_upstreams, 100, 0))
        load = asyncio.create_task(_load(local_mesh, 3000, concurrency=4, rate=3000))
        await asyncio.sleep(0.4)
        await local_mesh.apply(split(fresh_upstreams, 0, 100))
        result = await load
        assert result.statuses == {200: 3000} and result.errors == 0
        assert result.bodies[PRIMARY] > 0 and result.bodies[CANARY] > 0
        after = await _load(local_mesh, 200)
        assert after.bodies == {CANARY: 200}

    asyncio.run(run())


def test_header_route_to_canary(local_mesh: LocalMesh, fresh_upstreams: UpstreamServers) -> None:
    match = config.HttpMatch(
        backend=CANARY, headers=(config.HeaderMatch(name="x-canary", exact="always"),), methods=("GET",)
    )
    spec = split(fresh_upstreams, 100, 0, matches=(match,))

    async def run() -> None:
        await local_mesh.apply(spec)
        assert (await _load(local_mesh, 200, headers={"x-canary": "always"})).bodies == {CANARY: 200}
        assert (await _load(local_mesh, 200, headers={"x-canary": "never"})).bodies == {PRIMARY: 200}
        assert (await _load(local_mesh, 200)).bodies == {PRIMARY: 200}

    asyncio.run(run())


def test_mirror_50_percent_never_reaches_client(
    local_mesh: LocalMesh, fresh_upstreams: UpstreamServers
) -> None:
    spec = split(fresh_upstreams, 100, 0, mirror=config.Mirror(backend=CANARY, percentage=50))

    async def run() -> None:
        await local_mesh.apply(spec)
        await asyncio.sleep(0.2)  # Envoy's workers take the routes after its main thread (see above)
        result = await _load(local_mesh, 4000)
        assert result.bodies == {PRIMARY: 4000}
        canary = fresh_upstreams[CANARY]
        # Shadows finish asynchronously, after their user request: wait until none came for 0.5 s.
        deadline, seen, quiet_since = time.monotonic() + 5, -1, time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - quiet_since < 0.5:
            if canary.requests != seen:
                seen, quiet_since = canary.requests, time.monotonic()
            await asyncio.sleep(0.05)
        assert canary.requests == canary.shadow_requests
        assert abs(canary.shadow_requests - 2000) <= 4 * math.sqrt(4000 * 0.25)  # binomial, 4σ

    asyncio.run(run())


async def _access_log(mesh: LocalMesh, offset: int, since: str, lines: int) -> list[dict[str, str]]:
    """JSON access-log entries of requests started at or after `since` (UTC ISO), once `lines` are in.

    Envoy flushes the log about once a second, so earlier requests can still land after `offset`.
    """
    deadline = time.monotonic() + 5
    while True:
        with mesh.access_log_path.open() as log:
            log.seek(offset)
            entries = [json.loads(line) for line in log.read().splitlines() if line]
        entries = [e for e in entries if e["start_time"] >= since]
        if len(entries) >= lines or time.monotonic() > deadline:
            return entries
        await asyncio.sleep(0.1)


def test_canary_only_abort_and_delay(local_mesh: LocalMesh, fresh_upstreams: UpstreamServers) -> None:
    abort = config.Fault(abort=config.FaultAbort(status=503, percentage=20))

    async def run() -> None:
        before = _samples(local_mesh)
        await local_mesh.apply(split(fresh_upstreams, 50, 50, faults={CANARY: abort}))
        result = await _load(local_mesh, 4000)
        aborted = result.statuses[503]
        assert result.statuses[200] + aborted == 4000
        assert result.bodies[PRIMARY] == fresh_upstreams[PRIMARY].requests  # primary never faulted
        canary_total = aborted + result.bodies[CANARY]
        sigma = math.sqrt(canary_total * 0.2 * 0.8)
        assert abs(aborted - 0.2 * canary_total) <= 4 * sigma, result.statuses  # binomial, 4σ

        # Caller-side stats carry the injected aborts per backend; upstream stats cannot see them.
        after = _samples(local_mesh)

        def delta(name: str, **labels: str) -> float:
            return telemetry.total(after, name, **labels) - telemetry.total(before, name, **labels)

        caller = telemetry.CALLER_RQ_TOTAL
        assert delta(caller, canaryctl_backend=CANARY, envoy_response_code="503") == aborted
        assert delta(caller, canaryctl_backend=PRIMARY, envoy_response_code="503") == 0
        assert delta(caller, canaryctl_backend=PRIMARY, envoy_response_code="200") == result.bodies[PRIMARY]
        upstream = telemetry.UPSTREAM_RQ_TOTAL
        assert delta(upstream, envoy_cluster_name=CANARY, envoy_response_code="503") == 0
        assert delta(upstream, envoy_cluster_name=CANARY, envoy_response_code="200") == result.bodies[CANARY]

        delay = config.Fault(delay=config.FaultDelay(seconds=0.15, percentage=50))
        await local_mesh.apply(split(fresh_upstreams, 50, 50, faults={CANARY: delay}))

        # The JSON access log attributes each request: DI (delay injected) only on canary traffic, and
        # every request it marks took the delay as its caller saw it. The caller's clock starts before
        # Envoy reads the request, so load can only lengthen what it sees; Envoy's own %DURATION% is no
        # lower bound on a busy box (its timer counts from the coarse time cached when its event loop
        # woke, which runs behind by however long the worker was kept from the CPU since: 141 ms seen).
        offset = local_mesh.access_log_path.stat().st_size
        since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        delayed_load = await _load(local_mesh, 400, concurrency=50, numbered=True)
        assert delayed_load.statuses == {200: 400}
        entries = await _access_log(local_mesh, offset, since, 400)
        assert len(entries) == 400
        delayed = [e for e in entries if "DI" in e["response_flags"]]
        canary_count = sum(1 for e in entries if e["backend"] == CANARY)
        assert all(e["backend"] == CANARY for e in delayed)
        # Envoy's timer clock is coarse: it may fire up to one kernel tick (≤ 10 ms) short of 150 ms.
        seen_ms = {e["path"]: delayed_load.latency_ms_by_path[e["path"]] for e in delayed}
        assert all(latency >= 140 for latency in seen_ms.values()), seen_ms
        assert abs(len(delayed) - canary_count / 2) <= 4 * math.sqrt(canary_count / 4)  # binomial, 4σ

    asyncio.run(run())


def test_invalid_update_rejected_old_config_serves(
    local_mesh: LocalMesh, fresh_upstreams: UpstreamServers
) -> None:
    with pytest.raises(ValueError, match="weight above 0"):
        split(fresh_upstreams, 0, 0)

    async def run() -> None:
        good = split(fresh_upstreams, 0, 100)
        await local_mesh.apply(good)
        bad = config.local_resources(
            split(fresh_upstreams, 50, 50),
            local_mesh.listen_host,
            local_mesh.listen_port,
            config.file_source(str(local_mesh.xds_dir), "rds.json"),
            str(local_mesh.access_log_path),
        )
        for cluster in bad.routes[0]["virtual_hosts"][0]["routes"][-1]["route"]["weighted_clusters"][
            "clusters"
        ]:
            cluster["weight"] = 0  # Envoy refuses all-zero weights
        with pytest.raises(MeshConfigRejected):
            await local_mesh.apply_resources(bad)
        assert (await _load(local_mesh, 200)).bodies == {CANARY: 200}
        await local_mesh.apply(split(fresh_upstreams, 100, 0))  # and the mesh still takes good updates
        assert (await _load(local_mesh, 200)).bodies == {PRIMARY: 200}

    asyncio.run(run())


async def _flushed(mesh: LocalMesh) -> list[telemetry.Sample]:
    """Samples once histograms caught up with the counters (they move only at a stats flush, 1 s)."""
    deadline = time.monotonic() + 5
    while True:
        samples = _samples(mesh)
        if (
            all(
                telemetry.total(samples, telemetry.UPSTREAM_RQ_TIME_COUNT, envoy_cluster_name=name)
                == telemetry.total(samples, telemetry.UPSTREAM_RQ_TOTAL, envoy_cluster_name=name)
                for name in (PRIMARY, CANARY)
            )
            or time.monotonic() > deadline
        ):
            return samples
        await asyncio.sleep(0.1)


def test_golden_metrics_distinguish_primary_and_canary(
    local_mesh: LocalMesh, fresh_upstreams: UpstreamServers
) -> None:
    async def run() -> None:
        await local_mesh.apply(split(fresh_upstreams, 70, 30))
        before = await _flushed(local_mesh)
        result = await _load(local_mesh, 1000)
        after = await _flushed(local_mesh)
        for name in (PRIMARY, CANARY):

            def delta(metric: str, **labels: str) -> float:
                return telemetry.total(after, metric, **labels) - telemetry.total(before, metric, **labels)

            served = result.bodies[name]
            assert served > 0
            assert (
                delta(telemetry.UPSTREAM_RQ_TOTAL, envoy_cluster_name=name, envoy_response_code="200")
                == served
            )
            assert delta(telemetry.UPSTREAM_RQ_TIME_COUNT, envoy_cluster_name=name) == served
            assert delta(telemetry.UPSTREAM_RQ_TIME_BUCKET, envoy_cluster_name=name, le="+Inf") == served
            assert (
                delta(telemetry.CALLER_RQ_TOTAL, canaryctl_backend=name, envoy_response_code="200") == served
            )
            assert delta(telemetry.CALLER_RQ_DURATION_COUNT, canaryctl_backend=name) == served

    asyncio.run(run())


def test_stop_leaves_no_process_or_shared_memory(upstreams: UpstreamServers) -> None:
    shm_before = set(os.listdir("/dev/shm"))

    async def run() -> int:
        async with LocalMesh() as mesh:
            await mesh.apply(split(upstreams, 100, 0))
            assert (await _load(mesh, 10)).bodies == {PRIMARY: 10}
            assert mesh.envoy.proc is not None
            pid = mesh.envoy.proc.pid
            workdir = mesh.workdir
        assert not workdir.exists()
        return pid

    pid = asyncio.run(run())
    status = Path(f"/proc/{pid}/status")
    assert not status.exists() or "zombie" in status.read_text().lower()
    assert set(os.listdir("/dev/shm")) <= shm_before
