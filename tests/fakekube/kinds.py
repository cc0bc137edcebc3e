"""What the fake API server serves: each resource's kind, group, version and scope, whether it has a status
subresource, which rule its names follow, and the errors the real server answers with (``Status`` bodies)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Resource:
    """One resource type as the API server's discovery would describe it."""

    plural: str
    kind: str
    group: str = ""
    version: str = "v1"
    namespaced: bool = True
    status: bool = False  # has a ``/status`` subresource: the main resource ignores status, ``/status`` all else
    names: str = "subdomain"  # "subdomain" (DNS-1123), "label" (DNS-1123 label) or "dns1035" (DNS-1035 label)
    builtin: bool = True  # False for a CustomResourceDefinition's (stored as sent; list items keep their kind)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified_kind(self) -> str:
        """``Deployment.apps``, ``Service``: how ``Invalid`` messages name the kind."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def qualified_resource(self) -> str:
        """``deployments.apps``, ``services``: how ``NotFound`` and ``Conflict`` messages name the resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural


_RESOURCES = (
    Resource("namespaces", "Namespace", namespaced=False, status=True, names="label"),
    Resource("nodes", "Node", namespaced=False, status=True),
    Resource("pods", "Pod", status=True),
    Resource("services", "Service", status=True, names="dns1035"),
    Resource("serviceaccounts", "ServiceAccount"),
    Resource("secrets", "Secret"),
    Resource("configmaps", "ConfigMap"),
    Resource("persistentvolumeclaims", "PersistentVolumeClaim", status=True),
    Resource("resourcequotas", "ResourceQuota", status=True),
    Resource("events", "Event"),
    Resource("deployments", "Deployment", "apps", status=True),
    Resource("replicasets", "ReplicaSet", "apps", status=True),
    Resource("poddisruptionbudgets", "PodDisruptionBudget", "policy", status=True),
    Resource("networkpolicies", "NetworkPolicy", "networking.k8s.io"),
    Resource("horizontalpodautoscalers", "HorizontalPodAutoscaler", "autoscaling", "v2", status=True),
    Resource("endpointslices", "EndpointSlice", "discovery.k8s.io"),
    Resource("httproutes", "HTTPRoute", "gateway.networking.k8s.io", status=True, builtin=False),
)
RESOURCES: dict[str, Resource] = {r.plural: r for r in _RESOURCES}
# plural -> kind, for callers that only need the names.
KINDS: dict[str, str] = {r.plural: r.kind for r in _RESOURCES}


class ApiError(Exception):
    """An error answer: the HTTP status, the ``Status`` reason and message, and optional ``details``."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body


def not_found(resource: Resource, name: str) -> ApiError:
    details = {"name": name, "group": resource.group, "kind": resource.plural}
    return ApiError(404, "NotFound", f'{resource.qualified_resource} "{name}" not found', details)


def already_exists(resource: Resource, name: str) -> ApiError:
    details = {"name": name, "group": resource.group, "kind": resource.plural}
    return ApiError(409, "AlreadyExists", f'{resource.qualified_resource} "{name}" already exists', details)


def stale(resource: Resource, name: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {resource.qualified_resource} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        {"name": name, "group": resource.group, "kind": resource.plural},
    )


def forbidden(resource: Resource, name: str, why: str) -> ApiError:
    details = {"name": name, "group": resource.group, "kind": resource.plural}
    return ApiError(403, "Forbidden", f'{resource.qualified_resource} "{name}" is forbidden: {why}', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)
