"""The fake Kubernetes API server's objects, in memory, and the write path the real API server runs for each verb.

Objects per (resource plural, namespace, name). Every write goes through one path: the verb's own merge (server-side
apply with field managers, JSON merge, strategic merge or JSON patch, replace), the status subresource rule (the main
resource ignores ``status``, ``/status`` changes nothing else), defaults, canonical quantities, empty optional
fields dropped, name, label and schema checks, ``generation`` and ``resourceVersion`` (not bumped by a write that
changes nothing), ``managedFields``. Deleting cascades over ``ownerReferences`` (pods terminate gracefully); pods
are admitted against the namespace's ResourceQuota. ``controller.py`` plays the cluster's controllers over it.

For tests: request counters and a write log, injected faults the HTTP front reads, direct status control, and
``auto_ready`` (the controllers settle after every write, so a Deployment is ready when its write returns).
Errors are ``ApiError``, which the front answers as a ``Status`` object.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from tests.fakekube import apply as ssa
from tests.fakekube import garbage
from tests.fakekube.admission import apply_defaults, canonicalize_quantities, check_write, drop_empty_fields
from tests.fakekube.cluster import NodeSpec, node_object
from tests.fakekube.controller import Controller
from tests.fakekube.faults import Faults as Faults
from tests.fakekube.faults import Stats as Stats
from tests.fakekube.kinds import KINDS as KINDS
from tests.fakekube.kinds import RESOURCES, Resource, already_exists, bad_request, not_found, stale
from tests.fakekube.kinds import ApiError as ApiError
from tests.fakekube.names import invalid, invalid_value, required
from tests.fakekube.selectors import parse_field_selector, parse_selector

# Metadata the server owns: whatever a client sends there is replaced.
_SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "selfLink",
)
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # apimachinery's rand.String alphabet (no vowels, no 0/1/3)


def _spec_of(obj: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (obj or {}).items() if k not in ("metadata", "status")}


class Store:
    """The cluster state, guarded by one lock (handlers run on many threads, the controller on its own)."""

    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        self.lock = threading.RLock()
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        # (plural, namespace) -> {name: object}: lists stay cheap with thousands of objects.
        self.index: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self.managed: dict[tuple[str, str, str], list[ssa.Entry]] = {}
        self.version = 0
        self.faults = Faults()
        self.stats = Stats()
        # The controllers settle after every API write: what a Deployment needs is ready when the write returns.
        self.auto_ready = True
        self.validator: Callable[[dict[str, Any]], str | None] | None = None
        self.clock: Callable[[], float] = clock or time.time
        self.controller = Controller(self)
        self._service_ips = 10
        self._random = random.Random(0)  # uids: unique per store, the same in every run
        self._names = 0

    # ------------------------------------------------------------------ storage

    def _put(self, plural: str, namespace: str, name: str, obj: dict[str, Any]) -> None:
        self.objects[(plural, namespace, name)] = obj
        self.index.setdefault((plural, namespace), {})[name] = obj
        self.controller.notice(plural, namespace, obj)

    def _remove(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.index.get((plural, namespace), {}).pop(name, None)
        self.managed.pop((plural, namespace, name), None)
        obj = self.objects.pop((plural, namespace, name), None)
        if obj is not None:
            self.version += 1
            self.controller.notice(plural, namespace, obj, removed=True)
        return obj

    def timestamp(self, at: float | None = None) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock() if at is None else at))

    def generate_name(self, plural: str, namespace: str, prefix: str) -> str:
        """``prefix`` and 5 characters, deterministic per store (apimachinery's ``SimpleNameGenerator``)."""
        while True:
            self._names += 1
            n, suffix = self._names * 2654435761 % 27**5, ""
            for _ in range(5):
                n, digit = divmod(n, 27)
                suffix += _NAME_CHARS[digit]
            name = f"{prefix[: 63 - 5]}{suffix}"
            if (plural, namespace, name) not in self.objects:
                return name

    def _allocate_service_ip(self) -> str:
        self._service_ips += 1
        n = self._service_ips
        return f"10.96.{n // 250}.{n % 250 + 1}"

    def _require_namespace(self, namespace: str) -> None:
        if namespace and ("namespaces", "", namespace) not in self.objects:
            raise not_found(RESOURCES["namespaces"], namespace)

    def _check(self, resource: Resource, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        name = obj["metadata"].get("name", "")
        if name in self.faults.reject_names:
            raise ApiError(422, "Invalid", self.faults.reject_names[name])
        check_write(resource, obj, old)
        if self.validator is not None:
            problem = self.validator(obj)
            if problem:
                raise ApiError(422, "Invalid", f'{resource.qualified_kind} "{name}" is invalid: {problem}')

    def _store(
        self,
        resource: Resource,
        namespace: str,
        new: dict[str, Any],
        old: dict[str, Any] | None,
        *,
        entries: list[ssa.Entry] | None = None,
        manager: str = "",
        subresource: str = "",
        validate: bool = True,
    ) -> dict[str, Any]:
        """The write path every verb ends in; returns what is stored (``old`` itself when nothing changed)."""
        new = json.loads(json.dumps(new))  # callers may pass views of stored objects: never change those
        meta = new.setdefault("metadata", {})
        name = meta["name"]
        if resource.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        new["apiVersion"], new["kind"] = resource.api_version, resource.kind
        apply_defaults(resource, new, self._allocate_service_ip)
        canonicalize_quantities(resource, new)
        new = drop_empty_fields(resource, new)
        meta = new["metadata"]
        for server_field in _SERVER_METADATA:
            meta.pop(server_field, None)
        if validate:
            self._check(resource, new, old)
        key = (resource.plural, namespace, name)
        now = self.timestamp()
        if entries is None:
            entries = self.managed.get(key, [])
            if manager:
                entries = ssa.update_ownership(
                    resource, old, new, entries, manager, resource.api_version, now, subresource
                )
        if old is None:
            meta["uid"] = str(uuid.UUID(int=self._random.getrandbits(128), version=4))
            meta["creationTimestamp"] = now
            meta["generation"] = 1
        else:
            old_meta = old["metadata"]
            meta["uid"], meta["creationTimestamp"] = old_meta["uid"], old_meta["creationTimestamp"]
            for carried in ("deletionTimestamp", "deletionGracePeriodSeconds"):
                if carried in old_meta:
                    meta[carried] = old_meta[carried]
            changed = _spec_of(old) != _spec_of(new)
            meta["generation"] = old_meta.get("generation", 1) + (1 if changed else 0)
        if entries and old is not None and entries is self.managed.get(key) and "managedFields" in old["metadata"]:
            meta["managedFields"] = old["metadata"]["managedFields"]  # the same owners: rendered already
        elif entries:
            meta["managedFields"] = [e.to_json() for e in entries]
        if old is not None:
            meta["resourceVersion"] = old["metadata"]["resourceVersion"]
            if new == old:
                return old
        self.version += 1
        meta["resourceVersion"] = str(self.version)
        self.managed[key] = entries
        self._put(resource.plural, namespace, name, new)
        return new

    def _settle(self) -> None:
        if self.auto_ready:
            self.controller.settle()

    # ------------------------------------------------------------------ reads

    def get(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        obj = self.objects.get((plural, namespace, name))
        if obj is None:
            raise not_found(RESOURCES[plural], name)
        return obj

    def list(self, plural: str, namespace: str | None, selector: str, field_selector: str = "") -> list[dict[str, Any]]:
        tests = parse_selector(selector) if selector else []
        field_tests = parse_field_selector(field_selector) if field_selector else []
        items = []
        if namespace is None and not RESOURCES[plural].namespaced:
            namespace = ""  # every one of a cluster-scoped kind: its index
        if namespace is not None:
            candidates = sorted(self.index.get((plural, namespace), {}).items())
        else:
            candidates = sorted((k[2], o) for k, o in self.objects.items() if k[0] == plural)
        for _, obj in candidates:
            labels = obj.get("metadata", {}).get("labels") or {}
            if all(test(labels) for test in tests) and all(test(obj) for test in field_tests):
                items.append(obj)
        return items

    # ------------------------------------------------------------------ writes (the API's verbs)

    def create(
        self,
        plural: str,
        namespace: str,
        obj: dict[str, Any],
        api_version: str = "",
        manager: str = "unknown",
        *,
        validate: bool = True,
        settle: bool = True,
    ) -> dict[str, Any]:
        resource = RESOURCES[plural]
        obj = {**obj, "metadata": dict(obj.get("metadata") or {})}  # the write path copies the rest
        meta = obj["metadata"]
        if resource.namespaced and meta.get("namespace") not in (None, "", namespace):
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        name = meta.get("name")
        if not name and meta.get("generateName"):
            name = self.generate_name(plural, namespace, str(meta["generateName"]))
        if not name:
            raise invalid(resource, "", [required("metadata.name", "name or generateName is required")])
        meta["name"] = name
        self._require_namespace(namespace)
        if (plural, namespace, name) in self.objects:
            raise already_exists(resource, name)
        if resource.status and plural not in ("namespaces", "nodes"):
            obj.pop("status", None)
        if plural == "pods":
            self.controller.admit_pod(namespace, obj)
        stored = self._store(resource, namespace, obj, None, manager=manager, validate=validate)
        if settle:
            self._settle()
        return stored

    def update(
        self,
        plural: str,
        namespace: str,
        name: str,
        new: dict[str, Any],
        check_version: bool,
        manager: str = "unknown",
        subresource: str = "",
    ) -> dict[str, Any]:
        resource = RESOURCES[plural]
        old = self.get(plural, namespace, name)
        wanted = (new.get("metadata") or {}).get("resourceVersion")
        if check_version and wanted and wanted != old["metadata"]["resourceVersion"]:
            raise stale(resource, name)
        body = dict(new)  # the write path copies it whole before changing anything deeper
        if subresource == "status":
            body = {**old, "status": body.get("status")}
        elif resource.status:
            body.pop("status", None)
            if "status" in old:
                body["status"] = old["status"]
        body["metadata"] = {**(body.get("metadata") or {}), "name": name}
        stored = self._store(
            resource, namespace, body, old, manager=manager, subresource=subresource, validate=subresource != "status"
        )
        self._settle()
        return stored

    def patch(
        self,
        plural: str,
        namespace: str,
        name: str,
        body: Any,
        content_type: str,
        manager: str = "unknown",
        subresource: str = "",
    ) -> dict[str, Any]:
        """JSON patch, JSON merge patch, or (for built-in kinds) strategic merge patch."""
        resource = RESOURCES[plural]
        old = self.get(plural, namespace, name)
        if "json-patch" in content_type:
            new = ssa.json_patch(old, body)
        elif "merge-patch" in content_type and "strategic" not in content_type:
            new = ssa.merge_patch(old, body)
        elif not resource.builtin:
            raise ApiError(
                415,
                "UnsupportedMediaType",
                "the body of the request was in an unknown format - accepted media types include: "
                "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            )
        else:
            new = ssa.strategic_merge_patch(old, body)
        wanted = ((body if isinstance(body, dict) else {}).get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            raise stale(resource, name)
        new = {
            **new,
            "metadata": {**(new.get("metadata") or {}), "resourceVersion": old["metadata"]["resourceVersion"]},
        }
        return self.update(plural, namespace, name, new, check_version=False, manager=manager, subresource=subresource)

    def apply(
        self,
        plural: str,
        namespace: str,
        name: str,
        obj: dict[str, Any],
        api_version: str = "",
        manager: str = "",
        force: bool = False,
        subresource: str = "",
    ) -> tuple[int, dict[str, Any]]:
        """Server-side apply (``application/apply-patch+yaml``) for ``manager``: (201 created | 200, the object)."""
        resource = RESOURCES[plural]
        if not manager:
            raise bad_request("PATCH /apply requires fieldManager to be set")
        if not isinstance(obj, dict):
            raise bad_request("error decoding YAML: the apply body is not an object")
        body_name = (obj.get("metadata") or {}).get("name")
        if body_name and body_name != name:
            raise bad_request(f"the name of the object ({body_name}) does not match the name on the URL ({name})")
        applied = ssa.applied_config(resource, json.loads(json.dumps(obj)))
        applied["metadata"]["name"] = name
        canonicalize_quantities(resource, applied)
        old = self.objects.get((plural, namespace, name))
        now = self.timestamp()
        wanted = (obj.get("metadata") or {}).get("resourceVersion")
        if old is None:
            if wanted:
                raise not_found(resource, name)
            self._require_namespace(namespace)
            merged, entries = ssa.apply(resource, None, applied, [], manager, force, resource.api_version, now)
            if plural == "pods":
                self.controller.admit_pod(namespace, merged)
            stored = self._store(resource, namespace, merged, None, entries=entries)
            self._settle()
            return 201, stored
        if wanted and wanted != old["metadata"]["resourceVersion"]:
            raise stale(resource, name)
        if subresource == "status":
            new = {**old, "status": ssa.merge_patch(old.get("status") or {}, obj.get("status") or {})}
            stored = self._store(resource, namespace, new, old, validate=False)
            self._settle()
            return 200, stored
        current = self.managed.get((plural, namespace, name), [])
        merged, entries = ssa.apply(resource, old, applied, current, manager, force, resource.api_version, now)
        stored = self._store(resource, namespace, merged, old, entries=entries)
        self._settle()
        return 200, stored

    def delete(
        self, plural: str, namespace: str, name: str, propagation: str = "Background", grace_s: int | None = None
    ) -> dict[str, Any]:
        """Delete; a pod first terminates (``deletionTimestamp``) and goes at the kubelet's next step."""
        obj = self.get(plural, namespace, name)
        if plural == "pods" and grace_s != 0:
            gone = garbage.terminate(self, namespace, obj, grace_s)
            self._settle()
            return gone
        self._remove(plural, namespace, name)
        if plural == "namespaces":
            for key in [k for k in self.objects if k[1] == name]:
                self._remove(*key)
            obj = {**obj, "status": {"phase": "Terminating"}}
        elif propagation == "Orphan":
            garbage.orphan(self, namespace, obj["metadata"]["uid"])
        else:
            garbage.cascade(self, namespace, obj["metadata"]["uid"])
        self._settle()
        return {**obj, "metadata": {**obj["metadata"], "deletionTimestamp": self.timestamp()}}

    # ------------------------------------------------------------------ the scale subresource

    def read_scale(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        obj = self.get(plural, namespace, name)
        selector = (obj.get("spec") or {}).get("selector") or {}
        labels = ",".join(f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items()))
        meta = {k: obj["metadata"][k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")}
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": meta,
            "spec": {"replicas": int((obj.get("spec") or {}).get("replicas", 1))},
            "status": {"replicas": int((obj.get("status") or {}).get("replicas", 0)), "selector": labels},
        }

    def scale(self, plural: str, namespace: str, name: str, replicas: int, manager: str) -> dict[str, Any]:
        """Write ``spec.replicas`` through ``/scale``: ``manager`` takes the field (as the HPA controller does)."""
        self.scale_internal(plural, namespace, name, replicas, manager)
        self._settle()
        return self.read_scale(plural, namespace, name)

    def scale_internal(self, plural: str, namespace: str, name: str, replicas: int, manager: str) -> None:
        if replicas < 0:
            raise invalid(
                RESOURCES[plural],
                name,
                [invalid_value("spec.replicas", replicas, "must be greater than or equal to 0")],
            )
        old = self.get(plural, namespace, name)
        new = {**old, "spec": {**old["spec"], "replicas": replicas}}
        self._store(RESOURCES[plural], namespace, new, old, manager=manager, subresource="scale", validate=False)

    # ------------------------------------------------------------------ the controllers' own writes

    def write_internal(
        self, plural: str, namespace: str, obj: dict[str, Any], manager: str = "", subresource: str = ""
    ) -> dict[str, Any]:
        """A controller's write: no API call counted, no checks, no settling; nothing stored when nothing changed."""
        resource = RESOURCES[plural]
        name = obj["metadata"]["name"]
        old = self.objects.get((plural, namespace, name))
        return self._store(resource, namespace, obj, old, manager=manager, subresource=subresource, validate=False)

    def write_status(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        """Replace an object's status as its controller does through ``/status`` (nothing else changes, so
        nothing else is looked at again; stored objects are never changed in place, so the rest is shared)."""
        old = self.get(plural, namespace, name)
        if old.get("status") == status:
            return old
        resource = RESOURCES[plural]
        pruned = drop_empty_fields(resource, {"metadata": {}, "status": json.loads(json.dumps(status))})
        if old.get("status") == pruned.get("status"):
            return old
        self.version += 1
        new = {**old, "metadata": {**old["metadata"], "resourceVersion": str(self.version)}}
        if "status" in pruned:
            new["status"] = pruned["status"]
        else:
            new.pop("status", None)
        self._put(plural, namespace, name, new)
        return new

    # ------------------------------------------------------------------ test controls (no API call is counted)

    def add_node(self, spec: NodeSpec) -> dict[str, Any]:
        with self.lock:
            return self.write_internal("nodes", "", node_object(spec, self.timestamp()))

    def set_status(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        with self.lock:
            obj = self.get(plural, namespace, name)
            self.write_status(plural, namespace, name, ssa.merge_patch(obj.get("status") or {}, status))

    def add_pending_pod(self, namespace: str, name: str, labels: dict[str, str], message: str) -> None:
        """A pod the scheduler could not place, as ``kubectl describe`` would show it (no controller touches it:
        it names a scheduler of its own)."""
        with self.lock:
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
                "spec": {"containers": [{"name": "model", "image": "x"}], "schedulerName": "fakekube-manual"},
                "status": {
                    "phase": "Pending",
                    "conditions": [
                        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
                    ],
                },
            }
            self.write_internal("pods", namespace, pod)

    def set_pod_running(self, namespace: str, name: str) -> None:
        running = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        self.set_status("pods", namespace, name, running)

    def count_by_label(self, selector: str) -> int:
        with self.lock:
            return sum(len(self.list(p, None, selector)) for p in KINDS)

    def reset_stats(self) -> None:
        with self.lock:
            self.stats = Stats()
