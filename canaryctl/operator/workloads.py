"""The Workloads port on Kubernetes: Flagger's bootstrap and promotion for Deployment, DaemonSet and
Service targets.

Deployment/DaemonSet ``<target>``: INITIALIZE creates ``<target>-primary`` (the selector label value
suffixed ``-primary``), copies every ConfigMap/Secret the pod spec references as ``<name>-primary`` with
the references renamed, creates the Services ``<apex>-primary`` (primary pods) and ``<apex>-canary``
(target pods), creates ``<apex>`` when there is none, and clones the autoscaler (HPA or KEDA
ScaledObject) for the primary. An existing apex Service is pointed at the primary only once the
primary is ready (SCALE_CANARY_DOWN, which ends initialization), so its clients never lose their pods.
The target is the canary: it is scaled to zero between rollouts (a DaemonSet through a nodeSelector no
node has, as Flagger does) and scaled up as Flagger does: to its own ``spec.replicas`` when someone set
it, else to the primary's size, else to the autoscaler's minimum. PROMOTE copies the target's pod
template, configs and size to the primary, stamps the revision on the primary's pod template (so a
ConfigMap-only revision restarts the primary's pods) and reconciles the primary's autoscaler.

Service ``<target>``: traffic only. There are no workloads to copy; the revision is the Service's
selector and ports, ``<apex>-canary`` follows the target Service and ``<apex>-primary`` gets a copy of
it on INITIALIZE and PROMOTE, so the primary side keeps selecting the promoted pods.

A Knative Service target is canaryctl.operator.knative's: its revisions are the two sides.

Every object canaryctl creates is owned by the Canary, so deleting the Canary garbage-collects it. A
Service that existed before (the user's apex, typically) is never taken over: canaryctl sets only its
selector and port, and leaves its owner, labels and annotations alone. Every write is skipped when the
stored object already matches, so the per-tick ``reconcile`` of the Services costs reads only.
"""

from __future__ import annotations

import asyncio
import copy
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from canaryctl.api.models import API_VERSION, PRIMARY_SUFFIX, Canary, TargetKind
from canaryctl.api.owned import metadata, namespace
from canaryctl.drift import converge
from canaryctl.engine.revision import config_checksum, revision_hash
from canaryctl.engine.types import Readiness, WorkloadOp
from canaryctl.operator.knative import KnativeWorkloads
from canaryctl.ports import Objects, Revision

Obj = dict[str, Any]

APPS = "apps/v1"
HPA_API = "autoscaling/v2"
KEDA_API = "keda.sh/v1alpha1"
# The pod label Flagger rewrites for the primary; the target's selector must use one of them.
SELECTOR_LABELS = ("app", "name", "app.kubernetes.io/name")
# A DaemonSet cannot have 0 replicas: this nodeSelector key matches no node, which empties it.
SCALE_TO_ZERO = "canaryctl.dev/scale-to-zero"
# On the primary's pod template: the promoted revision (template + config checksums). Flagger stamps a
# random id there on every promotion; a revision hash restarts the pods exactly when a config changed.
REVISION_ANNOTATION = "canaryctl.dev/revision"
# KEDA stops scaling a ScaledObject's target while this annotation is set (and holds it at the value).
KEDA_PAUSED_REPLICAS = "autoscaling.keda.sh/paused-replicas"
CONFIG_KINDS = {"configmap": "ConfigMap", "secret": "Secret"}


class TargetError(LookupError):
    """The target (or something it needs) is missing or unusable as written."""


class TargetNotReady(RuntimeError):
    """Reverting waits for the target's pods before giving it the traffic."""


# --- pod spec config references ---------------------------------------------------------------------


def _site(kind: str, holder: object, field: str) -> Iterator[tuple[str, Obj, str]]:
    if isinstance(holder, dict) and holder.get(field):
        yield kind, holder, field


def _ref_sites(pod_spec: Obj) -> Iterator[tuple[str, Obj, str]]:
    """Every place a pod spec names a ConfigMap or Secret: (kind, the dict holding the name, its key)."""
    for container in [*(pod_spec.get("containers") or []), *(pod_spec.get("initContainers") or [])]:
        for source in container.get("envFrom") or []:
            yield from _site("configmap", source.get("configMapRef"), "name")
            yield from _site("secret", source.get("secretRef"), "name")
        for env in container.get("env") or []:
            value_from = env.get("valueFrom") or {}
            yield from _site("configmap", value_from.get("configMapKeyRef"), "name")
            yield from _site("secret", value_from.get("secretKeyRef"), "name")
    for volume in pod_spec.get("volumes") or []:
        yield from _site("configmap", volume.get("configMap"), "name")
        yield from _site("secret", volume.get("secret"), "secretName")
        for source in (volume.get("projected") or {}).get("sources") or []:
            yield from _site("configmap", source.get("configMap"), "name")
            yield from _site("secret", source.get("secret"), "name")


def config_refs(pod_spec: Obj) -> set[str]:
    """``configmap/NAME`` and ``secret/NAME`` for each config the pod spec references."""
    return {f"{kind}/{holder[field]}" for kind, holder, field in _ref_sites(pod_spec)}


def _config_content(obj: Obj) -> Obj:
    return {key: obj[key] for key in ("data", "binaryData", "stringData") if obj.get(key)}


# --- manifests -----------------------------------------------------------------------------------------


def selector_key(target: Obj) -> str:
    labels = ((target.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    for key in SELECTOR_LABELS:
        if key in labels:
            return key
    name = target["metadata"]["name"]
    raise TargetError(f"selector of {name} must match on one of the labels {', '.join(SELECTOR_LABELS)}")


def _selectors(target: Obj) -> tuple[dict[str, str], dict[str, str]]:
    """The pod selectors of the primary and of the target (Flagger's one rewritten label)."""
    key = selector_key(target)
    value = target["spec"]["selector"]["matchLabels"][key]
    return {key: f"{value}{PRIMARY_SUFFIX}"}, {key: value}


@dataclass(frozen=True)
class SeenTarget:
    """What the generated Services take from the target: its pods' selectors and discovered ports."""

    primary_selector: dict[str, str]
    canary_selector: dict[str, str]
    ports: list[Obj]


def _seen(canary: Canary, target: Obj) -> SeenTarget:
    primary, canary_selector = _selectors(target)
    pod_spec = ((target.get("spec") or {}).get("template") or {}).get("spec") or {}
    return SeenTarget(primary, canary_selector, discovered_ports(canary, pod_spec))


def _suffixed(labels: Mapping[str, str] | None, key: str) -> dict[str, str]:
    return {k: f"{v}{PRIMARY_SUFFIX}" if k == key else v for k, v in (labels or {}).items()}


def primary_template(template: Obj, key: str, tracked: set[str], revision: str) -> Obj:
    """The target's pod template for the primary: selector label suffixed, tracked configs renamed, the
    scale-to-zero nodeSelector dropped, the revision stamped."""
    result = comparable_template(template)
    meta = result.setdefault("metadata", {})
    meta["labels"] = _suffixed(meta.get("labels"), key)
    meta["annotations"] = {**(meta.get("annotations") or {}), REVISION_ANNOTATION: revision}
    for kind, holder, field in _ref_sites(result.get("spec") or {}):
        if f"{kind}/{holder[field]}" in tracked:
            holder[field] = f"{holder[field]}{PRIMARY_SUFFIX}"
    return result


def comparable_template(template: Obj) -> Obj:
    """The template as the user wrote it: without canaryctl's scale-to-zero nodeSelector."""
    result = copy.deepcopy(template)
    selector = (result.get("spec") or {}).get("nodeSelector")
    if selector is not None:
        selector.pop(SCALE_TO_ZERO, None)
        if not selector:
            del result["spec"]["nodeSelector"]
    return result


# Proxy containers whose ports are the mesh's, not the application's (Flagger's list, plus canaryctl's).
SIDECAR_CONTAINERS = frozenset({"istio-proxy", "envoy", "canaryctl-proxy"})
MAX_PORT_NAME = 63  # a Service port name is a DNS label


def _discovered_name(container: str, index: int) -> str:
    """Flagger's ``tcp-<container>-<index>`` for an unnamed container port, cut to a DNS label."""
    suffix = f"-{index}"
    return f"tcp-{container[: MAX_PORT_NAME - 4 - len(suffix)].rstrip('-')}{suffix}"


def discovered_ports(canary: Canary, pod_spec: Obj) -> list[Obj]:
    """portDiscovery (Flagger's getPorts): every container port of the target but the one spec.service
    already exposes (its targetPort, by number or name, or its port), proxies' ports left out. A port
    that would repeat the Service port's name or number, or an earlier port's, is left out too: an API
    server refuses a Service with two ports of one name or of one number and protocol."""
    service = canary.spec.service
    if not service.port_discovery:
        return []
    target = service.target_port if service.target_port is not None else service.port
    names, numbers = {service.port_name}, {(service.port, "TCP")}
    found: list[Obj] = []
    for container in pod_spec.get("containers") or []:
        if container.get("name") in SIDECAR_CONTAINERS:
            continue
        for index, port in enumerate(container.get("ports") or []):
            number, protocol = port.get("containerPort"), port.get("protocol") or "TCP"
            if not isinstance(number, int) or target in (number, port.get("name")):
                continue
            name = port.get("name") or _discovered_name(str(container.get("name") or ""), index)
            if name in names or (number, protocol) in numbers:
                continue
            names.add(name)
            numbers.add((number, protocol))
            found.append({"name": name, "port": number, "targetPort": number, "protocol": protocol})
    return found


def service_ports(canary: Canary, discovered: list[Obj] | None = None) -> list[Obj]:
    """spec.service's port first, then the ports portDiscovery found on the target."""
    service = canary.spec.service
    port: Obj = {
        "name": service.port_name,
        "port": service.port,
        "targetPort": service.target_port if service.target_port is not None else service.port,
        "protocol": "TCP",
    }
    if service.app_protocol:
        port["appProtocol"] = service.app_protocol
    return [port, *(discovered or [])]


def service(canary: Canary, name: str, spec: Obj, role: str, stored: Obj | None = None) -> Obj:
    """A Service owned by the canary with spec.service.<role> labels/annotations (apex|primary|canary)
    and spec.service.trafficDistribution. A key spec.service.unmanagedMetadata lists keeps the value
    ``stored`` has (Flagger's reconcileService), so whoever else writes it is never overwritten."""
    meta = metadata(canary, name)
    custom = getattr(canary.spec.service, role)
    unmanaged = canary.spec.service.unmanaged_metadata
    found = (stored or {}).get("metadata") or {}
    for field in ("labels", "annotations"):
        wanted = dict(getattr(custom, field) or {}) if custom is not None else {}
        present = found.get(field) or {}
        for key in (getattr(unmanaged, field) or ()) if unmanaged is not None else ():
            if key in present:
                wanted[key] = present[key]
        if wanted:
            meta[field] = wanted
    distribution = canary.spec.service.traffic_distribution
    if distribution is not None:
        spec = {**spec, "trafficDistribution": distribution.value}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


def owned_by(obj: Obj, canary: Canary) -> bool:
    """Whether ``obj``'s controller is this Canary (Flagger's isOwnedByCanary)."""
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return bool(
                ref.get("apiVersion") == API_VERSION
                and ref.get("kind") == "Canary"
                and ref.get("name") == canary.metadata.name
            )
    return False


def workload_readiness(obj: Obj, threshold: int) -> Readiness:
    """Flagger's and ``kubectl rollout status``'s check: the controller observed the latest generation,
    every desired replica runs the new template, no old replica is left, and ``threshold`` percent of
    them (rounded up) are available. Old-ReplicaSet pods never count."""
    spec, status, meta = obj.get("spec") or {}, obj.get("status") or {}, obj["metadata"]
    name = f"{obj['kind']} {meta.get('namespace')}/{meta['name']}"
    generation, observed = meta.get("generation"), int(status.get("observedGeneration") or 0)
    if generation is not None and observed < generation:
        return Readiness(False, f"{name}: waiting for the controller to observe generation {generation}")
    if obj["kind"] == "DaemonSet":
        desired = int(status.get("desiredNumberScheduled") or 0)
        updated = int(status.get("updatedNumberScheduled") or 0)
        current = updated  # a DaemonSet runs one pod a node: "updated < desired" covers old pods
        available = int(status.get("numberAvailable") or 0)
    else:
        desired = int(spec.get("replicas", 1))
        updated = int(status.get("updatedReplicas") or 0)
        current = int(status.get("replicas") or 0)
        available = int(status.get("availableReplicas") or 0)
    if desired == 0:
        return Readiness(False, f"{name} is scaled to zero")
    needed = math.ceil(desired * threshold / 100)
    if updated < desired:
        return Readiness(False, f"{name}: waiting for rollout to finish: {updated} of {desired} updated")
    if current > updated:
        old = current - updated
        return Readiness(
            False, f"{name}: waiting for rollout to finish: {old} old replicas pending termination"
        )
    if available < needed:
        return Readiness(False, f"{name}: {available} of {desired} replicas available, {needed} needed")
    return Readiness(True)


def primary_query(query: str, target: str) -> str:
    """Flagger's rewrite of a KEDA trigger query for the primary: ``<target>`` and ``<target>-canary``
    both become ``<target>-primary`` (never ``-primary-primary`` or ``-primary-canary``)."""
    pattern = re.compile(rf"{re.escape(target)}(?:{re.escape(PRIMARY_SUFFIX)}|-canary)?")
    return pattern.sub(f"{target}{PRIMARY_SUFFIX}", query)


# --- the port ------------------------------------------------------------------------------------------


class KubeWorkloads:
    """Implements the Workloads port over the Objects port."""

    def __init__(self, objects: Objects) -> None:
        self.objects = objects
        self.knative = KnativeWorkloads(objects)
        # Each target's pod selectors (immutable) and discovered ports as read earlier in the tick, so
        # the per-tick reconcile needs no second read of the target.
        self._seen: dict[tuple[str, str], SeenTarget] = {}

    # -- reading --

    async def _target(self, canary: Canary) -> Obj:
        ref = canary.spec.target_ref
        api = "v1" if ref.kind is TargetKind.SERVICE else APPS
        found = await self.objects.get(api, ref.kind.value, namespace(canary), ref.name)
        if found is None:
            raise TargetError(f"{ref.kind.value} {namespace(canary)}/{ref.name} not found")
        if ref.kind is not TargetKind.SERVICE:
            self._seen[namespace(canary), ref.name] = _seen(canary, found)
        return found

    async def _primary(self, canary: Canary) -> Obj | None:
        ref = canary.spec.target_ref
        return await self.objects.get(APPS, ref.kind.value, namespace(canary), f"{ref.name}{PRIMARY_SUFFIX}")

    async def _configs(self, canary: Canary, pod_spec: Obj) -> dict[str, Obj]:
        """The referenced configs that exist, by ``kind/name``; absent ones are not tracked (the pods
        fail on their own, and an optional reference may legitimately point at nothing)."""
        found: dict[str, Obj] = {}
        for ref in sorted(config_refs(pod_spec)):
            kind, _, name = ref.partition("/")
            obj = await self.objects.get("v1", CONFIG_KINDS[kind], namespace(canary), name)
            if obj is not None:
                found[ref] = obj
        return found

    async def revision(self, canary: Canary) -> Revision:
        if canary.spec.target_ref.knative:
            return await self.knative.revision(canary)
        target = await self._target(canary)
        spec = target.get("spec") or {}
        if canary.spec.target_ref.kind is TargetKind.SERVICE:
            return Revision(
                revision_hash({"selector": spec.get("selector"), "ports": spec.get("ports")}, {}), {}
            )
        template = comparable_template(spec.get("template") or {})
        configs = await self._configs(canary, template.get("spec") or {})
        tracked = {ref: config_checksum(_config_content(obj)) for ref, obj in configs.items()}
        return Revision(revision_hash(template, tracked), tracked)

    async def readiness(self, canary: Canary, primary: bool) -> Readiness:
        ref = canary.spec.target_ref
        if ref.knative:
            return await self.knative.readiness(canary, primary)
        if ref.kind is TargetKind.SERVICE:
            return Readiness(True)
        name = f"{ref.name}{PRIMARY_SUFFIX}" if primary else ref.name
        found = await self.objects.get(APPS, ref.kind.value, namespace(canary), name)
        if found is None:
            return Readiness(False, f"{ref.kind.value} {namespace(canary)}/{name} not found")
        analysis = canary.spec.effective_analysis
        return workload_readiness(
            found, analysis.primary_ready_threshold if primary else analysis.canary_ready_threshold
        )

    # -- acting --

    async def apply(self, canary: Canary, op: WorkloadOp) -> None:
        """Every write is a whole apply configuration of what canaryctl owns in that object: ``apply`` is
        server-side apply, where fields canaryctl stops setting are removed."""
        if canary.spec.target_ref.knative:
            await self.knative.apply(canary, op)
            return
        target = await self._target(canary)
        if canary.spec.target_ref.kind is TargetKind.SERVICE:
            await self._apply_service_target(canary, target, op)
            return
        seen = _seen(canary, target)
        if op is WorkloadOp.INITIALIZE:
            await self._copy_to_primary(canary, target, selector_key(target))
            await self._apply_side_services(canary, seen)
            await self._apply_apex(canary, seen, seen.primary_selector, only_create=True)
            await self._reconcile_scaler(canary, init=True)
        elif op is WorkloadOp.PROMOTE:
            await self._copy_to_primary(canary, target, selector_key(target))
            await self._reconcile_scaler(canary, init=False)
        elif op is WorkloadOp.SCALE_CANARY_DOWN:
            # Flagger's order: the apex selects the (ready) primary before the target's pods go away.
            await self._apply_apex(canary, seen, seen.primary_selector)
            await self._pause_scaler(canary, paused=True)
            await self._scale(target, 0)
        elif op is WorkloadOp.SCALE_CANARY_UP:
            await self._pause_scaler(canary, paused=False)
            await self._scale(target, await self._scale_up_replicas(canary, target))
        elif op is WorkloadOp.REVERT:
            await self._revert(canary, target, seen)

    async def reconcile(self, canary: Canary, apex_selector: bool = True) -> None:
        """Re-apply the generated Services from the current spec (a port edit, a deleted Service), as
        Flagger does every tick; writes only what drifted. ``apex_selector`` False: the router sets the
        apex selector (blue/green on plain Services), so only its ports and metadata are kept here."""
        ref = canary.spec.target_ref
        if ref.knative:  # Knative routes to its revisions itself: no Services to generate
            return
        if ref.kind is TargetKind.SERVICE:
            await self._apply_service_target(canary, await self._target(canary), None)
            return
        seen = self._seen.get((namespace(canary), ref.name)) or _seen(canary, await self._target(canary))
        await asyncio.gather(
            self._apply_side_services(canary, seen),
            self._apply_apex(canary, seen, seen.primary_selector if apex_selector else None),
        )

    async def _copy_to_primary(self, canary: Canary, target: Obj, key: str) -> None:
        """The primary gets the target's pod template, configs and size (the whole workload)."""
        spec = target.get("spec") or {}
        configs = await self._configs(canary, (spec.get("template") or {}).get("spec") or {})
        for obj in configs.values():
            copied = {
                "apiVersion": "v1",
                "kind": obj["kind"],
                "metadata": metadata(canary, f"{obj['metadata']['name']}{PRIMARY_SUFFIX}"),
                **_config_content(obj),
            }
            if obj.get("type"):
                copied["type"] = obj["type"]
            await converge(self.objects, copied)
        template = spec.get("template") or {}
        tracked = {ref: config_checksum(_config_content(obj)) for ref, obj in configs.items()}
        revision = revision_hash(comparable_template(template), tracked)
        primary_spec = {k: copy.deepcopy(v) for k, v in spec.items() if k != "replicas"}
        primary_spec["selector"] = {"matchLabels": _suffixed(spec["selector"]["matchLabels"], key)}
        primary_spec["template"] = primary_template(template, key, set(configs), revision)
        if target["kind"] == "Deployment" and canary.spec.autoscaler_ref is None:  # else the scaler's
            primary_spec["replicas"] = await self._primary_replicas(canary, target)
        meta = metadata(canary, f"{target['metadata']['name']}{PRIMARY_SUFFIX}")
        meta["labels"] = _suffixed(target["metadata"].get("labels"), key)
        await converge(
            self.objects, {"apiVersion": APPS, "kind": target["kind"], "metadata": meta, "spec": primary_spec}
        )

    async def _primary_replicas(self, canary: Canary, target: Obj) -> int:
        """Flagger copies the target's size on promotion (it runs scaled up then); a target at zero (an
        initialization repeated after the scale-down) keeps the primary's size."""
        replicas = int((target.get("spec") or {}).get("replicas") or 0)
        if replicas > 0:
            return replicas
        primary = await self._primary(canary)
        return int(((primary or {}).get("spec") or {}).get("replicas") or 0) or 1

    async def _scale_up_replicas(self, canary: Canary, target: Obj) -> int:
        """Flagger's ScaleFromZero: the target's own ``spec.replicas`` when someone set it, else the
        primary's size (no autoscaler) or the autoscaler's minimum above one, else one."""
        replicas = int((target.get("spec") or {}).get("replicas") or 0)
        if replicas > 0:
            return replicas
        ref = canary.spec.autoscaler_ref
        if ref is None:
            primary = await self._primary(canary)
            return int(((primary or {}).get("spec") or {}).get("replicas") or 0) or 1
        api, field = (
            (HPA_API, "minReplicas")
            if ref.kind == "HorizontalPodAutoscaler"
            else (KEDA_API, "minReplicaCount")
        )
        scaler = await self.objects.get(api, ref.kind, namespace(canary), ref.name)
        minimum = int(((scaler or {}).get("spec") or {}).get(field) or 1)
        return max(minimum, 1)

    async def _apply_side_services(self, canary: Canary, seen: SeenTarget) -> None:
        side = canary.spec.side_service
        await asyncio.gather(
            self._apply_service(canary, side(primary=True), seen.primary_selector, "primary", seen.ports),
            self._apply_service(canary, side(primary=False), seen.canary_selector, "canary", seen.ports),
        )

    async def _apply_apex(
        self, canary: Canary, seen: SeenTarget, selector: Obj | None, only_create: bool = False
    ) -> None:
        """The apex Service: created when missing; an existing one is changed only when asked for."""
        if only_create:
            found = await self.objects.get("v1", "Service", namespace(canary), canary.spec.apex_name)
            if found is not None:
                return
        await self._apply_service(canary, canary.spec.apex_name, selector, "apex", seen.ports)

    async def _apply_service(
        self,
        canary: Canary,
        name: str,
        selector: Obj | None,
        role: str,
        discovered: list[Obj] | None = None,
        release: bool = False,
    ) -> None:
        """A generated Service, or only the selector and port of someone else's Service of that name
        (Flagger's reconcileService: no owner, labels or annotations on a Service it did not create).
        ``selector`` None leaves the selector to another writer; ``release`` drops the Canary as owner."""
        found = await self.objects.get("v1", "Service", namespace(canary), name)
        spec: Obj = {"type": "ClusterIP", "ports": service_ports(canary, discovered)}
        if canary.spec.service.headless:
            spec["clusterIP"] = "None"
        if selector is not None:
            spec["selector"] = selector
        if found is None or owned_by(found, canary):
            whole = service(canary, name, spec, role, found)
            if release:
                whole["metadata"]["ownerReferences"] = []
            await converge(self.objects, whole)
            return
        meta = {"name": name, "namespace": namespace(canary)}
        partial = {key: spec[key] for key in ("selector", "ports") if key in spec}
        await converge(
            self.objects,
            {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": partial},
            whole=False,
        )

    # -- autoscalers --

    async def _reconcile_scaler(self, canary: Canary, init: bool) -> None:
        """Flagger's ReconcilePrimaryScaler: clone the target's HPA or ScaledObject for the primary; on
        promotion bring the clone up to date with the target's (min/max, metrics, triggers)."""
        ref = canary.spec.autoscaler_ref
        if ref is None:
            return
        api = HPA_API if ref.kind == "HorizontalPodAutoscaler" else KEDA_API
        found = await self.objects.get(api, ref.kind, namespace(canary), ref.name)
        if found is None:
            raise TargetError(f"{ref.kind} {namespace(canary)}/{ref.name} not found")
        name = f"{ref.name}{PRIMARY_SUFFIX}"
        if init and await self.objects.get(api, ref.kind, namespace(canary), name) is not None:
            return
        spec = copy.deepcopy(found.get("spec") or {})
        target = canary.spec.target_ref
        primary = f"{target.name}{PRIMARY_SUFFIX}"
        spec["scaleTargetRef"] = {**(spec.get("scaleTargetRef") or {}), "name": primary}
        limits = ref.primary_scaler_replicas
        low, high = (
            ("minReplicas", "maxReplicas") if api == HPA_API else ("minReplicaCount", "maxReplicaCount")
        )
        if limits is not None and limits.min_replicas is not None:
            spec[low] = limits.min_replicas
        if limits is not None and limits.max_replicas is not None:
            spec[high] = limits.max_replicas
        meta = metadata(canary, name)
        labels = found["metadata"].get("labels")
        if labels:
            meta["labels"] = dict(labels)
        if api == KEDA_API:
            self._primary_scaled_object(canary, spec)
            annotations = dict(found["metadata"].get("annotations") or {})
            annotations.pop(KEDA_PAUSED_REPLICAS, None)
            if annotations:
                meta["annotations"] = annotations
        await converge(self.objects, {"apiVersion": api, "kind": ref.kind, "metadata": meta, "spec": spec})

    @staticmethod
    def _primary_scaled_object(canary: Canary, spec: Obj) -> None:
        """Triggers query the primary (primaryScalerQueries by trigger name, else the target's name
        rewritten); a named HPA that KEDA manages gets its own ``-primary`` name."""
        ref = canary.spec.autoscaler_ref
        queries = ref.primary_scaler_queries if ref is not None else None
        for trigger in spec.get("triggers") or []:
            trigger_meta = trigger.get("metadata")
            if not isinstance(trigger_meta, dict):
                continue
            if queries is not None:
                if trigger.get("name") in queries:
                    trigger_meta["query"] = queries[trigger["name"]]
            elif "query" in trigger_meta:
                trigger_meta["query"] = primary_query(str(trigger_meta["query"]), canary.spec.target_ref.name)
        hpa_config = (spec.get("advanced") or {}).get("horizontalPodAutoscalerConfig") or {}
        if hpa_config.get("name"):
            hpa_config["name"] = f"{hpa_config['name']}{PRIMARY_SUFFIX}"

    async def _pause_scaler(self, canary: Canary, paused: bool) -> None:
        """KEDA would scale the idle target back up: pause its ScaledObject at zero while the target
        is scaled down (an HPA leaves a target at zero replicas alone)."""
        ref = canary.spec.autoscaler_ref
        if ref is None or ref.kind != "ScaledObject":
            return
        meta: Obj = {"name": ref.name, "namespace": namespace(canary)}
        # null: canaryctl stops setting the key (removed under server-side apply and merge patch)
        meta["annotations"] = {KEDA_PAUSED_REPLICAS: "0" if paused else None}
        await converge(
            self.objects, {"apiVersion": KEDA_API, "kind": ref.kind, "metadata": meta}, whole=False
        )

    # -- sizes --

    async def _scale(self, target: Obj, replicas: int) -> None:
        """The target's size: the only field canaryctl sets in it."""
        meta: Obj = {"name": target["metadata"]["name"], "namespace": target["metadata"]["namespace"]}
        if target["kind"] == "DaemonSet":
            # null: canaryctl stops setting the key (removed under server-side apply and merge patch)
            spec: Obj = {
                "template": {"spec": {"nodeSelector": {SCALE_TO_ZERO: "true" if replicas == 0 else None}}}
            }
        else:
            spec = {"replicas": replicas}
        obj = {"apiVersion": target["apiVersion"], "kind": target["kind"], "metadata": meta, "spec": spec}
        await converge(self.objects, obj, whole=False)

    async def _revert(self, canary: Canary, target: Obj, seen: SeenTarget) -> None:
        """revertOnDeletion (Flagger's finalizer): resume the target's scaler, give the target the
        primary's current size, and once its pods are ready point the apex Service at them. A Service
        canaryctl created is released from the Canary so it outlives it; Flagger lets it be collected."""
        await self._pause_scaler(canary, paused=False)
        primary = await self._primary(canary)
        size = int(((primary or {}).get("spec") or {}).get("replicas") or 0)
        await self._scale(target, size if size > 0 else await self._scale_up_replicas(canary, target))
        ready = await self.readiness(canary, primary=False)
        if not ready.ready:
            raise TargetNotReady(ready.message)
        apex = canary.spec.apex_name
        await self._apply_service(canary, apex, seen.canary_selector, "apex", seen.ports, release=True)

    async def _apply_service_target(self, canary: Canary, target: Obj, op: WorkloadOp | None) -> None:
        """A Service target; ``op`` None is the per-tick reconcile of the canary and apex Services."""
        spec = target.get("spec") or {}
        selector: Obj = dict(spec.get("selector") or {})
        copied = {"selector": selector, "ports": spec.get("ports") or service_ports(canary)}
        if spec.get("trafficDistribution"):  # Flagger copies the target Service; spec.service's wins
            copied["trafficDistribution"] = spec["trafficDistribution"]
        side = canary.spec.side_service
        if op in (None, WorkloadOp.INITIALIZE, WorkloadOp.SCALE_CANARY_UP):
            await converge(self.objects, service(canary, side(primary=False), copied, "canary"))
        if op in (WorkloadOp.INITIALIZE, WorkloadOp.PROMOTE):
            await converge(self.objects, service(canary, side(primary=True), copied, "primary"))
        if canary.spec.apex_name == target["metadata"]["name"]:
            return
        if op is WorkloadOp.REVERT:
            await self._apply_service(canary, canary.spec.apex_name, selector, "apex", release=True)
        elif op is WorkloadOp.INITIALIZE:
            await self._apply_service(canary, canary.spec.apex_name, selector, "apex")
        elif op is None:  # the apex keeps selecting what was promoted, as the primary Service does
            primary = await self.objects.get("v1", "Service", namespace(canary), side(primary=True))
            promoted = ((primary or {}).get("spec") or {}).get("selector")
            if promoted:
                await self._apply_service(canary, canary.spec.apex_name, dict(promoted), "apex")
