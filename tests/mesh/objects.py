"""The Kubernetes objects of one meshed service under a canary: the apex Service, its -primary and
-canary Services, and the SMI TrafficSplit between them (as Flagger's SMI router leaves them)."""

from __future__ import annotations

from typing import Any

SUFFIXES = ("", "-primary", "-canary")


def traffic_split(
    namespace: str, name: str, weights: tuple[int, int], backends: tuple[str, str] | None = None
) -> dict[str, Any]:
    """`name` split between `backends` (default: its -primary and -canary Services) by `weights`."""
    primary, canary = backends or (f"{name}-primary", f"{name}-canary")
    return {
        "apiVersion": "split.smi-spec.io/v1alpha4",
        "kind": "TrafficSplit",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "service": name,
            "backends": [
                {"service": primary, "weight": weights[0]},
                {"service": canary, "weight": weights[1]},
            ],
        },
    }


def meshed_service(
    namespace: str, name: str, cluster_ips: tuple[str, str, str], canary_weight: int
) -> list[dict[str, Any]]:
    """The apex, primary and canary Services (port 80, with these cluster IPs) and the split."""
    services = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name + suffix, "namespace": namespace},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80}]},
        }
        for suffix, ip in zip(SUFFIXES, cluster_ips, strict=True)
    ]
    return [*services, traffic_split(namespace, name, (100 - canary_weight, canary_weight))]
