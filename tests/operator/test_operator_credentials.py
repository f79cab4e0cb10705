"""The operator's credentials paths end to end: the default Slack notifier built from the environment
(``canaryctl operator`` never takes the URL on its command line) and webhook tokens read from Secrets
in the Canary's namespace, against an authenticating load tester. Real kopf against kmock's emulator.
"""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

import httpx
import pytest

from canaryctl.demo.servers import LocalServer, SlackReceiver
from canaryctl.loadtester import Policy, build_app
from canaryctl.loadtester.auth import TokenHashes, token_hash
from canaryctl.operator import cli as operator_cli
from canaryctl_mesh.kube import KubeObjects
from tests.kube.cluster import Kubelet, PrometheusStub
from tests.operator.conftest import StartOperator
from tests.operator.helpers import NS, canary, setup_target, wait_for, wait_phase, workload

TOKEN = "token-of-the-test-namespace"
BUSY_TIMEOUT = 60.0  # a gate, two failed checks and an alert at 0.5 s intervals; seconds when idle


def operator_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="canaryctl")
    operator_cli.add_parser(parser.add_subparsers())
    return parser.parse_args(["operator", *argv])


def test_slack_credentials_never_come_from_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        operator_args("--slack-url", "https://hooks.slack.com/services/T/B/X")
    assert "unrecognized arguments: --slack-url" in capsys.readouterr().err
    assert operator_cli.default_notifier({}) is None
    # A bot token needs a channel: a clear error at start that prints neither token nor URL.
    args = operator_args("--standalone")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLACK_TOKEN", "xoxb-secret-token")
        assert operator_cli.run(args) == 2
    err = capsys.readouterr().err
    assert err == "canaryctl operator: default Slack notifier: a Slack bot token needs a channel to post to\n"


@pytest.mark.asyncio
@pytest.mark.slow
async def test_default_slack_and_webhook_tokens(
    tmp_path: Path,
    objects: KubeObjects,
    kubelet: Kubelet,
    prometheus: PrometheusStub,
    start_operator: StartOperator,
) -> None:
    slack = SlackReceiver()
    receiver = await LocalServer(slack.build_app()).start()
    hashes = tmp_path / "hashes"
    hashes.mkdir()
    (hashes / NS).write_text(token_hash(TOKEN))
    policy = Policy(authenticators=(TokenHashes(hashes),))
    loadtester = await LocalServer(build_app(policy)).start()
    try:
        secret = {"name": "loadtester-token", "namespace": NS}
        encoded = base64.b64encode(TOKEN.encode()).decode()
        await objects.apply(
            {"apiVersion": "v1", "kind": "Secret", "metadata": secret, "data": {"token": encoded}}
        )
        gate = {"name": "bad", "namespace": NS}
        async with httpx.AsyncClient() as client:
            opened = await client.post(
                f"{loadtester.url}/gate/open", json=gate, headers={"Authorization": f"Bearer {TOKEN}"}
            )
        assert opened.status_code == 202
        prometheus.values["success_bad"] = 42.0
        await setup_target(objects, "Deployment", "bad")
        hook = {
            "name": "approval",
            "type": "confirm-rollout",
            "url": f"{loadtester.url}/gate/check",
            "secretRef": {"name": "loadtester-token"},
        }
        await objects.apply(canary("bad", webhooks=[hook]))
        environ = {"SLACK_URL": f"{receiver.url}/services/T/B/X"}
        args = operator_args("--slack-channel", "deploys", "--slack-user", "canaryctl")
        notifier = operator_cli.default_notifier(environ, args.slack_channel, args.slack_user)
        await start_operator(default_notifier=notifier)
        await wait_phase(objects, "bad", "Initialized", timeout=BUSY_TIMEOUT)

        await objects.apply(workload("Deployment", "bad", image="app:v2", config="bad-config"))
        # Through the gate only with the token (401 without it keeps the canary Waiting), then rolled
        # back on its metrics, which the default notifier reports to Slack.
        done = await wait_phase(objects, "bad", "Failed", "Succeeded", timeout=BUSY_TIMEOUT)
        assert done["status"]["phase"] == "Failed"
        hooks = {h["name"]: h for h in done["status"]["webhooks"]}
        assert hooks["approval"]["success"] is True

        async def alerted() -> bool:
            return any("bad.test" in text for text in slack.texts())

        await wait_for(alerted, BUSY_TIMEOUT, what="the default Slack notifier")
        assert {m.get("channel") for m in slack.messages} == {"deploys"}
        assert {m.get("username") for m in slack.messages} == {"canaryctl"}
    finally:
        await loadtester.stop()
        await receiver.stop()
