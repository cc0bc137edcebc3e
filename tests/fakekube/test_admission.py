"""What the fake API server does to a write before it stores it, as the real one does: quantities in canonical
form, empty optional fields left out, defaults, the status subresource rule, and the name and label checks with
the real messages."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from deployments.backends.kubernetes import is_subset
from tests.fakekube.conftest import APPLY, NS, deployment, raw, service
from tests.fakekube.server import FakeKubeServer

KW: dict[str, Any] = {"field_manager": "frontdoor", "force": True, "_preload_content": False, **APPLY}


def refusal(caught: pytest.ExceptionInfo[ApiException]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(caught.value.body)
    return body


def test_it_stores_quantities_in_canonical_form(api: k8s.ApiClient) -> None:
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    body = deployment()
    pod = body["spec"]["template"]["spec"]
    pod["containers"][0]["resources"] = {
        "requests": {"cpu": "1000m", "memory": "2048Mi", "ephemeral-storage": "0.5Gi"},
        "limits": {"memory": "2048Mi", "cpu": "0.5"},
    }
    pod["volumes"] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1024Mi"}}]
    stored = raw(apps.patch_namespaced_deployment("web", NS, body, **KW))
    resources = stored["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources == {
        "requests": {"cpu": "1", "memory": "2Gi", "ephemeral-storage": "512Mi"},
        "limits": {"memory": "2Gi", "cpu": "500m"},
    }
    assert stored["spec"]["template"]["spec"]["volumes"][0]["emptyDir"]["sizeLimit"] == "1Gi"

    claim = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "cache"},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1024Gi"}}},
    }
    stored = raw(core.patch_namespaced_persistent_volume_claim("cache", NS, claim, **KW))
    assert stored["spec"]["resources"]["requests"]["storage"] == "1Ti"
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "q"},
        "spec": {"hard": {"pods": "1000", "requests.cpu": "64", "requests.memory": "2048Gi"}},
    }
    stored = raw(core.patch_namespaced_resource_quota("q", NS, quota, **KW))
    assert stored["spec"]["hard"] == {"pods": "1k", "requests.cpu": "64", "requests.memory": "2Ti"}


def test_the_backends_comparison_sees_canonical_quantities_as_unchanged(api: k8s.ApiClient) -> None:
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "q", "namespace": NS, "labels": {"app": "x"}},
        "spec": {"hard": {"pods": "1000", "requests.memory": "1024Gi", "requests.nvidia.com/gpu": "0"}},
    }
    core = k8s.CoreV1Api(api)
    core.patch_namespaced_resource_quota("q", NS, quota, **KW)
    listed = raw(core.list_namespaced_resource_quota(NS, _preload_content=False))["items"][0]
    assert listed["spec"]["hard"]["pods"] == "1k"
    assert "kind" not in listed and "apiVersion" not in listed  # as a real list's items
    assert is_subset(quota, listed)
    assert not is_subset({**quota, "spec": {"hard": {"pods": "999"}}}, listed)


def test_it_refuses_a_malformed_quantity_as_the_decoder_does(api: k8s.ApiClient) -> None:
    body = deployment()
    body["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "two"
    with pytest.raises(ApiException) as caught:
        k8s.AppsV1Api(api).patch_namespaced_deployment("web", NS, body, **KW)
    assert caught.value.status == 400
    assert refusal(caught)["message"] == (
        'Deployment in version "v1" cannot be handled as a Deployment: quantities must match the regular expression '
        "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )


def test_it_leaves_out_empty_optional_fields(api: k8s.ApiClient) -> None:
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s", "namespace": NS},
        "type": "Opaque",
        "data": {},
    }
    stored = raw(core.patch_namespaced_secret("s", NS, secret, **KW))
    assert "data" not in stored
    body = deployment()
    body["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "EMPTY", "value": ""}]
    body["spec"]["template"]["spec"]["containers"][0]["args"] = []
    stored = raw(apps.patch_namespaced_deployment("web", NS, body, **KW))
    container = stored["spec"]["template"]["spec"]["containers"][0]
    assert container["env"] == [{"name": "EMPTY"}] and "args" not in container
    # What the backend compares: an empty field asked for matches one left out.
    assert is_subset(secret, raw(core.read_namespaced_secret("s", NS, _preload_content=False)))
    assert is_subset(body, stored)


def test_it_fills_in_the_defaults_of_the_real_server(api: k8s.ApiClient) -> None:
    core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
    stored = raw(apps.patch_namespaced_deployment("web", NS, deployment(replicas=None), **KW))
    spec = stored["spec"]
    assert spec["replicas"] == 1 and spec["revisionHistoryLimit"] == 10 and spec["progressDeadlineSeconds"] == 600
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Always" and pod["dnsPolicy"] == "ClusterFirst"
    assert pod["terminationGracePeriodSeconds"] == 30 and pod["schedulerName"] == "default-scheduler"
    container = pod["containers"][0]
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["startupProbe"]["timeoutSeconds"] == 1 and container["startupProbe"]["successThreshold"] == 1
    svc = raw(core.patch_namespaced_service("web", NS, service(), **KW))
    assert svc["spec"]["type"] == "ClusterIP" and svc["spec"]["clusterIP"].startswith("10.96.")
    assert svc["spec"]["sessionAffinity"] == "None"
    namespace = raw(core.read_namespace(NS, _preload_content=False))
    assert namespace["metadata"]["labels"]["kubernetes.io/metadata.name"] == NS


def test_writes_to_the_main_resource_ignore_status_and_status_writes_ignore_the_rest(
    api: k8s.ApiClient, cluster: FakeKubeServer
) -> None:
    apps = k8s.AppsV1Api(api)
    body = deployment()
    body["status"] = {"readyReplicas": 9}
    stored = raw(apps.patch_namespaced_deployment("web", NS, body, **KW))
    assert "status" not in stored

    status_write = {"status": {"readyReplicas": 2, "replicas": 2}, "spec": {"replicas": 7}}
    after = raw(apps.patch_namespaced_deployment_status("web", NS, status_write, _preload_content=False))
    assert after["status"] == {"readyReplicas": 2, "replicas": 2}
    assert after["spec"]["replicas"] == 2
    assert after["metadata"]["generation"] == stored["metadata"]["generation"]

    body["spec"]["replicas"] = 3
    body["status"] = {"readyReplicas": 0}
    again = raw(apps.patch_namespaced_deployment("web", NS, body, **KW))
    assert again["status"] == {"readyReplicas": 2, "replicas": 2}
    assert again["metadata"]["generation"] == stored["metadata"]["generation"] + 1
    assert raw(apps.read_namespaced_deployment_status("web", NS, _preload_content=False))["spec"]["replicas"] == 3


def test_it_refuses_a_service_name_that_is_no_dns_1035_label(api: k8s.ApiClient) -> None:
    with pytest.raises(ApiException) as caught:
        k8s.CoreV1Api(api).patch_namespaced_service("70b-chat-r1", NS, service("70b-chat-r1"), **KW)
    assert caught.value.status == 422
    assert refusal(caught)["reason"] == "Invalid"
    assert refusal(caught)["message"] == (
        'Service "70b-chat-r1" is invalid: metadata.name: Invalid value: "70b-chat-r1": a DNS-1035 label must '
        "consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an "
        "alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is "
        "'[a-z]([-a-z0-9]*[a-z0-9])?')"
    )
    # The same name is a valid DNS-1123 subdomain, so a Deployment may have it.
    k8s.AppsV1Api(api).patch_namespaced_deployment("70b-chat-r1", NS, deployment("70b-chat-r1"), **KW)


def test_it_refuses_bad_namespace_names_and_label_values(api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    with pytest.raises(ApiException) as caught:
        core.create_namespace({"metadata": {"name": "fd-acme.prod"}})
    assert refusal(caught)["message"] == (
        'Namespace "fd-acme.prod" is invalid: metadata.name: Invalid value: "fd-acme.prod": must not contain dots'
    )
    labels = {"frontdoor.dev/deployment": "x" * 64, "ok": "has space"}
    with pytest.raises(ApiException) as caught:
        core.create_namespaced_config_map(NS, {"metadata": {"name": "c", "labels": labels}})
    message = refusal(caught)["message"]
    assert message.startswith('ConfigMap "c" is invalid: [metadata.labels: Invalid value: "xxxx')
    assert f'"{"x" * 64}": must be no more than 63 characters' in message
    assert (
        'metadata.labels: Invalid value: "has space": a valid label must be an empty string or consist of '
        "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
    ) in message


def test_it_keeps_a_deployments_selector_as_created(api: k8s.ApiClient) -> None:
    apps = k8s.AppsV1Api(api)
    apps.patch_namespaced_deployment("web", NS, deployment(), **KW)
    moved = deployment()
    moved["spec"]["selector"] = {"matchLabels": {"app": "web", "tier": "gpu"}}
    moved["spec"]["template"]["metadata"]["labels"]["tier"] = "gpu"
    with pytest.raises(ApiException) as caught:
        apps.patch_namespaced_deployment("web", NS, moved, **KW)
    assert caught.value.status == 422
    assert "spec.selector: Invalid value: " in refusal(caught)["message"]
    assert refusal(caught)["message"].endswith("field is immutable")


def test_it_answers_lists_by_field_selector_and_for_every_namespace(api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    nodes = raw(core.list_node(_preload_content=False))["items"]
    assert [n["metadata"]["name"] for n in nodes] == ["cpu-0", "nvidia-h100-0", "nvidia-h100-1"]
    picked = raw(core.list_node(field_selector="metadata.name=cpu-0", _preload_content=False))["items"]
    assert [n["metadata"]["name"] for n in picked] == ["cpu-0"]
    k8s.AppsV1Api(api).patch_namespaced_deployment("web", NS, deployment(), **KW)
    everywhere = raw(k8s.AppsV1Api(api).list_deployment_for_all_namespaces(_preload_content=False))
    assert [d["metadata"]["name"] for d in everywhere["items"]] == ["web"]
    assert everywhere["kind"] == "DeploymentList"
