"""Server-side apply with field managers, as the real API server does it: what a manager stops applying goes,
another manager's field is a 409 naming it unless forced, ``spec.replicas`` passes between frontdoor and the HPA
controller, and the other write verbs keep their own semantics."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.fakekube.conftest import APPLY, NS, deployment, raw
from tests.fakekube.server import FakeKubeServer
from tests.fakekube.workloads import MANAGER


def apply(api: k8s.ApiClient, body: dict[str, Any], manager: str = "frontdoor", force: bool = True) -> dict[str, Any]:
    apps = k8s.AppsV1Api(api)
    name = body["metadata"]["name"]
    response = apps.patch_namespaced_deployment(
        name, NS, body, field_manager=manager, force=force, _preload_content=False, **APPLY
    )
    return raw(response)


def container(obj: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = obj["spec"]["template"]["spec"]["containers"][0]
    return found


def managers(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """managedFields by ``manager/operation[/subresource]``."""
    rows = obj["metadata"]["managedFields"]
    return {"/".join(filter(None, (e["manager"], e["operation"], e.get("subresource")))): e for e in rows}


def test_it_removes_a_field_the_manager_stops_applying(api: k8s.ApiClient) -> None:
    body = deployment()
    body["metadata"]["annotations"] = {"team": "ml"}
    container(body)["env"] = [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    first = apply(api, body)

    del body["metadata"]["annotations"]
    container(body)["env"] = [{"name": "B", "value": "2"}]
    container(body)["args"] = ["--port", "8000"]
    stored = apply(api, body)

    assert "annotations" not in stored["metadata"]
    assert int(stored["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    assert container(stored)["env"] == [{"name": "B", "value": "2"}]
    assert container(stored)["args"] == ["--port", "8000"]
    fields = managers(stored)["frontdoor/Apply"]["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert list(fields['k:{"name":"model"}']["f:env"]) == ['k:{"name":"B"}']


def test_it_keeps_a_dropped_field_another_manager_owns(api: k8s.ApiClient) -> None:
    body = deployment()
    body["metadata"]["annotations"] = {"team": "ml"}
    apply(api, body)
    k8s.AppsV1Api(api).patch_namespaced_deployment(
        "web", NS, {"metadata": {"annotations": {"team": "ml", "owner": "ops"}}}, field_manager="kubectl-annotate"
    )

    del body["metadata"]["annotations"]
    stored = apply(api, body)

    assert stored["metadata"]["annotations"] == {"owner": "ops"}  # "team" was frontdoor's alone


def test_a_no_op_apply_changes_nothing(api: k8s.ApiClient) -> None:
    first = apply(api, deployment())
    again = apply(api, deployment())
    assert again["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    assert again["metadata"]["generation"] == first["metadata"]["generation"] == 1


def test_it_refuses_another_managers_field_without_force_and_moves_it_with_force(
    api: k8s.ApiClient, cluster: FakeKubeServer
) -> None:
    apply(api, deployment(replicas=2))
    cluster.store.scale("deployments", NS, "web", 5, MANAGER)

    with pytest.raises(ApiException) as caught:
        apply(api, deployment(replicas=3), force=False)
    assert caught.value.status == 409
    status = json.loads(caught.value.body)
    assert status["reason"] == "Conflict"
    assert status["message"] == (
        'Apply failed with 1 conflict: conflict with "kube-controller-manager" with subresource "scale" using '
        "apps/v1: .spec.replicas"
    )
    assert status["details"]["causes"][0]["field"] == ".spec.replicas"

    forced = apply(api, deployment(replicas=3), force=True)
    assert forced["spec"]["replicas"] == 3
    owners = managers(forced)
    assert "f:replicas" in owners["frontdoor/Apply"]["fieldsV1"]["f:spec"]
    assert "kube-controller-manager/Update/scale" not in owners  # it owned nothing else


def test_it_names_every_conflicting_field_by_manager(api: k8s.ApiClient) -> None:
    apply(api, deployment(replicas=2, image="registry.example/web:1"), manager="a")
    with pytest.raises(ApiException) as caught:
        apply(api, deployment(replicas=4, image="registry.example/web:2"), manager="b", force=False)
    assert json.loads(caught.value.body)["message"] == (
        'Apply failed with 2 conflicts: conflicts with "a":\n- .spec.replicas\n'
        '- .spec.template.spec.containers[name="model"].image'
    )


def test_the_hpa_takes_replicas_and_frontdoor_dropping_them_leaves_its_count(
    api: k8s.ApiClient, cluster: FakeKubeServer
) -> None:
    apply(api, deployment(replicas=2))
    cluster.store.scale("deployments", NS, "web", 4, MANAGER)  # what the HPA controller writes, through /scale

    stored = apply(api, deployment(replicas=None))

    assert stored["spec"]["replicas"] == 4  # frontdoor no longer owned it: nothing to remove
    assert "f:replicas" in managers(stored)["kube-controller-manager/Update/scale"]["fieldsV1"]["f:spec"]


def test_dropping_replicas_frontdoor_alone_owns_resets_them_to_the_default(api: k8s.ApiClient) -> None:
    apply(api, deployment(replicas=3))
    stored = apply(api, deployment(replicas=None))
    assert stored["spec"]["replicas"] == 1


def test_the_documented_handover_keeps_the_count_and_the_hpa_takes_it_from_there(
    api: k8s.ApiClient, cluster: FakeKubeServer
) -> None:
    apply(api, deployment(replicas=3))
    handover = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 3}}
    apply(api, handover, manager="handover-to-hpa", force=False)  # the same value: shared, no conflict

    stored = apply(api, deployment(replicas=None))
    assert stored["spec"]["replicas"] == 3
    cluster.store.scale("deployments", NS, "web", 5, MANAGER)
    owners = managers(cluster.store.get("deployments", NS, "web"))
    assert "handover-to-hpa/Apply" not in owners  # the HPA's write left the handover manager nothing
    assert cluster.store.get("deployments", NS, "web")["spec"]["replicas"] == 5


def test_an_hpa_scales_its_target_through_the_scale_subresource(api: k8s.ApiClient, cluster: FakeKubeServer) -> None:
    apply(api, deployment(replicas=None))
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 2,
            "maxReplicas": 6,
        },
    }
    k8s.AutoscalingV2Api(api).create_namespaced_horizontal_pod_autoscaler(NS, hpa)
    cluster.store.controller.step()
    assert cluster.store.get("deployments", NS, "web")["spec"]["replicas"] == 2  # raised to minReplicas
    rescaled = [e["message"] for e in cluster.store.list("events", NS, "") if e["reason"] == "SuccessfulRescale"]
    assert rescaled == ["New size: 2; reason: Current number of replicas below Spec's minimum"]

    cluster.store.controller.recommend(NS, "web", 9)
    cluster.store.controller.step()
    stored = cluster.store.get("deployments", NS, "web")
    assert stored["spec"]["replicas"] == 6  # what the metrics ask, within maxReplicas
    assert "f:replicas" in managers(stored)["kube-controller-manager/Update/scale"]["fieldsV1"]["f:spec"]
    assert cluster.store.get("horizontalpodautoscalers", NS, "web")["status"]["desiredReplicas"] == 6


def test_merge_patch_and_strategic_merge_patch_keep_their_own_semantics(api: k8s.ApiClient) -> None:
    apps = k8s.AppsV1Api(api)
    body = deployment()
    container(body)["env"] = [{"name": "A", "value": "1"}]
    apply(api, body)

    strategic = {
        "spec": {"template": {"spec": {"containers": [{"name": "model", "env": [{"name": "B", "value": "2"}]}]}}}
    }
    patched = raw(apps.patch_namespaced_deployment("web", NS, strategic, _preload_content=False))
    assert container(patched)["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert container(patched)["image"] == "registry.example/web:1"

    merge = {"metadata": {"labels": {"app": None, "tier": "gpu"}}}
    patched = raw(
        apps.patch_namespaced_deployment(
            "web", NS, merge, _content_type="application/merge-patch+json", _preload_content=False
        )
    )
    assert patched["metadata"]["labels"] == {"tier": "gpu"}
    assert "OpenAPI-Generator/Update" in managers(patched)  # a patch without fieldManager: the client's user agent


def test_a_replace_with_a_stale_resource_version_is_a_conflict(api: k8s.ApiClient) -> None:
    apps = k8s.AppsV1Api(api)
    created = apply(api, deployment())
    apps.patch_namespaced_deployment("web", NS, {"metadata": {"labels": {"x": "1"}}})
    with pytest.raises(ApiException) as caught:
        apps.replace_namespaced_deployment("web", NS, created)
    assert caught.value.status == 409
    assert json.loads(caught.value.body)["message"].startswith(
        'Operation cannot be fulfilled on deployments.apps "web": the object has been modified'
    )
