"""An issued API key's secret is never stored nor returned after creation: a dump of every table lacks it."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.db import connection
from rest_framework.test import APIClient

from controlplane.contracts import keyformat
from tenants.models import Tenant

Api = Callable[[User | None], APIClient]


def every_row_as_text() -> str:
    """``SELECT *`` of every table, as text (sees this test's uncommitted rows)."""
    chunks: list[str] = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - table names come from the catalogue
            chunks += [repr(row) for row in cursor.fetchall()]
    return "\n".join(chunks)


def issue_through_the_api(client: APIClient) -> tuple[str, str]:
    body = client.post(
        "/api/v1/tenants/acme/keys/", {"name": "ci", "scopes": ["inference"]}, format="json", HTTP_IDEMPOTENCY_KEY="i-1"
    ).json()
    parsed = keyformat.parse_key(body["key"])
    assert parsed is not None
    return body["key_id"], parsed.secret


@pytest.mark.django_db
def test_no_table_row_contains_an_issued_secret(api: Api, adam: User, acme: Tenant, issue_key: Callable) -> None:
    _, direct_key = issue_key(acme, ["read"])
    _, api_secret = issue_through_the_api(api(adam))
    dump = every_row_as_text()
    assert "ci" in dump  # the dump does hold the keys' rows
    for secret in (keyformat.parse_key(direct_key).secret, api_secret):  # type: ignore[union-attr]
        assert secret not in dump


@pytest.mark.django_db(transaction=True)
def test_pg_dump_of_the_database_lacks_the_secret(api: Api, adam: User, acme: Tenant) -> None:
    key_id, secret = issue_through_the_api(api(adam))
    settings = connection.settings_dict
    dump = subprocess.run(
        [
            "pg_dump",
            "--data-only",
            "-h",
            settings["HOST"],
            "-p",
            str(settings["PORT"]),
            "-U",
            settings["USER"],
            settings["NAME"],
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert key_id in dump
    assert secret not in dump


@pytest.mark.django_db
def test_list_and_detail_responses_never_contain_the_secret(api: Api, adam: User, acme: Tenant) -> None:
    client = api(adam)
    key_id, secret = issue_through_the_api(client)
    replay = client.post(
        "/api/v1/tenants/acme/keys/", {"name": "ci", "scopes": ["inference"]}, format="json", HTTP_IDEMPOTENCY_KEY="i-1"
    )
    for response in (
        client.get("/api/v1/tenants/acme/keys/"),
        client.get(f"/api/v1/tenants/acme/keys/{key_id}/"),
        client.get("/api/v1/tenants/acme/audit-events/"),
        client.patch(f"/api/v1/tenants/acme/keys/{key_id}/", {"name": "renamed"}, format="json"),
        client.post(f"/api/v1/tenants/acme/keys/{key_id}/revoke/"),
        replay,
    ):
        assert response.status_code in {200, 201}
        assert secret not in response.content.decode()
