"""The Workloads port on Kubernetes: Flagger's bootstrap and promotion for Deployment, DaemonSet and
Service targets.

Deployment/DaemonSet ``<target>``: INITIALIZE creates ``<target>-primary`` (the selector label value
suffixed ``-primary``), copies every ConfigMap/Secret the pod spec references as ``<name>-primary`` with
the references renamed, creates the Services ``<apex>`` and ``<apex>-primary`` (primary pods) and
``<apex>-canary`` (target pods), and clones the HPA for the primary. The target is the canary: it is
scaled to zero between rollouts (a DaemonSet through a nodeSelector no node has, as Flagger does) and
its replicas before that are kept in an annotation on the target itself, so a restarted controller
scales it back to the same size. PROMOTE copies the target's pod template and configs to the primary.

Service ``<target>``: traffic only. There are no workloads to copy; the revision is the Service's
selector and ports, ``<apex>-canary`` follows the target Service and ``<apex>-primary`` gets a copy of
it on INITIALIZE and PROMOTE, so the primary side keeps selecting the promoted pods.

Every object written is owned by the Canary, so deleting the Canary garbage-collects it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping
from typing import Any

from canaryctl.api.models import PRIMARY_SUFFIX, Canary, TargetKind
from canaryctl.api.owned import metadata, namespace
from canaryctl.engine.revision import config_checksum, revision_hash
from canaryctl.engine.types import Readiness, WorkloadOp
from canaryctl.ports import Objects, Revision

Obj = dict[str, Any]

APPS = "apps/v1"
HPA_API = "autoscaling/v2"
# The pod label Flagger rewrites for the primary; the target's selector must use one of them.
SELECTOR_LABELS = ("app", "name", "app.kubernetes.io/name")
# A DaemonSet cannot have 0 replicas: this nodeSelector key matches no node, which empties it.
SCALE_TO_ZERO = "canaryctl.dev/scale-to-zero"
# The target's replicas before canaryctl scaled it to zero; read back by SCALE_CANARY_UP and REVERT.
REPLICAS_ANNOTATION = "canaryctl.dev/replicas"
CONFIG_KINDS = {"configmap": "ConfigMap", "secret": "Secret"}


class TargetError(LookupError):
    """The target (or something it needs) is missing or unusable as written."""


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


def _suffixed(labels: Mapping[str, str] | None, key: str) -> dict[str, str]:
    return {k: f"{v}{PRIMARY_SUFFIX}" if k == key else v for k, v in (labels or {}).items()}


def primary_template(template: Obj, key: str, tracked: set[str]) -> Obj:
    """The target's pod template for the primary: selector label suffixed, tracked configs renamed, the
    scale-to-zero nodeSelector dropped."""
    result = comparable_template(template)
    meta = result.setdefault("metadata", {})
    meta["labels"] = _suffixed(meta.get("labels"), key)
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


def service_ports(canary: Canary) -> list[Obj]:
    service = canary.spec.service
    port: Obj = {
        "name": service.port_name,
        "port": service.port,
        "targetPort": service.target_port if service.target_port is not None else service.port,
        "protocol": "TCP",
    }
    if service.app_protocol:
        port["appProtocol"] = service.app_protocol
    return [port]


def service(canary: Canary, name: str, spec: Obj, role: str) -> Obj:
    """A Service owned by the canary with spec.service.<role> labels/annotations (apex|primary|canary)."""
    meta = metadata(canary, name)
    custom = getattr(canary.spec.service, role)
    if custom is not None and custom.labels:
        meta["labels"] = dict(custom.labels)
    if custom is not None and custom.annotations:
        meta["annotations"] = dict(custom.annotations)
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


def apex_service(canary: Canary, selector: Obj) -> Obj:
    """The whole apex Service: created selecting the primary, pointed back at the target on revert."""
    spec = {"type": "ClusterIP", "selector": selector, "ports": service_ports(canary)}
    return service(canary, canary.spec.apex_name, spec, "apex")


def workload_readiness(obj: Obj, threshold: int) -> Readiness:
    """Flagger's check: the controller saw the latest spec, and enough replicas are updated and available
    (``threshold`` percent of the desired ones, rounded up)."""
    spec, status, meta = obj.get("spec") or {}, obj.get("status") or {}, obj["metadata"]
    name = f"{obj['kind']} {meta.get('namespace')}/{meta['name']}"
    generation, observed = meta.get("generation"), status.get("observedGeneration")
    if generation is not None and observed is not None and observed < generation:
        return Readiness(False, f"{name}: waiting for the controller to observe generation {generation}")
    if obj["kind"] == "DaemonSet":
        desired = int(status.get("desiredNumberScheduled") or 0)
        updated = int(status.get("updatedNumberScheduled") or 0)
        available = int(status.get("numberAvailable") or 0)
    else:
        desired = int(spec.get("replicas", 1))
        updated = int(status.get("updatedReplicas") or 0)
        available = int(status.get("availableReplicas") or 0)
    if desired == 0:
        return Readiness(False, f"{name} has no replicas")
    needed = math.ceil(desired * threshold / 100)
    if updated < needed:
        return Readiness(False, f"{name}: waiting for rollout to finish: {updated} of {desired} updated")
    if available < needed:
        return Readiness(False, f"{name}: {available} of {desired} replicas available, {needed} needed")
    return Readiness(True)


# --- the port ------------------------------------------------------------------------------------------


class KubeWorkloads:
    """Implements the Workloads port over the Objects port."""

    def __init__(self, objects: Objects) -> None:
        self.objects = objects

    # -- reading --

    async def _target(self, canary: Canary) -> Obj:
        ref = canary.spec.target_ref
        api = "v1" if ref.kind is TargetKind.SERVICE else APPS
        found = await self.objects.get(api, ref.kind.value, namespace(canary), ref.name)
        if found is None:
            raise TargetError(f"{ref.kind.value} {namespace(canary)}/{ref.name} not found")
        return found

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
        target = await self._target(canary)
        if canary.spec.target_ref.kind is TargetKind.SERVICE:
            await self._apply_service_target(canary, target, op)
            return
        key = selector_key(target)
        value = target["spec"]["selector"]["matchLabels"][key]
        if op is WorkloadOp.INITIALIZE:
            await self._copy_to_primary(canary, target, key)
            await self._apply_services(canary, {key: f"{value}{PRIMARY_SUFFIX}"}, {key: value})
            await self._clone_autoscaler(canary)
        elif op is WorkloadOp.PROMOTE:
            await self._copy_to_primary(canary, target, key)
        elif op is WorkloadOp.SCALE_CANARY_DOWN:
            await self._scale(canary, target, up=False)
        elif op is WorkloadOp.SCALE_CANARY_UP:
            await self._scale(canary, target, up=True)
        elif op is WorkloadOp.REVERT:
            await self._scale(canary, target, up=True)
            await self.objects.apply(apex_service(canary, {key: value}))

    async def _copy_to_primary(self, canary: Canary, target: Obj, key: str) -> None:
        """The primary gets the target's pod template and configs (the whole workload, every time)."""
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
            await self.objects.apply(copied)
        primary_spec = {k: copy.deepcopy(v) for k, v in spec.items() if k != "replicas"}
        primary_spec["selector"] = {"matchLabels": _suffixed(spec["selector"]["matchLabels"], key)}
        primary_spec["template"] = primary_template(spec.get("template") or {}, key, set(configs))
        autoscaled = canary.spec.autoscaler_ref is not None
        if target["kind"] == "Deployment" and not autoscaled:  # else the HPA owns the replicas
            primary_spec["replicas"] = await self._desired_replicas(canary, target)
        meta = metadata(canary, f"{target['metadata']['name']}{PRIMARY_SUFFIX}")
        meta["labels"] = _suffixed(target["metadata"].get("labels"), key)
        await self.objects.apply(
            {"apiVersion": APPS, "kind": target["kind"], "metadata": meta, "spec": primary_spec}
        )

    async def _desired_replicas(self, canary: Canary, target: Obj) -> int:
        """What the target runs when scaled up: the HPA's minimum, else its remembered or current size."""
        ref = canary.spec.autoscaler_ref
        if ref is not None and ref.kind == "HorizontalPodAutoscaler":
            hpa = await self.objects.get(HPA_API, ref.kind, namespace(canary), ref.name)
            if hpa is not None:
                return int((hpa.get("spec") or {}).get("minReplicas") or 1)
        remembered = (target["metadata"].get("annotations") or {}).get(REPLICAS_ANNOTATION)
        return int(remembered or (target.get("spec") or {}).get("replicas") or 1)

    async def _apply_services(self, canary: Canary, primary: Obj, canary_selector: Obj) -> None:
        ports = service_ports(canary)
        await self.objects.apply(apex_service(canary, primary))
        for name, selector, role in (
            (canary.spec.side_service(primary=True), primary, "primary"),
            (canary.spec.side_service(primary=False), canary_selector, "canary"),
        ):
            spec = {"type": "ClusterIP", "selector": selector, "ports": ports}
            await self.objects.apply(service(canary, name, spec, role))

    async def _clone_autoscaler(self, canary: Canary) -> None:
        ref = canary.spec.autoscaler_ref
        if ref is None:
            return
        if ref.kind != "HorizontalPodAutoscaler":
            raise TargetError(f"autoscalerRef kind {ref.kind} is not supported; use HorizontalPodAutoscaler")
        hpa = await self.objects.get(HPA_API, ref.kind, namespace(canary), ref.name)
        if hpa is None:
            raise TargetError(f"HorizontalPodAutoscaler {namespace(canary)}/{ref.name} not found")
        spec = copy.deepcopy(hpa.get("spec") or {})
        target = canary.spec.target_ref
        primary = f"{target.name}{PRIMARY_SUFFIX}"
        spec["scaleTargetRef"] = {"apiVersion": APPS, "kind": target.kind.value, "name": primary}
        limits = ref.primary_scaler_replicas
        if limits is not None and limits.min_replicas is not None:
            spec["minReplicas"] = limits.min_replicas
        if limits is not None and limits.max_replicas is not None:
            spec["maxReplicas"] = limits.max_replicas
        meta = metadata(canary, f"{ref.name}{PRIMARY_SUFFIX}")
        await self.objects.apply({"apiVersion": HPA_API, "kind": ref.kind, "metadata": meta, "spec": spec})

    async def _scale(self, canary: Canary, target: Obj, up: bool) -> None:
        """The target's size: the only fields canaryctl owns in it, applied together every time."""
        meta: Obj = {"name": target["metadata"]["name"], "namespace": target["metadata"]["namespace"]}
        if target["kind"] == "DaemonSet":
            # null: canaryctl stops setting the key (removed under server-side apply and merge patch)
            spec: Obj = {"template": {"spec": {"nodeSelector": {SCALE_TO_ZERO: None if up else "true"}}}}
        else:
            replicas = await self._desired_replicas(canary, target)
            meta["annotations"] = {REPLICAS_ANNOTATION: str(replicas)}
            spec = {"replicas": replicas if up else 0}
        await self.objects.apply(
            {"apiVersion": target["apiVersion"], "kind": target["kind"], "metadata": meta, "spec": spec}
        )

    async def _apply_service_target(self, canary: Canary, target: Obj, op: WorkloadOp) -> None:
        spec = target.get("spec") or {}
        selector: Obj = dict(spec.get("selector") or {})
        copied = {"selector": selector, "ports": spec.get("ports") or service_ports(canary)}
        side = canary.spec.side_service
        if op in (WorkloadOp.INITIALIZE, WorkloadOp.SCALE_CANARY_UP):
            await self.objects.apply(service(canary, side(primary=False), copied, "canary"))
        if op in (WorkloadOp.INITIALIZE, WorkloadOp.PROMOTE):
            await self.objects.apply(service(canary, side(primary=True), copied, "primary"))
        apex_is_target = canary.spec.apex_name == target["metadata"]["name"]
        if op in (WorkloadOp.INITIALIZE, WorkloadOp.REVERT) and not apex_is_target:
            await self.objects.apply(apex_service(canary, selector))
