"""The audit log as people read it: who acted (the invitee, not "system"), objects by name, before → after, request
ids to copy and to filter by."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client

from controlplane.access import principal_for
from controlplane.audit import FieldChange, describe_event, readable_changes, record_audit
from deployments.models import ModelDeployment
from tenants import services
from tenants.models import ApiKey, AuditEvent, Tenant

AUDIT = "/t/acme/audit/"


def rows_of(page: str) -> list[str]:
    """The audit table's rows as plain text, newest first."""
    body = page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    body = re.sub(r'<span class="sr-only">[^<]*</span>', "", body)
    return [re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row)).strip() for row in body.split("</tr>")[:-1]]


def invite(client: Client, email: str) -> str:
    response = client.post("/t/acme/members/", {"action": "invite", "email": email, "role": "member"})
    assert response.status_code == 201
    return str(response.context["invite_link"]).split("testserver", 1)[1]


def test_the_person_who_accepts_an_invitation_is_the_actor_not_the_system(
    console: Callable[[User | None], Client], adam: User, acme: Tenant
) -> None:
    known = User.objects.create_user("known", email="known@example.test")
    assert console(known).post(invite(console(adam), "known@example.test")).status_code == 302
    signup = {"username": "fresh", "password": "a long unusual phrase", "password_again": "a long unusual phrase"}
    assert console(None).post(invite(console(adam), "fresh@example.test"), signup).status_code == 302
    joined = AuditEvent.objects.for_tenant(acme).filter(action="member.add").order_by("created_at", "id")
    assert [(e.actor.username if e.actor else None, e.object_repr) for e in joined] == [
        ("known", "known"),
        ("fresh", "fresh"),
    ]
    rows = rows_of(console(adam).get(AUDIT).content.decode())
    assert "fresh added member fresh" in rows[0] and "system" not in rows[0]
    assert any("known added member known" in row for row in rows)


def test_a_user_passed_as_the_actor_is_recorded_as_that_person(alice: User, acme: Tenant) -> None:
    event = record_audit(alice, acme, "tenant.update", acme, {"name": ["Acme", "Acme Inc"]})
    assert (event.actor_id, event.actor_key_id) == (alice.pk, None)


def test_it_names_objects_and_shows_each_change_as_before_and_after(
    console: Callable[[User | None], Client],
    adam: User,
    acme: Tenant,
    make_deployment: Callable[..., ModelDeployment],
) -> None:
    make_deployment(acme, "chat")
    actor = principal_for(adam, None, acme)
    key, _ = services.issue_key(acme, name="ci-bot", scopes=["inference"], actor=actor, request_id="req-1")
    services.update_key(key, changes={"name": "ci-bot-2", "requests_per_minute": 1200}, actor=actor)
    rows = rows_of(console(adam).get(AUDIT).content.decode())
    assert "adam changed API key ci-bot-2 api_key.update" in rows[0]
    assert "name: ci-bot → ci-bot-2" in rows[0] and "requests per minute: none → 1,200" in rows[0]
    assert "adam created API key ci-bot api_key.create" in rows[1]
    assert "scopes: inference" in rows[1] and "key id: " + key.key_id in rows[1]
    assert "system created deployment chat deployment.create" in rows[2]
    page = " ".join(rows)
    assert "modeldeployment" not in page and f"{acme.pk}/chat" not in page and "['" not in page


def test_it_offers_each_request_id_to_copy_whole(
    console: Callable[[User | None], Client], adam: User, acme: Tenant
) -> None:
    request_id = "3f2a9c0e4b8d4f7a9e1c2b3d4e5f6a7b"
    event = record_audit(principal_for(adam, None, acme), acme, "tenant.update", acme, {}, request_id=request_id)
    page = console(adam).get(AUDIT).content.decode()
    assert f'<code class="rid" id="rid-{event.pk}" title="{request_id}">{request_id}</code>' in page
    assert f'data-copy-target="rid-{event.pk}"' in page


def test_it_filters_by_request_id(console: Callable[[User | None], Client], adam: User, acme: Tenant) -> None:
    actor = principal_for(adam, None, acme)
    services.issue_key(acme, name="one", scopes=["inference"], actor=actor, request_id="req-one")
    services.issue_key(acme, name="two", scopes=["inference"], actor=actor, request_id="req-two")
    found = console(adam).get(AUDIT + "?request=req-two").context["page"]
    assert [e.object_repr for e in found] == ["two"]


def event(action: str, object_type: str, name: str, changes: dict[str, object]) -> AuditEvent:
    return AuditEvent(action=action, object_type=object_type, object_repr=name, changes=changes)


@pytest.mark.parametrize(
    ("action", "object_type", "name", "summary"),
    [
        ("deployment.create", "modeldeployment", "chat", "created deployment chat"),
        ("deployment.traffic", "modeldeployment", "chat", "moved the traffic of deployment chat"),
        ("api_key.revoke", "apikey", "ci-bot", "revoked API key ci-bot"),
        ("member.change_role", "membership", "bob", "changed the role of member bob"),
        ("quota.update", "quota", "", "changed quota"),
        ("settings.rotate_webhook_secret", "tenantsettings", "", "rotated the webhook signing secret"),
        ("batch_file.delete", "batchfile", "file-abc", "deleted batch file file-abc"),
        ("widget.frobnicate", "", "w1", "frobnicate widget w1"),
    ],
)
def test_it_says_what_happened_to_which_object(action: str, object_type: str, name: str, summary: str) -> None:
    assert describe_event(event(action, object_type, name, {})).summary == summary


def test_it_reads_pairs_as_changes_except_in_events_that_create() -> None:
    assert readable_changes("deployment.create", {"args": ["--dtype", "half"], "min_replicas": 0}) == (
        FieldChange("args", "--dtype, half"),
        FieldChange("min replicas", "0"),
    )
    assert readable_changes("deployment.scale", {"max_replicas": [2, 4]}) == (FieldChange("max replicas", "4", "2"),)


def test_it_spells_out_values_for_people() -> None:
    changes = {
        "weights": {"r2": [0, 10], "r1": [100, 90]},
        "webhook_secret_generated": True,
        "webhook_url": ["", "https://hooks.example.test/slo"],
        "expires_at": ["2026-12-02T01:23:45+00:00", None],
        "secret": "[redacted]",
    }
    assert readable_changes("settings.update", changes) == (
        FieldChange("expires at", "none", "2026-12-02 01:23 UTC"),
        FieldChange("secret", "hidden"),
        FieldChange("webhook secret generated", "yes"),
        FieldChange("webhook url", "https://hooks.example.test/slo", "none"),
        FieldChange("weights r1", "90", "100"),
        FieldChange("weights r2", "10", "0"),
    )


def test_new_events_name_members_invitations_and_keys_as_people_know_them(
    console: Callable[[User | None], Client], adam: User, acme: Tenant, issue_key: Callable[..., tuple[ApiKey, str]]
) -> None:
    invite(console(adam), "someone@example.test")
    key, _ = issue_key(acme, ["inference"])
    services.revoke_key(key, actor=principal_for(adam, None, acme))
    names = dict(AuditEvent.objects.for_tenant(acme).values_list("action", "object_repr"))
    assert names == {"invitation.create": "someone@example.test", "api_key.revoke": "key-inference"}
