"""Kubernetes objects for tenants and deployments: pure functions from the backend specs to plain dicts.

Nothing here does I/O or touches the ORM: the reconciler builds ``TenantSpec``/``DeploymentSpec`` from Postgres,
the Kubernetes backend applies what these functions return, and the preview endpoint renders the same objects
as YAML. Names are deterministic (``<deployment>-r<number>`` per revision) and
every object carries the ownership labels of ``manifests_common``, which is how the backend finds and prunes them.

The pod itself is ``manifests_pod``'s, the tenant's shared objects ``manifests_tenant``'s; the names the backend,
the API's preview and the console use are re-exported here, so those callers import this module alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from deployments.backends.base import DeploymentSpec, RevisionSpec
from deployments.backends.load_metrics import load_of
from deployments.backends.manifests_common import DEPLOYMENT_ID_LABEL as DEPLOYMENT_ID_LABEL
from deployments.backends.manifests_common import DEPLOYMENT_LABEL as DEPLOYMENT_LABEL
from deployments.backends.manifests_common import MANAGED_BY as MANAGED_BY
from deployments.backends.manifests_common import MANAGER as MANAGER
from deployments.backends.manifests_common import MODEL_PORT as MODEL_PORT
from deployments.backends.manifests_common import REVISION_LABEL as REVISION_LABEL
from deployments.backends.manifests_common import SECRETS_ANNOTATION, object_meta
from deployments.backends.manifests_common import TENANT_LABEL as TENANT_LABEL
from deployments.backends.manifests_common import KubeSettings as KubeSettings
from deployments.backends.manifests_common import deployment_labels as deployment_labels
from deployments.backends.manifests_common import namespace_name as namespace_name
from deployments.backends.manifests_common import revision_labels as revision_labels
from deployments.backends.manifests_common import revision_object_name as revision_object_name
from deployments.backends.manifests_common import service_url as service_url
from deployments.backends.manifests_pod import pod_spec, secret_versions
from deployments.backends.manifests_tenant import redacted as redacted
from deployments.backends.manifests_tenant import tenant_objects as tenant_objects


def template_meta(spec: DeploymentSpec, revision: RevisionSpec, labels: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"labels": labels}
    if versions := secret_versions(spec.tenant, revision.spec):
        meta["annotations"] = {SECRETS_ANNOTATION: versions}
    return meta


def revision_deployment(
    spec: DeploymentSpec, revision: RevisionSpec, namespace: str, kube: KubeSettings
) -> dict[str, Any]:
    """The apps/v1 Deployment running one revision's replicas."""
    labels = revision_labels(spec, revision)
    selector = {DEPLOYMENT_LABEL: spec.name, REVISION_LABEL: f"r{revision.number}"}
    body: dict[str, Any] = {
        "selector": {"matchLabels": selector},
        "template": {"metadata": template_meta(spec, revision, labels), "spec": pod_spec(spec, revision, kube)},
        # Surge only: a replica is replaced after its successor is ready (GPU capacity permitting).
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "progressDeadlineSeconds": 3600,
    }
    if not uses_hpa(spec, revision):
        body["replicas"] = revision.replicas
    name = revision_object_name(spec.name, revision.number)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(name, namespace, labels),
        "spec": body,
    }


def uses_hpa(spec: DeploymentSpec, revision: RevisionSpec) -> bool:
    """HPA scales a revision only when the class is ``hpa`` and the revision runs (HPA cannot hold 0 replicas)."""
    return spec.autoscaler_class == "hpa" and revision.replicas > 0


def _owned(obj: dict[str, Any], owner_name: str, owner_uid: str | None) -> dict[str, Any]:
    if owner_uid:
        obj["metadata"]["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": owner_name, "uid": owner_uid, "controller": True}
        ]
    return obj


def revision_dependents(
    spec: DeploymentSpec, revision: RevisionSpec, namespace: str, owner_uid: str | None = None
) -> list[dict[str, Any]]:
    """Service, PodDisruptionBudget and (class ``hpa``) HorizontalPodAutoscaler, owned by the revision Deployment."""
    name = revision_object_name(spec.name, revision.number)
    labels = revision_labels(spec, revision)
    selector = {DEPLOYMENT_LABEL: spec.name, REVISION_LABEL: f"r{revision.number}"}
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(name, namespace, labels),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": MODEL_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    pdb = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(name, namespace, labels),
        # maxUnavailable (not minAvailable) so a single-replica revision never blocks a node drain forever.
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}},
    }
    objects = [_owned(service, name, owner_uid), _owned(pdb, name, owner_uid)]
    if uses_hpa(spec, revision):
        hpa = {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": object_meta(name, namespace, labels),
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                "minReplicas": max(1, min(revision.replicas, spec.max_replicas)),
                "maxReplicas": max(1, spec.max_replicas),
                "metrics": [
                    {
                        "type": "Pods",
                        "pods": {
                            # The runtime's in-flight gauges per pod, as the adapter serves them (load_metrics.py).
                            "metric": {"name": load_of(str(revision.spec.get("runtime", "builtin"))).hpa_metric},
                            "target": {"type": "AverageValue", "averageValue": str(spec.target_concurrency)},
                        },
                    }
                ],
            },
        }
        objects.append(_owned(hpa, name, owner_uid))
    return objects


def deployment_objects(
    spec: DeploymentSpec, kube: KubeSettings, owner_uids: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every object of a deployment in the order to apply them: Services before the Deployments, so a Service the
    API server refuses leaves no GPU pods running behind it; the other dependents last.

    No HTTPRoute: the gateway is the only way in (keys, limits, metering happen there) and reaches replicas
    itself, so a Gateway API route would only be a path around it."""
    namespace = namespace_name(spec.tenant.slug, kube)
    uids = owner_uids or {}
    running = [r for r in spec.revisions if r.runs_replicas]
    dependents: dict[str, list[dict[str, Any]]] = {}
    for revision in running:
        name = revision_object_name(spec.name, revision.number)
        dependents[name] = revision_dependents(spec, revision, namespace, uids.get(name))
    objects = [o for objs in dependents.values() for o in objs if o["kind"] == "Service"]
    objects.extend(revision_deployment(spec, revision, namespace, kube) for revision in running)
    objects.extend(o for objs in dependents.values() for o in objs if o["kind"] != "Service")
    return objects


class _Dumper(yaml.SafeDumper):
    """Writes a string of several lines (the drain hook's program) as a literal block, readable as it runs."""


def _string(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_Dumper.add_representer(str, _string)


def to_yaml(objects: Iterable[Mapping[str, Any]]) -> str:
    """A multi-document YAML stream, as ``kubectl apply -f`` takes it."""
    return yaml.dump_all([dict(o) for o in objects], Dumper=_Dumper, sort_keys=False, default_flow_style=False)
