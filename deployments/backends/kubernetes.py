"""The Kubernetes backend: applies the objects of ``deployments/backends/manifests.py`` with the official client.

Level-triggered: each call lists the deployment's actual objects by label, server-side-applies (field manager
``frontdoor``) only the objects whose managed fields differ from what is wanted, prunes objects of revisions that
are no longer wanted, and reports ready replicas and endpoints from what it read. A second call with the same
spec therefore reads and writes nothing but its lists.

Errors: connection failures, 409, 429 and 5xx raise ``TransientBackendError`` (the task retries with backoff);
400/403/422 and other client errors raise ``PermanentBackendError`` carrying the API server's message.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from controlplane.contracts.env import env_str
from deployments.backends import kube_scaledown, manifests
from deployments.backends.base import (
    DeploymentSpec,
    DeploymentStatus,
    PermanentBackendError,
    TenantSpec,
    TransientBackendError,
)
from deployments.backends.kube_drain import DrainGate
from deployments.backends.kube_pods import RevisionObjects, observe, read_objects
from deployments.backends.quantity import same_quantity

logger = logging.getLogger(__name__)

APPLY_CONTENT_TYPE = "application/apply-patch+yaml"
FIELD_MANAGER = "frontdoor"
# Co-owns ``spec.replicas`` while a Deployment passes from our count to an HPA's (``_hand_replicas_over``).
HANDOVER_MANAGER = "frontdoor-handover-to-hpa"
# How long a tenant's objects, once applied, are trusted before being read again on a deployment's reconcile
# (reconcile_tenant and the periodic resync re-check them regardless of this cache when the spec changes).
TENANT_CACHE_S = 60.0


class _NotFound(Exception):
    pass


class _Conflict(TransientBackendError):
    """A 409: a write lost a race with another writer (or an apply met a field another manager owns)."""


WRITE_ATTEMPTS = 3  # a write that loses a race is sent again at once this many times in all


@dataclass
class _Counter:
    calls: int = 0
    writes: int = 0


# Maps whose values are resource quantities (requests, limits, a ResourceQuota's hard), and fields that hold one.
_QUANTITY_MAPS = frozenset({"requests", "limits", "hard"})
_QUANTITY_FIELDS = frozenset({"sizeLimit", "averageValue"})


def is_subset(wanted: Any, actual: Any, key: str = "", parent: str = "") -> bool:
    """True when every field in ``wanted`` has the same value in ``actual`` (fields the server added are ignored).

    ``actual`` is read as the API server returns it: resource quantities compare by value (it stores ``1024Gi`` as
    ``1Ti`` and ``1000`` as ``1k``), an empty string, list or map matches a field that is absent (it leaves empty
    optional fields out, a Secret's empty ``data`` for one), and the top-level ``apiVersion`` and ``kind`` may be
    absent (the items of a list carry none). ``key`` and ``parent`` name the field being compared and its map."""
    if isinstance(wanted, dict):
        if not isinstance(actual, dict):
            return False
        for k, v in wanted.items():
            if k in actual:
                if not is_subset(v, actual[k], k, key):
                    return False
            elif not (_is_empty(v) or (not key and k in ("apiVersion", "kind"))):
                return False
        return True
    if isinstance(wanted, list):
        return (
            isinstance(actual, list)
            and len(wanted) == len(actual)
            and all(is_subset(w, a, key, parent) for w, a in zip(wanted, actual, strict=True))
        )
    if wanted == actual or (isinstance(wanted, int | str) and str(wanted) == str(actual)):
        return True
    return _holds_quantity(key, parent) and same_quantity(wanted, actual)


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str | list | dict) and not value)


def _holds_quantity(key: str, parent: str) -> bool:
    return parent in _QUANTITY_MAPS or key in _QUANTITY_FIELDS or (key == "value" and parent == "target")


def _keys_removed(wanted: dict[str, Any], actual: dict[str, Any]) -> bool:
    """A Secret holding keys we no longer want (a deleted tenant secret): applying removes them, since this field
    manager owns every key it applied."""
    if wanted.get("kind") != "Secret":
        return False
    return bool(set(actual.get("data") or {}) - set(wanted.get("data") or {}))


def _server_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.reason or f"HTTP {exc.status}")


class KubernetesBackend:
    """Runs revisions as Deployments in one namespace per tenant."""

    name = "kubernetes"

    def __init__(self, api_client: k8s.ApiClient, kube: manifests.KubeSettings | None = None, timeout_s: float = 10.0):
        self.api_client = api_client
        self.kube = kube or manifests.KubeSettings.from_env()
        self.timeout = (min(5.0, timeout_s), timeout_s)
        self.core = k8s.CoreV1Api(api_client)
        self.apps = k8s.AppsV1Api(api_client)
        self.policy = k8s.PolicyV1Api(api_client)
        self.networking = k8s.NetworkingV1Api(api_client)
        self.autoscaling = k8s.AutoscalingV2Api(api_client)
        self.custom = k8s.CustomObjectsApi(api_client)
        self._tenants_applied: dict[str, tuple[TenantSpec, float]] = {}
        self._routeless: set[str] = set()  # namespaces without HTTPRoutes of ours (see _leftover_routes)
        self.drain_gate = DrainGate()
        self.discovery = k8s.DiscoveryV1Api(api_client)
        self.pod_apis: dict[str, Callable[..., Any]] = {
            "pods": self.core.list_namespaced_pod,
            "replicasets": self.apps.list_namespaced_replica_set,
            "endpointslices": self.discovery.list_namespaced_endpoint_slice,
        }
        self._lock = threading.Lock()
        route = partial(self._custom, "gateway.networking.k8s.io", "v1", "httproutes")
        # kind -> (list(namespace, label_selector), patch(name, namespace, body, **kw), delete(name, namespace, **kw))
        self.ops: dict[str, tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]] = {
            "Deployment": (
                self.apps.list_namespaced_deployment,
                self.apps.patch_namespaced_deployment,
                self.apps.delete_namespaced_deployment,
            ),
            "Service": (
                self.core.list_namespaced_service,
                self.core.patch_namespaced_service,
                self.core.delete_namespaced_service,
            ),
            "PodDisruptionBudget": (
                self.policy.list_namespaced_pod_disruption_budget,
                self.policy.patch_namespaced_pod_disruption_budget,
                self.policy.delete_namespaced_pod_disruption_budget,
            ),
            "HorizontalPodAutoscaler": (
                self.autoscaling.list_namespaced_horizontal_pod_autoscaler,
                self.autoscaling.patch_namespaced_horizontal_pod_autoscaler,
                self.autoscaling.delete_namespaced_horizontal_pod_autoscaler,
            ),
            "HTTPRoute": (route("list"), route("patch"), route("delete")),
            "ResourceQuota": (
                self.core.list_namespaced_resource_quota,
                self.core.patch_namespaced_resource_quota,
                self.core.delete_namespaced_resource_quota,
            ),
            "NetworkPolicy": (
                self.networking.list_namespaced_network_policy,
                self.networking.patch_namespaced_network_policy,
                self.networking.delete_namespaced_network_policy,
            ),
            "ServiceAccount": (
                self.core.list_namespaced_service_account,
                self.core.patch_namespaced_service_account,
                self.core.delete_namespaced_service_account,
            ),
            "Secret": (
                self.core.list_namespaced_secret,
                self.core.patch_namespaced_secret,
                self.core.delete_namespaced_secret,
            ),
            "PersistentVolumeClaim": (
                self.core.list_namespaced_persistent_volume_claim,
                self.core.patch_namespaced_persistent_volume_claim,
                self.core.delete_namespaced_persistent_volume_claim,
            ),
        }
        # Tenant objects are read one by one (they carry no deployment label to list them by).
        self.tenant_reads: dict[str, Callable[..., Any]] = {
            "ResourceQuota": self.core.read_namespaced_resource_quota,
            "NetworkPolicy": self.networking.read_namespaced_network_policy,
            "ServiceAccount": self.core.read_namespaced_service_account,
            "Secret": self.core.read_namespaced_secret,
            "PersistentVolumeClaim": self.core.read_namespaced_persistent_volume_claim,
        }

    @classmethod
    def from_environment(cls) -> KubernetesBackend:
        """``FRONTDOOR_K8S_API_URL`` (tests, the fake server) or in-cluster config, else the local kubeconfig."""
        url = env_str("FRONTDOOR_K8S_API_URL").strip()
        configuration = k8s.Configuration()
        if url:
            configuration.host = url
        else:
            try:
                k8s_config.load_incluster_config(client_configuration=configuration)
            except k8s_config.ConfigException:
                k8s_config.load_kube_config(client_configuration=configuration)
        configuration.connection_pool_maxsize = 16
        # Retries belong to the task (with backoff), not to hidden loops in the HTTP layer.
        configuration.retries = False
        return cls(k8s.ApiClient(configuration))

    # ------------------------------------------------------------------ low-level calls

    def _custom(self, group: str, version: str, plural: str, verb: str) -> Callable[..., Any]:
        if verb == "list":
            return lambda namespace, **kw: self.custom.list_namespaced_custom_object(
                group, version, namespace, plural, **kw
            )
        if verb == "patch":
            return lambda name, namespace, body, **kw: self.custom.patch_namespaced_custom_object(
                group, version, namespace, plural, name, body, **kw
            )
        return lambda name, namespace, **kw: self.custom.delete_namespaced_custom_object(
            group, version, namespace, plural, name, **kw
        )

    def _call(self, counter: _Counter, write: bool, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        counter.calls += 1
        counter.writes += int(write)
        try:
            response = fn(*args, _preload_content=False, _request_timeout=self.timeout, **kwargs)
        except ApiException as exc:
            message = _server_message(exc)
            if exc.status == 404:
                raise _NotFound(message) from exc
            if exc.status == 409:
                raise _Conflict(f"Kubernetes API {exc.status}: {message}") from exc
            if exc.status in (0, 429) or exc.status >= 500:
                raise TransientBackendError(f"Kubernetes API {exc.status}: {message}") from exc
            raise PermanentBackendError(message) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TransientBackendError(f"Kubernetes API unreachable: {exc}") from exc
        data = response.data
        return json.loads(data) if data else {}

    def _list(self, counter: _Counter, kind: str, namespace: str, selector: str) -> dict[str, dict[str, Any]]:
        result = self._call(counter, False, self.ops[kind][0], namespace, label_selector=selector)
        return {item["metadata"]["name"]: item for item in result.get("items", [])}

    def _apply(self, counter: _Counter, obj: dict[str, Any], actual: dict[str, Any] | None) -> dict[str, Any]:
        """Server-side apply ``obj`` unless ``actual`` already has every field we manage."""
        if actual is not None and is_subset(obj, actual) and not _keys_removed(obj, actual):
            return actual
        kind, meta = obj["kind"], obj["metadata"]
        kwargs = {"field_manager": FIELD_MANAGER, "force": True, "_content_type": APPLY_CONTENT_TYPE}
        try:
            if kind == "Namespace":
                return dict(self._write(counter, self.core.patch_namespace, meta["name"], obj, **kwargs))
            return dict(self._write(counter, self.ops[kind][1], meta["name"], meta["namespace"], obj, **kwargs))
        except _NotFound as exc:
            self._tenants_applied.pop(obj["metadata"].get("labels", {}).get(manifests.TENANT_LABEL, ""), None)
            raise TransientBackendError(f"{kind} {meta['name']}: {exc}") from exc

    def _write(self, counter: _Counter, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A write sent again while it loses races (409), ``WRITE_ATTEMPTS`` times in all: writing again is the fix;
        any other error goes up at once."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                return self._call(counter, True, fn, *args, **kwargs)
            except _Conflict:
                if attempt == WRITE_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _delete(self, counter: _Counter, kind: str, name: str, namespace: str) -> None:
        # Already gone (cascaded from its owner, or deleted by someone else) is the goal reached.
        with contextlib.suppress(_NotFound):
            self._call(counter, True, self.ops[kind][2], name, namespace, propagation_policy="Background")

    def _read(self, counter: _Counter, fn: Callable[..., Any], *args: Any) -> dict[str, Any] | None:
        try:
            return dict(self._call(counter, False, fn, *args))
        except _NotFound:
            return None

    # ------------------------------------------------------------------ tenants

    def apply_tenant(self, tenant: TenantSpec) -> None:
        with self._lock:
            cached = self._tenants_applied.get(tenant.slug)
        if cached and cached[0] == tenant and time.monotonic() - cached[1] < TENANT_CACHE_S:
            return
        self._apply_tenant(tenant, _Counter())

    def _apply_tenant(self, tenant: TenantSpec, counter: _Counter) -> None:
        for obj in manifests.tenant_objects(tenant, self.kube):
            meta = obj["metadata"]
            if obj["kind"] == "Namespace":
                actual = self._read(counter, self.core.read_namespace, meta["name"])
            else:
                actual = self._read(counter, self.tenant_reads[obj["kind"]], meta["name"], meta["namespace"])
            self._apply(counter, obj, actual)
        with self._lock:
            self._tenants_applied[tenant.slug] = (tenant, time.monotonic())

    # ------------------------------------------------------------------ deployments

    def _selector(self, deployment_id: int, name: str) -> str:
        return (
            f"{manifests.MANAGED_BY}={manifests.MANAGER},{manifests.DEPLOYMENT_LABEL}={name},"
            f"{manifests.DEPLOYMENT_ID_LABEL}={deployment_id}"
        )

    def _actual(self, counter: _Counter, namespace: str, selector: str) -> dict[str, dict[str, dict[str, Any]]]:
        kinds = ("Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler")
        actual = {kind: self._list(counter, kind, namespace, selector) for kind in kinds}
        actual["HTTPRoute"] = self._leftover_routes(counter, namespace, selector)
        return actual

    def _leftover_routes(self, counter: _Counter, namespace: str, selector: str) -> dict[str, dict[str, Any]]:
        """HTTPRoutes an earlier version made (none is made now), to be pruned; none where Gateway API's CRDs are
        not installed (the list is a 404 then). Looked for once per namespace and process once there are none."""
        if namespace in self._routeless:
            return {}
        try:
            routes = self._list(counter, "HTTPRoute", namespace, f"{manifests.MANAGED_BY}={manifests.MANAGER}")
        except _NotFound:
            routes = {}
        if not routes:
            with self._lock:
                self._routeless.add(namespace)
        wanted = dict(pair.split("=", 1) for pair in selector.split(","))
        return {name: r for name, r in routes.items() if wanted.items() <= r["metadata"].get("labels", {}).items()}

    def _hand_replicas_over(self, counter: _Counter, obj: dict[str, Any], actual: dict[str, Any] | None) -> None:
        """Before a Deployment that had ``spec.replicas`` from us is applied without it (class ``hpa`` now), give
        the count a second owner, so dropping it from our applied config leaves it as it is instead of resetting
        it to 1 (Kubernetes' documented handover to an autoscaler). A conflict means the HPA owns it already."""
        replicas = (actual or {}).get("spec", {}).get("replicas")
        if actual is None or replicas is None:
            return
        meta = obj["metadata"]
        handover = {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
            "spec": {"replicas": replicas},
        }
        kwargs = {"field_manager": HANDOVER_MANAGER, "force": False, "_content_type": APPLY_CONTENT_TYPE}
        with contextlib.suppress(_Conflict):
            self._call(counter, True, self.ops["Deployment"][1], meta["name"], meta["namespace"], handover, **kwargs)

    def apply_deployment(self, deployment: DeploymentSpec) -> DeploymentStatus:
        counter = _Counter()
        self.apply_tenant(deployment.tenant)
        namespace = manifests.namespace_name(deployment.tenant.slug, self.kube)
        selector = self._selector(deployment.id, deployment.name)
        actual = self._actual(counter, namespace, selector)
        # Dependents carry their owner's uid, so cascading deletion follows the Deployment; a revision's Service is
        # applied before its Deployment exists, so a Service the API server refuses leaves no GPU pods running.
        uids = {name: obj["metadata"]["uid"] for name, obj in actual["Deployment"].items()}
        wanted = manifests.deployment_objects(deployment, self.kube, uids)
        objects = self._read_objects(counter, deployment, namespace)
        leaving = self._scale_down_gently(counter, deployment, namespace, wanted, actual["Deployment"], objects)
        current: dict[tuple[str, str], dict[str, Any]] = {}
        applied: dict[str, dict[str, Any]] = {}
        for obj in (o for o in wanted if o["kind"] in ("Service", "Deployment")):
            kind, name = obj["kind"], obj["metadata"]["name"]
            if kind == "Deployment" and "replicas" not in obj["spec"] and name not in actual["HorizontalPodAutoscaler"]:
                self._hand_replicas_over(counter, obj, actual[kind].get(name))
            current[kind, name] = self._apply(counter, obj, actual[kind].get(name))
            if kind == "Deployment":
                applied[name] = current[kind, name]
        owner_uids = {name: obj["metadata"]["uid"] for name, obj in applied.items()}
        if any(uids.get(name) != uid for name, uid in owner_uids.items()):
            # A new Deployment's uid exists only now: render its dependents again to own them.
            # (Only the dependents are applied from it: the Deployments, with the counts kept above, are applied.)
            wanted = manifests.deployment_objects(deployment, self.kube, owner_uids)
        wanted_names: dict[str, set[str]] = {kind: set() for kind in actual}
        for obj in wanted:
            kind, name = obj["kind"], obj["metadata"]["name"]
            wanted_names[kind].add(name)
            if kind != "Deployment":
                self._apply(counter, obj, current.get((kind, name), actual[kind].get(name)))
        # Prune dependents first, then the Deployments (whose deletion would cascade to them anyway).
        for kind in ("HTTPRoute", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service", "Deployment"):
            for name in sorted(set(actual[kind]) - wanted_names[kind]):
                self._delete(counter, kind, name, namespace)
        if counter.writes:
            # Writes may have moved things on (an HPA sets its target's replicas, new pods are ready): observe what is
            # there now.
            applied = self._list(counter, "Deployment", namespace, selector)
            objects = self._read_objects(counter, deployment, namespace)
        call = partial(self._call, counter)
        status = observe(call, self.core.list_namespaced_event, deployment, namespace, applied, objects, leaving)
        status.api_calls, status.writes = counter.calls, counter.writes
        return status

    def _scale_down_gently(
        self,
        counter: _Counter,
        deployment: DeploymentSpec,
        namespace: str,
        wanted: list[dict[str, Any]],
        actual: dict[str, dict[str, Any]],
        objects: dict[str, RevisionObjects],
    ) -> dict[str, frozenset[str]]:
        """Keep each revision that scales down at its current count until the pods it removes left the gateways
        (``kube_scaledown``); returns the leaving pods by revision label. Changes ``wanted``'s replica counts."""
        leaving: dict[str, frozenset[str]] = {}
        revisions = {manifests.revision_object_name(deployment.name, r.number): r for r in deployment.revisions}
        for obj in wanted:
            name = obj["metadata"]["name"]
            if obj["kind"] != "Deployment" or "replicas" not in obj["spec"] or name not in actual:
                continue
            label = f"r{revisions[name].number}"
            pods = objects.get(label, RevisionObjects()).pods
            current = int(actual[name].get("spec", {}).get("replicas") or 0)
            plan = kube_scaledown.choose_leaving(pods, current, int(obj["spec"]["replicas"]))
            now = time.time()
            for pod_name in plan.mark:
                self._patch_pod(counter, pod_name, namespace, kube_scaledown.leaving_patch(now))
            for pod_name in plan.unmark:
                self._patch_pod(counter, pod_name, namespace, kube_scaledown.leaving_patch(None))
            if not plan.leaving:
                continue
            chosen = [p for p in pods if p["metadata"]["name"] in plan.leaving]
            since = min((kube_scaledown.leaving_since(p) or now) for p in chosen)
            addresses = [
                f"http://{p['status']['podIP']}:{manifests.MODEL_PORT}"
                for p in chosen
                if p.get("status", {}).get("podIP")
            ]
            if self.drain_gate.unrouted(deployment.tenant, addresses, since, now):
                continue  # the lower count goes out now; the ReplicaSet deletes the pods marked cheapest
            obj["spec"]["replicas"] = current
            leaving[label] = plan.leaving
        return leaving

    def _patch_pod(self, counter: _Counter, name: str, namespace: str, body: dict[str, Any]) -> None:
        with contextlib.suppress(_NotFound):  # gone meanwhile: nothing left to mark
            self._write(counter, self.core.patch_namespaced_pod, name, namespace, body)

    def observe_deployment(self, deployment: DeploymentSpec) -> DeploymentStatus:
        counter = _Counter()
        namespace = manifests.namespace_name(deployment.tenant.slug, self.kube)
        found = self._list(counter, "Deployment", namespace, self._selector(deployment.id, deployment.name))
        objects = self._read_objects(counter, deployment, namespace)
        call = partial(self._call, counter)
        status = observe(call, self.core.list_namespaced_event, deployment, namespace, found, objects, {})
        status.api_calls = counter.calls
        return status

    def _read_objects(
        self, counter: _Counter, deployment: DeploymentSpec, namespace: str
    ) -> dict[str, RevisionObjects]:
        services = [manifests.revision_object_name(deployment.name, r.number) for r in deployment.revisions]
        return read_objects(partial(self._call, counter), self.pod_apis, namespace, deployment.name, services)

    def delete_deployment(self, tenant_slug: str, deployment_id: int, name: str) -> DeploymentStatus:
        counter = _Counter()
        namespace = manifests.namespace_name(tenant_slug, self.kube)
        selector = self._selector(deployment_id, name)
        actual = self._actual(counter, namespace, selector)
        if not any(actual.values()):
            return DeploymentStatus(exists=False, api_calls=counter.calls)
        for kind in ("HTTPRoute", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"):
            for obj_name in sorted(actual[kind]):
                self._delete(counter, kind, obj_name, namespace)
        remaining = self._actual(counter, namespace, selector)
        return DeploymentStatus(exists=any(remaining.values()), api_calls=counter.calls, writes=counter.writes)
