"""Pass-through mTLS at scale: what meshed pods cost a namespace's view.

One namespace of `--pods` meshed pods, `--per-account` to a ServiceAccount, each ServiceAccount's
pods behind one Service (so every pod IP and every ClusterIP is a peer), translated by the control
plane as meshd does (`MeshControlPlane.update`, then the namespace's view). Then one more pod starts,
as a rollout or a restart would, and the view is built again. Printed:

- outbound_listener_bytes: the serialized outbound listener (what every sidecar of the view gets
  again when a pod starts or stops); baseline_outbound_listener_bytes without mTLS;
- peer_cluster_bytes, peer_clusters: the per-identity mTLS clusters (sent once; changed only by a
  new set of identities);
- first_s, pod_change_s: CPU seconds of this process for the first view and for the one-pod change
  (translation included); baseline_pod_change_s the same without mTLS.

Nothing is sent to Envoy here: the listener passing Envoy's validation is tested in
tests/mesh/test_access.py, and the traffic in tests/netns.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from canaryctl_mesh import config, injector
from canaryctl_mesh.ads import AdsServer
from canaryctl_mesh.control import MeshControlPlane

NAMESPACE = "shop"
UNCAPTURED = ",".join(str(p) for p in injector.uncaptured_inbound_ports(injector.InjectorSettings(), {}))


def _address(prefix: int, index: int) -> str:
    return f"10.{prefix}.{index // 250}.{index % 250 + 1}"


def objects(pods: int, per_account: int) -> list[dict[str, Any]]:
    made: list[dict[str, Any]] = []
    members: dict[int, list[tuple[str, str]]] = {}
    for index in range(pods):
        name, account = f"pod-{index}", index // per_account
        made.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": NAMESPACE,
                    "annotations": {
                        config.STATUS_ANNOTATION: config.INJECTED,
                        config.UNCAPTURED_INBOUND_ANNOTATION: UNCAPTURED,
                    },
                },
                "spec": {"serviceAccountName": f"sa-{account}"},
                "status": {"podIP": _address(1, index), "phase": "Running"},
            }
        )
        members.setdefault(account, []).append((_address(1, index), name))
    for account, endpoints in members.items():
        made.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"svc-{account}", "namespace": NAMESPACE},
                "spec": {
                    "clusterIP": _address(96, account),
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
                },
            }
        )
        made.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"svc-{account}-x",
                    "namespace": NAMESPACE,
                    "labels": {"kubernetes.io/service-name": f"svc-{account}"},
                },
                "ports": [{"name": "http", "port": 8080}],
                "endpoints": [
                    {
                        "addresses": [ip],
                        "conditions": {"ready": True},
                        "targetRef": {"kind": "Pod", "name": n},
                    }
                    for ip, n in endpoints
                ],
            }
        )
    return made


def _measure(mtls: str | None, pods: int, per_account: int) -> dict[str, float]:
    plane = MeshControlPlane(AdsServer(), mtls=mtls)
    start = time.process_time()
    plane.update({NAMESPACE: objects(pods, per_account)})
    view = plane._view(NAMESPACE)
    first = time.process_time() - start
    start = time.process_time()
    plane.update({NAMESPACE: objects(pods + 1, per_account)})
    view = plane._view(NAMESPACE)
    change = time.process_time() - start
    outbound = view[config.LISTENER_TYPE].entries["outbound"][1]
    peers = {n: e[1] for n, e in view[config.CLUSTER_TYPE].entries.items() if n.startswith("mtls-")}
    return {
        "outbound_listener_bytes": outbound.ByteSize() if outbound is not None else 0,
        "peer_clusters": len(peers),
        "peer_cluster_bytes": sum(e.ByteSize() for e in peers.values() if e is not None),
        "first_s": round(first, 3),
        "pod_change_s": round(change, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=3000)
    parser.add_argument("--per-account", type=int, default=10)
    args = parser.parse_args()
    baseline = _measure(None, args.pods, args.per_account)
    measured = _measure(config.PERMISSIVE, args.pods, args.per_account)
    result = {
        "pods": args.pods,
        "per_account": args.per_account,
        **measured,
        "baseline_outbound_listener_bytes": baseline["outbound_listener_bytes"],
        "baseline_pod_change_s": baseline["pod_change_s"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
