"""``canaryctl demo-app``: a versioned HTTP app whose error rate and latency are set on the command line.

It is the workload of the demo and of the local end-to-end tests: v1 healthy as the primary, v2 healthy
or faulty as the canary. It exposes Prometheus metrics in the shape the kubernetes/gatewayapi builtin
metrics expect (``http_request_duration_seconds`` with a ``status`` label).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import Counter

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest

from canaryctl_mesh.duration import duration_arg

# A request the app lets through is marked so callers can tell which version answered.
VERSION_HEADER = "X-Canaryctl-Version"
# Responses by status code, for in-process callers (tests, benchmarks) that need the app's own count.
SERVED = web.AppKey("served", Counter)


def build_app(version: str, error_rate: float, latency_ms: float, seed: int | None = None) -> web.Application:
    if not 0 <= error_rate <= 1:
        raise ValueError(f"--error-rate must be within 0..1, got {error_rate}")
    registry = CollectorRegistry()
    durations = Histogram(
        "http_request_duration_seconds",
        "Time spent serving HTTP requests.",
        ["status", "version"],
        registry=registry,
        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    )
    chance = random.Random(seed)
    served: Counter[int] = Counter()

    async def page(request: web.Request) -> web.Response:
        started = time.perf_counter()
        if latency_ms > 0:
            await asyncio.sleep(latency_ms / 1000)
        failed = chance.random() < error_rate
        status = 500 if failed else 200
        body = f"canaryctl demo {version}: {'internal error' if failed else 'hello'}\n"
        durations.labels(str(status), version).observe(time.perf_counter() - started)
        served[status] += 1
        return web.Response(status=status, text=body, headers={VERSION_HEADER: version})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": version})

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app[SERVED] = served
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_route("*", "/{tail:.*}", page)
    return app


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("demo-app", help="serve the versioned demo app")
    parser.add_argument("--version", default="v1", help="version string the app reports")
    parser.add_argument(
        "--error-rate", type=float, default=0.0, help="fraction of requests answered 500 (0..1)"
    )
    parser.add_argument(
        "--latency", type=duration_arg, default=None, help="latency added to every request, e.g. 300ms"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    app = build_app(args.version, args.error_rate, (args.latency or 0.0) * 1000)
    web.run_app(app, host=args.host, port=args.port, print=None)
    return 0
