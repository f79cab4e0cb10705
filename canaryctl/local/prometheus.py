"""A throwaway Prometheus (Debian's binary) scraping local targets, for ``--prometheus auto`` and the demo."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from canaryctl_mesh.children import spawn

SCRAPE_INTERVAL = "1s"


class PrometheusError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        raise PrometheusError("the prometheus binary is not installed (Debian: apt-get install prometheus)")
    return found


class LocalPrometheus:
    """Started with a generated config in a temp dir; stopped by its PID, its data removed; it dies with
    the process that started it."""

    def __init__(self, scrape_configs: list[dict[str, Any]], rule_files: list[str] | None = None) -> None:
        self.scrape_configs = scrape_configs
        self.rule_files = rule_files or []
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="canaryctl-prometheus-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def scraping(cls, job: str, url: str) -> LocalPrometheus:
        """One job scraping one ``http://host:port/path`` URL."""
        parsed = httpx.URL(url)
        target = {"targets": [f"{parsed.host}:{parsed.port}"]}
        return cls([{"job_name": job, "metrics_path": parsed.path or "/metrics", "static_configs": [target]}])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        config = {
            "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
            "scrape_configs": self.scrape_configs,
            "rule_files": self.rule_files,
        }
        config_path = self.workdir / "prometheus.yml"
        config_path.write_text(json.dumps(config))  # JSON is YAML
        log = (self.workdir / "prometheus.log").open("wb")
        self.proc = spawn(
            [
                prometheus_binary(),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        tail = (self.workdir / "prometheus.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise PrometheusError(f"Prometheus did not become ready within {timeout}s: {tail}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalPrometheus:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
