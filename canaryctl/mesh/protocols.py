"""Per-port protocol hints from Services: which ports the sidecars pass through as opaque TCP.

Sidecars detect cleartext HTTP on every captured connection and pass everything else through
unchanged. Detection waits for the client's first bytes, so a server-first protocol (MySQL, SMTP:
the server speaks first) would stall until the detection timeout; ports declared non-HTTP skip
detection. A port is declared by its ``appProtocol`` or, Istio's convention, by its name
(``<protocol>`` or ``<protocol>-<suffix>``). Both the Service port and its target port count, since
clients reach a pod directly too (headless Services, EndpointSlices).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from canaryctl.mesh.config import DEFAULT_OPAQUE_PORTS

HTTP_PROTOCOLS = frozenset(
    {"http", "http2", "h2c", "grpc", "grpc-web", "kubernetes.io/h2c", "kubernetes.io/ws"}
)
"""Detected as HTTP anyway; named here so they are never taken for opaque."""
CLIENT_FIRST_PROTOCOLS = frozenset({"https", "tls", "kubernetes.io/wss", "udp"})
"""TLS is recognised by its ClientHello (and passed through); UDP is never captured."""


def declared_protocol(port: Mapping[str, Any]) -> str | None:
    """The protocol a Service port declares, lower-case: appProtocol first, then the name's prefix."""
    app_protocol = port.get("appProtocol")
    if app_protocol:
        return str(app_protocol).lower()
    name = str(port.get("name") or "").lower()
    return name.split("-", 1)[0] or None


def is_opaque(port: Mapping[str, Any]) -> bool:
    protocol = declared_protocol(port)
    if str(port.get("protocol") or "TCP").upper() != "TCP" or protocol is None:
        return False
    return protocol not in HTTP_PROTOCOLS and protocol not in CLIENT_FIRST_PROTOCOLS


def opaque_ports(objects: Iterable[Mapping[str, Any]]) -> tuple[int, ...]:
    """DEFAULT_OPAQUE_PORTS plus every port a Service among `objects` declares non-HTTP."""
    ports = set(DEFAULT_OPAQUE_PORTS)
    for obj in objects:
        if obj.get("kind") != "Service":
            continue
        for port in (obj.get("spec") or {}).get("ports") or []:
            if is_opaque(port):
                ports.update(p for p in (port.get("port"), port.get("targetPort")) if isinstance(p, int))
    return tuple(sorted(ports))
