"""Tenant secrets through the REST API: write-only values, roles, refusals that change nothing, use by deployments."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import override_settings
from rest_framework.test import APIClient

from deployments import secrets
from deployments.models import ModelDeployment, Revision, TenantSecret
from tenants.models import AuditEvent, Tenant

pytestmark = pytest.mark.django_db

BASE = "/api/v1/tenants/acme/secrets/"
DEPLOYMENTS = "/api/v1/tenants/acme/deployments/"
TOKEN = "hf_s3cr3t-value-that-must-never-show"
# Never contacted: only the address policy checks it (a free loopback port, allowed by the tests that use it).
EXTERNAL_ENDPOINT = "http://127.0.0.1:40999/v1"
Api = Callable[[User | None], APIClient]
Payload = Callable[..., dict[str, Any]]


def create(client: APIClient, **fields: Any) -> Any:
    return client.post(BASE, {"name": "hf-token", "value": TOKEN, **fields}, format="json")


def everything_stored(acme: Tenant) -> str:
    """Every row a secret change may write, as text: what a value must never appear in."""
    rows = list(TenantSecret.unscoped_objects.filter(tenant=acme).values())
    rows += list(AuditEvent.unscoped_objects.filter(tenant=acme).values("action", "changes", "object_repr"))
    rows += list(Revision.unscoped_objects.filter(deployment__tenant=acme).values("spec"))
    return json.dumps(rows, default=str)


def test_an_admin_sets_a_secret_and_no_answer_or_row_carries_the_value(api: Api, alice: User, acme: Tenant) -> None:
    created = create(api(alice))

    assert created.status_code == 201, created.json()
    assert created.json()["name"] == "hf-token"
    assert created.json()["version"] == 1
    assert "value" not in created.json()
    listed = api(alice).get(BASE)
    shown = api(alice).get(f"{BASE}hf-token/")
    assert [s["name"] for s in listed.json()["results"]] == ["hf-token"]
    for response in (created, listed, shown):
        assert TOKEN not in response.content.decode()
    assert TOKEN not in everything_stored(acme)
    assert secrets.reveal(TenantSecret.objects.for_tenant(acme).get()) == TOKEN
    audit = AuditEvent.unscoped_objects.get(tenant=acme, action="secret.create")
    assert audit.changes == {"name": "hf-token", "kind": "generic"}


def test_members_and_viewers_read_names_but_only_admins_change_secrets(
    api: Api, alice: User, bob: User, vera: User, acme: Tenant
) -> None:
    assert create(api(alice)).status_code == 201

    for user in (bob, vera):
        assert api(user).get(BASE).status_code == 200
        assert create(api(user), name="other").status_code == 403
        assert api(user).patch(f"{BASE}hf-token/", {"value": "x"}, format="json").status_code == 403
        assert api(user).delete(f"{BASE}hf-token/").status_code == 403
    assert TenantSecret.objects.for_tenant(acme).get().version == 1


def test_another_tenants_secret_is_not_found(api: Api, alice: User, charlie: User) -> None:
    assert create(api(alice)).status_code == 201

    assert api(charlie).get(f"{BASE}hf-token/").status_code == 404
    assert api(charlie).get("/api/v1/tenants/globex/secrets/hf-token/").status_code == 404
    assert (
        api(charlie).patch("/api/v1/tenants/globex/secrets/hf-token/", {"value": "x"}, format="json").status_code == 404
    )


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"name": "HF_TOKEN"}, "name"),
        ({"name": "-leading"}, "name"),
        ({"name": "a" * 64}, "name"),
        ({"name": "../etc"}, "name"),
        ({"value": ""}, "value"),
        ({"value": "a\x00b"}, "value"),
        ({"value": "x" * 8193}, "value"),
        ({"kind": "certificate"}, "kind"),
        ({"kind": "registry"}, "registry_server"),
        ({"kind": "registry", "registry_server": "https://ghcr.io/x", "registry_username": "u"}, "registry_server"),
        ({"kind": "registry", "registry_server": "ghcr.io"}, "registry_username"),
        ({"registry_server": "ghcr.io"}, "kind"),
    ],
)
def test_bad_input_is_a_field_error_and_creates_nothing(
    api: Api, alice: User, acme: Tenant, fields: dict[str, Any], field: str
) -> None:
    response = create(api(alice), **fields)

    assert response.status_code == 400, response.json()
    assert field in response.json()["error"]["fields"], response.json()
    assert not TenantSecret.objects.for_tenant(acme).exists()
    assert not AuditEvent.unscoped_objects.filter(tenant=acme, action__startswith="secret.").exists()


def test_a_name_is_taken_once_and_the_count_is_bounded(api: Api, alice: User, acme: Tenant) -> None:
    client = api(alice)
    assert create(client).status_code == 201

    again = create(client)
    assert again.status_code == 400
    assert "already has a secret named 'hf-token'" in again.json()["error"]["fields"]["name"][0]
    with override_settings(FRONTDOOR_SECRETS_PER_TENANT=2):
        assert create(client, name="second").status_code == 201
        third = create(client, name="third")
    assert third.status_code == 400
    assert "the most it may have" in third.json()["error"]["fields"]["name"][0]
    assert TenantSecret.objects.for_tenant(acme).count() == 2


def test_rotating_bumps_the_version_once_per_change_and_audits_without_the_value(
    api: Api, alice: User, acme: Tenant
) -> None:
    client = api(alice)
    assert create(client).status_code == 201

    rotated = client.patch(f"{BASE}hf-token/", {"value": "hf_new"}, format="json")
    unchanged = client.patch(f"{BASE}hf-token/", {"value": "hf_new"}, format="json")
    replaced = client.put(f"{BASE}hf-token/", {"value": "hf_newer"}, format="json")
    no_value = client.put(f"{BASE}hf-token/", {}, format="json")

    assert rotated.status_code == 200 and rotated.json()["version"] == 2
    assert unchanged.json()["version"] == 2
    assert replaced.json()["version"] == 3
    assert no_value.status_code == 400 and "value" in no_value.json()["error"]["fields"]
    assert secrets.reveal(TenantSecret.objects.for_tenant(acme).get()) == "hf_newer"
    updates = AuditEvent.unscoped_objects.filter(tenant=acme, action="secret.update").order_by("id")
    assert [e.changes for e in updates] == [
        {"value_rotated": True, "version": 2},
        {"value_rotated": True, "version": 3},
    ]
    assert "hf_new" not in everything_stored(acme)


def test_a_registry_login_keeps_its_host_and_user_and_changes_them(api: Api, alice: User, acme: Tenant) -> None:
    client = api(alice)
    login = {"kind": "registry", "registry_server": "registry.example.com:5000", "registry_username": "robot"}
    assert create(client, name="pull", **login).status_code == 201

    changed = client.patch(f"{BASE}pull/", {"registry_username": "robot2"}, format="json")

    assert changed.status_code == 200
    assert changed.json()["registry_username"] == "robot2"
    assert changed.json()["registry_server"] == "registry.example.com:5000"
    assert changed.json()["version"] == 2


def test_a_secret_in_use_cannot_be_deleted_until_nothing_uses_it(
    api: Api, alice: User, acme: Tenant, deployment_payload: Payload
) -> None:
    client = api(alice)
    assert create(client).status_code == 201
    made = client.post(DEPLOYMENTS, deployment_payload(secret_env={"HF_TOKEN": "hf-token"}), format="json")
    assert made.status_code == 201, made.json()
    assert client.get(f"{BASE}hf-token/").json()["used_by"] == ["chat-small"]

    refused = client.delete(f"{BASE}hf-token/")

    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "secret_in_use"
    assert "chat-small" in refused.json()["error"]["message"]
    assert TenantSecret.objects.for_tenant(acme).exists()
    # Stop using it: the new revision takes all traffic and the old one no longer runs.
    assert client.patch(f"{DEPLOYMENTS}chat-small/", {"secret_env": {}}, format="json").status_code == 200
    Revision.objects.for_tenant(acme).filter(number=1).update(desired_replicas=0)
    assert client.delete(f"{BASE}hf-token/").status_code == 204
    assert not TenantSecret.objects.for_tenant(acme).exists()
    assert AuditEvent.unscoped_objects.filter(tenant=acme, action="secret.delete").get().changes == {"name": "hf-token"}


def test_a_deployment_names_secrets_and_its_revision_freezes_the_names_not_the_values(
    api: Api, alice: User, acme: Tenant, deployment_payload: Payload
) -> None:
    client = api(alice)
    assert create(client).status_code == 201

    made = client.post(DEPLOYMENTS, deployment_payload(secret_env={"HF_TOKEN": "hf-token"}), format="json")

    assert made.status_code == 201, made.json()
    assert made.json()["secret_env"] == {"HF_TOKEN": "hf-token"}
    revision = Revision.objects.for_tenant(acme).get()
    assert revision.spec["secret_env"] == {"HF_TOKEN": "hf-token"}
    assert TOKEN not in everything_stored(acme)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"secret_env": {"HF_TOKEN": "missing"}}, "secret_env", "no secret named 'missing'"),
        ({"secret_env": {"HF_TOKEN": "pull"}}, "secret_env", "is a registry login"),
        ({"secret_env": {"HF_TOKEN": "hf-token"}, "env": {"HF_TOKEN": "x"}}, "secret_env", "set in env too"),
        ({"secret_env": {"LD_PRELOAD": "hf-token"}}, "secret_env", "LD_PRELOAD"),
        ({"secret_env": {"1BAD": "hf-token"}}, "secret_env", "not a variable name"),
        ({"secret_env": ["hf-token"]}, "secret_env", ""),
        ({"upstream_key_secret": "hf-token"}, "upstream_key_secret", "only runtime 'external'"),
    ],
)
def test_a_deployment_referring_to_secrets_badly_is_refused_and_not_made(
    api: Api,
    alice: User,
    acme: Tenant,
    deployment_payload: Payload,
    fields: dict[str, Any],
    field: str,
    message: str,
) -> None:
    client = api(alice)
    assert create(client).status_code == 201
    login = {"kind": "registry", "registry_server": "ghcr.io", "registry_username": "robot"}
    assert create(client, name="pull", **login).status_code == 201

    response = client.post(DEPLOYMENTS, deployment_payload(**fields), format="json")

    assert response.status_code == 400, response.json()
    errors = response.json()["error"]["fields"][field]
    assert any(message in e for e in errors), errors
    assert not ModelDeployment.objects.for_tenant(acme).exists()


@override_settings(FRONTDOOR_EXTERNAL_ALLOWED_NETWORKS=["127.0.0.0/8"])
def test_an_external_deployment_takes_an_upstream_key_but_no_secret_variables(
    api: Api, alice: User, acme: Tenant
) -> None:
    client = api(alice)
    assert create(client).status_code == 201
    external = {"name": "hosted", "runtime": "external", "model": "gpt-x", "endpoints": [EXTERNAL_ENDPOINT]}

    with_env = client.post(DEPLOYMENTS, {**external, "secret_env": {"K": "hf-token"}}, format="json")
    unknown = client.post(DEPLOYMENTS, {**external, "upstream_key_secret": "nope"}, format="json")

    assert with_env.status_code == 400 and set(with_env.json()["error"]["fields"]) == {"secret_env"}
    assert unknown.status_code == 400 and set(unknown.json()["error"]["fields"]) == {"upstream_key_secret"}
    assert not ModelDeployment.objects.for_tenant(acme).exists()


@override_settings(FRONTDOOR_SEAL_KEY="")
def test_without_a_seal_key_nothing_that_would_cross_redis_is_accepted(
    api: Api, alice: User, acme: Tenant, deployment_payload: Payload
) -> None:
    client = api(alice)
    assert create(client).status_code == 201

    response = client.post(DEPLOYMENTS, deployment_payload(secret_env={"HF_TOKEN": "hf-token"}), format="json")

    assert response.status_code == 400
    assert "FRONTDOOR_SEAL_KEY" in response.json()["error"]["fields"]["secret_env"][0]
    assert not ModelDeployment.objects.for_tenant(acme).exists()


def test_a_sealed_value_copied_to_another_tenants_row_does_not_open(
    api: Api, alice: User, charlie: User, acme: Tenant, globex: Tenant
) -> None:
    assert create(api(alice)).status_code == 201
    assert (
        api(charlie).post("/api/v1/tenants/globex/secrets/", {"name": "hf-token", "value": "mine"}).status_code == 201
    )
    stolen = TenantSecret.objects.for_tenant(acme).get().sealed_value
    TenantSecret.objects.for_tenant(globex).update(sealed_value=stolen)

    with pytest.raises(ValueError, match="does not open"):
        secrets.reveal(TenantSecret.objects.for_tenant(globex).get())


@override_settings(FRONTDOOR_EXTERNAL_ALLOWED_NETWORKS=["127.0.0.0/8"])
def test_an_upstream_key_must_be_one_an_http_header_can_carry(api: Api, alice: User, acme: Tenant) -> None:
    client = api(alice)
    assert create(client, name="spaced", value="two words").status_code == 201
    assert create(client, name="good", value="sk-upstream").status_code == 201
    external = {"name": "hosted", "runtime": "external", "model": "gpt-x", "endpoints": [EXTERNAL_ENDPOINT]}

    refused = client.post(DEPLOYMENTS, {**external, "upstream_key_secret": "spaced"}, format="json")
    made = client.post(DEPLOYMENTS, {**external, "upstream_key_secret": "good"}, format="json")
    broken = client.patch(f"{BASE}good/", {"value": "sk-upstream\r\nX-Injected: 1"}, format="json")

    assert refused.status_code == 400
    assert "visible ASCII" in refused.json()["error"]["fields"]["upstream_key_secret"][0]
    assert made.status_code == 201, made.json()
    assert broken.status_code == 400
    assert "upstream API key" in broken.json()["error"]["fields"]["value"][0]
    assert secrets.reveal(TenantSecret.objects.for_tenant(acme).get(name="good")) == "sk-upstream"
