"""A new key on the keys page: issued by POST, shown once by the GET it redirects to, unique by name per tenant."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth.models import User
from django.db import connection
from django.test import Client

from tenants import key_reveal
from tenants.models import ApiKey, Tenant

KEYS = "/t/acme/keys/"


def every_row_as_text() -> str:
    """``SELECT *`` of every table, as text (sees this test's uncommitted rows, the sessions' among them)."""
    chunks: list[str] = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - table names come from the catalogue
            chunks += [repr(row) for row in cursor.fetchall()]
    return "\n".join(chunks)


def test_it_shows_a_new_key_once_on_the_page_it_redirects_to_and_never_on_reload(
    console: Callable[[User | None], Client], adam: User, acme: Tenant
) -> None:
    client = console(adam)
    created = client.post(KEYS, {"name": "ci-bot", "scopes": ["inference"]})
    assert created.status_code == 302 and created["Location"] == KEYS
    shown = client.get(KEYS)
    new_key = shown.context["new_key"]
    key = ApiKey.objects.for_tenant(acme).get()
    assert key.name == "ci-bot" and key.verify(new_key.rsplit("_", 1)[1])
    page = shown.content.decode()
    assert shown["Cache-Control"] == "no-store" and "Key “ci-bot” created" in page
    assert 'data-testid="new-key">' + new_key in page
    reloaded = client.get(KEYS)
    assert new_key not in reloaded.content.decode() and "created — copy it now" not in reloaded.content.decode()
    assert ApiKey.objects.for_tenant(acme).count() == 1


def test_the_new_key_comes_with_the_connect_panel_filled_in(
    console: Callable[[User | None], Client], adam: User
) -> None:
    client = console(adam)
    client.post(KEYS, {"name": "ci-bot", "scopes": ["inference"]})
    shown = client.get(KEYS)
    new_key = shown.context["new_key"]
    panel = shown.content.decode().split('aria-labelledby="connect-h"', 1)[1]
    assert f"Bearer {new_key}" in panel and f'api_key="{new_key}"' in panel
    assert "/v1/chat/completions" in panel


def test_an_htmx_refresh_of_the_table_leaves_the_new_key_for_the_page(
    console: Callable[[User | None], Client], adam: User
) -> None:
    client = console(adam)
    client.post(KEYS, {"name": "ci-bot", "scopes": ["inference"]})
    table = client.get(KEYS, HTTP_HX_REQUEST="true")
    assert "<html" not in table.content.decode() and "new_key" not in table.context
    assert client.get(KEYS).context["new_key"].startswith("fd_live_")


def test_the_session_holds_the_new_key_sealed_never_in_clear(
    console: Callable[[User | None], Client], adam: User
) -> None:
    client = console(adam)
    client.post(KEYS, {"name": "ci-bot", "scopes": ["inference"]})
    held = client.session[key_reveal.SESSION_KEY]
    assert held["sealed"].startswith("fd1.")
    dump = every_row_as_text()  # between the POST and the GET: the session row exists, with the key in it
    new_key = client.get(KEYS).context["new_key"]
    assert new_key.rsplit("_", 1)[1] not in dump
    assert key_reveal.SESSION_KEY not in client.session


def test_a_held_key_shows_only_on_its_own_tenants_page(acme: Tenant, globex: Tenant) -> None:
    key, full_key = ApiKey.issue(tenant=acme, name="ci-bot", scopes=["inference"])
    session: dict[str, object] = {}
    key_reveal.hold_for_reveal(session, key, full_key)
    assert key_reveal.take_for_reveal(session, globex) is None and key_reveal.SESSION_KEY in session
    assert key_reveal.take_for_reveal(session, acme) == (key.key_id, full_key)
    assert key_reveal.take_for_reveal(session, acme) is None


def test_a_held_key_moved_to_another_key_id_does_not_open(acme: Tenant) -> None:
    key, full_key = ApiKey.issue(tenant=acme, name="ci-bot", scopes=["inference"])
    session: dict[str, dict[str, object]] = {}
    key_reveal.hold_for_reveal(session, key, full_key)
    session[key_reveal.SESSION_KEY]["key_id"] = "zzzzzzzz"
    assert key_reveal.take_for_reveal(session, acme) is None and not session


def test_a_name_already_taken_is_a_field_error_with_the_input_kept(
    console: Callable[[User | None], Client], adam: User, acme: Tenant
) -> None:
    client = console(adam)
    assert client.post(KEYS, {"name": "ci-bot", "scopes": ["inference"]}).status_code == 302
    again = client.post(KEYS, {"name": "ci-bot", "scopes": ["read"]})
    assert again.status_code == 422
    assert again.context["form"].errors["name"] == [
        "a key named 'ci-bot' already exists in this tenant; pick another name or revoke that key first"
    ]
    assert 'value="ci-bot"' in again.content.decode()
    assert ApiKey.objects.for_tenant(acme).count() == 1


def test_the_same_form_sent_twice_makes_one_key(
    console: Callable[[User | None], Client], adam: User, acme: Tenant
) -> None:
    client = console(adam)
    form = {"name": "ci-bot", "scopes": ["inference"]}
    statuses = [client.post(KEYS, form).status_code for _ in range(2)]
    assert statuses == [302, 422]
    assert ApiKey.objects.for_tenant(acme).count() == 1


def test_a_revoked_keys_name_is_free_again(
    console: Callable[[User | None], Client], adam: User, acme: Tenant, globex: Tenant
) -> None:
    old, _ = ApiKey.issue(tenant=acme, name="ci-bot", scopes=["inference"])
    ApiKey.issue(tenant=globex, name="ci-bot", scopes=["inference"])  # another tenant's name is no obstacle
    assert console(adam).post(f"{KEYS}{old.key_id}/revoke/").status_code == 302
    assert console(adam).post(KEYS, {"name": "ci-bot", "scopes": ["inference"]}).status_code == 302
    assert sorted(k.is_revoked for k in ApiKey.objects.for_tenant(acme).filter(name="ci-bot")) == [False, True]
