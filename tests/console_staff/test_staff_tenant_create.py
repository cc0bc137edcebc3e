"""Staff create a tenant in the console: slug, name, a starting quota and its owner's invitation by e-mail, all in one
transaction and audited; refusals are field errors with the input kept, and a refused tenant leaves nothing behind."""

from __future__ import annotations

import html
import re
import smtplib
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.core.mail.backends.base import BaseEmailBackend
from django.test import Client

from controlplane.access import staff_principal
from controlplane.domain_errors import Invalid
from quotas.models import Quota
from tenants import invitations, onboarding, services
from tenants.models import AuditEvent, Invitation, Membership, Tenant
from tenants.staff_console import TenantCreateForm
from tests.console_staff.test_quota_editor import form_data

URL = "/staff/tenants/new/"


def creation(**overrides: Any) -> dict[str, Any]:
    return form_data(**{"slug": "initech", "name": "Initech", "owner_email": "Peter@Example.test", **overrides})


def link_in(message: mail.EmailMessage) -> str:
    found = re.search(r"http://testserver/invite/[\w-]+/", str(message.body))
    assert found, message.body
    return found.group(0)


class RefusingMailServer(BaseEmailBackend):
    """A mail server that is down (as Django's SMTP backend reports it)."""

    def send_messages(self, email_messages: Any) -> int:
        raise smtplib.SMTPConnectError(421, "mail server down")


def test_it_shows_the_form_with_the_platforms_default_quota(
    staff: User, client_as: Callable[[User | None], Client]
) -> None:
    page = client_as(staff).get(URL).content.decode()
    assert 'name="slug"' in page and 'name="name"' in page and 'name="owner_email"' in page
    assert f'name="max_replicas" value="{Quota().max_replicas}"' in page
    assert f'name="monthly_token_budget" value="{Quota().monthly_token_budget}"' in page


def test_it_creates_the_tenant_with_its_quota_and_mails_the_owner_an_invitation(
    staff: User, client_as: Callable[[User | None], Client]
) -> None:
    client = client_as(staff)
    response = client.post(URL, creation(max_replicas=12, **{"gpus_nvidia-h100": 4}))
    assert response.status_code == 302 and response["Location"] == "/staff/tenants/initech/quota/"
    landing = html.unescape(client.get(response["Location"]).content.decode())
    assert "Tenant initech created; its owner's invitation went to peter@example.test." in landing

    tenant = Tenant.objects.get(slug="initech")
    assert tenant.name == "Initech"
    quota = Quota.objects.for_tenant(tenant).get()
    assert (quota.max_replicas, quota.gpus, quota.tokens_per_minute) == (12, {"nvidia-h100": 4}, None)
    assert not Membership.objects.for_tenant(tenant).exists()  # the owner joins by accepting

    invitation = Invitation.objects.for_tenant(tenant).get()
    assert (invitation.email, invitation.role, invitation.invited_by) == ("peter@example.test", "owner", staff)
    [message] = mail.outbox
    assert message.to == ["peter@example.test"]
    assert message.subject == "You are invited to own Initech on Frontdoor"
    assert "invites you to be its owner" in str(message.body)
    assert invitation.token_hash == Invitation.hash_token(link_in(message).rstrip("/").rsplit("/", 1)[1])

    actions = AuditEvent.objects.for_tenant(tenant).order_by("id").values_list("action", "actor_id")
    assert list(actions) == [("tenant.create", staff.pk), ("quota.update", staff.pk), ("invitation.create", staff.pk)]


def test_the_invitee_becomes_the_owner_by_accepting(staff: User, client_as: Callable[[User | None], Client]) -> None:
    client_as(staff).post(URL, creation())
    token = link_in(mail.outbox[0]).rstrip("/").rsplit("/", 1)[1]
    membership = invitations.accept_invitation_as_new_user(token, username="peter", password="a long unusual phrase")
    assert (membership.user.email, membership.role) == ("peter@example.test", "owner")
    event = AuditEvent.objects.for_tenant(membership.tenant).get(action="member.add")
    assert event.actor_id == membership.user.pk  # the invitee acted, on staff's grant


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("slug", "Not A Slug", "Use lowercase letters, digits and hyphens"),
        ("slug", "-edge", "Use lowercase letters, digits and hyphens"),
        ("slug", "x" * 41, "Keep the slug to 40 characters or fewer (it has 41)."),
        ("slug", "acme", "A tenant with the slug &#x27;acme&#x27; already exists; choose another."),
        ("slug", "", "This field is required."),
        ("name", "", "This field is required."),
        ("name", "n" * 201, "at most 200 characters"),
        ("owner_email", "not-an-address", "Enter a valid email address."),
        ("owner_email", "a@" + "b" * 260 + ".test", "at most 254 characters"),
        ("max_replicas", -3, "greater than or equal to 0"),  # the quota model's rule, through the service
        ("cpu_cores", 0, "greater than or equal to 1"),
        ("gpus_nvidia-h100", -1, "non-negative integer"),
        ("max_deployments", "lots", "Enter a whole number."),
    ],
)
def test_it_refuses_bad_input_on_its_field_and_creates_nothing(
    field: str, value: Any, message: str, acme: Tenant, staff: User, client_as: Callable[[User | None], Client]
) -> None:
    before = (Tenant.objects.count(), Quota.unscoped_objects.count(), AuditEvent.unscoped_objects.count())
    response = client_as(staff).post(URL, creation(**{field: value}))
    assert response.status_code == 422
    page = response.content.decode()
    assert "The tenant was not created" in page
    field_html = page.split(f'name="{field}"', 1)[0].rsplit('<div class="field', 1)[1]
    assert "has-error" in field_html.split(">", 1)[0]  # the message sits on the field's own wrapper
    assert message in page
    assert 'value="Initech"' in page or field == "name"  # the other input is kept
    after = (Tenant.objects.count(), Quota.unscoped_objects.count(), AuditEvent.unscoped_objects.count())
    assert after == before
    assert Invitation.unscoped_objects.count() == 0 and mail.outbox == []


def test_it_shows_every_mistake_at_once(staff: User, client_as: Callable[[User | None], Client]) -> None:
    page = client_as(staff).post(URL, creation(slug="Bad Slug", max_deployments="lots")).content.decode()
    assert "Use lowercase letters, digits and hyphens" in page and "Enter a whole number." in page


def test_a_refusal_after_the_tenant_was_written_rolls_it_back(staff: User) -> None:
    """The quota is refused after the tenant row exists: the transaction takes the tenant (and its audit) back."""
    with pytest.raises(Invalid) as refused:
        onboarding.create_tenant_for_owner(
            slug="initech", name="Initech", owner_email="peter@example.test", quota={"max_replicas": -1},
            invited_by=staff, actor=staff_principal(staff.pk),
        )  # fmt: skip
    assert "max_replicas" in refused.value.fields
    assert not Tenant.objects.filter(slug="initech").exists()
    assert AuditEvent.unscoped_objects.count() == 0 and Invitation.unscoped_objects.count() == 0


def test_a_slug_taken_meanwhile_is_a_field_error_not_a_crash(
    acme: Tenant, staff: User, monkeypatch: pytest.MonkeyPatch, client_as: Callable[[User | None], Client]
) -> None:
    """Another request creates the same slug between the form's check and the insert (the form's check is skipped
    here, and the model's own check too, so the unique index is what refuses it)."""
    monkeypatch.setattr(TenantCreateForm, "clean_slug", lambda form: form.cleaned_data["slug"])
    monkeypatch.setattr(services, "_full_clean", lambda instance: None)
    response = client_as(staff).post(URL, creation(slug="acme"))
    assert response.status_code == 422
    assert "a tenant with the slug &#x27;acme&#x27; already exists" in response.content.decode()
    assert Tenant.objects.filter(slug="acme").count() == 1 and Invitation.unscoped_objects.count() == 0


def test_it_hands_staff_the_link_when_the_mail_cannot_be_sent(
    staff: User, settings: Any, client_as: Callable[[User | None], Client]
) -> None:
    settings.EMAIL_BACKEND = f"{__name__}.RefusingMailServer"
    response = client_as(staff).post(URL, creation())
    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    page = response.content.decode()
    assert "could not be sent" in page
    token = re.search(r'data-testid="owner-link">http://testserver/invite/([\w-]+)/<', page)
    assert token is not None
    invitation = Invitation.objects.for_tenant(Tenant.objects.get(slug="initech")).get()
    assert invitation.token_hash == Invitation.hash_token(token.group(1))


def test_only_staff_invite_an_owner(acme: Tenant, alice: User) -> None:
    from controlplane.access import principal_for

    with pytest.raises(Invalid):
        invitations.create_invitation(
            acme, email="x@example.test", role="owner", invited_by=alice, actor=principal_for(alice, None, acme)
        )
    with pytest.raises(Invalid):
        invitations.create_invitation(acme, email="x@example.test", role="owner", invited_by=None, actor=None)


def test_the_settings_refuse_two_tls_modes_for_mail_at_start() -> None:
    """Django would refuse them only at the first invitation, after the tenant was created."""
    from tests.controlplane.test_settings import manage, production_env

    refused = manage("check", env=production_env(EMAIL_USE_TLS="true", EMAIL_USE_SSL="true"))
    assert refused.returncode != 0 and "EMAIL_USE_TLS and EMAIL_USE_SSL are exclusive" in refused.stderr
    deployed = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env(EMAIL_USE_TLS="true"))
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
