"""The fake Kubernetes API server behaves like the real one where the backend depends on it, through the
official client: 404s and 409s with Status bodies, resourceVersion, label selectors, apply, cascade, faults."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.fakekube.server import FakeKubeServer


@pytest.fixture
def server() -> Any:
    fake = FakeKubeServer().start()
    yield fake
    fake.stop()


@pytest.fixture
def api(server: FakeKubeServer) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    configuration.host = server.url
    configuration.retries = False
    return k8s.ApiClient(configuration)


def _ns(core: k8s.CoreV1Api, name: str = "t1") -> None:
    core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def _service(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"ports": [{"port": 80}]},
    }


def test_it_answers_404_with_a_status_object(api: k8s.ApiClient) -> None:
    with pytest.raises(ApiException) as caught:
        k8s.CoreV1Api(api).read_namespaced_service("missing", "t1")
    assert caught.value.status == 404
    body = json.loads(caught.value.body)
    assert body["kind"] == "Status" and body["reason"] == "NotFound"


def test_it_refuses_creating_an_existing_name_and_stale_updates(api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    _ns(core)
    created = core.create_namespaced_service("t1", _service("a"))
    with pytest.raises(ApiException) as exists:
        core.create_namespaced_service("t1", _service("a"))
    assert exists.value.status == 409
    fresh = core.read_namespaced_service("a", "t1")
    fresh.metadata.labels = {"x": "1"}
    replaced = core.replace_namespaced_service("a", "t1", fresh)
    assert int(replaced.metadata.resource_version) > int(created.metadata.resource_version)
    created.metadata.labels = {"x": "2"}
    with pytest.raises(ApiException) as stale:
        core.replace_namespaced_service("a", "t1", created)
    assert stale.value.status == 409


def test_it_lists_by_label_selector(api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    _ns(core)
    core.create_namespaced_service("t1", _service("a", {"app": "x", "rev": "r1"}))
    core.create_namespaced_service("t1", _service("b", {"app": "x", "rev": "r2"}))
    core.create_namespaced_service("t1", _service("c", {"app": "y"}))
    names = lambda sel: sorted(s.metadata.name for s in core.list_namespaced_service("t1", label_selector=sel).items)  # noqa: E731
    assert names("app=x") == ["a", "b"]
    assert names("app=x,rev!=r1") == ["b"]
    assert names("rev in (r1,r2)") == ["a", "b"]
    assert names("!rev") == ["c"]


def test_it_server_side_applies_and_merge_patches(api: k8s.ApiClient, server: FakeKubeServer) -> None:
    core = k8s.CoreV1Api(api)
    _ns(core)
    body = _service("a", {"app": "x"})
    kw = {"field_manager": "frontdoor", "force": True, "_content_type": "application/apply-patch+yaml"}
    core.patch_namespaced_service("a", "t1", body, **kw)  # creates
    body["metadata"]["labels"]["tier"] = "gpu"
    applied = core.patch_namespaced_service("a", "t1", body, **kw)
    assert applied.metadata.labels == {"app": "x", "tier": "gpu"}
    patched = core.patch_namespaced_service("a", "t1", {"metadata": {"labels": {"tier": None}}})
    assert patched.metadata.labels == {"app": "x"}
    assert server.store.stats.writes == 4 and server.store.stats.reads == 0


def test_it_cascades_deletion_to_owned_objects(api: k8s.ApiClient, server: FakeKubeServer) -> None:
    core = k8s.CoreV1Api(api)
    _ns(core)
    owner = core.create_namespaced_service("t1", _service("owner"))
    child = _service("child")
    child["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "Service", "name": "owner", "uid": owner.metadata.uid}
    ]
    core.create_namespaced_service("t1", child)
    core.create_namespaced_service("t1", _service("bystander"))
    core.delete_namespaced_service("owner", "t1")
    assert sorted(s.metadata.name for s in core.list_namespaced_service("t1").items) == ["bystander"]
    core.delete_namespace("t1")
    assert [key for key in server.store.objects if key[0] != "nodes"] == []


def test_it_injects_failures_and_recovers(api: k8s.ApiClient, server: FakeKubeServer) -> None:
    core = k8s.CoreV1Api(api)
    server.store.faults.fail_next = 2
    for _ in range(2):
        with pytest.raises(ApiException) as caught:
            core.list_namespace()
        assert caught.value.status == 500
    assert core.list_namespace().items == []
    server.store.faults.reject_names = {"bad": "spec.ports: Required value"}
    with pytest.raises(ApiException) as rejected:
        core.create_namespace({"metadata": {"name": "bad"}})
    assert rejected.value.status == 422 and "Required value" in json.loads(rejected.value.body)["message"]


def test_it_drops_connections_on_request(api: k8s.ApiClient, server: FakeKubeServer) -> None:
    server.store.faults.drop_next = 1
    with pytest.raises(Exception) as caught:
        k8s.CoreV1Api(api).list_namespace(_request_timeout=5)
    assert not isinstance(caught.value, ApiException) or caught.value.status == 0
    assert k8s.CoreV1Api(api).list_namespace().items == []


def test_list_items_of_built_in_kinds_carry_no_kind_as_on_a_real_server(api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    _ns(core)
    core.create_namespaced_service("t1", _service("a"))
    listed = json.loads(core.list_namespaced_service("t1", _preload_content=False).data)
    assert listed["kind"] == "ServiceList" and listed["apiVersion"] == "v1"
    assert "kind" not in listed["items"][0] and "apiVersion" not in listed["items"][0]
    read = json.loads(core.read_namespaced_service("a", "t1", _preload_content=False).data)
    assert read["kind"] == "Service" and read["apiVersion"] == "v1"
    route = {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "r"}, "spec": {}}
    custom = k8s.CustomObjectsApi(api)
    custom.create_namespaced_custom_object("gateway.networking.k8s.io", "v1", "t1", "httproutes", route)
    routes = custom.list_namespaced_custom_object("gateway.networking.k8s.io", "v1", "t1", "httproutes")
    assert routes["items"][0]["kind"] == "HTTPRoute"  # a CRD's items keep theirs


def test_it_answers_404_for_unknown_paths_versions_and_subresources(api: k8s.ApiClient, server: FakeKubeServer) -> None:
    core = k8s.CoreV1Api(api)
    _ns(core)
    core.create_namespaced_service("t1", _service("a"))
    for path in (
        "/apis/apps/v1beta1/namespaces/t1/deployments",
        "/api/v1/namespaces/t1/widgets",
        "/api/v1/namespaces/t1/services/a/scale",
        "/api/v1/namespaces/t1/nodes/x",
    ):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(server.url + path, timeout=5)  # noqa: S310 (the local fake)
        assert caught.value.code == 404, path
        assert json.loads(caught.value.read())["reason"] == "NotFound"


def test_objects_carry_their_owners_as_managed_fields(api: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(api)
    _ns(core)
    kw = {"field_manager": "frontdoor", "force": True, "_content_type": "application/apply-patch+yaml"}
    applied = json.loads(
        core.patch_namespaced_service("a", "t1", _service("a", {"app": "x"}), _preload_content=False, **kw).data
    )
    (entry,) = applied["metadata"]["managedFields"]
    assert entry["manager"] == "frontdoor" and entry["operation"] == "Apply" and entry["fieldsType"] == "FieldsV1"
    assert entry["fieldsV1"]["f:spec"]["f:ports"] == {'k:{"port":80,"protocol":"TCP"}': {".": {}, "f:port": {}}}
    assert entry["fieldsV1"]["f:metadata"] == {"f:labels": {"f:app": {}}}
