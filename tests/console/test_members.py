"""Members: add by username or email, invite by email (link shown to the admin, accepted once), role, remove."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth.models import User
from django.test import Client

from tenants.models import Membership, Tenant


def test_it_adds_an_existing_user_by_email(console: Callable[[User | None], Client], adam: User, acme: Tenant) -> None:
    newbie = User.objects.create_user("newbie", email="Newbie@Example.test")
    response = console(adam).post(
        "/t/acme/members/", {"action": "add", "user": "newbie@example.test", "role": "viewer"}
    )
    assert response.status_code == 302
    assert Membership.objects.for_tenant(acme).get(user=newbie).role == "viewer"


def test_it_says_who_cannot_be_added(console: Callable[[User | None], Client], adam: User, bob: User) -> None:
    client = console(adam)
    unknown = client.post("/t/acme/members/", {"action": "add", "user": "ghost", "role": "member"})
    assert unknown.status_code == 422 and "invite them by email" in unknown.context["add_form"].errors["user"][0]
    twice = client.post("/t/acme/members/", {"action": "add", "user": "bob", "role": "member"})
    assert twice.status_code == 422 and "already a member" in str(twice.context["add_form"].non_field_errors())


def test_it_refuses_the_owner_role_to_an_admin(
    console: Callable[[User | None], Client], adam: User, acme: Tenant
) -> None:
    User.objects.create_user("newbie", email="n@example.test")
    response = console(adam).post("/t/acme/members/", {"action": "add", "user": "newbie", "role": "owner"})
    assert response.status_code == 422 and "owner" in str(response.context["add_form"].non_field_errors())
    assert not Membership.objects.for_tenant(acme).filter(user__username="newbie").exists()


def test_it_invites_by_email_and_the_invitee_accepts_once(
    console: Callable[[User | None], Client], adam: User, acme: Tenant
) -> None:
    response = console(adam).post(
        "/t/acme/members/", {"action": "invite", "email": "Newbie@Example.test", "role": "member"}
    )
    assert response.status_code == 201
    link = response.context["invite_link"]
    path = link.split("testserver", 1)[1]
    newbie = User.objects.create_user("newbie", email="newbie@example.test")
    stranger = User.objects.create_user("stranger", email="stranger@example.test")
    assert console(None).get(path).status_code == 302  # sign in first
    assert console(stranger).post(path).status_code == 409  # a forwarded link is useless
    invitee = console(newbie)
    assert "Join Acme" in invitee.get(path).content.decode()
    accepted = invitee.post(path)
    assert accepted.status_code == 302 and accepted["Location"] == "/t/acme/"
    assert Membership.objects.for_tenant(acme).get(user=newbie).role == "member"
    assert invitee.post(path).status_code == 409


def test_it_changes_a_role_and_removes_a_member(
    console: Callable[[User | None], Client], alice: User, bob: User, acme: Tenant
) -> None:
    client = console(alice)
    assert client.post("/t/acme/members/bob/", {"action": "role", "role": "admin"}).status_code == 302
    assert Membership.objects.for_tenant(acme).get(user=bob).role == "admin"
    assert client.post("/t/acme/members/bob/", {"action": "remove"}).status_code == 302
    assert not Membership.objects.for_tenant(acme).filter(user=bob).exists()


def test_it_never_removes_the_last_owner(console: Callable[[User | None], Client], alice: User, acme: Tenant) -> None:
    response = console(alice).post("/t/acme/members/alice/", {"action": "remove"}, follow=True)
    assert "last owner" in response.content.decode()
    assert Membership.objects.for_tenant(acme).filter(user=alice).exists()


def test_it_shows_viewers_no_member_controls(console: Callable[[User | None], Client], vera: User, bob: User) -> None:
    client = console(vera)
    page = client.get("/t/acme/members/").content.decode()
    assert "bob" in page and "Add member" not in page and "Remove" not in page and "<select" not in page
    assert client.post("/t/acme/members/bob/", {"action": "remove"}).status_code == 403
