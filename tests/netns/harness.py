"""Pods as Linux network namespaces, meshed the way the injector meshes a real pod.

A `Cluster` is one node: a router namespace (the node's network: kube-proxy's ClusterIP DNAT, the
kubelet's vantage point for probes, the control plane's address) with one veth link per pod. A
meshed pod gets what the sidecar injector's JSONPatch gives it, run for real: the init container's
iptables script in the pod's namespace, then the proxy container's Envoy command as the container's
uid, fed over ADS by the control plane the test plugs in, then the app once the proxy's startup
probe passes. Names in /etc/netns give pods their DNS (``ip netns exec`` bind-mounts them over
/etc/hosts). Namespace and interface names carry a random run id, so parallel runs never collide,
and everything a run creates is removed by name and PID when it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime
import http.client
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import jsonpatch

from canaryctl_mesh import config, injector
from canaryctl_mesh.ads import AdsServer
from canaryctl_mesh.config import SidecarPorts
from canaryctl_mesh.control import MeshControlPlane
from canaryctl_mesh.identity import DEFAULT_TRUST_DOMAIN, POD_NAME_EXTRA, TOKEN_AUDIENCE, TokenAuthenticator
from canaryctl_mesh.meshd.pki import CertificateAuthority
from canaryctl_mesh.meshd.tls import IssuedCertificate, xds_credentials
from canaryctl_mesh.meshd.workload import WorkloadCertificates
from canaryctl_mesh.process import envoy_binary
from tests.netns.apps import pipe

T = TypeVar("T")
Object = dict[str, Any]

REPO = Path(__file__).resolve().parents[2]
CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/var/run/netns")
ETC_NETNS = Path("/etc/netns")
SERVICE_PREFIX = "198.19.0."
"""ClusterIPs (198.18.0.0/15 is the benchmarking range: nothing outside this node answers it)."""
CONTROL_PLANE_IP = "198.19.255.1"
CONTROL_PLANE_FQDN = "canaryctl-mesh.canaryctl-system.svc.cluster.local"
XDS_PORT = 15010
COMMAND_TIMEOUT = 20.0
STARTUP_TIMEOUT = 30.0
"""A sidecar started while its namespace has no routed service waits Envoy's 15 s initial fetch
timeout for virtual hosts (an empty VHDS answer does not end it); the rest is margin for a busy box."""


def _pod_ip(index: int) -> str:
    return f"198.18.{index}.2"


def _gateway(index: int) -> str:
    return f"198.18.{index}.1"


def run(argv: list[str], timeout: float = COMMAND_TIMEOUT, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; failures raise with its stderr."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}... exited {done.returncode}: {done.stderr.strip()}")
    return done


def unavailable() -> str | None:
    """Why network namespaces with iptables cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "iptables", "setpriv"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (scripts/install-system-deps.sh installs it)"
    name = f"canaryctl-check-{secrets.token_hex(3)}"
    try:
        run(["ip", "netns", "add", name])
        run(["ip", "netns", "exec", name, "iptables", "-t", "nat", "-S"])
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
        return f"cannot create a network namespace with iptables: {error}"
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False, timeout=10)
    return None


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns failed")


def socket_in(netns: str, family: int = socket.AF_INET) -> socket.socket:
    """A TCP socket belonging to `netns`: made on a short-lived thread that enters the namespace, so
    this process (and its other threads) stay where they are."""
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def make() -> None:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(NETNS_DIR / netns, os.O_RDONLY)
        try:
            _setns(target)
            made.append(socket.socket(family, socket.SOCK_STREAM))
        except BaseException as error:
            failed.append(error)
        finally:
            with contextlib.suppress(OSError):
                _setns(own)
            os.close(own)
            os.close(target)

    thread = threading.Thread(target=make, name=f"netns {netns}")
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


def http_get(netns: str, ip: str, port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
    """GET from inside `netns` (status 0 when the connection fails)."""
    sock = socket_in(netns)
    sock.settimeout(timeout)
    try:
        sock.connect((ip, port))
        connection = http.client.HTTPConnection(ip, port, timeout=timeout)
        connection.sock = sock
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    except OSError:
        return 0, ""
    finally:
        sock.close()


class ControlPlane(Protocol):
    """What the cluster needs from a mesh control plane; it runs on the cluster's event loop.

    `start` returns the loopback port of its ADS server; the cluster makes that port reachable from
    every pod as CONTROL_PLANE_FQDN:XDS_PORT (a plain TCP relay, so TLS to the control plane works).
    """

    async def start(self) -> int: ...

    async def apply(self, objects: list[Object]) -> None: ...

    async def wait_acked(self, node_id: str, timeout: float) -> None: ...

    async def stop(self) -> None: ...

    def xds_auth(self, token_path: str) -> config.XdsAuth | None:
        """How sidecars authenticate (their token read from `token_path`), None for plaintext xDS."""
        ...

    def token(self, pod: str, namespace: str, service_account: str) -> str:
        """A token proving the pod's ServiceAccount (what the kubelet projects)."""
        ...


class InProcessControlPlane:
    """The mesh's own control plane (translate → sidecar config → ADS), fed objects by the test."""

    def __init__(self) -> None:
        self.ads = AdsServer("127.0.0.1", 0)
        self.plane = MeshControlPlane(self.ads, SidecarPorts())

    def xds_auth(self, token_path: str) -> config.XdsAuth | None:
        return None

    def token(self, pod: str, namespace: str, service_account: str) -> str:
        return ""

    async def start(self) -> int:
        return await self.ads.start()

    async def apply(self, objects: list[Object]) -> None:
        await self.plane.sync(objects)
        if self.plane.refused:
            raise ValueError(f"the control plane refused objects: {self.plane.refused}")

    async def wait_acked(self, node_id: str, timeout: float) -> None:
        await self.ads.wait_acked(node_id, timeout)

    async def stop(self) -> None:
        await self.ads.stop()


class SecuredControlPlane(InProcessControlPlane):
    """As meshd runs it: ADS over TLS from the mesh CA, each sidecar's token checked (by the TokenReview
    answers an API server would give), workload certificates over SDS and automatic mTLS in `mode`,
    identities in `trust_domain`. `lifetime` is short so certificates rotate while the tests run."""

    def __init__(
        self,
        mode: str = config.PERMISSIVE,
        lifetime: datetime.timedelta = datetime.timedelta(seconds=9),
        trust_domain: str = DEFAULT_TRUST_DOMAIN,
    ) -> None:
        self.ca = CertificateAuthority.create("canaryctl mesh test CA")
        self.reviews: dict[str, Object] = {}
        credentials = xds_credentials(IssuedCertificate(self.ca, [CONTROL_PLANE_FQDN]))
        self.ads = AdsServer("127.0.0.1", 0, credentials=credentials, authenticator=TokenAuthenticator(self))
        self.plane = MeshControlPlane(self.ads, SidecarPorts(), mtls=mode, trust_domain=trust_domain)
        self.certificates = WorkloadCertificates(self.ca, lifetime, trust_domain)
        self._stopping: asyncio.Event | None = None
        self._renewals: asyncio.Task[None] | None = None

    async def review(self, token: str, audiences: list[str]) -> Object:
        return self.reviews.get(token, {"authenticated": False, "error": "unknown token"})

    def xds_auth(self, token_path: str) -> config.XdsAuth | None:
        return config.XdsAuth(self.ca.trust_pem.decode(), token_path, CONTROL_PLANE_FQDN)

    def token(self, pod: str, namespace: str, service_account: str) -> str:
        token = secrets.token_urlsafe(24)
        user = {
            "username": f"system:serviceaccount:{namespace}:{service_account}",
            "extra": {POD_NAME_EXTRA: [pod]},
        }
        self.reviews[token] = {"authenticated": True, "audiences": [TOKEN_AUDIENCE], "user": user}
        return token

    async def start(self) -> int:
        port = await super().start()
        self._stopping = asyncio.Event()
        self._renewals = asyncio.create_task(self.certificates.keep_current(self.ads, self._stopping))
        return port

    async def stop(self) -> None:
        if self._stopping is not None and self._renewals is not None:
            self._stopping.set()
            await self._renewals
        await super().stop()


@dataclass(frozen=True)
class ServicePort:
    port: int
    target_port: int
    name: str = ""
    app_protocol: str | None = None

    def manifest(self) -> Object:
        port: Object = {
            "name": self.name,
            "port": self.port,
            "targetPort": self.target_port,
            "protocol": "TCP",
        }
        if self.app_protocol:
            port["appProtocol"] = self.app_protocol
        return port


@dataclass
class Service:
    name: str
    namespace: str
    ip: str
    ports: tuple[ServicePort, ...]
    pods: list[Pod]

    def hostnames(self) -> list[str]:
        base = f"{self.name}.{self.namespace}"
        return [self.name, base, f"{base}.svc", f"{base}.svc.cluster.local"]

    def objects(self) -> list[Object]:
        """The Service and its EndpointSlice, as the API server would have them."""
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {"clusterIP": self.ip, "ports": [p.manifest() for p in self.ports]},
        }
        slice_ = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{self.name}-slice",
                "namespace": self.namespace,
                "labels": {"kubernetes.io/service-name": self.name},
            },
            "addressType": "IPv4",
            "ports": [{"name": p.name, "port": p.target_port, "protocol": "TCP"} for p in self.ports],
            "endpoints": [
                {
                    "addresses": [pod.ip],
                    "conditions": {"ready": True},
                    "targetRef": {"kind": "Pod", "name": pod.name, "namespace": pod.namespace},
                }
                for pod in self.pods
            ],
        }
        return [service, slice_]


@dataclass
class Sidecar:
    """The running proxy of a meshed pod; `node_id` is what it tells the control plane."""

    process: subprocess.Popen[bytes]
    node_id: str
    log: Path
    container: Object

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class Pod:
    cluster: Cluster
    name: str
    namespace: str
    index: int
    manifest: Object
    sidecar: Sidecar | None = None
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def ip(self) -> str:
        return _pod_ip(self.index)

    @property
    def netns(self) -> str:
        return f"canaryctl-{self.cluster.run_id}-{self.name}"

    @property
    def interface(self) -> str:
        """The pod's end of its link to the node (its eth0)."""
        return f"p{self.cluster.run_id}{self.index}"

    def exec_argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]

    def run(self, argv: list[str], timeout: float = COMMAND_TIMEOUT) -> str:
        """Run a command in the pod (as root, like an app container's process); returns stdout."""
        return run(self.exec_argv(argv), timeout, env=self.cluster.env(), cwd=REPO).stdout

    def python(self, module: str, *args: str, timeout: float = COMMAND_TIMEOUT) -> Any:
        """Run one of this suite's modules in the pod; its last stdout line is JSON."""
        out = self.run([sys.executable, "-m", module, *args], timeout)
        return json.loads(out.strip().splitlines()[-1])

    def start(self, argv: list[str], ready_line: bytes | None = None) -> subprocess.Popen[bytes]:
        """Start a long-running process in the pod, stopped by PID when the cluster closes."""
        process = subprocess.Popen(
            self.exec_argv(argv),
            stdout=subprocess.PIPE if ready_line else subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            env=self.cluster.env(),
            cwd=REPO,
        )
        self.processes.append(process)
        if ready_line:
            assert process.stdout is not None
            line = process.stdout.readline()
            if ready_line not in line:
                raise RuntimeError(f"{argv} in pod {self.name} did not start: {line!r}")
        return process

    def start_app(self, *args: str) -> subprocess.Popen[bytes]:
        """tests.netns.apps in the pod (see there for its protocols); returns once it listens."""
        return self.start([sys.executable, "-m", "tests.netns.apps", *args], ready_line=b"listening")

    def admin(self, path: str) -> str:
        """The sidecar's Envoy admin API (127.0.0.1 inside the pod)."""
        status, body = http_get(self.netns, "127.0.0.1", self.cluster.settings.ports.admin, path)
        if status != 200:
            raise RuntimeError(f"admin {path} of {self.name}: {status} {body[:200]}")
        return body

    def counter(self, name: str) -> int:
        """One Envoy counter or gauge of the sidecar (0 when Envoy has not created it)."""
        stats = json.loads(self.admin(f"/stats?format=json&filter=^{name}$"))["stats"]
        return int(next((s["value"] for s in stats if s.get("name") == name), 0))

    def probe(self, port: int, path: str) -> int:
        """What the kubelet gets for an httpGet probe of this pod (from the node's namespace)."""
        return http_get(self.cluster.router, self.ip, port, path)[0]


async def _relay(
    listening: socket.socket, upstream: Callable[[], Coroutine[Any, Any, socket.socket]]
) -> asyncio.Server:
    """Serve `listening`, piping each connection to a fresh `upstream()` socket (a plain TCP relay)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock = await upstream()
        except OSError:
            writer.close()
            return
        sock.setblocking(False)
        upstream_reader, upstream_writer = await asyncio.open_connection(sock=sock)
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    return await asyncio.start_server(serve, sock=listening)


def _expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command and args."""
    for key, item in env.items():
        value = value.replace(f"$({key})", item)
    return value


class Cluster:
    """One node with pods in network namespaces; call `close` (or use `with`) to remove everything."""

    def __init__(
        self, control_plane: ControlPlane, settings: injector.InjectorSettings | None = None
    ) -> None:
        self.run_id = secrets.token_hex(3)
        self.control_plane = control_plane
        self.router = f"canaryctl-{self.run_id}-node"
        self.pods: dict[str, Pod] = {}
        self.services: dict[str, Service] = {}
        self.workdir = Path(tempfile.mkdtemp(prefix=f"canaryctl-netns-{self.run_id}-"))
        self.workdir.chmod(0o755)
        # The kubelet mounts each pod's token at one path; here pods share a file system, so the
        # path names the pod ($(VAR) is expanded in the proxy's args, as Kubernetes does).
        auth = control_plane.xds_auth(str(self.workdir / "$(POD_NAME).$(POD_NAMESPACE).token"))
        self.settings = settings or injector.InjectorSettings(
            xds_host=CONTROL_PLANE_FQDN, xds_port=XDS_PORT, xds_auth=auth
        )
        self._dnat: list[list[str]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="cluster", daemon=True)
        self._relays: list[asyncio.Server] = []
        self._envoy = ""

    # -- lifecycle --------------------------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    def start(self) -> Cluster:
        try:
            run(["ip", "netns", "add", self.router])
            self._in_router("ip", "link", "set", "lo", "up")
            self._in_router("ip", "addr", "add", f"{CONTROL_PLANE_IP}/32", "dev", "lo")
            self._in_router("sysctl", "-qw", "net.ipv4.ip_forward=1")
            self._thread.start()
            port = self.call(self.control_plane.start())
            self.call(self._start_relay(port))
            self._envoy = self._envoy_for_proxy_user()
            self.call(self.control_plane.apply(self.objects()))
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        for pod in self.pods.values():
            processes = [*pod.processes, *([pod.sidecar.process] if pod.sidecar else [])]
            for process in processes:
                if process.poll() is None:
                    process.terminate()
            for process in processes:
                try:
                    process.wait(5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
            subprocess.run(["ip", "netns", "del", pod.netns], capture_output=True, check=False, timeout=10)
            shutil.rmtree(ETC_NETNS / pod.netns, ignore_errors=True)
        subprocess.run(["ip", "netns", "del", self.router], capture_output=True, check=False, timeout=10)
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self.call(self._stop())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def _stop(self) -> None:
        for relay in self._relays:
            relay.close()
        await self.control_plane.stop()

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run `coroutine` on the cluster's event loop (where the control plane lives)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def env(self) -> dict[str, str]:
        return {**os.environ, "PYTHONPATH": str(REPO)}

    def _in_router(self, *argv: str) -> None:
        run(["ip", "netns", "exec", self.router, *argv])

    # -- the control plane's address inside the cluster --------------------------------------------------

    async def _start_relay(self, ads_port: int) -> None:
        """Pods reach CONTROL_PLANE_IP:XDS_PORT in the node's namespace; bytes go to the loopback port."""
        listening = socket_in(self.router)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((CONTROL_PLANE_IP, XDS_PORT))
        listening.listen(64)

        async def upstream() -> socket.socket:
            return socket.create_connection(("127.0.0.1", ads_port), timeout=5)

        self._relays.append(await _relay(listening, upstream))

    def forward(self, pod: Pod, port: int) -> int:
        """Like kubectl port-forward: a loopback port of this process's namespace reaching pod:port
        from the node (so a Prometheus on loopback can scrape a sidecar)."""
        listening = socket.create_server(("127.0.0.1", 0))

        async def upstream() -> socket.socket:
            sock = socket_in(self.router)
            sock.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(sock, (pod.ip, port))
            except OSError:
                sock.close()
                raise
            return sock

        self._relays.append(self.call(_relay(listening, upstream)))
        return int(listening.getsockname()[1])

    def _envoy_for_proxy_user(self) -> str:
        """The Envoy binary, copied where the proxy's uid can run it if its own path is closed to it."""
        binary = Path(envoy_binary())
        real = binary.parent.parent / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
        candidates = [*real.glob("site-packages/envoy/_bin/envoy"), binary]
        found = next(c for c in candidates if c.exists())
        uid = str(self.settings.proxy_uid)
        check = ["setpriv", "--reuid", uid, "--regid", uid, "--clear-groups", str(found), "--version"]
        if subprocess.run(check, capture_output=True, timeout=30, check=False).returncode == 0:
            return str(found)
        copy = self.workdir / "envoy"
        shutil.copy2(found, copy)
        copy.chmod(0o755)
        return str(copy)

    # -- building the cluster ---------------------------------------------------------------------------

    def pod(
        self,
        name: str,
        namespace: str = "default",
        meshed: bool = True,
        annotations: Mapping[str, str] | None = None,
        workload: str | None = None,
        app: Mapping[str, Any] | None = None,
        service_account: str = "default",
    ) -> Pod:
        """A pod in its own namespace, linked to the node; meshed pods start their sidecar here."""
        index = len(self.pods) + 1
        metadata: Object = {
            "name": name,
            "namespace": namespace,
            "annotations": {injector.INJECT_ANNOTATION: "true" if meshed else "false", **(annotations or {})},
            "labels": {"app": workload or name},
        }
        if workload:
            metadata["labels"]["pod-template-hash"] = "5d8f7c"
            metadata["ownerReferences"] = [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{workload}-5d8f7c", "uid": "1"}
            ]
        manifest: Object = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": metadata,
            "spec": {
                "serviceAccountName": service_account,
                "containers": [{"name": "app", "image": "app:1", **(app or {})}],
            },
        }
        pod = Pod(self, name, namespace, index, manifest)
        self.pods[name] = pod
        self._link(pod)
        if meshed:
            patch = injector.pod_patch(manifest, self.settings)
            pod.manifest = jsonpatch.apply_patch(manifest, patch)
            self._start_sidecar(pod)
            self.wait_started(pod)
        return pod

    def _link(self, pod: Pod) -> None:
        host_side, pod_side = f"r{self.run_id}{pod.index}", pod.interface
        run(["ip", "netns", "add", pod.netns])
        self._in_router(
            "ip", "link", "add", host_side, "type", "veth", "peer", "name", pod_side, "netns", pod.netns
        )
        self._in_router("ip", "addr", "add", f"{_gateway(pod.index)}/24", "dev", host_side)
        self._in_router("ip", "link", "set", host_side, "up")
        for argv in (
            ["ip", "link", "set", "lo", "up"],
            ["ip", "addr", "add", f"{pod.ip}/24", "dev", pod_side],
            ["ip", "link", "set", pod_side, "up"],
            ["ip", "route", "add", "default", "via", _gateway(pod.index)],
        ):
            run(pod.exec_argv(argv))
        self._write_hosts(pod)

    def _write_hosts(self, pod: Pod) -> None:
        lines = ["127.0.0.1 localhost", f"{pod.ip} {pod.name}", f"{CONTROL_PLANE_IP} {CONTROL_PLANE_FQDN}"]
        for service in self.services.values():
            # The short name resolves in the pod's own namespace only, as with cluster DNS.
            names = service.hostnames()[0 if service.namespace == pod.namespace else 1 :]
            lines.append(f"{service.ip} {' '.join(names)}")
        directory = ETC_NETNS / pod.netns
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "hosts").write_text("\n".join(lines) + "\n")
        # No cluster DNS here: names resolve from the hosts file, and no query leaves the node.
        (directory / "resolv.conf").write_text("nameserver 127.0.0.1\n")

    def _start_sidecar(self, pod: Pod) -> None:
        """Run the injected init container, then the native sidecar, then wait for its startup probe."""
        spec = pod.manifest["spec"]
        init = next(c for c in spec["initContainers"] if c["name"] == injector.INIT_CONTAINER)
        run(pod.exec_argv(init["command"]))
        proxy = next(
            c for c in [*spec["initContainers"], *spec["containers"]] if c["name"] == injector.PROXY_CONTAINER
        )
        env = {"POD_IP": pod.ip}
        field_values = {
            "metadata.name": pod.name,
            "metadata.namespace": pod.namespace,
            "status.podIP": pod.ip,
        }
        for variable in proxy.get("env", []):
            if "value" in variable:
                env[variable["name"]] = _expand(variable["value"], env)
            else:
                env[variable["name"]] = field_values[variable["valueFrom"]["fieldRef"]["fieldPath"]]
        command = [_expand(part, env) for part in [*proxy["command"], *proxy.get("args", [])]]
        assert command[0] == "envoy", command
        if self.settings.xds_auth is not None:
            token = self.workdir / _expand(Path(self.settings.xds_auth.token_path).name, env)
            account = spec.get("serviceAccountName", "default")
            token.write_text(self.control_plane.token(pod.name, pod.namespace, account))
            token.chmod(0o644)
        command[0] = self._envoy
        uid = str(proxy["securityContext"]["runAsUser"])
        gid = str(proxy["securityContext"].get("runAsGroup", uid))
        log = self.workdir / f"{pod.name}-proxy.log"
        with log.open("wb") as out:
            os.chown(log, int(uid), int(gid))  # Envoy reopens /dev/stdout for its access log
            process = subprocess.Popen(
                pod.exec_argv(["setpriv", "--reuid", uid, "--regid", gid, "--clear-groups", *command]),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={"PATH": os.environ.get("PATH", ""), **env},
            )
        node_id = command[command.index("--service-node") + 1]
        pod.sidecar = Sidecar(process, node_id, log, proxy)

    def wait_started(self, pod: Pod, timeout: float = STARTUP_TIMEOUT) -> None:
        """Poll the proxy's startupProbe from the node, as the kubelet does before starting the app."""
        assert pod.sidecar is not None
        probe = pod.sidecar.container["startupProbe"]["httpGet"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pod.sidecar.process.poll() is not None:
                raise RuntimeError(f"the sidecar of {pod.name} exited: {pod.sidecar.log_tail()}")
            if pod.probe(probe["port"], probe["path"]) == 200:
                return
            time.sleep(0.05)
        raise TimeoutError(f"the sidecar of {pod.name} did not start: {pod.sidecar.log_tail()}")

    def service(self, name: str, pods: list[Pod], *ports: ServicePort, namespace: str = "default") -> Service:
        """A ClusterIP Service: kube-proxy's DNAT on the node, and the name in every pod's hosts file."""
        service = Service(name, namespace, f"{SERVICE_PREFIX}{len(self.services) + 1}", ports, pods)
        self.services[name] = service
        for port in ports:
            for index, pod in enumerate(pods):
                rule = ["-d", service.ip, "-p", "tcp", "--dport", str(port.port)]
                remaining = len(pods) - index
                if remaining > 1:
                    rule += ["-m", "statistic", "--mode", "random", "--probability", f"{1 / remaining:.6f}"]
                rule += ["-j", "DNAT", "--to-destination", f"{pod.ip}:{port.target_port}"]
                self._in_router("iptables", "-t", "nat", "-A", "PREROUTING", *rule)
        for pod in self.pods.values():
            self._write_hosts(pod)
        return service

    def objects(self) -> list[Object]:
        """Services, EndpointSlices and Pods, as the control plane watches them."""
        services = [obj for service in self.services.values() for obj in service.objects()]
        pods = [
            {**pod.manifest, "status": {"podIP": pod.ip, "phase": "Running"}} for pod in self.pods.values()
        ]
        return services + pods

    def apply(self, *extra: Object) -> None:
        """Push the cluster's Services and EndpointSlices plus `extra` objects (TrafficSplits, ...) to
        the control plane, and wait until every running sidecar acknowledged them."""
        self.call(self.control_plane.apply([*self.objects(), *extra]))
        for pod in self.pods.values():
            if pod.sidecar is not None:
                self.call(self.control_plane.wait_acked(pod.sidecar.node_id, 15.0))


@contextlib.contextmanager
def cluster(make_control_plane: Callable[[], ControlPlane] = InProcessControlPlane) -> Iterator[Cluster]:
    with Cluster(make_control_plane()) as made:
        yield made
