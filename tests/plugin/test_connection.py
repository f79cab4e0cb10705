"""Which API server ``kubectl canary`` talks to, as kubectl decides it: inside a pod the service account
is used only when no kubeconfig is named or found; ``--kubeconfig``, ``--context``, ``$KUBECONFIG`` and
``~/.kube/config`` win over it (a CI runner in one cluster deploying to another).

Each case runs the real command in its own mount namespace whose /run holds a service account (token,
CA, namespace file) for an in-cluster API server: an emulator behind TLS, which records the bearer token
it was sent. A second emulator is the cluster the kubeconfig names.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import kmock
import pytest
import pytest_asyncio
import yaml
from aiohttp import web

from tests.kube.emulator import emulator_url, running_emulator
from tests.plugin import scenarios
from tests.tls import self_signed_certificate

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]
TOKEN = "in-cluster-token"


def _can_unshare() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None and sys.platform == "linux"


@pytest_asyncio.fixture()
async def in_cluster(tmp_path: Path) -> AsyncIterator[tuple[kmock.KubernetesEmulator, int, list[str]]]:
    """An emulator behind TLS on 127.0.0.1 (the pod's API server) and the tokens it received."""
    cert, key = self_signed_certificate(tmp_path, "kubernetes.default.svc")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    tokens: list[str] = []
    async with running_emulator() as emulator, aiohttp.ClientSession() as session:
        upstream = emulator_url(emulator)

        async def forward(request: web.Request) -> web.Response:
            tokens.append(request.headers.get("Authorization", ""))
            async with session.request(
                request.method, upstream + request.path_qs, data=await request.read(), headers=request.headers
            ) as answer:
                body = await answer.read()
                return web.Response(status=answer.status, body=body, content_type="application/json")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        try:
            yield emulator, int(runner.addresses[0][1]), tokens
        finally:
            await runner.cleanup()


async def in_pod(
    tmp_path: Path, port: int, *argv: str, environ: dict[str, str] | None = None
) -> tuple[int, str]:
    """``canaryctl ARGV`` as in a pod: a service account in /run, KUBERNETES_SERVICE_* set, no HOME config."""
    cert = tmp_path / "tls.crt"
    script = (
        "set -e; mount -t tmpfs tmpfs /run; d=/run/secrets/kubernetes.io/serviceaccount; mkdir -p $d; "
        f"printf {TOKEN} > $d/token; cp {cert} $d/ca.crt; printf test > $d/namespace; "
        'exec "$@"'
    )
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "KUBERNETES_SERVICE_HOST": "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": str(port),
        "PYTHONPATH": str(Path(__file__).parents[2]),
        **(environ or {}),
    }
    command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh"]
    process = await asyncio.create_subprocess_exec(
        *command,
        sys.executable,
        "-m",
        "canaryctl.cli.main",
        *argv,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, out.decode()


def kubeconfig(path: Path, servers: dict[str, str], current: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": n, "cluster": {"server": s}} for n, s in servers.items()],
                "users": [{"name": "me", "user": {}}],
                "contexts": [
                    {"name": n, "context": {"cluster": n, "user": "me", "namespace": "test"}} for n in servers
                ],
                "current-context": current,
            }
        )
    )
    return path


@pytest.mark.skipif(not _can_unshare(), reason="needs root and unshare for a private /run")
async def test_explicit_kubeconfig_and_context_win_over_the_pod(
    in_cluster: tuple[kmock.KubernetesEmulator, int, list[str]], tmp_path: Path
) -> None:
    pod_api, port, tokens = in_cluster
    scenarios.seed(pod_api, scenarios.progressing())  # podinfo, in the pod's cluster
    async with running_emulator() as other, running_emulator() as third:
        scenarios.seed(other, scenarios.failed())  # failing
        scenarios.seed(third, scenarios.succeeded())  # done
        servers = {"other": emulator_url(other), "third": emulator_url(third)}
        config = kubeconfig(tmp_path / "config", servers, current="other")

        code, out = await in_pod(tmp_path, port, "list", "-o", "name")
        assert (code, out) == (0, "canary.canaryctl.dev/podinfo\n"), "no kubeconfig: the pod's own cluster"
        assert tokens and {t.lower() for t in tokens} == {f"bearer {TOKEN}"}
        calls = len(tokens)

        code, out = await in_pod(tmp_path, port, "list", "-o", "name", "--kubeconfig", str(config))
        assert (code, out) == (0, "canary.canaryctl.dev/failing\n")
        code, out = await in_pod(
            tmp_path, port, "list", "-o", "name", "--context", "third", environ={"KUBECONFIG": str(config)}
        )
        assert (code, out) == (0, "canary.canaryctl.dev/done\n")
        code, out = await in_pod(tmp_path, port, "status", "failing", environ={"KUBECONFIG": str(config)})
        assert code == 0 and "Name:          failing" in out
        assert len(tokens) == calls, "with a kubeconfig the pod's API server is never asked"
