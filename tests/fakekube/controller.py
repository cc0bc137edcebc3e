"""The cluster's controllers over the fake's objects, deterministic: ``step()`` runs each once over the namespaces
that changed (or whose timers are due on the store's clock), ``settle()`` steps until nothing changes, and
``start()`` runs steps on a background thread (the benchmark's cluster).

In one step, per namespace: the HPA controller (``kube-controller-manager`` writes ``spec.replicas`` through the
scale subresource, so it owns that field), the Deployment controller (``rollouts.py``) and the ReplicaSet
controller (``workloads.py``), the kubelet (``kubelet.py``) for scheduled pods, the scheduler for pending ones
(``scheduling.py``), then EndpointSlices, ResourceQuota usage, claims and PodDisruptionBudget status
(``status_controllers.py``). An object whose inputs did not change since its last sync is skipped. Events (v1)
are recorded as the real components word them.

An HPA at rest keeps its target within ``[minReplicas, maxReplicas]``; ``recommend()`` sets what its metrics
would ask for. Pod faults (``inject()``) are the kubelet's.
"""

from __future__ import annotations

import calendar
import json
import threading
import time
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from tests.fakekube import garbage, scheduling, status_controllers
from tests.fakekube.kinds import RESOURCES, forbidden
from tests.fakekube.kubelet import Kubelet, PodFault, qos_class
from tests.fakekube.rollouts import sync_deployment
from tests.fakekube.workloads import (
    MANAGER,
    controller_of,
    is_ready,
    owner_ref,
    ready_since,
    sync_replicaset,
)

if TYPE_CHECKING:
    from tests.fakekube.store import Store

# The components events name as their source.
_COMPONENTS = {
    "Deployment": "deployment-controller",
    "ReplicaSet": "replicaset-controller",
    "Pod": "kubelet",
    "HorizontalPodAutoscaler": "horizontal-pod-autoscaler",
}


class Controller:
    """Every controller of the fake cluster; the store calls ``notice`` on each change."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.kubelet = Kubelet(self)
        self.image_faults: dict[str, PodFault] = {}
        self.pod_faults: dict[tuple[str, str], PodFault] = {}
        self.hpa_recommendations: dict[tuple[str, str], int] = {}
        self.preemption_message = True  # the default scheduler appends the preemption plugin's clause
        self.dirty: set[str] = set()
        self.wake: dict[str, float] = {}
        self.creation_order: dict[str, int] = {}
        # Steps run, and the step in which each terminating pod started terminating: it is gone a step later.
        self.steps = 0
        self.terminating_since: dict[tuple[str, str], int] = {}
        self._created = 0
        self._pod_ips = 0
        self._node_ips: dict[str, str] = {}
        # Scheduling: what each bound pod takes from its node, and when unschedulable pods were last tried.
        self.bound: dict[tuple[str, str], tuple[str, dict[str, Fraction]]] = {}
        self.node_used: dict[str, dict[str, Fraction]] = {}
        self.node_pods: dict[str, int] = {}
        self.capacity_version = 0
        self.tried: dict[tuple[str, str], int] = {}
        self._placements: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {}
        self.unschedulable_in: set[str] = set()
        # Pod creation refused by quota, per ReplicaSet uid: (quota version then, the message).
        self.quota_version: dict[str, int] = {}
        self.refused: dict[str, tuple[int, str]] = {}
        self.quota_hard: dict[tuple[str, str], Any] = {}
        # What each object's controller last saw (resourceVersions of it and its inputs): unchanged means no work.
        self.synced: dict[tuple[str, str], Any] = {}
        self.pods_version: dict[str, int] = {}
        self.faults_version = 0
        self._events: dict[tuple[str, str, str, str], str] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------------ what tests call

    def inject(
        self, fault: str, image: str | None = None, pod: str | None = None, namespace: str = "", message: str = ""
    ) -> None:
        """Make containers of ``image`` (or the pod ``namespace/pod``) fail as ``fault`` says (``kubelet.FAULTS``)."""
        with self.store.lock:
            entry = PodFault(fault, message)
            if image is not None:
                self.image_faults[image] = entry
            if pod is not None:
                self.pod_faults[(namespace, pod)] = entry
            self._mark_all()

    def clear_faults(self) -> None:
        with self.store.lock:
            self.image_faults.clear()
            self.pod_faults.clear()
            self._mark_all()

    def recommend(self, namespace: str, hpa: str, replicas: int) -> None:
        """What the HPA's metrics ask for (it still keeps to its bounds)."""
        with self.store.lock:
            self.hpa_recommendations[(namespace, hpa)] = replicas
            self.dirty.add(namespace)

    def step(self) -> bool:
        """Run every controller once over what changed; True when anything was written. The lock is taken per
        namespace, so API calls go on between them while a background thread steps."""
        with self.store.lock:
            before = self.store.version
            now = self.store.clock()
            due = {ns for ns, at in self.wake.items() if at <= now}
            for ns in due:
                del self.wake[ns]
            namespaces, self.dirty = sorted((self.dirty | due) - {""}), set()
            self.steps += 1
        for namespace in namespaces:
            with self.store.lock:
                self._sync(namespace, namespace in due)
        with self.store.lock:
            return self.store.version != before

    def settle(self, max_steps: int = 60) -> int:
        """Step until a step changes nothing (or ``max_steps``); the number of steps that changed something."""
        for n in range(max_steps):
            if not self.step():
                return n
        return max_steps

    def start(self, interval_s: float = 0.05) -> None:
        """Step on a background thread every ``interval_s`` (writes no longer settle on their own)."""
        self.store.auto_ready = False
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(interval_s,), name="fakekube-controller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            while self.step() and not self._stop.is_set():
                pass

    # ------------------------------------------------------------------ bookkeeping the store feeds

    def notice(self, plural: str, namespace: str, obj: dict[str, Any], removed: bool = False) -> None:
        if plural == "events":
            return
        if plural == "nodes":
            self.capacity_version += 1
            self._mark_all()
            return
        self.dirty.add(namespace)
        if plural == "resourcequotas":
            hard = None if removed else (obj.get("spec") or {}).get("hard")
            if self.quota_hard.get((namespace, obj["metadata"]["name"])) != hard:  # not its status
                self.quota_hard[(namespace, obj["metadata"]["name"])] = hard
                self._quota_changed(namespace)
        if plural != "pods":
            return
        self.pods_version[namespace] = self.pods_version.get(namespace, 0) + 1
        uid = obj["metadata"].get("uid", "")
        if uid and uid not in self.creation_order:
            self._created += 1
            self.creation_order[uid] = self._created
        key = (namespace, obj["metadata"]["name"])
        if "deletionTimestamp" in obj["metadata"] and not removed and key not in self.terminating_since:
            self.terminating_since[key] = self.steps
            self.dirty.add(namespace)
        spec = obj.get("spec") or {}
        node = spec.get("nodeName") or ""
        takes = node and not removed and scheduling.counts_against_quota(obj)
        previous = self.bound.pop(key, None)
        if previous is not None:
            self._release(*previous)
        if takes:
            requests = previous[1] if previous and previous[0] == node else scheduling.pod_requests(obj)
            self.bound[key] = (node, requests)
            used = self.node_used.setdefault(node, {})
            for name, amount in requests.items():
                used[name] = used.get(name, Fraction(0)) + amount
            self.node_pods[node] = self.node_pods.get(node, 0) + 1
        if removed:
            self.synced.pop(("pod", uid), None)
            self.terminating_since.pop(key, None)
            self.creation_order.pop(uid, None)
            self.tried.pop(key, None)
            self.kubelet.forget(*key)
            self._quota_changed(namespace)
        if previous is not None and not takes:
            self.capacity_version += 1
            for waiting in self.unschedulable_in:
                self.dirty.add(waiting)

    def _release(self, node: str, requests: dict[str, Fraction]) -> None:
        used = self.node_used.setdefault(node, {})
        for name, amount in requests.items():
            used[name] = used.get(name, Fraction(0)) - amount
        self.node_pods[node] = self.node_pods.get(node, 1) - 1

    def _quota_changed(self, namespace: str) -> None:
        self.quota_version[namespace] = self.quota_version.get(namespace, 0) + 1

    def _mark_all(self) -> None:
        self.faults_version += 1
        self.dirty.update(ns for (plural, _ns, ns) in self.store.objects if plural == "namespaces")

    def terminated_before_this_step(self, namespace: str, name: str) -> bool:
        return self.terminating_since.get((namespace, name), self.steps) < self.steps

    def wake_at(self, namespace: str, at: float) -> None:
        self.wake[namespace] = min(self.wake.get(namespace, at), at)

    @staticmethod
    def parse_time(text: str) -> float:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))

    def allocate_pod_ip(self) -> str:
        self._pod_ips += 1
        n = self._pod_ips
        return f"10.244.{n // 250}.{n % 250 + 2}"

    def node_ip(self, node: dict[str, Any]) -> str:
        name = node["metadata"]["name"]
        if name not in self._node_ips:
            n = len(self._node_ips) + 2
            self._node_ips[name] = f"10.0.{n // 250}.{n % 250 + 1}"
        return self._node_ips[name]

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """A v1 Event about ``obj``; the same one again counts up."""
        store = self.store
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        if ("namespaces", "", namespace) not in store.objects:
            return
        key = (namespace, meta.get("uid", ""), reason, message)
        now = store.timestamp()
        existing = store.objects.get(("events", namespace, self._events.get(key, "")))
        if existing is not None:
            store.write_internal(
                "events", namespace, {**existing, "count": int(existing.get("count", 1)) + 1, "lastTimestamp": now}
            )
            return
        name = f"{meta['name']}.{int(store.clock() * 1e9) + len(self._events):x}"
        self._events[key] = name
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", ""),
                "kind": obj.get("kind", ""),
                "name": meta["name"],
                "namespace": namespace,
                "uid": meta.get("uid", ""),
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": _COMPONENTS.get(str(obj.get("kind")), "fakekube")},
            "reportingComponent": _COMPONENTS.get(str(obj.get("kind")), "fakekube"),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        store.write_internal("events", namespace, event)

    # ------------------------------------------------------------------ pods: creation, quota, availability

    def admit_pod(self, namespace: str, pod: dict[str, Any]) -> None:
        """ResourceQuota admission: raise the 403 the API server answers for a pod past a quota."""
        quotas = self.store.list("resourcequotas", namespace, "")
        if not quotas:
            return
        used: dict[str, Fraction] = {}
        for other in self.store.list("pods", namespace, ""):
            if scheduling.counts_against_quota(other):
                for name, amount in scheduling.quota_usage(other).items():
                    used[name] = used.get(name, Fraction(0)) + amount
        for quota in quotas:
            refusal = scheduling.quota_refusal(quota, used, pod)
            if refusal:
                raise forbidden(RESOURCES["pods"], pod["metadata"]["name"], refusal)

    def create_pod(self, namespace: str, rs: dict[str, Any]) -> dict[str, Any]:
        template = rs["spec"]["template"]  # read only: the write path copies what it stores
        meta = template.get("metadata") or {}
        prefix = f"{rs['metadata']['name']}-"
        pod: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.store.generate_name("pods", namespace, prefix),
                "generateName": prefix,
                "labels": dict(meta.get("labels") or {}),
                "ownerReferences": [owner_ref(rs)],
            },
            "spec": template.get("spec") or {},
        }
        if meta.get("annotations"):
            pod["metadata"]["annotations"] = dict(meta["annotations"])
        created = self.store.create("pods", namespace, pod, manager=MANAGER, validate=False, settle=False)
        initial = {"phase": "Pending", "qosClass": qos_class(created.get("spec") or {})}
        self.store.write_status("pods", namespace, created["metadata"]["name"], initial)
        return self.store.get("pods", namespace, created["metadata"]["name"])

    def may_create_pods(self, namespace: str, rs_uid: str) -> bool:
        """After a refusal, try again once the namespace's pods or quota changed (or 30 s passed)."""
        refused = self.refused.get(rs_uid)
        return refused is None or refused[0] != self.quota_version.get(namespace, 0)

    def creation_failed(self, namespace: str, rs_uid: str, message: str = "") -> None:
        self.refused[rs_uid] = (self.quota_version.get(namespace, 0), message)
        self.wake_at(namespace, self.store.clock() + 30)

    def creation_succeeded(self, namespace: str, rs_uid: str) -> None:
        self.refused.pop(rs_uid, None)

    def last_failure(self, namespace: str, rs_uid: str) -> str | None:
        refused = self.refused.get(rs_uid)
        return refused[1] if refused else None

    def is_available(self, pod: dict[str, Any], min_ready_s: int) -> bool:
        if not is_ready(pod):
            return False
        if min_ready_s <= 0:
            return True
        since = ready_since(pod)
        return bool(since) and self.parse_time(since) + min_ready_s <= self.store.clock()

    def sibling_replicasets(self, namespace: str, rs: dict[str, Any]) -> set[str]:
        owner = controller_of(rs)
        return {
            other["metadata"]["uid"]
            for other in self.store.list("replicasets", namespace, "")
            if owner is not None and controller_of(other) == owner
        } | {rs["metadata"]["uid"]}

    def remove_replicaset(self, namespace: str, rs: dict[str, Any]) -> None:
        self.store._remove("replicasets", namespace, rs["metadata"]["name"])
        garbage.cascade(self.store, namespace, rs["metadata"]["uid"])

    # ------------------------------------------------------------------ one namespace, every controller once

    def _unchanged(self, kind: str, obj: dict[str, Any], *inputs: Any) -> bool:
        """True when ``obj`` and what its controller reads are as at its last sync (nothing to do then)."""
        signature = (obj["metadata"].get("resourceVersion"), inputs)
        key = (kind, obj["metadata"].get("uid", ""))
        if self.synced.get(key) == signature:
            return True
        self.synced[key] = signature
        return False

    def _sync(self, namespace: str, forced: bool) -> None:
        """Every controller over one namespace; ``forced`` (a timer fell due) looks at objects that did not change."""
        store = self.store
        if forced:
            uids = self._uids_in(namespace)
            self.synced = {k: v for k, v in self.synced.items() if k[1] not in uids}
        for hpa in store.list("horizontalpodautoscalers", namespace, ""):
            ref = str(((hpa.get("spec") or {}).get("scaleTargetRef") or {}).get("name", ""))
            target = store.objects.get(("deployments", namespace, ref)) or {"metadata": {}}
            recommendation = self.hpa_recommendations.get((namespace, hpa["metadata"]["name"]))
            if not self._unchanged("hpa", hpa, target["metadata"].get("resourceVersion"), recommendation):
                status_controllers.sync_hpa(self, namespace, hpa)
        replicasets = store.list("replicasets", namespace, "")
        for deployment in store.list("deployments", namespace, ""):
            uid = deployment["metadata"]["uid"]
            owned = tuple(
                (r["metadata"]["uid"], r["metadata"]["resourceVersion"]) for r in replicasets if controller_of(r) == uid
            )
            if not self._unchanged("deployment", deployment, owned):
                sync_deployment(self, namespace, deployment, replicasets)
        pods = store.list("pods", namespace, "")
        quota = self.quota_version.get(namespace, 0)
        for rs in store.list("replicasets", namespace, ""):
            uid = rs["metadata"]["uid"]
            owned = tuple(
                (p["metadata"]["uid"], p["metadata"]["resourceVersion"]) for p in pods if controller_of(p) == uid
            )
            if not self._unchanged("replicaset", rs, owned, quota):
                sync_replicaset(self, namespace, rs, pods)
        for pod in store.list("pods", namespace, ""):
            if (pod.get("spec") or {}).get("nodeName") and (
                "deletionTimestamp" in pod["metadata"] or not self._unchanged("pod", pod, self.faults_version)
            ):
                self.kubelet.sync(namespace, pod)
        self.unschedulable_in.discard(namespace)
        for pod in store.list("pods", namespace, ""):
            if not (pod.get("spec") or {}).get("nodeName") and "deletionTimestamp" not in pod["metadata"]:
                self._schedule(namespace, pod)
            elif "deletionTimestamp" in pod["metadata"] and not (pod.get("spec") or {}).get("nodeName"):
                store._remove("pods", namespace, pod["metadata"]["name"])  # never ran: nothing to stop
        pods_version = self.pods_version.get(namespace, 0)
        for service in store.list("services", namespace, ""):
            if not self._unchanged("service", service, pods_version):
                status_controllers.sync_slices(self, namespace, service)
        for quota_obj in store.list("resourcequotas", namespace, ""):
            if not self._unchanged("quota", quota_obj, pods_version):
                status_controllers.sync_quota(self, namespace, quota_obj)
        for claim in store.list("persistentvolumeclaims", namespace, ""):
            if not self._unchanged("claim", claim):
                status_controllers.bind_claim(self, namespace, claim)
        for pdb in store.list("poddisruptionbudgets", namespace, ""):
            if not self._unchanged("pdb", pdb, pods_version):
                status_controllers.sync_pdb(self, namespace, pdb)

    def _uids_in(self, namespace: str) -> set[str]:
        return {
            obj["metadata"].get("uid", "")
            for (_plural, ns), objs in self.store.index.items()
            if ns == namespace
            for obj in objs.values()
        }

    def _schedule(self, namespace: str, pod: dict[str, Any]) -> None:
        store = self.store
        spec = pod.get("spec") or {}
        if spec.get("schedulerName", "default-scheduler") != "default-scheduler":
            return
        key = (namespace, pod["metadata"]["name"])
        if self.tried.get(key) == self.capacity_version:
            self.unschedulable_in.add(namespace)
            return
        nodes = store.list("nodes", "", "")
        requests = scheduling.pod_requests(pod)
        placement = self._placement_reasons(pod, nodes)
        reasons, helpful, feasible = [], [], []
        for node in nodes:
            name = node["metadata"]["name"]
            if name in placement:
                reasons.append([placement[name]])
                helpful.append(False)
                continue
            why, could_preempt = scheduling.node_reasons(
                pod, node, self.node_used.get(name, {}), self.node_pods.get(name, 0), requests
            )
            if why:
                reasons.append(why)
                helpful.append(could_preempt)
            else:
                score = scheduling.least_allocated_score(node, self.node_used.get(name, {}), requests)
                feasible.append((-score, name, node))
        now = store.timestamp()
        previous = pod.get("status") or {}
        if not feasible:
            self.tried[key] = self.capacity_version
            self.unschedulable_in.add(namespace)
            message = scheduling.unschedulable_message(len(nodes), reasons, helpful, self.preemption_message)
            old: dict[str, Any] = next(
                (c for c in previous.get("conditions") or [] if c.get("type") == "PodScheduled"), {}
            )
            condition = {
                "type": "PodScheduled",
                "status": "False",
                "lastTransitionTime": old.get("lastTransitionTime", now) if old.get("status") == "False" else now,
                "reason": "Unschedulable",
                "message": message,
            }
            status = {**previous, "phase": "Pending", "conditions": [condition]}
            if status != previous:
                store.write_status("pods", namespace, pod["metadata"]["name"], status)
                self.event(pod, "Warning", "FailedScheduling", message)
            return
        self.tried.pop(key, None)
        _, node_name, _node = min(feasible)
        bound = {**pod, "spec": {**pod["spec"], "nodeName": node_name}}
        bound["status"] = {
            **previous,
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now}],
        }
        store.write_internal("pods", namespace, bound)
        self.event(
            pod, "Normal", "Scheduled", f"Successfully assigned {namespace}/{pod['metadata']['name']} to {node_name}"
        )

    def _placement_reasons(self, pod: dict[str, Any], nodes: list[dict[str, Any]]) -> dict[str, str]:
        """Nodes the pod's selector, affinity and tolerations rule out, with why: the same for every pod of a
        template, so worked out once per placement and version of the nodes."""
        spec = pod.get("spec") or {}
        key = json.dumps([spec.get(k) for k in ("nodeSelector", "affinity", "tolerations")], sort_keys=True)
        nodes_key = tuple(n["metadata"]["resourceVersion"] for n in nodes)
        cached = self._placements.get(key)
        if cached is None or cached[0] != nodes_key:
            unfit = {}
            bare = {"spec": {k: spec[k] for k in ("nodeSelector", "affinity", "tolerations") if k in spec}}
            for node in nodes:
                why, _ = scheduling.node_reasons(bare, node, {}, 0, {})
                if why:
                    unfit[node["metadata"]["name"]] = why[0]
            if len(self._placements) > 1000:
                self._placements.clear()
            cached = self._placements[key] = (nodes_key, unfit)
        return cached[1]
