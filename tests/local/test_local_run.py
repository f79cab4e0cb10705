"""``canaryctl local run`` as a user runs it: real processes, real Envoy, real traffic."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from canaryctl.local.envoy_stats import quantile
from canaryctl.local.prometheus import free_port
from tests.processes import children, command_name, exited

CANARY = """
apiVersion: canaryctl.dev/v1beta1
kind: Canary
metadata: {name: web, namespace: local}
spec:
  targetRef: {kind: Service, name: web}
  service: {port: 80}
  analysis:
    interval: 10s
    stepWeight: 50
    maxWeight: 50
    metrics:
      - {name: request-success-rate, interval: 10s, thresholdRange: {min: 99}}
"""
CANARYCTL = [sys.executable, "-m", "canaryctl.cli.main"]
UNREACHABLE = ("http://127.0.0.1:1", "http://127.0.0.1:2")


def local_run(tmp_path: Path, manifest: str, endpoints: tuple[str, str], *extra: str) -> list[str]:
    """The command line a user types, with the manifest written to a file first."""
    path = tmp_path / "canary.yaml"
    path.write_text(manifest)
    return [
        *CANARYCTL,
        "local",
        "run",
        str(path),
        "--primary",
        endpoints[0],
        "--canary",
        endpoints[1],
        *extra,
    ]


def wait_until_up(url: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=0.5)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not come up")


@pytest.fixture
def apps() -> Iterator[tuple[str, str]]:
    ports = [free_port(), free_port()]
    procs = [
        subprocess.Popen([*CANARYCTL, "demo-app", "--version", version, "--port", str(port)])
        for version, port in zip(("v1", "v2"), ports, strict=True)
    ]
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url in urls:
            wait_until_up(url)
        yield urls[0], urls[1]
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


def traffic(url: str, stop: threading.Event) -> None:
    with httpx.Client(timeout=2) as client:
        for _ in range(5_000):
            if stop.is_set():
                return
            with contextlib.suppress(httpx.HTTPError):
                client.get(url)
            time.sleep(0.05)


def test_local_run_promotes_writes_its_status_and_a_report(apps: tuple[str, str], tmp_path: Path) -> None:
    status_file = tmp_path / "status.json"
    port = free_port()
    command = local_run(
        tmp_path,
        CANARY,
        apps,
        "--listen",
        f"127.0.0.1:{port}",
        "--status-file",
        str(status_file),
        "--timeout",
        "1m30s",
        "--report",
        str(tmp_path / "report.html"),
    )
    stop = threading.Event()
    loader = threading.Thread(target=traffic, args=(f"http://127.0.0.1:{port}/", stop), daemon=True)
    loader.start()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    finally:
        stop.set()
        loader.join(timeout=5)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "verdict: Succeeded"
    assert "Advance web.local canary weight 50" in done.stdout
    status = json.loads(status_file.read_text())["status"]
    assert status["phase"] == "Succeeded"
    assert status["metrics"][0]["name"] == "request-success-rate" and status["metrics"][0]["value"] == 100
    assert f"report: {tmp_path / 'report.html'}" in done.stdout
    page = (tmp_path / "report.html").read_text()
    assert "<h1>Promoted: local/web</h1>" in page and "Requests per second by version" in page


def test_local_run_timeout_takes_a_duration(tmp_path: Path) -> None:
    command = local_run(tmp_path, CANARY, UNREACHABLE, "--timeout", "soon")
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--timeout: invalid duration 'soon': expected a Go duration such as 30s" in done.stderr


def test_local_run_rejects_a_bad_manifest_with_the_field_path(tmp_path: Path) -> None:
    command = local_run(tmp_path, CANARY.replace("stepWeight: 50", "stepWieght: 50"), UNREACHABLE)
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3
    assert "spec.analysis.stepWieght" in done.stderr


def test_local_run_refuses_to_start_without_its_metrics_provider(tmp_path: Path) -> None:
    prometheus = f"http://127.0.0.1:{free_port()}"
    command = local_run(
        tmp_path, CANARY, UNREACHABLE, "--listen", f"127.0.0.1:{free_port()}", "--prometheus", prometheus
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "metrics provider not available" in done.stderr and "request-success-rate" in done.stderr


def test_ctrl_c_stops_envoy_and_leaves_nothing_running(apps: tuple[str, str], tmp_path: Path) -> None:
    command = local_run(tmp_path, CANARY, apps, "--listen", f"127.0.0.1:{free_port()}")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        started: set[int] = set()
        while time.monotonic() < deadline and not started:
            started = children(proc.pid)
            time.sleep(0.2)
        assert started, "the runtime should have started Envoy"
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    for pid in started:
        assert exited(pid)


@pytest.mark.slow
def test_a_killed_local_run_leaves_neither_envoy_nor_prometheus_running(
    apps: tuple[str, str], tmp_path: Path
) -> None:
    """SIGKILL runs no cleanup: the kernel has to stop the children, including Prometheus, which is
    started from a worker thread."""
    command = local_run(
        tmp_path, CANARY, apps, "--listen", f"127.0.0.1:{free_port()}", "--prometheus", "auto"
    )
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    started: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(started) < 2 and proc.poll() is None:
            started = {command_name(pid): pid for pid in children(proc.pid)}
            started = {name: pid for name, pid in started.items() if name in ("envoy", "prometheus")}
            time.sleep(0.2)
        assert set(started) == {"envoy", "prometheus"}, f"children: {started}"
        time.sleep(1)  # past the worker thread that started Prometheus
        assert not exited(started["prometheus"]), "Prometheus died with the thread that started it"
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=30)
    survivors = {name: pid for name, pid in started.items() if not exited(pid, timeout=10)}
    for pid in survivors.values():
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"outlived canaryctl local run: {survivors} {err[-2000:]}"


def test_quantile_interpolates_like_prometheus() -> None:
    buckets = [(1.0, 10.0), (5.0, 100.0), (10.0, 100.0), (float("inf"), 100.0)]
    assert quantile(0.99, buckets) == pytest.approx(1 + 4 * (99 - 10) / 90)
    assert quantile(0.5, [(float("inf"), 0.0)]) is None


INJECTION = "{{ cycler.__init__.__globals__.os.popen('touch MARKER; echo 1').read() }}"
INJECTED_INLINE = CANARY.replace(
    "      - {name: request-success-rate, interval: 10s, thresholdRange: {min: 99}}\n",
    '      - {name: evil, interval: 10s, thresholdRange: {max: 10}, query: "INJECTION"}\n',
)
INJECTED_TEMPLATE = (
    CANARY.replace(
        "      - {name: request-success-rate, interval: 10s, thresholdRange: {min: 99}}\n",
        "      - {name: evil, interval: 10s, thresholdRange: {max: 10}, templateRef: {name: evil}}\n",
    )
    + "---\napiVersion: canaryctl.dev/v1beta1\nkind: MetricTemplate\n"
    "metadata: {name: evil, namespace: local}\n"
    'spec:\n  provider: {type: prometheus}\n  query: "INJECTION"\n'
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("manifest", "field"),
    [
        (INJECTED_INLINE, "spec.analysis.metrics[0].query"),
        (INJECTED_TEMPLATE, "MetricTemplate/evil: spec.query"),
    ],
    ids=["inline", "template"],
)
def test_a_query_that_injects_code_is_refused_and_runs_nothing(
    apps: tuple[str, str], tmp_path: Path, manifest: str, field: str
) -> None:
    """With a Prometheus to query and two live endpoints, the run would reach analysis; it must refuse
    the manifest first, say why, and the command in the query must never run."""
    marker = tmp_path / "ran"
    text = manifest.replace("INJECTION", INJECTION.replace("MARKER", str(marker)))
    command = local_run(
        tmp_path,
        text,
        apps,
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--prometheus",
        "auto",
        "--timeout",
        "60",
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stdout[-2000:] + done.stderr[-2000:]
    assert "verdict: Succeeded" not in done.stdout
    assert field in done.stderr and "function 'cycler' is not defined" in done.stderr, done.stderr[-2000:]
    assert not marker.exists()
