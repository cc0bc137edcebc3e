"""The controllers that derive status and small objects from the rest: the HPA (within its bounds, writing
``spec.replicas`` through ``/scale`` as ``kube-controller-manager``), EndpointSlices per selecting Service
(label ``kubernetes.io/service-name``, pod IPs, ``conditions.ready``/``serving``/``terminating``, named ports
resolved), a ResourceQuota's ``status.used``, claims bound to a volume, and a PodDisruptionBudget's status."""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING, Any

from tests.fakekube import scheduling
from tests.fakekube.workloads import MANAGER, is_active, is_ready, owner_ref, resolve

if TYPE_CHECKING:
    from tests.fakekube.controller import Controller

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
SLICE_MANAGER = "endpointslice-controller.k8s.io"


def sync_hpa(ctl: Controller, namespace: str, hpa: dict[str, Any]) -> None:
    store = ctl.store
    spec = hpa.get("spec") or {}
    ref = spec.get("scaleTargetRef") or {}
    target = store.objects.get(("deployments", namespace, str(ref.get("name", ""))))
    now = store.timestamp()
    previous = hpa.get("status") or {}
    status: dict[str, Any] = {
        "currentReplicas": previous.get("currentReplicas", 0),
        "desiredReplicas": previous.get("desiredReplicas", 0),
    }
    if "lastScaleTime" in previous:
        status["lastScaleTime"] = previous["lastScaleTime"]
    if target is None or ref.get("kind") != "Deployment":
        message = f'deployments/scale.apps "{ref.get("name")}" not found'
        status["conditions"] = [
            {
                "type": "AbleToScale",
                "status": "False",
                "reason": "FailedGetScale",
                "message": message,
                "lastTransitionTime": now,
            }
        ]
        _write_hpa_status(ctl, namespace, hpa, status)
        return
    current = int(target["spec"].get("replicas", 1))
    status["currentReplicas"] = int((target.get("status") or {}).get("replicas", current))
    if current == 0:
        status["desiredReplicas"] = 0
        status["conditions"] = [
            {
                "type": "ScalingActive",
                "status": "False",
                "reason": "ScalingDisabled",
                "message": "scaling is disabled since the replica count of the target is zero",
                "lastTransitionTime": now,
            }
        ]
        _write_hpa_status(ctl, namespace, hpa, status)
        return
    low, high = int(spec.get("minReplicas", 1)), int(spec.get("maxReplicas", current))
    wanted = ctl.hpa_recommendations.get((namespace, hpa["metadata"]["name"]), current)
    wanted = min(max(wanted, low), high)
    if wanted != current:
        store.scale_internal("deployments", namespace, target["metadata"]["name"], wanted, MANAGER)
        status["lastScaleTime"] = now
        if current < low:
            reason = "Current number of replicas below Spec's minimum"
        elif current > high:
            reason = "Current number of replicas above Spec's maximum"
        else:
            reason = "All metrics below target" if wanted < current else _above_target(spec)
        ctl.event(hpa, "Normal", "SuccessfulRescale", f"New size: {wanted}; reason: {reason}")
    status["desiredReplicas"] = wanted
    status["conditions"] = [
        {
            "type": "AbleToScale",
            "status": "True",
            "reason": "ReadyForNewScale",
            "message": "recommended size matches current size",
            "lastTransitionTime": now,
        },
        {
            "type": "ScalingActive",
            "status": "True",
            "reason": "ValidMetricFound",
            "message": "the HPA was able to successfully calculate a replica count",
            "lastTransitionTime": now,
        },
    ]
    _write_hpa_status(ctl, namespace, hpa, status)


def _write_hpa_status(ctl: Controller, namespace: str, hpa: dict[str, Any], status: dict[str, Any]) -> None:
    previous = {c.get("type"): c for c in (hpa.get("status") or {}).get("conditions") or []}
    for condition in status.get("conditions") or []:
        old = previous.get(condition["type"])
        if old and old.get("status") == condition["status"]:
            condition["lastTransitionTime"] = old.get("lastTransitionTime", condition["lastTransitionTime"])
    ctl.store.write_status("horizontalpodautoscalers", namespace, hpa["metadata"]["name"], status)


def sync_slices(ctl: Controller, namespace: str, service: dict[str, Any]) -> None:
    store = ctl.store
    spec = service.get("spec") or {}
    selector = spec.get("selector")
    name = service["metadata"]["name"]
    existing = [s for s in store.list("endpointslices", namespace, f"{SERVICE_NAME_LABEL}={name}")]
    if not selector:
        return
    pods = [
        p
        for p in store.list("pods", namespace, "")
        if (p.get("status") or {}).get("podIP")
        and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        and all(((p["metadata"].get("labels") or {}).get(k) == v) for k, v in selector.items())
    ]
    endpoints = []
    for pod in pods:
        terminating = "deletionTimestamp" in pod["metadata"]
        ready = is_ready(pod)
        endpoint: dict[str, Any] = {
            "addresses": [pod["status"]["podIP"]],
            "conditions": {"ready": ready and not terminating, "serving": ready, "terminating": terminating},
            "targetRef": {
                "kind": "Pod",
                "namespace": namespace,
                "name": pod["metadata"]["name"],
                "uid": pod["metadata"]["uid"],
            },
        }
        if (pod.get("spec") or {}).get("nodeName"):
            endpoint["nodeName"] = pod["spec"]["nodeName"]
        endpoints.append(endpoint)
    ports = [_slice_port(port, pods) for port in spec.get("ports") or []]
    labels = {**(service["metadata"].get("labels") or {}), SERVICE_NAME_LABEL: name}
    labels["endpointslice.kubernetes.io/managed-by"] = SLICE_MANAGER
    body: dict[str, Any] = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "labels": labels,
            "ownerReferences": [owner_ref(service)],
            "generateName": f"{name}-",
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports,
    }
    if existing:
        current = existing[0]
        body["metadata"]["name"] = current["metadata"]["name"]
        if all(current.get(k) == body[k] for k in ("endpoints", "ports")) and (
            current["metadata"].get("labels") == labels
        ):
            return
        store.write_internal("endpointslices", namespace, {**current, **body}, manager=SLICE_MANAGER)
    else:
        store.create("endpointslices", namespace, body, manager=SLICE_MANAGER, validate=False, settle=False)


def _slice_port(port: dict[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any]:
    target = port.get("targetPort", port.get("port"))
    if isinstance(target, str):
        for pod in pods:
            for container in (pod.get("spec") or {}).get("containers") or []:
                for cport in container.get("ports") or []:
                    if cport.get("name") == target:
                        target = cport["containerPort"]
    out: dict[str, Any] = {
        "port": target if isinstance(target, int) else None,
        "protocol": port.get("protocol", "TCP"),
    }
    if port.get("name"):
        out["name"] = port["name"]
    if out["port"] is None:
        out.pop("port")
    return out


def sync_quota(ctl: Controller, namespace: str, quota: dict[str, Any]) -> None:
    hard = (quota.get("spec") or {}).get("hard") or {}
    used: dict[str, Fraction] = dict.fromkeys(hard, Fraction(0))
    for pod in ctl.store.list("pods", namespace, ""):
        if scheduling.counts_against_quota(pod):
            for name, amount in scheduling.quota_usage(pod).items():
                if name in used:
                    used[name] += amount
    status = {"hard": dict(hard), "used": {n: scheduling._format(v, str(hard[n])) for n, v in used.items()}}
    ctl.store.write_status("resourcequotas", namespace, quota["metadata"]["name"], status)


def bind_claim(ctl: Controller, namespace: str, claim: dict[str, Any]) -> None:
    spec = claim.get("spec") or {}
    storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
    status: dict[str, Any] = {"phase": "Bound", "accessModes": list(spec.get("accessModes") or [])}
    if storage:
        status["capacity"] = {"storage": storage}
    ctl.store.write_status("persistentvolumeclaims", namespace, claim["metadata"]["name"], status)


def sync_pdb(ctl: Controller, namespace: str, pdb: dict[str, Any]) -> None:
    spec = pdb.get("spec") or {}
    wanted = (spec.get("selector") or {}).get("matchLabels") or {}
    pods = [
        p
        for p in ctl.store.list("pods", namespace, "")
        if is_active(p) and all((p["metadata"].get("labels") or {}).get(k) == v for k, v in wanted.items())
    ]
    healthy = sum(1 for p in pods if is_ready(p))
    expected = len(pods)
    if "minAvailable" in spec:
        desired = resolve(spec["minAvailable"], expected, True)
    else:
        desired = max(0, expected - resolve(spec.get("maxUnavailable", 0), expected, True))
    allowed = max(0, healthy - desired)
    now = ctl.store.timestamp()
    condition = (
        {"type": "DisruptionAllowed", "status": "True", "reason": "SufficientPods", "message": ""}
        if allowed
        else {"type": "DisruptionAllowed", "status": "False", "reason": "InsufficientPods", "message": ""}
    )
    old: dict[str, Any] = next(
        (c for c in (pdb.get("status") or {}).get("conditions") or [] if c.get("type") == "DisruptionAllowed"), {}
    )
    condition["lastTransitionTime"] = (
        old.get("lastTransitionTime", now) if old.get("status") == condition["status"] else now
    )
    condition["observedGeneration"] = pdb["metadata"].get("generation", 1)
    status = {
        "observedGeneration": pdb["metadata"].get("generation", 1),
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "disruptionsAllowed": allowed,
        "expectedPods": expected,
        "conditions": [condition],
    }
    ctl.store.write_status("poddisruptionbudgets", namespace, pdb["metadata"]["name"], status)


def _above_target(spec: dict[str, Any]) -> str:
    """The HPA's words for a scale-up: ``pods metric frontdoor_inflight_requests above target``."""
    for metric in spec.get("metrics") or []:
        kind = str(metric.get("type", ""))
        source = metric.get(kind[:1].lower() + kind[1:]) or {}
        name = (source.get("metric") or {}).get("name") or source.get("name")
        if name:
            return f"{kind.lower()} metric {name} above target"
    return "cpu resource utilization (percentage of request) above target"
