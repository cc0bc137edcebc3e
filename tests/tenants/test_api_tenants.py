"""/api/v1/tenants/ and /api/v1/tenants/{tenant}/: list, create, read, rename, suspend, resume, delete."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from deployments.models import ModelDeployment
from quotas.models import Quota
from tenants.models import AuditEvent, Membership, Tenant

pytestmark = pytest.mark.django_db

Api = Callable[[User | None], APIClient]


def slugs(response: object) -> list[str]:
    return [row["slug"] for row in response.json()["results"]]  # type: ignore[attr-defined]


def test_it_lists_only_the_users_tenants(api: Api, alice: User, charlie: User) -> None:
    response = api(alice).get("/api/v1/tenants/")
    assert response.status_code == 200
    assert slugs(response) == ["acme"]
    assert response.json()["results"][0]["role"] == "owner"


def test_it_lists_every_tenant_for_staff(api: Api, staff: User, alice: User, charlie: User) -> None:
    assert slugs(api(staff).get("/api/v1/tenants/")) == ["acme", "globex"]


def test_it_lists_a_keys_own_tenant(key_api: Callable[..., APIClient], acme: Tenant, globex: Tenant) -> None:
    assert slugs(key_api(acme, ["read"]).get("/api/v1/tenants/")) == ["acme"]


def test_it_refuses_the_list_to_an_inference_only_key(key_api: Callable[..., APIClient], acme: Tenant) -> None:
    assert key_api(acme, ["inference"]).get("/api/v1/tenants/").status_code == 403


def test_it_filters_and_orders_the_list(api: Api, staff: User, acme: Tenant, globex: Tenant) -> None:
    Tenant.objects.filter(pk=globex.pk).update(status=Tenant.Status.SUSPENDED)
    client = api(staff)
    assert slugs(client.get("/api/v1/tenants/?status=suspended")) == ["globex"]
    assert slugs(client.get("/api/v1/tenants/?ordering=-slug")) == ["globex", "acme"]


def test_staff_create_a_tenant_with_its_quota_and_first_owner(api: Api, staff: User, charlie: User) -> None:
    response = api(staff).post(
        "/api/v1/tenants/", {"slug": "initech", "name": "Initech", "owner": "charlie"}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response.json()["slug"] == "initech"
    tenant = Tenant.objects.get(slug="initech")
    assert Quota.objects.for_tenant(tenant).count() == 1
    assert Membership.objects.for_tenant(tenant).get().user == charlie
    event = AuditEvent.objects.for_tenant(tenant).get(action="tenant.create")
    assert event.actor == staff


def test_it_ignores_status_in_the_create_payload(api: Api, staff: User) -> None:
    response = api(staff).post(
        "/api/v1/tenants/", {"slug": "initech", "name": "Initech", "status": "suspended"}, format="json"
    )
    assert response.status_code == 201
    assert Tenant.objects.get(slug="initech").status == Tenant.Status.ACTIVE


def test_only_staff_create_tenants(api: Api, alice: User) -> None:
    response = api(alice).post("/api/v1/tenants/", {"slug": "initech", "name": "Initech"}, format="json")
    assert response.status_code == 403
    assert not Tenant.objects.filter(slug="initech").exists()


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"slug": "Not_DNS", "name": "x"}, "slug"),
        ({"slug": "-bad-", "name": "x"}, "slug"),
        ({"slug": "acme", "name": "dup"}, "slug"),
        ({"slug": "ok", "name": ""}, "name"),
        ({"slug": "ok", "name": "x", "owner": "nobody"}, "owner"),
        ({"slug": ["list"], "name": "x"}, "slug"),
        ({"name": "x"}, "slug"),
    ],
)
def test_it_refuses_bad_tenant_input_with_field_messages(
    api: Api, staff: User, acme: Tenant, payload: dict[str, object], field: str
) -> None:
    before = Tenant.objects.count()
    response = api(staff).post("/api/v1/tenants/", payload, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert field in error["fields"]
    assert error["code"] == "invalid"
    assert Tenant.objects.count() == before


def test_it_answers_malformed_json_with_a_structured_400(api: Api, staff: User) -> None:
    response = api(staff).generic("POST", "/api/v1/tenants/", '{"slug": "x",', content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"
    assert not Tenant.objects.filter(slug="x").exists()


def test_members_read_their_tenant(api: Api, vera: User) -> None:
    response = api(vera).get("/api/v1/tenants/acme/")
    assert response.status_code == 200
    assert response.json() == {**response.json(), "slug": "acme", "name": "Acme", "role": "viewer"}


def test_another_tenants_member_gets_404(api: Api, charlie: User, acme: Tenant) -> None:
    response = api(charlie).get("/api/v1/tenants/acme/")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_an_admin_renames_the_tenant_and_it_is_audited(api: Api, adam: User, acme: Tenant) -> None:
    response = api(adam).patch("/api/v1/tenants/acme/", {"name": "Acme Corp", "slug": "hijack"}, format="json")
    assert response.status_code == 200
    acme.refresh_from_db()
    assert (acme.slug, acme.name) == ("acme", "Acme Corp")
    event = AuditEvent.objects.for_tenant(acme).get(action="tenant.update")
    assert event.changes == {"name": ["Acme", "Acme Corp"]}
    assert event.actor == adam
    assert event.request_id == response["x-request-id"]


def test_a_member_cannot_rename(api: Api, bob: User, acme: Tenant) -> None:
    assert api(bob).patch("/api/v1/tenants/acme/", {"name": "x"}, format="json").status_code == 403
    acme.refresh_from_db()
    assert acme.name == "Acme"


def test_staff_suspend_and_resume_a_tenant(api: Api, staff: User, alice: User, acme: Tenant) -> None:
    client = api(staff)
    assert client.post("/api/v1/tenants/acme/suspend/").json()["status"] == "suspended"
    # A suspended tenant's members still read, but changes are refused.
    assert api(alice).get("/api/v1/tenants/acme/").status_code == 200
    assert api(alice).patch("/api/v1/tenants/acme/", {"name": "x"}, format="json").status_code == 403
    assert client.post("/api/v1/tenants/acme/resume/").json()["status"] == "active"
    actions = list(AuditEvent.objects.for_tenant(acme).values_list("action", flat=True))
    assert sorted(actions) == ["tenant.resume", "tenant.suspend"]


def test_suspending_twice_records_one_event(api: Api, staff: User, acme: Tenant) -> None:
    client = api(staff)
    client.post("/api/v1/tenants/acme/suspend/")
    client.post("/api/v1/tenants/acme/suspend/")
    assert AuditEvent.objects.for_tenant(acme).filter(action="tenant.suspend").count() == 1


def test_an_owner_cannot_suspend(api: Api, alice: User, acme: Tenant) -> None:
    assert api(alice).post("/api/v1/tenants/acme/suspend/").status_code == 403
    acme.refresh_from_db()
    assert acme.is_active


def test_staff_delete_an_empty_tenant(api: Api, staff: User, acme: Tenant) -> None:
    assert api(staff).delete("/api/v1/tenants/acme/").status_code == 204
    assert not Tenant.objects.filter(slug="acme").exists()
    assert AuditEvent.objects.unscoped().filter(action="tenant.delete", object_repr="acme").count() == 1


def test_deleting_a_tenant_with_deployments_is_a_409(api: Api, staff: User, acme: Tenant) -> None:
    ModelDeployment.unscoped_objects.create(tenant=acme, name="chat", model="m")
    response = api(staff).delete("/api/v1/tenants/acme/")
    assert response.status_code == 409
    assert "1 deployment" in response.json()["error"]["message"]
    assert Tenant.objects.filter(slug="acme").exists()


def test_the_openapi_schema_and_docs_are_served(api: Api, alice: User) -> None:
    client = api(alice)
    schema = client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in ("/api/v1/tenants/", "/api/v1/tenants/{tenant}/keys/", "/api/v1/tenants/{tenant}/quota/"):
        assert path in paths
    assert "apiKey" in schema.json()["components"]["securitySchemes"]
    assert client.get("/api/docs/").status_code == 200
