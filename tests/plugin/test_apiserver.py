"""kubectl canary's own API connection against a real HTTPS server: the kubeconfig forms people use
(CA + bearer token, client certificates, exec credential plugins) and the errors they get."""

from __future__ import annotations

import base64
import json
import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from canaryctl.api.models import Canary
from canaryctl.cli.apiserver import ApiError, ConfigError, context_namespace, load_connection
from canaryctl.cli.kube import parse_canary
from canaryctl.cli.main import main
from tests.plugin import scenarios
from tests.tls import self_signed_certificate

TOKEN = "s3cret-token"


class ApiServer:
    """HTTPS on loopback answering Canary lists to the right bearer token or client certificate."""

    def __init__(self, directory: Path, client_ca: Path | None = None) -> None:
        self.cert, key = self_signed_certificate(directory, "127.0.0.1")
        self.seen: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                peer = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
                outer.seen.append(
                    {"path": self.path, "auth": self.headers.get("Authorization"), "peer": peer}
                )
                if self.headers.get("Authorization") != f"Bearer {TOKEN}" and not peer:
                    self._answer(401, {"kind": "Status", "message": "Unauthorized"})
                    return
                if "/namespaces/forbidden/" in self.path:
                    message = 'canaries.canaryctl.dev is forbidden: User "dev" cannot list resource'
                    self._answer(403, {"kind": "Status", "message": message})
                    return
                self._answer(200, {"kind": "CanaryList", "items": scenarios.progressing()[:1]})

            def _answer(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, key)
        if client_ca is not None:
            context.load_verify_locations(client_ca)
            context.verify_mode = ssl.CERT_OPTIONAL
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def client_cert(tmp_path: Path) -> tuple[Path, Path]:
    directory = tmp_path / "client"
    directory.mkdir()
    return self_signed_certificate(directory, "dev")


@pytest.fixture()
def server(tmp_path: Path, client_cert: tuple[Path, Path]) -> Iterator[ApiServer]:
    directory = tmp_path / "server"
    directory.mkdir()
    running = ApiServer(directory, client_ca=client_cert[0])
    yield running
    running.close()


def kubeconfig(tmp_path: Path, server: ApiServer, user: dict[str, Any], namespace: str = "test") -> Path:
    """A kubeconfig whose CA path is relative to the file, as kubectl resolves it."""
    (tmp_path / "ca.crt").write_bytes(server.cert.read_bytes())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "dev",
        "clusters": [{"name": "c", "cluster": {"server": server.url, "certificate-authority": "ca.crt"}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "dev", "context": {"cluster": "c", "user": "u", "namespace": namespace}}],
    }
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(config))
    return path


def test_token_and_ca_list_canaries(
    tmp_path: Path, server: ApiServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig(tmp_path, server, {"token": TOKEN})))
    assert main(["list", "-o", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)["items"]
    assert [(r["name"], r["phase"]) for r in rows] == [("podinfo", "Progressing")]
    assert server.seen[-1]["path"] == "/apis/canaryctl.dev/v1beta1/namespaces/test/canaries"
    assert server.seen[-1]["auth"] == f"Bearer {TOKEN}"


def test_wrong_ca_is_refused(tmp_path: Path, server: ApiServer, capsys: pytest.CaptureFixture[str]) -> None:
    path = kubeconfig(tmp_path, server, {"token": TOKEN})
    other = tmp_path / "other"
    other.mkdir()
    (tmp_path / "ca.crt").write_bytes(self_signed_certificate(other, "someone-else")[0].read_bytes())
    assert main(["list", "--kubeconfig", str(path)]) == 1
    err = capsys.readouterr().err
    assert "cannot reach the API server" in err and "CERTIFICATE_VERIFY_FAILED" in err


def test_forbidden_answer_names_the_cause(
    tmp_path: Path, server: ApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    path = kubeconfig(tmp_path, server, {"token": TOKEN}, namespace="forbidden")
    assert main(["list", "--kubeconfig", str(path)]) == 1
    assert capsys.readouterr().err == (
        "kubectl canary: error: canaries in forbidden: forbidden: canaries.canaryctl.dev is forbidden: "
        'User "dev" cannot list resource\n'
    )
    with pytest.raises(ApiError) as raised:
        load_connection(str(path)).request("GET", "/apis/canaryctl.dev/v1beta1/namespaces/forbidden/canaries")
    assert raised.value.status == 403


def test_client_certificate_from_data(
    tmp_path: Path, server: ApiServer, client_cert: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cert, key = client_cert
    user = {
        "client-certificate-data": base64.b64encode(cert.read_bytes()).decode(),
        "client-key-data": base64.b64encode(key.read_bytes()).decode(),
    }
    assert main(["list", "--kubeconfig", str(kubeconfig(tmp_path, server, user))]) == 0
    assert server.seen[-1]["auth"] is None
    assert dict(pair[0] for pair in server.seen[-1]["peer"]["subject"]) == {"commonName": "dev"}


def test_exec_credential_plugin(
    tmp_path: Path, server: ApiServer, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin = tmp_path / "credential-plugin"
    plugin.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        "request = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "assert request['kind'] == 'ExecCredential', request\n"
        "print(json.dumps({'apiVersion': request['apiVersion'], 'kind': 'ExecCredential',\n"
        "                  'status': {'token': os.environ['PLUGIN_TOKEN'] + sys.argv[1]}}))\n"
    )
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": str(plugin),
            "args": ["-token"],
            "env": [{"name": "PLUGIN_TOKEN", "value": "s3cret"}],
        }
    }
    assert main(["list", "--kubeconfig", str(kubeconfig(tmp_path, server, user))]) == 0
    assert server.seen[-1]["auth"] == f"Bearer {TOKEN}"
    failing = {"exec": {"command": "false"}}
    assert main(["list", "--kubeconfig", str(kubeconfig(tmp_path, server, failing))]) == 1
    assert "exec plugin 'false' failed: exit 1" in capsys.readouterr().err


def test_kubeconfig_list_merges_first_file_wins(tmp_path: Path, server: ApiServer) -> None:
    first = kubeconfig(tmp_path, server, {"token": TOKEN}, namespace="team-a")
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    second = kubeconfig(second_dir, server, {"token": "other"}, namespace="team-b")
    listed = f"{first}{':'}{tmp_path / 'missing'}:{second}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBECONFIG", listed)
        connection = load_connection()
        assert connection.namespace == "team-a"
        assert connection.headers["Authorization"] == f"Bearer {TOKEN}"
        assert context_namespace(None, None) == "team-a"


def test_config_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_connection(str(tmp_path / "nope"))
    legacy = tmp_path / "legacy"
    legacy.write_text(
        yaml.safe_dump(
            {
                "current-context": "x",
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"auth-provider": {"name": "gcp"}}}],
            }
        )
    )
    with pytest.raises(ConfigError, match="auth-provider 'gcp' was removed"):
        load_connection(str(legacy))
    with pytest.raises(ConfigError, match="context 'y' is not in the kubeconfig"):
        load_connection(str(legacy), "y")


def test_plugin_is_usable_without_the_official_client(tmp_path: Path, server: ApiServer) -> None:
    """The same list with the kubernetes package made unimportable: the plugin never needs it."""
    blocker = tmp_path / "blocked"
    (blocker / "kubernetes").mkdir(parents=True)
    (blocker / "kubernetes" / "__init__.py").write_text("raise ImportError('kubernetes is not installed')\n")
    path = kubeconfig(tmp_path, server, {"token": TOKEN})
    done = subprocess.run(
        [sys.executable, "-m", "canaryctl", "list", "--kubeconfig", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(blocker), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert "podinfo" in done.stdout


def test_canary_of_a_router_only_the_cluster_has_is_shown() -> None:
    """The operator checks provider names against its installed routers; the plugin shows what is there."""
    obj = scenarios.progressing()[0]
    obj["spec"]["provider"] = "acme-mesh"
    with pytest.raises(ValueError, match="provider 'acme-mesh' is not supported by canaryctl"):
        Canary.model_validate(obj)
    assert parse_canary(obj, "canary test/podinfo").spec.provider == "acme-mesh"
