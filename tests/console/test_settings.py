"""The tenant settings page: admins set the SLO webhook (SSRF-checked), see its secret once, rotate it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tenants.models import AuditEvent, Tenant, TenantSettings
from tests.support.network import loopback_only

pytestmark = pytest.mark.django_db

URL = "/t/acme/settings/"
# A public address literal: the check needs no DNS (these machines have none).
PUBLIC_HOOK = "https://93.184.215.14/frontdoor/slo"

Console = Callable[[User | None], Client]


def stored(tenant: Tenant) -> TenantSettings | None:
    return TenantSettings.objects.for_tenant(tenant).first()


@pytest.mark.parametrize("persona", ["adam", "alice"])
def test_it_shows_admins_and_owners_the_page_without_writing(
    console: Console, persona: str, request: pytest.FixtureRequest, acme: Tenant
) -> None:
    response = console(request.getfixturevalue(persona)).get(URL)
    assert response.status_code == 200
    page = response.content.decode()
    assert 'name="webhook_url"' in page and f'href="{URL}"' in page  # the form, and the nav link
    assert stored(acme) is None


@pytest.mark.parametrize("persona", ["bob", "vera"])
def test_it_refuses_members_and_viewers_and_hides_the_link(
    console: Console, persona: str, request: pytest.FixtureRequest, acme: Tenant
) -> None:
    client = console(request.getfixturevalue(persona))
    assert client.get(URL).status_code == 403
    assert client.post(URL, {"action": "save", "webhook_url": PUBLIC_HOOK}).status_code == 403
    assert client.post(URL, {"action": "rotate"}).status_code == 403
    assert f'href="{URL}"' not in client.get("/t/acme/").content.decode()
    assert stored(acme) is None


def test_it_hides_the_tenant_from_outsiders(console: Console, charlie: User, acme: Tenant) -> None:
    client = console(charlie)
    assert client.get(URL).status_code == 404
    assert client.post(URL, {"action": "save", "webhook_url": PUBLIC_HOOK}).status_code == 404


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://10.0.0.5/hook",
        "http://169.254.169.254/latest/meta-data/",
        "https://user:pw@93.184.215.14/hook",
    ],
)
def test_it_refuses_internal_urls_on_the_field_and_keeps_the_input(
    console: Console, adam: User, acme: Tenant, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with loopback_only(monkeypatch) as attempts:  # refused by the policy alone: nothing is connected to
        response = console(adam).post(URL, {"action": "save", "webhook_url": url})
    assert attempts == []
    assert response.status_code == 422
    form = response.context["form"]
    assert list(form.errors) == ["webhook_url"]
    page = response.content.decode()
    assert f'value="{url}"' in page and 'aria-invalid="true"' in page
    assert stored(acme) is None
    assert not AuditEvent.objects.for_tenant(acme).filter(action__startswith="settings.").exists()


def test_it_reveals_the_new_secret_once_and_audits_without_it(console: Console, adam: User, acme: Tenant) -> None:
    client = console(adam)
    response = client.post(URL, {"action": "save", "webhook_url": PUBLIC_HOOK})
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    secret = response.context["new_secret"]
    row = stored(acme)
    assert row is not None and row.webhook_url == PUBLIC_HOOK and row.webhook_secret == secret
    assert secret in response.content.decode() and 'data-copy-target="new-secret"' in response.content.decode()
    again = client.get(URL)
    assert secret not in again.content.decode() and PUBLIC_HOOK in again.content.decode()
    event = AuditEvent.objects.for_tenant(acme).get(action="settings.update")
    assert event.actor == adam and secret not in str(event.changes)


def test_it_keeps_the_secret_when_the_url_changes(console: Console, adam: User, acme: Tenant) -> None:
    client = console(adam)
    first = client.post(URL, {"action": "save", "webhook_url": PUBLIC_HOOK}).context["new_secret"]
    response = client.post(URL, {"action": "save", "webhook_url": PUBLIC_HOOK + "/v2"})
    assert response.status_code == 302
    row = stored(acme)
    assert row is not None and row.webhook_url == PUBLIC_HOOK + "/v2" and row.webhook_secret == first
    assert first not in client.get(URL).content.decode()


def test_it_rotates_the_secret_and_shows_the_new_one_once(console: Console, adam: User, acme: Tenant) -> None:
    client = console(adam)
    first = client.post(URL, {"action": "save", "webhook_url": PUBLIC_HOOK}).context["new_secret"]
    response = client.post(URL, {"action": "rotate"})
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    rotated = response.context["new_secret"]
    assert rotated != first and rotated in response.content.decode()
    row = stored(acme)
    assert row is not None and row.webhook_secret == rotated
    assert rotated not in client.get(URL).content.decode()
    assert AuditEvent.objects.for_tenant(acme).filter(action="settings.rotate_webhook_secret", actor=adam).count() == 1


def test_it_refuses_to_rotate_without_a_webhook(console: Console, adam: User, acme: Tenant) -> None:
    response = console(adam).post(URL, {"action": "rotate"})
    assert response.status_code == 409 and "Set a webhook URL first" in response.content.decode()
    row = stored(acme)
    assert row is None or not row.webhook_secret


def test_it_clears_the_webhook_and_drops_the_secret(console: Console, adam: User, acme: Tenant) -> None:
    client = console(adam)
    client.post(URL, {"action": "save", "webhook_url": PUBLIC_HOOK})
    response = client.post(URL, {"action": "save", "webhook_url": ""})
    assert response.status_code == 302
    row = stored(acme)
    assert row is not None and row.webhook_url == "" and row.webhook_secret == ""
    assert "No secret yet" in client.get(URL).content.decode()
