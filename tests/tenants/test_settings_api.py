"""REST: ``/api/v1/tenants/{tenant}/settings/`` — a tenant admin sets the SLO webhook; the secret is shown once."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from rest_framework.test import APIClient

from tenants.models import AuditEvent, Tenant, TenantSettings

pytestmark = pytest.mark.django_db

Api = Callable[[User | None], APIClient]
URL = "/api/v1/tenants/acme/settings/"
ROTATE = URL + "rotate-secret/"
# A public address literal: the check needs no DNS (these machines have none).
PUBLIC_HOOK = "https://93.184.215.14/frontdoor/slo"


def stored(tenant: Tenant) -> TenantSettings | None:
    return TenantSettings.objects.for_tenant(tenant).first()


def test_it_shows_blank_settings_to_an_admin_without_writing(api: Api, adam: User, acme: Tenant) -> None:
    response = api(adam).get(URL)
    assert response.status_code == 200
    assert response.json() == {"tenant": "acme", "webhook_url": "", "webhook_secret_set": False, "updated_at": None}
    assert stored(acme) is None


@pytest.mark.parametrize("persona", ["bob", "vera"])
def test_members_and_viewers_may_neither_read_nor_write(
    api: Api, persona: str, request: pytest.FixtureRequest, acme: Tenant
) -> None:
    client = api(request.getfixturevalue(persona))
    assert client.get(URL).status_code == 403
    assert client.put(URL, {"webhook_url": PUBLIC_HOOK}, format="json").status_code == 403
    assert client.post(ROTATE).status_code == 403
    assert stored(acme) is None


def test_another_tenant_gets_404_and_changes_nothing(api: Api, charlie: User, acme: Tenant) -> None:
    client = api(charlie)
    assert client.get(URL).status_code == 404
    assert client.put(URL, {"webhook_url": PUBLIC_HOOK}, format="json").status_code == 404
    assert client.patch(URL, {"webhook_url": PUBLIC_HOOK}, format="json").status_code == 404
    assert client.post(ROTATE).status_code == 404
    assert api(None).get(URL).status_code in (401, 403)
    assert stored(acme) is None


def test_a_manage_key_acts_as_admin_and_a_read_key_is_refused(
    key_api: Callable[[Tenant, list[str]], APIClient], acme: Tenant
) -> None:
    assert key_api(acme, ["read"]).get(URL).status_code == 403
    response = key_api(acme, ["manage"]).put(URL, {"webhook_url": PUBLIC_HOOK}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["webhook_url"] == PUBLIC_HOOK


def test_the_first_url_returns_a_signing_secret_once(api: Api, adam: User, acme: Tenant) -> None:
    client = api(adam)
    first = client.put(URL, {"webhook_url": PUBLIC_HOOK}, format="json")
    assert first.status_code == 200, first.json()
    body = first.json()
    secret = body["webhook_secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    assert body["webhook_secret_set"] is True
    assert first["Cache-Control"] == "no-store"
    row = stored(acme)
    assert row is not None and (row.webhook_url, row.webhook_secret) == (PUBLIC_HOOK, secret)

    shown = client.get(URL).json()
    assert "webhook_secret" not in shown and secret not in str(shown)
    assert shown["webhook_secret_set"] is True

    changed = client.patch(URL, {"webhook_url": "https://93.184.215.14/other"}, format="json").json()
    assert "webhook_secret" not in changed
    assert stored(acme).webhook_secret == secret  # type: ignore[union-attr]


def test_changes_are_audited_without_the_secret(api: Api, adam: User, acme: Tenant) -> None:
    secret = api(adam).put(URL, {"webhook_url": PUBLIC_HOOK}, format="json").json()["webhook_secret"]
    rotated = api(adam).post(ROTATE).json()["webhook_secret"]
    events = list(AuditEvent.objects.for_tenant(acme).filter(action__startswith="settings.").order_by("pk"))
    assert [(e.action, e.actor_id) for e in events] == [
        ("settings.update", adam.pk),
        ("settings.rotate_webhook_secret", adam.pk),
    ]
    assert events[0].changes["webhook_url"] == ["", PUBLIC_HOOK]
    for event in events:
        assert secret not in str(event.changes) and rotated not in str(event.changes)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",  # loopback
        "http://localhost/hook",  # a name resolving to loopback
        "http://[::1]/hook",
        "http://10.1.2.3/hook",  # RFC 1918
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://169.254.7.7/hook",  # link-local
        "http://[fe80::1]/hook",
        "http://100.64.1.1/hook",  # CGNAT
        "http://[::ffff:10.0.0.1]/hook",  # IPv4-mapped private
        "https://user:pw@93.184.215.14/hook",  # credentials
        "ftp://93.184.215.14/hook",
        "https://no-such-host.invalid/hook",  # does not resolve
    ],
)
def test_it_refuses_a_url_the_sender_would_refuse_as_a_field_error(
    api: Api, adam: User, acme: Tenant, url: str
) -> None:
    for method in ("put", "patch"):
        response = getattr(api(adam), method)(URL, {"webhook_url": url}, format="json")
        assert response.status_code == 400, (method, url, response.json())
        assert list(response.json()["error"]["fields"]) == ["webhook_url"]
    assert stored(acme) is None


def test_clearing_the_url_drops_the_secret_and_a_new_url_gets_a_fresh_one(api: Api, adam: User, acme: Tenant) -> None:
    client = api(adam)
    first = client.put(URL, {"webhook_url": PUBLIC_HOOK}, format="json").json()["webhook_secret"]
    cleared = client.put(URL, {"webhook_url": ""}, format="json").json()
    assert cleared["webhook_url"] == "" and cleared["webhook_secret_set"] is False
    again = client.put(URL, {"webhook_url": PUBLIC_HOOK}, format="json").json()["webhook_secret"]
    assert again != first
    assert stored(acme).webhook_secret == again  # type: ignore[union-attr]


def test_rotating_replaces_the_secret_and_shows_the_new_one_once(api: Api, adam: User, acme: Tenant) -> None:
    client = api(adam)
    refused = client.post(ROTATE)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "no_webhook"
    first = client.put(URL, {"webhook_url": PUBLIC_HOOK}, format="json").json()["webhook_secret"]
    rotated = client.post(ROTATE, HTTP_IDEMPOTENCY_KEY="rotate-1")
    assert rotated.status_code == 200
    new = rotated.json()["webhook_secret"]
    assert new != first and stored(acme).webhook_secret == new  # type: ignore[union-attr]
    # A replay neither rotates again nor repeats the secret (it is never stored in the idempotency record).
    replay = client.post(ROTATE, HTTP_IDEMPOTENCY_KEY="rotate-1")
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json()["webhook_secret"] is None
    assert stored(acme).webhook_secret == new  # type: ignore[union-attr]
    assert "webhook_secret" not in client.get(URL).json()
