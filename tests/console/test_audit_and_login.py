"""The audit log (filterable, admins only) and sign-in with failed attempts rate-limited in Redis."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client

from deployments.models import ModelDeployment
from tenants.models import Tenant


def test_it_filters_the_audit_log(
    console: Callable[[User | None], Client], adam: User, acme: Tenant, make_deployment: Callable[..., ModelDeployment]
) -> None:
    make_deployment(acme, "chat")
    client = console(adam)
    client.post("/t/acme/keys/", {"name": "ci", "scopes": ["inference"]})
    everything = [e.action for e in client.get("/t/acme/audit/").context["page"]]
    assert everything[:2] == ["api_key.create", "deployment.create"]
    keys_only = client.get("/t/acme/audit/?action=api_key", HTTP_HX_REQUEST="true")
    assert [e.action for e in keys_only.context["page"]] == ["api_key.create"]
    assert "<html" not in keys_only.content.decode()
    by_adam = client.get("/t/acme/audit/?actor=adam").context["page"]
    assert [e.actor.username for e in by_adam] == ["adam"]


@pytest.fixture
def signer(db: None) -> User:
    return User.objects.create_user("signer", password="correct horse battery")


def test_it_signs_in_and_out(console: Callable[[User | None], Client], signer: User) -> None:
    client = console(None)
    response = client.post("/login/", {"username": "signer", "password": "correct horse battery"})
    assert response.status_code == 302
    assert client.post("/logout/").status_code == 302
    assert client.get("/").status_code == 302


def test_it_rate_limits_failed_sign_ins_per_ip_and_username(
    console: Callable[[User | None], Client], signer: User, settings: pytest.FixtureRequest
) -> None:
    settings.LOGIN_RATE_LIMIT_PER_MINUTE = 3  # type: ignore[attr-defined]
    client = console(None)
    for _ in range(3):
        assert client.post("/login/", {"username": "signer", "password": "wrong"}).status_code == 200
    refused = client.post("/login/", {"username": "signer", "password": "correct horse battery"})
    assert refused.status_code == 429 and "Too many failed" in refused.content.decode()
    assert "_auth_user_id" not in client.session
    other = console(None).post("/login/", {"username": "someone-else", "password": "wrong"}, REMOTE_ADDR="127.0.0.1")
    assert other.status_code == 200  # another username from the same IP is not locked out
