"""``canaryctl local run CANARY.yaml --primary URL --canary URL``."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from canaryctl import registry
from canaryctl.api.models import AlertProviderSpec, AlertProviderType
from canaryctl.local.console import Console
from canaryctl.local.manifests import ManifestError, load_files
from canaryctl.local.recording import Recorder
from canaryctl.local.runtime import LocalOptions, LocalRun, LocalRuntime, ProviderUnavailable
from canaryctl.telemetry.metrics import ControllerMetrics, serve_metrics
from canaryctl_mesh.duration import duration_arg

EXIT_SUCCEEDED, EXIT_FAILED, EXIT_TIMEOUT, EXIT_USAGE = 0, 1, 2, 3


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8000")
    return host, int(port)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    local = subparsers.add_parser("local", help="run a canary on this machine, without a cluster")
    commands = local.add_subparsers(dest="local_command", metavar="COMMAND")
    commands.required = True
    run = commands.add_parser(
        "run",
        help="roll out a Service-kind canary between two local endpoints",
        description="Routes traffic through the included mesh's Envoy from --primary to --canary by the "
        "Canary's steps, judging metrics and calling its webhooks, until it succeeds or fails.",
    )
    run.add_argument(
        "files", nargs="+", type=Path, metavar="FILE", help="Canary (+ MetricTemplates, AlertProviders)"
    )
    run.add_argument(
        "--primary", required=True, help="URL of the running primary, e.g. http://127.0.0.1:9001"
    )
    run.add_argument("--canary", required=True, help="URL of the running canary")
    run.add_argument(
        "--listen", type=_listen, default=("127.0.0.1", 8000), help="where Envoy listens (HOST:PORT)"
    )
    run.add_argument(
        "--prometheus",
        default=None,
        help="Prometheus URL, or 'auto' to start one; default: read Envoy's stats",
    )
    run.add_argument("--status-file", type=Path, default=None, help="write the Canary status here as JSON")
    run.add_argument(
        "--timeout",
        type=duration_arg,
        default="30m",
        help="give up after this long, e.g. 90s or 30m (exit 2)",
    )
    run.add_argument("--slack-url", default=None, help="default Slack incoming webhook for alerts")
    run.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve the controller's Prometheus metrics on this port while the rollout runs (0: none)",
    )
    run.add_argument(
        "--report", type=Path, default=None, metavar="FILE", help="write an HTML report of the rollout here"
    )
    run.set_defaults(func=run_command)


async def _interruptible(rollout: Coroutine[Any, Any, LocalRun]) -> LocalRun:
    """Ctrl-C cancels the rollout, and cancels it again every half second until it ends: a
    cancellation that lands just as an awaited call completes can be lost (``asyncio.wait_for``
    before Python 3.12), and the rollout would then go on."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(rollout)
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        interrupted = True
        task.cancel()

    loop.add_signal_handler(signal.SIGINT, interrupt)
    try:
        while not (await asyncio.wait({task}, timeout=0.5))[0]:
            if interrupted:
                task.cancel()
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    if interrupted:
        raise KeyboardInterrupt
    return task.result()


async def _run(runtime: LocalRuntime, report: Path | None) -> LocalRun:
    """The rollout, recorded for its report when one is asked for."""
    if report is None:
        return await _interruptible(runtime.run())
    recorder = Recorder(runtime.bundle.canary)
    recorder.attach(runtime)
    outcome = await _interruptible(runtime.run())
    from canaryctl.report.html import write_report  # plotly: only when a report is asked for

    write_report(report, await recorder.finish(outcome.canary, []))
    return outcome


def exit_code(run: LocalRun) -> int:
    if run.timed_out:
        return EXIT_TIMEOUT
    return EXIT_SUCCEEDED if run.phase is not None and run.phase.value == "Succeeded" else EXIT_FAILED


def run_command(args: argparse.Namespace) -> int:
    try:
        bundle = load_files(args.files)
    except ManifestError as exc:
        print(f"canaryctl local run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    slack = AlertProviderSpec(type=AlertProviderType.SLACK, address=args.slack_url)
    notifier = registry.notifier(slack, None) if args.slack_url else None
    options = LocalOptions(
        primary=args.primary,
        canary=args.canary,
        listen_host=args.listen[0],
        listen_port=args.listen[1],
        prometheus=args.prometheus,
        status_file=args.status_file,
        timeout=args.timeout,
        default_notifier=notifier,
        metrics=ControllerMetrics() if args.metrics_port else None,
    )
    console = Console()
    runtime = LocalRuntime(bundle, options, console)
    server = serve_metrics(options.metrics, args.metrics_port) if options.metrics else None
    try:
        outcome = asyncio.run(_run(runtime, args.report))
    except ProviderUnavailable as exc:
        print(f"canaryctl local run: metrics provider not available: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("canaryctl local run: interrupted; Envoy and Prometheus stopped", file=sys.stderr)
        return 130
    finally:
        console.close()
        if server is not None:
            server.stop()
    phase = outcome.phase.value if outcome.phase else "unknown"
    if args.report is not None:
        print(f"report: {args.report}")
    print(f"verdict: {phase}" + (" (timed out)" if outcome.timed_out else ""))
    return exit_code(outcome)
