"""The fake Kubernetes API server's objects, in memory: what the real API server's storage and controllers do.

Objects per (resource plural, namespace, name) with ``resourceVersion`` increments, 409 on a stale version or an
existing name, label selectors, JSON merge, the garbage collector's cascade over ``ownerReferences``, Deployment
readiness and HPA scaling, Pending pods; plus the request counters and the injected faults the HTTP front reads.
Errors are ``ApiError``, which the front answers as a ``Status`` object.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

KINDS = {
    "namespaces": "Namespace",
    "pods": "Pod",
    "services": "Service",
    "serviceaccounts": "ServiceAccount",
    "secrets": "Secret",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "resourcequotas": "ResourceQuota",
    "deployments": "Deployment",
    "poddisruptionbudgets": "PodDisruptionBudget",
    "networkpolicies": "NetworkPolicy",
    "horizontalpodautoscalers": "HorizontalPodAutoscaler",
    "httproutes": "HTTPRoute",
}


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def body(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }


@dataclass
class Faults:
    """Injected failures; counters decrement as they fire."""

    fail_next: int = 0
    fail_status: int = 500
    drop_next: int = 0
    conflict_next: int = 0
    latency_s: float = 0.0
    reject_names: dict[str, str] = field(default_factory=dict)  # object name -> 422 message on writes


@dataclass
class Stats:
    reads: int = 0
    writes: int = 0
    write_log: list[tuple[str, str, str, str]] = field(default_factory=list)  # (verb, plural, namespace, name)

    def snapshot(self) -> dict[str, Any]:
        return {"reads": self.reads, "writes": self.writes, "calls": self.reads + self.writes}


def parse_selector(selector: str) -> list[Callable[[dict[str, str]], bool]]:
    """``a=b``, ``a==b``, ``a!=b``, ``a in (x,y)``, ``a notin (x)``, ``a``, ``!a`` joined by commas."""
    tests: list[Callable[[dict[str, str]], bool]] = []
    for part in re.findall(r"[^,(]+(?:\([^)]*\))?", selector):
        term = part.strip()
        if not term:
            continue
        match = re.match(r"^([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)$", term)
        if match:
            key, op, values = match.group(1), match.group(2), {v.strip() for v in match.group(3).split(",")}
            if op == "in":
                tests.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
            else:
                tests.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            tests.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            tests.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif term.startswith("!"):
            absent = term[1:].strip()
            tests.append(lambda labels, k=absent: k not in labels)
        else:
            tests.append(lambda labels, k=term: k in labels)
    return tests


def merge(base: Any, patch: Any) -> Any:
    """JSON merge patch (RFC 7386): objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict) or not isinstance(base, dict):
        return patch
    out = dict(base)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


class Store:
    """The cluster state, guarded by one lock (handlers run on many threads)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        # (plural, namespace) -> {name: object}: lists stay cheap with thousands of objects.
        self.index: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self.version = 0
        self.faults = Faults()
        self.stats = Stats()
        self.auto_ready = True
        self.validator: Callable[[dict[str, Any]], str | None] | None = None

    # -- storage

    def _put(self, plural: str, namespace: str, name: str, obj: dict[str, Any]) -> None:
        self.objects[(plural, namespace, name)] = obj
        self.index.setdefault((plural, namespace), {})[name] = obj

    def _remove(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.index.get((plural, namespace), {}).pop(name, None)
        return self.objects.pop((plural, namespace, name), None)

    # -- helpers used by handlers

    def _next_version(self) -> str:
        self.version += 1
        return str(self.version)

    def _stamp(self, plural: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        meta = obj.setdefault("metadata", {})
        meta["resourceVersion"] = self._next_version()
        if old is None:
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            meta["generation"] = 1
        else:
            meta["uid"] = old["metadata"]["uid"]
            meta["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            spec_changed = old.get("spec") != obj.get("spec")
            meta["generation"] = old["metadata"].get("generation", 1) + (1 if spec_changed else 0)
            if "status" not in obj and "status" in old:
                obj["status"] = old["status"]
        if plural == "deployments" and self.auto_ready:
            self._mark_ready(obj)

    def _mark_ready(self, obj: dict[str, Any]) -> None:
        """The "controller": every replica of a Deployment becomes ready at once."""
        replicas = int(obj.get("spec", {}).get("replicas", 1))
        obj["status"] = {
            "observedGeneration": obj["metadata"].get("generation", 1),
            "replicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "updatedReplicas": replicas,
        }

    def _autoscale(self, namespace: str, hpa: dict[str, Any]) -> None:
        """The HPA controller, at rest: keeps its target's replicas within [minReplicas, maxReplicas]."""
        spec = hpa.get("spec", {})
        target = self.objects.get(("deployments", namespace, spec.get("scaleTargetRef", {}).get("name", "")))
        if target is None:
            return
        current = int(target["spec"].get("replicas", 1))
        wanted = min(max(current, int(spec.get("minReplicas", 1))), int(spec.get("maxReplicas", current)))
        if wanted != current:
            target["spec"]["replicas"] = wanted
            target["metadata"]["resourceVersion"] = self._next_version()
            if self.auto_ready:
                self._mark_ready(target)

    def _check_write(self, obj: dict[str, Any]) -> None:
        name = obj.get("metadata", {}).get("name", "")
        if name in self.faults.reject_names:
            raise ApiError(422, "Invalid", self.faults.reject_names[name])
        if self.validator is not None:
            problem = self.validator(obj)
            if problem:
                raise ApiError(422, "Invalid", f"{obj.get('kind')} {name!r} is invalid: {problem}")

    def _require_namespace(self, namespace: str) -> None:
        if namespace and ("namespaces", "", namespace) not in self.objects:
            raise ApiError(404, "NotFound", f'namespaces "{namespace}" not found')

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        obj = self.objects.get((plural, namespace, name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{plural} "{name}" not found')
        return obj

    def list(self, plural: str, namespace: str | None, selector: str) -> list[dict[str, Any]]:
        tests = parse_selector(selector) if selector else []
        items = []
        if namespace is not None:
            candidates = sorted(self.index.get((plural, namespace), {}).items())
        else:
            candidates = sorted((k[2], o) for k, o in self.objects.items() if k[0] == plural)
        for _, obj in candidates:
            labels = obj.get("metadata", {}).get("labels") or {}
            if all(test(labels) for test in tests):
                items.append(obj)
        return items

    def create(self, plural: str, namespace: str, obj: dict[str, Any], api_version: str) -> dict[str, Any]:
        name = obj.get("metadata", {}).get("name")
        if not name:
            raise ApiError(422, "Invalid", "metadata.name: Required value")
        self._require_namespace(namespace)
        if (plural, namespace, name) in self.objects:
            raise ApiError(409, "AlreadyExists", f'{plural} "{name}" already exists')
        obj = json.loads(json.dumps(obj))
        obj.setdefault("apiVersion", api_version)
        obj.setdefault("kind", KINDS[plural])
        if namespace:
            obj["metadata"]["namespace"] = namespace
        self._check_write(obj)
        self._stamp(plural, obj, None)
        self._put(plural, namespace, name, obj)
        if plural == "horizontalpodautoscalers":
            self._autoscale(namespace, obj)
        return obj

    def update(
        self, plural: str, namespace: str, name: str, new: dict[str, Any], check_version: bool
    ) -> dict[str, Any]:
        old = self.get(plural, namespace, name)
        wanted = new.get("metadata", {}).get("resourceVersion")
        if check_version and wanted and wanted != old["metadata"]["resourceVersion"]:
            raise ApiError(
                409, "Conflict", f'Operation cannot be fulfilled on {plural} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again"
            )
        new = json.loads(json.dumps(new))
        new["metadata"]["name"] = name
        if namespace:
            new["metadata"]["namespace"] = namespace
        new.setdefault("apiVersion", old.get("apiVersion"))
        new.setdefault("kind", old.get("kind"))
        self._check_write(new)
        self._stamp(plural, new, old)
        self._put(plural, namespace, name, new)
        if plural == "horizontalpodautoscalers":
            self._autoscale(namespace, new)
        return new

    def apply(self, plural: str, namespace: str, name: str, obj: dict[str, Any], api_version: str) -> tuple[int, Any]:
        """Server-side apply without managedFields: create, or merge the applied fields (lists replace)."""
        if (plural, namespace, name) not in self.objects:
            obj = {**obj, "metadata": {**obj.get("metadata", {}), "name": name}}
            return 201, self.create(plural, namespace, obj, api_version)
        old = self.get(plural, namespace, name)
        applied = {k: v for k, v in obj.items() if k != "status"}
        merged = merge(old, applied)
        merged["metadata"].pop("resourceVersion", None)
        return 200, self.update(plural, namespace, name, merged, check_version=False)

    def delete(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        obj = self._remove(plural, namespace, name)
        if obj is None:
            raise ApiError(404, "NotFound", f'{plural} "{name}" not found')
        self._next_version()
        if plural == "namespaces":
            for key in [k for k in self.objects if k[1] == name]:
                self._remove(*key)
        else:
            self._cascade(namespace, obj["metadata"]["uid"])
        return obj

    def _cascade(self, namespace: str, uid: str) -> None:
        children = [(p, o) for (p, ns), objs in self.index.items() if ns == namespace for o in objs.values()]
        for plural, child in children:
            owners = child.get("metadata", {}).get("ownerReferences") or []
            if any(o.get("uid") == uid for o in owners):
                if self._remove(plural, namespace, child["metadata"]["name"]) is None:
                    continue
                self._cascade(namespace, child["metadata"]["uid"])

    # -- test controls (no API call is counted)

    def set_status(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        with self.lock:
            obj = self.get(plural, namespace, name)
            obj["status"] = merge(obj.get("status") or {}, status)
            obj["metadata"]["resourceVersion"] = self._next_version()

    def add_pending_pod(self, namespace: str, name: str, labels: dict[str, str], message: str) -> None:
        """A pod the scheduler could not place, as ``kubectl describe`` would show it."""
        with self.lock:
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "spec": {"containers": [{"name": "model", "image": "x"}]},
                "status": {
                    "phase": "Pending",
                    "conditions": [
                        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
                    ],
                },
            }
            self._stamp("pods", pod, None)
            self._put("pods", namespace, name, pod)

    def set_pod_running(self, namespace: str, name: str) -> None:
        running = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        self.set_status("pods", namespace, name, running)

    def count_by_label(self, selector: str) -> int:
        with self.lock:
            return sum(len(self.list(p, None, selector)) for p in KINDS)

    def reset_stats(self) -> None:
        with self.lock:
            self.stats = Stats()
