"""API key names are unique among a tenant's unrevoked keys: the REST API refuses a taken name with a 400 on
``name``, and the migration that brought the rule renamed existing duplicates deterministically."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from rest_framework.test import APIClient

from controlplane.domain_errors import Invalid
from tenants import services
from tenants.models import ApiKey, AuditEvent, Tenant

Api = Callable[[User | None], APIClient]
BASE = "/api/v1/tenants/acme/keys/"
TAKEN = "a key named 'ci-bot' already exists in this tenant; pick another name or revoke that key first"
MIGRATION = importlib.import_module("tenants.migrations.0005_apikey_unique_live_name")
BEFORE = ("tenants", "0004_apikey_batch_limits")
AFTER = ("tenants", "0005_apikey_unique_live_name")


@pytest.mark.parametrize(
    ("names", "renamed"),
    [
        (["ci", "prod"], ["ci", "prod"]),
        (["ci", "ci", "ci"], ["ci", "ci (2)", "ci (3)"]),
        (["ci", "ci (2)", "ci"], ["ci", "ci (2)", "ci (3)"]),  # an existing "ci (2)" keeps its name
        (["ci", "ci", "ci (2)"], ["ci", "ci (3)", "ci (2)"]),  # even when it is newer than the duplicate
        (["a", "b", "a", "b"], ["a", "b", "a (2)", "b (2)"]),
    ],
)
def test_the_oldest_key_keeps_its_name_and_later_ones_get_the_next_free_number(
    names: list[str], renamed: list[str]
) -> None:
    assert MIGRATION.renamed_duplicates(names) == renamed


def test_a_renamed_name_is_cut_to_fit_the_column() -> None:
    long = "k" * 100
    renamed = MIGRATION.renamed_duplicates([long, long])
    assert renamed[1] == "k" * 96 + " (2)" and len(renamed[1]) == 100


def _migrate(target: tuple[str, str]) -> Any:
    executor = MigrationExecutor(connection)
    executor.migrate([target])
    executor.loader.build_graph()
    return executor.loader.project_state([target]).apps


@pytest.mark.django_db(transaction=True)
def test_the_migration_renames_live_duplicates_and_says_so_in_the_audit_log() -> None:
    apps = _migrate(BEFORE)
    try:
        tenants = apps.get_model("tenants", "Tenant")._default_manager
        keys = apps.get_model("tenants", "ApiKey")._default_manager
        acme = tenants.create(slug="acme", name="Acme")
        globex = tenants.create(slug="globex", name="Globex")

        def key(tenant: Any, n: int, revoked_at: datetime | None = None) -> Any:
            return keys.create(
                tenant=tenant, name="ci", key_id=f"k{n:07d}", secret_hash="0" * 64, revoked_at=revoked_at
            )

        first, second, dead, third = (
            key(acme, 1),
            key(acme, 2),
            key(acme, 3, datetime(2026, 1, 1, tzinfo=UTC)),
            key(acme, 4),
        )
        theirs = key(globex, 5)
    finally:
        _migrate(AFTER)
    names = dict(ApiKey.unscoped_objects.values_list("key_id", "name"))
    assert [names[k.key_id] for k in (first, second, dead, third, theirs)] == ["ci", "ci (2)", "ci", "ci (3)", "ci"]
    events = AuditEvent.unscoped_objects.filter(action="api_key.update").order_by("id")
    assert [(e.tenant.slug, e.actor_id, e.object_repr, e.changes) for e in events] == [
        ("acme", None, "ci (2)", {"name": ["ci", "ci (2)"]}),
        ("acme", None, "ci (3)", {"name": ["ci", "ci (3)"]}),
    ]


@pytest.mark.django_db
def test_the_api_refuses_a_taken_name_with_a_400_on_the_name(api: Api, adam: User, acme: Tenant) -> None:
    client = api(adam)
    assert client.post(BASE, {"name": "ci-bot", "scopes": ["read"]}, format="json").status_code == 201
    again = client.post(BASE, {"name": "ci-bot", "scopes": ["inference"]}, format="json")
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "invalid" and again.json()["error"]["fields"] == {"name": [TAKEN]}
    assert ApiKey.objects.for_tenant(acme).count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["", "   ", "k" * 101])
def test_a_name_is_one_to_a_hundred_characters(api: Api, adam: User, acme: Tenant, name: str) -> None:
    refused = api(adam).post(BASE, {"name": name, "scopes": ["read"]}, format="json")
    assert refused.status_code == 400 and list(refused.json()["error"]["fields"]) == ["name"]
    assert not ApiKey.objects.for_tenant(acme).exists()


@pytest.mark.django_db
def test_a_rename_to_a_taken_name_is_refused_and_changes_nothing(
    api: Api, adam: User, acme: Tenant, issue_key: Callable[..., tuple[ApiKey, str]]
) -> None:
    ApiKey.issue(tenant=acme, name="ci-bot", scopes=["read"])
    other, _ = issue_key(acme, ["inference"])
    refused = api(adam).patch(f"{BASE}{other.key_id}/", {"name": "ci-bot", "requests_per_minute": 5}, format="json")
    assert refused.status_code == 400 and refused.json()["error"]["fields"] == {"name": [TAKEN]}
    other.refresh_from_db()
    assert (other.name, other.requests_per_minute) == ("key-inference", None)
    assert not AuditEvent.objects.for_tenant(acme).filter(action="api_key.update").exists()
    same = api(adam).patch(f"{BASE}{other.key_id}/", {"name": "key-inference"}, format="json")
    assert same.status_code == 200  # its own name is no conflict


@pytest.mark.django_db
def test_a_revoked_keys_name_may_be_taken_again_and_other_tenants_names_never_count(
    api: Api, adam: User, acme: Tenant, globex: Tenant
) -> None:
    ApiKey.issue(tenant=globex, name="ci-bot", scopes=["read"])
    old, _ = ApiKey.issue(tenant=acme, name="ci-bot", scopes=["read"])
    client = api(adam)
    assert client.post(f"{BASE}{old.key_id}/revoke/").status_code == 200
    assert client.post(BASE, {"name": "ci-bot", "scopes": ["read"]}, format="json").status_code == 201
    renamed = client.patch(f"{BASE}{old.key_id}/", {"name": "ci-bot"}, format="json")
    assert renamed.status_code == 200  # a revoked key's name is outside the rule


@pytest.mark.django_db(transaction=True)
def test_concurrent_creations_of_one_name_make_one_key_and_refuse_the_rest_with_a_400(
    api: Api, adam: User, acme: Tenant
) -> None:
    clients = [api(adam) for _ in range(4)]
    barrier = threading.Barrier(len(clients))
    statuses: list[int] = []

    def send(client: APIClient) -> None:
        try:
            barrier.wait(timeout=10)
            statuses.append(client.post(BASE, {"name": "ci-bot", "scopes": ["read"]}, format="json").status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(statuses) == [201, 400, 400, 400]
    assert ApiKey.objects.for_tenant(acme).count() == 1


@pytest.mark.django_db
def test_a_name_taken_between_the_check_and_the_insert_is_the_same_refusal(
    acme: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the unique index settles: another request's key appears after this one looked."""
    ApiKey.issue(tenant=acme, name="ci-bot", scopes=["read"])
    real_check = services._check_key_name_free
    looks: list[str] = []

    def look_too_early(tenant_id: int, name: str, **kwargs: Any) -> None:
        looks.append(name)
        if len(looks) > 1:  # the first look happened before the other key committed; later ones see it
            real_check(tenant_id, name, **kwargs)

    monkeypatch.setattr(services, "_check_key_name_free", look_too_early)
    with pytest.raises(Invalid) as refused:
        services.issue_key(acme, name="ci-bot", scopes=["read"], actor=None)
    assert refused.value.fields == {"name": [TAKEN]} and looks == ["ci-bot", "ci-bot"]
    assert ApiKey.objects.for_tenant(acme).count() == 1
