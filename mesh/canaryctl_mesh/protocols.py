"""Per-port protocol hints from Services: which ports the sidecars pass through as opaque TCP.

Sidecars detect cleartext HTTP on every captured connection and pass everything else through
unchanged. Detection waits for the client's first bytes, so a server-first protocol (MySQL, SMTP:
the server speaks first) would stall until the detection timeout; ports declared non-HTTP skip
detection. A port is declared by its ``appProtocol`` or, Istio's convention, by its name
(``<protocol>`` or ``<protocol>-<suffix>``). Both the Service port and its target port count, since
clients reach a pod directly too (headless Services, EndpointSlices).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from canaryctl_mesh.config import DEFAULT_OPAQUE_PORTS, DEFAULT_SERVER_FIRST_PORTS

OPAQUE_PROTOCOLS = frozenset(
    {
        "tcp", "mysql", "mongo", "mongodb", "redis", "postgres", "postgresql", "amqp", "kafka", "smtp",
        "ftp", "ssh", "memcached", "nats", "mqtt", "zookeeper", "cassandra", "cql", "ldap",
    }
)  # fmt: skip
"""Declared protocols passed through without detection. Anything else (``http``, ``grpc``, ``tls``,
or a name that declares nothing, such as ``api``) is detected from its bytes."""


SERVER_FIRST_PROTOCOLS = frozenset({"mysql", "smtp", "ftp", "ssh"})
"""Declared protocols whose server speaks first. A meshed destination does not look for the mesh's
mTLS on their ports (it would wait for a client that waits for it): callers pass them through as the
app sent them."""


def declared_protocol(port: Mapping[str, Any]) -> str | None:
    """The protocol a Service port declares, lower-case: appProtocol first, then the name's prefix."""
    app_protocol = port.get("appProtocol")
    if app_protocol:
        return str(app_protocol).lower()
    name = str(port.get("name") or "").lower()
    return name.split("-", 1)[0] or None


def is_opaque(port: Mapping[str, Any]) -> bool:
    if str(port.get("protocol") or "TCP").upper() != "TCP":
        return False
    return declared_protocol(port) in OPAQUE_PROTOCOLS


def opaque_ports(objects: Iterable[Mapping[str, Any]]) -> tuple[int, ...]:
    """DEFAULT_OPAQUE_PORTS plus every port a Service among `objects` declares non-HTTP."""
    return _declared_ports(objects, DEFAULT_OPAQUE_PORTS, is_opaque)


def is_server_first(port: Mapping[str, Any]) -> bool:
    return is_opaque(port) and declared_protocol(port) in SERVER_FIRST_PROTOCOLS


def server_first_ports(objects: Iterable[Mapping[str, Any]]) -> tuple[int, ...]:
    """DEFAULT_SERVER_FIRST_PORTS plus every port a Service among `objects` declares server-first."""
    return _declared_ports(objects, DEFAULT_SERVER_FIRST_PORTS, is_server_first)


def _declared_ports(
    objects: Iterable[Mapping[str, Any]],
    defaults: tuple[int, ...],
    declares: Callable[[Mapping[str, Any]], bool],
) -> tuple[int, ...]:
    """`defaults` plus the port and target port of every Service port that `declares`."""
    ports = set(defaults)
    for obj in objects:
        if obj.get("kind") != "Service":
            continue
        for port in (obj.get("spec") or {}).get("ports") or []:
            if declares(port):
                ports.update(p for p in (port.get("port"), port.get("targetPort")) if isinstance(p, int))
    return tuple(sorted(ports))
