"""The plugin's connection to the API server: a kubeconfig read as kubectl reads it, and JSON over HTTPS.

``kubectl canary`` answers in a fraction of a second and installs without the official client (which
takes most of a second to import and pulls aiohttp), so it speaks HTTP with the standard library.
Supported, as kubectl: ``$KUBECONFIG`` (a path list, the first file to set a key wins) or
``~/.kube/config``, else the pod's service account; server CA (file or data) or
insecure-skip-tls-verify; bearer token (inline or file), client certificate and key (file or data),
basic auth, and ``exec`` credential plugins (client.authentication.k8s.io ExecCredential, as EKS, GKE
and AKS use). Legacy ``auth-provider`` entries get a clear error naming their exec replacement. Watches
are streams of JSON lines (``Connection.stream``) that another thread can stop.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import socket
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]

IN_CLUSTER = Path("/var/run/secrets/kubernetes.io/serviceaccount")
REQUEST_TIMEOUT = 30.0
EXEC_TIMEOUT = 60.0
MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # a list of every Event in a busy namespace stays far below this
MAX_EVENT_BYTES = 16 * 1024 * 1024  # one watch event: one object (etcd stores at most 1.5 MiB of it)


class ConfigError(Exception):
    """The kubeconfig cannot be used as written; the message names the file, context or field."""


class ApiError(Exception):
    """The API server answered with a non-2xx status."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"HTTP {status} {reason}: {message}".rstrip(": "))
        self.status, self.reason, self.message = status, reason, message


@dataclass
class Connection:
    """Where the API server is and how to authenticate; ``namespace`` is the context's default."""

    server: str
    namespace: str = "default"
    ssl_context: ssl.SSLContext | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def request(
        self, method: str, path: str, body: Obj | None = None, content_type: str = "application/json"
    ) -> Obj:
        """One request; the decoded JSON answer, ApiError for a non-2xx one, OSError when unreachable."""
        data = json.dumps(body).encode() if body is not None else None
        with self._open(method, path, data, content_type, REQUEST_TIMEOUT) as answer:
            raw = answer.read(MAX_RESPONSE_BYTES + 1)
        if len(raw) > MAX_RESPONSE_BYTES:
            raise OSError(f"answer to {method} {path} is larger than {MAX_RESPONSE_BYTES} bytes")
        try:
            found = json.loads(raw or b"{}")
        except ValueError as exc:
            raise OSError(f"answer to {method} {path} is not JSON: {exc}") from exc
        return found if isinstance(found, dict) else {}

    def stream(self, path: str, read_timeout: float) -> Stream:
        """A GET whose answer is read as it comes, one JSON object a line (a watch); ApiError for a
        non-2xx answer. Connecting and each read wait at most ``read_timeout`` seconds."""
        return Stream(self._open("GET", path, None, "application/json", read_timeout))

    def _open(
        self, method: str, path: str, data: bytes | None, content_type: str, timeout: float
    ) -> http.client.HTTPResponse:
        headers = {"Accept": "application/json", **self.headers}
        if data is not None:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(self.server.rstrip("/") + path, data, headers, method=method)
        try:
            answer: http.client.HTTPResponse = urllib.request.urlopen(
                request, timeout=timeout, context=self.ssl_context
            )
        except urllib.error.HTTPError as exc:
            text = exc.read(64 * 1024).decode(errors="replace")
            exc.close()
            raise ApiError(exc.code, str(exc.reason or ""), _status_message(text)) from None
        return answer


class Stream:
    """The JSON lines of one streamed answer; ``stop()`` from any thread ends the iteration."""

    def __init__(self, answer: http.client.HTTPResponse) -> None:
        self.answer = answer
        # A second handle on the connection's socket: shutting it down wakes a read blocked in
        # another thread (closing the answer there would wait for that read to finish).
        self._socket = socket.fromfd(answer.fileno(), socket.AF_INET, socket.SOCK_STREAM)
        self._stopped = False

    def __iter__(self) -> Iterator[Any]:
        try:
            while line := self.answer.readline(MAX_EVENT_BYTES + 1):
                if len(line) > MAX_EVENT_BYTES and not line.endswith(b"\n"):
                    raise OSError(f"a streamed object is larger than {MAX_EVENT_BYTES} bytes")
                if line.strip():
                    yield json.loads(line)
        except OSError:
            if not self._stopped:
                raise
        except (ValueError, http.client.HTTPException) as exc:  # a line that is not JSON, a cut answer
            if not self._stopped:
                raise OSError(f"streamed answer broken off or not JSON: {exc!r}") from exc
        finally:
            self.answer.close()
            self._socket.close()

    def stop(self) -> None:
        self._stopped = True
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)


def _status_message(text: str) -> str:
    """The ``message`` of a Kubernetes Status body, else the body's first line."""
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip().splitlines()[0] if text.strip() else ""
    return str(body.get("message") or "") if isinstance(body, dict) else ""


def path_with_query(path: str, query: Sequence[tuple[str, str]]) -> str:
    return f"{path}?{urllib.parse.urlencode(query)}" if query else path


# --- kubeconfig ------------------------------------------------------------------------------------------


def kubeconfig_paths(explicit: str | None, environ: Mapping[str, str] = os.environ) -> list[Path]:
    if explicit:
        return [Path(explicit).expanduser()]
    listed = environ.get("KUBECONFIG")
    if listed:
        return [Path(p).expanduser() for p in listed.split(os.pathsep) if p]
    return [Path("~/.kube/config").expanduser()]


def _merged(paths: list[Path], explicit: bool) -> Obj:
    """kubectl's merge: named entries and scalars from the first file that has them."""
    merged: Obj = {"clusters": {}, "users": {}, "contexts": {}}
    found_any = False
    for path in paths:
        if not path.exists():
            if explicit:
                raise ConfigError(f"{path}: no such file")
            continue
        found_any = True
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: not a kubeconfig (expected a mapping)")
        for section, inner in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
            for entry in loaded.get(section) or []:
                if isinstance(entry, dict) and entry.get("name") is not None:
                    value = dict(entry.get(inner) or {}, __file__=str(path))
                    merged[section].setdefault(str(entry["name"]), value)
        if loaded.get("current-context") and "current-context" not in merged:
            merged["current-context"] = str(loaded["current-context"])
    merged["__found__"] = found_any
    return merged


def load_connection(kubeconfig: str | None = None, context: str | None = None) -> Connection:
    """The connection kubectl would use with ``--kubeconfig`` and ``--context``."""
    merged = _merged(kubeconfig_paths(kubeconfig), explicit=kubeconfig is not None)
    if not merged["__found__"] and context is None:
        in_cluster = _in_cluster()
        if in_cluster is not None:
            return in_cluster
        raise ConfigError("no kubeconfig found (set KUBECONFIG or --kubeconfig) and not running in a pod")
    name = context or merged.get("current-context")
    if not name:
        raise ConfigError("the kubeconfig sets no current-context; pass --context")
    chosen = merged["contexts"].get(name)
    if chosen is None:
        raise ConfigError(f"context {name!r} is not in the kubeconfig")
    cluster = merged["clusters"].get(chosen.get("cluster"))
    if cluster is None or not cluster.get("server"):
        raise ConfigError(f"context {name!r}: cluster {chosen.get('cluster')!r} has no server")
    user = merged["users"].get(chosen.get("user"), {}) if chosen.get("user") else {}
    connection = Connection(
        server=str(cluster["server"]),
        namespace=str(chosen.get("namespace") or "default"),
        ssl_context=_ssl_context(cluster) if str(cluster["server"]).startswith("https") else None,
    )
    _authenticate(connection, user, str(chosen.get("user")))
    return connection


def context_namespace(kubeconfig: str | None, context: str | None) -> str:
    """The namespace load_connection's choice implies: the context's, or in a pod without a kubeconfig
    the pod's; found without building a connection (no exec plugin runs)."""
    try:
        merged = _merged(kubeconfig_paths(kubeconfig), explicit=kubeconfig is not None)
    except ConfigError:
        return "default"
    if not merged["__found__"] and context is None:
        return _pod_namespace() if _in_cluster_service() is not None else "default"
    chosen = merged["contexts"].get(context or merged.get("current-context") or "") or {}
    return str(chosen.get("namespace") or "default")


def _in_cluster_service() -> tuple[str, str] | None:
    """The API server's host and port when this runs in a pod with a service account token."""
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port or not (IN_CLUSTER / "token").exists():
        return None
    return host, port


def _pod_namespace() -> str:
    namespace_file = IN_CLUSTER / "namespace"
    try:
        return namespace_file.read_text(encoding="utf-8").strip() or "default"
    except OSError:
        return "default"


def _in_cluster() -> Connection | None:
    service = _in_cluster_service()
    if service is None:
        return None
    host, port = service
    token = IN_CLUSTER / "token"
    context = ssl.create_default_context(cafile=str(IN_CLUSTER / "ca.crt"))
    namespace = _pod_namespace()
    server = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    headers = {"Authorization": f"Bearer {token.read_text().strip()}"}
    return Connection(server, namespace, context, headers)


def _relative(entry: Obj, value: str) -> str:
    """Paths in a kubeconfig are relative to the file that holds them."""
    return str((Path(entry["__file__"]).parent / Path(value).expanduser()).resolve())


def _data(entry: Obj, key: str) -> bytes:
    try:
        return base64.b64decode(str(entry[key]), validate=True)
    except ValueError as exc:
        raise ConfigError(f"{entry['__file__']}: {key} is not base64") from exc


def _ssl_context(cluster: Obj) -> ssl.SSLContext:
    if cluster.get("insecure-skip-tls-verify"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if cluster.get("certificate-authority-data"):
        return ssl.create_default_context(cadata=_data(cluster, "certificate-authority-data").decode())
    if cluster.get("certificate-authority"):
        return ssl.create_default_context(cafile=_relative(cluster, str(cluster["certificate-authority"])))
    return ssl.create_default_context()


def _authenticate(connection: Connection, user: Obj, name: str) -> None:
    if user.get("auth-provider"):
        provider = (user["auth-provider"] or {}).get("name", "?")
        raise ConfigError(
            f"user {name!r}: auth-provider {provider!r} was removed from Kubernetes clients; "
            "use its exec credential plugin (e.g. gke-gcloud-auth-plugin, kubelogin)"
        )
    if user.get("exec"):
        credential = _exec_credential(user["exec"], name)
        user = {**user, **credential}
    if user.get("token"):
        connection.headers["Authorization"] = f"Bearer {user['token']}"
    elif user.get("tokenFile"):
        token = Path(_relative(user, str(user["tokenFile"]))).read_text().strip()
        connection.headers["Authorization"] = f"Bearer {token}"
    elif user.get("username") is not None:
        pair = f"{user['username']}:{user.get('password') or ''}".encode()
        connection.headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    cert, key = _pem(user, "client-certificate"), _pem(user, "client-key")
    if cert is not None and key is not None:
        if connection.ssl_context is None:
            raise ConfigError(f"user {name!r}: client certificates need an https server")
        _load_client_certificate(connection.ssl_context, cert, key)


def _pem(user: Obj, key: str) -> bytes | None:
    if user.get(f"{key}-data"):
        data = user[f"{key}-data"]
        return data if isinstance(data, bytes) else _data(user, f"{key}-data")
    if user.get(key):
        return Path(_relative(user, str(user[key]))).read_bytes()
    return None


def _load_client_certificate(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """ssl reads certificate chains from files only: a private temporary directory, removed at once."""
    with tempfile.TemporaryDirectory(prefix="kubectl-canary-") as directory:
        cert_path, key_path = Path(directory, "client.crt"), Path(directory, "client.key")
        for path, content in ((cert_path, cert), (key_path, key)):
            path.touch(mode=0o600)
            path.write_bytes(content)
        context.load_cert_chain(str(cert_path), str(key_path))


def _exec_credential(spec: Obj, name: str) -> Obj:
    """Runs an exec credential plugin as kubectl does; its token or client certificate, as user keys."""
    command = spec.get("command")
    if not command:
        raise ConfigError(f"user {name!r}: exec has no command")
    api_version = str(spec.get("apiVersion") or "client.authentication.k8s.io/v1")
    environ = dict(os.environ)
    environ.update({str(e["name"]): str(e["value"]) for e in spec.get("env") or [] if "name" in e})
    request = {"apiVersion": api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
    environ["KUBERNETES_EXEC_INFO"] = json.dumps(request)
    try:
        done = subprocess.run(
            [str(command), *[str(a) for a in spec.get("args") or []]],
            env=environ,
            capture_output=True,
            text=True,
            timeout=EXEC_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"user {name!r}: exec plugin {command!r} failed: {exc}") from exc
    if done.returncode != 0:
        detail = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
        raise ConfigError(f"user {name!r}: exec plugin {command!r} failed: {detail}")
    try:
        status = json.loads(done.stdout).get("status") or {}
    except (ValueError, AttributeError) as exc:
        raise ConfigError(f"user {name!r}: exec plugin {command!r} printed no ExecCredential") from exc
    credential: Obj = {}
    if status.get("token"):
        credential["token"] = status["token"]
    if status.get("clientCertificateData") and status.get("clientKeyData"):
        credential["client-certificate-data"] = str(status["clientCertificateData"]).encode()
        credential["client-key-data"] = str(status["clientKeyData"]).encode()
    if not credential:
        raise ConfigError(f"user {name!r}: exec plugin {command!r} gave neither a token nor a certificate")
    return credential
