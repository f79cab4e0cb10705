"""``canaryctl demo``: v1 and v2 of the demo app, Envoy, Prometheus, the load tester and a Slack receiver,
all on this machine, and one canary per scenario run to its verdict."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from canaryctl.api.models import Phase
from canaryctl.demo.app import build_app
from canaryctl.demo.scenarios import SCENARIOS, Scenario, Wiring, manifests
from canaryctl.demo.servers import LocalServer, SlackReceiver
from canaryctl.loadtester import server as loadtester_server
from canaryctl.local.console import Console
from canaryctl.local.manifests import load_texts
from canaryctl.local.prometheus import free_port
from canaryctl.local.recording import Recorder
from canaryctl.local.runtime import AUTO, LocalOptions, LocalRuntime

SCENARIO_TIMEOUT_SECONDS = 150.0
LOADTESTER_LOGGER = loadtester_server.__name__


@dataclass(frozen=True)
class Outcome:
    scenario: Scenario
    phase: Phase | None
    report: Path
    alerts: list[str]

    @property
    def expected(self) -> bool:
        return self.phase is self.scenario.expected


async def run_scenario(scenario: Scenario, report_dir: Path, prometheus: str | None = AUTO) -> Outcome:
    primary = LocalServer(build_app("v1", 0.0, 5.0))
    canary = LocalServer(build_app("v2", scenario.canary_error_rate, scenario.canary_latency_ms))
    slack = SlackReceiver()
    receiver = LocalServer(slack.build_app())
    loadtester = LocalServer(loadtester_server.build_app())
    servers = [primary, canary, receiver, loadtester]
    try:
        for server in servers:
            await server.start()
        listen_port = free_port()
        wiring = Wiring(f"http://127.0.0.1:{listen_port}", loadtester.url, receiver.url)
        bundle = load_texts([(f"{scenario.name}.yaml", manifests(scenario, wiring))])
        console = Console(extra=lambda: [f"  ✉ slack: {text}" for text in slack.texts()[-4:]])
        options = LocalOptions(
            primary=primary.url,
            canary=canary.url,
            listen_port=listen_port,
            prometheus=prometheus,
            timeout=SCENARIO_TIMEOUT_SECONDS,
        )
        print(f"== scenario {scenario.name}: {scenario.description}")
        runtime = LocalRuntime(bundle, options, console)
        recorder = Recorder(bundle.canary)
        recorder.attach(runtime)
        try:
            result = await runtime.run()
        finally:
            console.close()
        history = await recorder.finish(result.canary, slack.texts())
        from canaryctl.report.html import write_report  # plotly: not on the path of `--help`

        report = write_report(report_dir / f"demo-{scenario.name}.html", history)
        return Outcome(scenario, result.phase, report, slack.texts())
    finally:
        with quiet(LOADTESTER_LOGGER):  # the load generators it stops now are not news
            for server in reversed(servers):
                await server.stop()


@contextlib.contextmanager
def quiet(logger_name: str) -> Iterator[None]:
    """Only errors from ``logger_name`` while the block runs."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run a whole canary locally with real traffic",
        description="Starts the demo app as v1 and v2, Envoy, Prometheus, the load tester and a Slack "
        "receiver, and runs each scenario's canary to its verdict.",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(SCENARIOS),
        help="scenario to run (repeatable; default: healthy)",
    )
    parser.add_argument("--report-dir", type=Path, default=Path("."), help="where the HTML reports go")
    parser.add_argument(
        "--prometheus",
        default=AUTO,
        help="Prometheus URL, 'auto' (default) to start one, 'none' for Envoy stats",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    names = args.scenario or ["healthy"]
    args.report_dir.mkdir(parents=True, exist_ok=True)
    prometheus = None if args.prometheus == "none" else args.prometheus
    outcomes = []
    for name in names:
        outcome = asyncio.run(run_scenario(SCENARIOS[name], args.report_dir, prometheus))
        phase = outcome.phase.value if outcome.phase else "unknown"
        print(
            f"scenario {name}: {phase} (expected {outcome.scenario.expected.value}); report {outcome.report}"
        )
        outcomes.append(outcome)
    summary = " ".join(f"{o.scenario.name}={o.phase.value if o.phase else 'unknown'}" for o in outcomes)
    print(f"demo: {summary}")
    sys.stdout.flush()
    return 0 if all(o.expected for o in outcomes) else 1
