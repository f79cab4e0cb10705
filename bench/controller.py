"""N Canaries progressing at once on one operator process against kmock's Kubernetes emulator.

The emulator (with the Deployment-controller and Prometheus stand-ins from ``tests.kube.cluster``) runs
in a child process, so the figures are the operator's own: one kopf operator, standalone, real client.
All Canaries are initialized and left idle for ``--idle`` seconds, then every target gets a new
revision at once and the rollouts run for ``--duration`` seconds (or until all are promoted). The
Canaries' phases are counted by the child from the emulator's store, so nothing in the operator's
process (its RSS, its CPU, its event loop) is the benchmark's own. Prints one JSON object as its last
line:

- ``canaries``; ``rss_mb``: the operator process's peak RSS; ``idle_rss_mb``: its RSS after the idle window;
- ``tick_lag_s_p99``: how late ticks start against the due time their previous tick set;
- ``ticks_per_s`` against ``due_ticks_per_s`` (canaries / interval), over the idle window;
- ``api_calls_per_idle_tick``: canaryctl's own API requests per tick while nothing changes;
- ``api_calls_per_step``: its requests during the rollouts per weight step taken (status included);
- ``api_requests_per_step_served``: every request the API stand-in answered during the rollouts (kopf's
  included) per weight step, in all and by request kind (``PATCH canaries/status``, ``POST events``, ...);
- ``api_requests_per_s``: its request rate during the rollouts; ``cpu_operator_pct`` and
  ``cpu_api_pct``: CPU of the operator and of the API stand-in process, in % of one core;
- ``phases`` and ``failed_checks``: the Canaries by phase and by failed checks at the end (every
  metric answers 100 %, so a failed check means the operator could not query in time).

The operator's own list and watch requests are counted in ``api_calls_*``; kopf's requests only in
``api_requests_per_step_served``.
Goals: 2,000 canaries, RSS < 400 MB, tick lag p99 < 1 s, ticks_per_s ≥ 95 % of due_ticks_per_s.

    python -m bench.controller [--canaries 500] [--interval 10s] [--idle 20] [--duration 120]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from kubernetes import client

from canaryctl.api.models import API_VERSION
from canaryctl.operator.handlers import CanaryOperator, OperatorConfig, tune_process
from canaryctl.telemetry.metrics import ControllerMetrics
from canaryctl_mesh.duration import parse_duration
from canaryctl_mesh.kube import pool_size

NS = "default"
KUBELET_PERIOD_SECONDS = 2.0  # the Deployment controller and the kubelet: pods ready within 2 s
STARTUP_SECONDS_PER_CANARY = 0.6  # at most, to initialize (at least 300 s)
STOP_TIMEOUT_SECONDS = 120.0


def request_kind(method: str, path: str) -> str:
    """``METHOD resource[/subresource]`` of a request, e.g. ``PATCH canaries/status``, ``GET services``."""
    parts = path.strip("/").split("/")
    if "namespaces" in parts[:-1]:
        parts = parts[parts.index("namespaces") + 2 :]
    else:
        parts = parts[2:] if parts[:1] == ["api"] else parts[3:]
    return f"{method} {'/'.join([parts[0], *parts[2:]]) if parts else '?'}"


class CountingApiClient(client.ApiClient):
    """Counts the requests made with the official client itself: the watch cache's lists and watches,
    from its threads (the operator's other requests are counted by its ``KubeObjects``)."""

    def __init__(self, configuration: client.Configuration) -> None:
        super().__init__(configuration)
        self.calls = 0
        self._lock = threading.Lock()

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            self.calls += 1
        return super().call_api(*args, **kwargs)


def api_calls(operator: CanaryOperator, api: CountingApiClient) -> int:
    """The requests canaryctl's own clients sent: its reads and writes, and the lists and watches that
    fill its caches (kopf's are not counted)."""
    return operator.objects.requests + operator.router_objects.requests + api.calls


def manifests(index: int, interval: str) -> list[dict[str, Any]]:
    name = f"app-{index:04d}"
    labels = {"app": name}
    container = {"name": "app", "image": "app:v1", "envFrom": [{"configMapRef": {"name": f"{name}-config"}}]}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
        },
    }
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name}-config", "namespace": NS},
    }
    metric = {"name": "success", "query": "success_{{ target }}", "thresholdRange": {"min": 90}}
    canary = {
        "apiVersion": API_VERSION,
        "kind": "Canary",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "service": {"port": 80, "targetPort": 8080},
            "analysis": {"interval": interval, "threshold": 2, "stepWeight": 20, "metrics": [metric]},
        },
    }
    return [config | {"data": {"COLOR": "blue"}}, deployment, canary]


# --- the child process: emulator, kubelet, Prometheus stand-in ------------------------------------------


async def serve(count: int, interval: str) -> None:
    from tests.kube.cluster import Kubelet, running_prometheus
    from tests.kube.emulator import emulator_url, running_emulator

    plurals = {
        "ConfigMap": "v1/configmaps",
        "Deployment": "apps/v1/deployments",
        "Canary": f"{API_VERSION}/canaries",
    }
    async with running_emulator(keep_requests=False) as emulator, running_prometheus() as prometheus:
        for index in range(count):
            for obj in manifests(index, interval):
                obj["metadata"].update(resourceVersion="1", generation=1, uid=f"{obj['kind']}-{index}")
                emulator.objects[plurals[obj["kind"]], NS, obj["metadata"]["name"]] = obj
        kubelet = Kubelet(emulator, period=KUBELET_PERIOD_SECONDS)
        kubelet.sync()
        print(json.dumps({"url": emulator_url(emulator), "prometheus": prometheus.url}), flush=True)
        reader = asyncio.StreamReader()
        await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
        )
        kubelet_task = asyncio.create_task(kubelet.run(24 * 3600))
        while line := (await reader.readline()).decode().strip():  # EOF (parent gone) ends the loop
            if line == "bump":
                for key in list(emulator.objects):
                    resource, _, name = key
                    if resource.plural != "deployments" or name.endswith("-primary"):
                        continue
                    containers = emulator.objects[key].raw["spec"]["template"]["spec"]["containers"]
                    bumped = [dict(containers[0], image="app:v2")]
                    emulator.modify(key, {"spec": {"template": {"spec": {"containers": bumped}}}})
            elif line == "calls":  # every request the API stand-in answered so far, kopf's included
                calls = Counter(request_kind(method, path) for method, path in emulator.calls)
                print(json.dumps(calls), flush=True)
            elif line in CANARY_TALLIES:  # read here, so the operator's figures are its own
                canaries = (obj.raw for obj in emulator.objects.values() if obj.raw.get("kind") == "Canary")
                print(json.dumps(Counter(map(CANARY_TALLIES[line], canaries))), flush=True)
        kubelet_task.cancel()


# --- the operator process --------------------------------------------------------------------------------


def phase_of(canary: dict[str, Any]) -> str:
    return str((canary.get("status") or {}).get("phase") or "Pending")


def failed_checks_of(canary: dict[str, Any]) -> str:
    return str((canary.get("status") or {}).get("failedChecks", 0))


# What the API stand-in counts the Canaries by, asked by name: their phases, their failed checks.
CANARY_TALLIES: dict[str, Callable[[dict[str, Any]], str]] = {"phases": phase_of, "failed": failed_checks_of}


async def wait_all(child: subprocess.Popen[str], phase: str, count: int, timeout: float) -> Counter[str]:
    deadline = time.monotonic() + timeout
    seen: Counter[str] = Counter()
    while time.monotonic() < deadline:
        seen = await asyncio.to_thread(ask, child, "phases")
        print(f"waiting for {count} {phase}: {dict(seen)}", file=sys.stderr)  # progress, not the result
        if seen[phase] >= count:
            break
        await asyncio.sleep(2.0)
    return seen


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU of this process (or of child ``pid``) so far."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resident_mb() -> float:
    """This process's resident memory now (the peak is ``ru_maxrss``)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def ask(child: subprocess.Popen[str], question: str) -> Counter[str]:
    """The API stand-in's count of ``calls`` answered so far (by request kind), of Canary ``phases``, or
    of Canaries by the checks they ``failed``."""
    assert child.stdin is not None and child.stdout is not None
    child.stdin.write(f"{question}\n")
    child.stdin.flush()
    return Counter(json.loads(child.stdout.readline()))


def served(child: subprocess.Popen[str]) -> Counter[str]:
    """What the API stand-in has answered so far, by request kind."""
    return ask(child, "calls")


class Window:
    """API calls, ticks, steps and CPU of both processes over one stretch of time."""

    def __init__(
        self,
        api: CountingApiClient,
        operator: CanaryOperator,
        child: subprocess.Popen[str],
        answered: Counter[str],
    ) -> None:
        self.api, self.operator, self.child = api, operator, child
        self.calls, self.ticks, self.steps = api_calls(operator, api), operator.ticks, operator.steps
        self.served = answered  # what the API stand-in had answered at the start
        self.cpu, self.child_cpu = cpu_seconds(), cpu_seconds(child.pid)
        self.started = time.monotonic()

    def served_per_step(self, answered: Counter[str]) -> dict[str, float]:
        """Requests the API stand-in answered (kopf's included) per weight step, by kind, given what it
        had ``answered`` at the end."""
        steps = max(self.operator.steps - self.steps, 1)
        calls = answered - self.served
        return {"all": round(calls.total() / steps, 2)} | {
            kind: round(count / steps, 2) for kind, count in calls.most_common()
        }

    def figures(self) -> dict[str, float]:
        seconds = time.monotonic() - self.started
        return {
            "seconds": seconds,
            "calls": api_calls(self.operator, self.api) - self.calls,
            "ticks": self.operator.ticks - self.ticks,
            "steps": self.operator.steps - self.steps,
            "cpu_operator_pct": 100 * (cpu_seconds() - self.cpu) / seconds,
            "cpu_api_pct": 100 * (cpu_seconds(self.child.pid) - self.child_cpu) / seconds,
        }


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) >= 2 else (values[0] if values else 0.0)


async def measure(
    args: argparse.Namespace, url: str, prometheus: str, child: subprocess.Popen[str]
) -> dict[str, Any]:
    configuration = client.Configuration()
    configuration.host = url
    configuration.connection_pool_maxsize = pool_size(watchers=16)
    api = CountingApiClient(configuration)
    operator = CanaryOperator(
        OperatorConfig(peering=None, prometheus_url=prometheus), api, ControllerMetrics()
    )
    stop = asyncio.Event()
    task = asyncio.create_task(operator.run(stop_flag=stop))
    try:
        startup = max(300.0, args.canaries * STARTUP_SECONDS_PER_CANARY)
        initialized = await wait_all(child, "Initialized", args.canaries, startup)
        await asyncio.sleep(parse_duration(args.interval))  # the tick after initialization may write
        operator.tick_lags.clear()
        idle = Window(api, operator, child, await asyncio.to_thread(served, child))
        await asyncio.sleep(args.idle)
        quiet = idle.figures()
        idle_rss = resident_mb()
        lags = list(operator.tick_lags)
        operator.tick_lags.clear()
        assert child.stdin is not None
        child.stdin.write("bump\n")
        child.stdin.flush()
        operator.tick_seconds.clear()
        operator.tick_requests = []
        rollouts = Window(api, operator, child, await asyncio.to_thread(served, child))
        final = await wait_all(child, "Succeeded", args.canaries, args.duration)
        busy = rollouts.figures()
        failed = await asyncio.to_thread(ask, child, "failed")
        by_request = rollouts.served_per_step(await asyncio.to_thread(served, child))
        lags += list(operator.tick_lags)
        durations = list(operator.tick_seconds)
        step_ticks = [tally.sent for stepped, tally in operator.tick_requests if stepped]
        other_ticks = [tally.sent for stepped, tally in operator.tick_requests if not stepped]
        result = {
            "canaries": args.canaries,
            "interval": args.interval,
            "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "idle_rss_mb": round(idle_rss, 1),
            "tick_lag_s_p99": round(p99(lags), 3),
            "rollout_tick_s_p50": round(statistics.median(durations), 3) if durations else 0.0,
            "rollout_tick_s_p99": round(p99(durations), 3),
            "ticks_per_s": round(quiet["ticks"] / quiet["seconds"], 1),
            "due_ticks_per_s": round(args.canaries / parse_duration(args.interval), 1),
            "api_calls_per_idle_tick": round(quiet["calls"] / max(quiet["ticks"], 1), 3),
            "api_calls_per_step": round(busy["calls"] / max(busy["steps"], 1), 2),
            "api_requests_per_step_served": by_request,
            # What a tick that changed the weight sent, and the ticks that did not (starts, readiness
            # holds, phase changes): together they make up api_calls_per_step.
            "api_calls_per_step_tick": round(statistics.fmean(step_ticks), 2) if step_ticks else 0.0,
            "api_calls_per_other_tick": round(statistics.fmean(other_ticks), 2) if other_ticks else 0.0,
            "other_ticks": len(other_ticks),
            "api_requests_per_s": round(busy["calls"] / busy["seconds"], 1),
            "cpu_operator_pct": round(busy["cpu_operator_pct"], 1),
            "cpu_api_pct": round(busy["cpu_api_pct"], 1),
            "idle_cpu_operator_pct": round(quiet["cpu_operator_pct"], 1),
            "rollout_ticks_per_s": round(busy["ticks"] / busy["seconds"], 1),
            "steps": busy["steps"],
            "measured_s": round(busy["seconds"], 1),
            "initialized": initialized["Initialized"],
            "phases": dict(final),
            "failed_checks": dict(sorted(failed.items())),
        }
        print(json.dumps(result), flush=True)  # before the operator stops, which takes its own time
        return result
    finally:
        stop.set()
        stopping = time.monotonic()
        await asyncio.wait_for(task, timeout=STOP_TIMEOUT_SECONDS)
        print(f"operator stopped in {time.monotonic() - stopping:.1f} s", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--canaries", type=int, default=500)
    parser.add_argument("--interval", default="10s", help="analysis interval (Flagger's minimum: 10s)")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle ticks measured")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of rollouts measured at most")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(args.canaries, args.interval))
        return 0
    command = [sys.executable, "-m", "bench.controller", "--serve", "--canaries", str(args.canaries)]
    command += ["--interval", args.interval]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        endpoints = json.loads(child.stdout.readline())
        tune_process()  # as `canaryctl operator` runs
        try:
            result = asyncio.run(measure(args, endpoints["url"], endpoints["prometheus"], child))
        finally:
            assert child.stdin is not None
            child.stdin.close()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:  # an emulator still serving open watch streams
                child.kill()
    return 0 if result else 1


if __name__ == "__main__":
    raise SystemExit(main())
