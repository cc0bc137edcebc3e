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


def invite(client: Client, email: str) -> str:
    response = client.post("/t/acme/members/", {"action": "invite", "email": email, "role": "member"})
    assert response.status_code == 201
    return str(response.context["invite_link"]).split("testserver", 1)[1]


def test_it_lets_an_invitee_without_an_account_create_one_and_join(
    console: Callable[[User | None], Client], adam: User, acme: Tenant
) -> None:
    path = invite(console(adam), "Fresh@Example.test")
    visitor = console(None)
    page = visitor.get(path)
    assert page.status_code == 200 and "Create account and join" in page.content.decode()
    joined = visitor.post(
        path, {"username": "fresh", "password": "a long unusual phrase", "password_again": "a long unusual phrase"}
    )
    assert joined.status_code == 302 and joined["Location"] == "/t/acme/"
    fresh = User.objects.get(username="fresh")
    assert fresh.email == "fresh@example.test" and fresh.check_password("a long unusual phrase")
    assert Membership.objects.for_tenant(acme).get(user=fresh).role == "member"
    assert visitor.get("/t/acme/").status_code == 200  # signed in as the new account
    # The link is single-use: a second visitor can neither join nor make an account with it.
    again = console(None).post(
        path, {"username": "second", "password": "a long unusual phrase", "password_again": "a long unusual phrase"}
    )
    assert again.status_code == 409 and not User.objects.filter(username="second").exists()


def test_it_applies_the_password_validators_and_creates_nothing_on_refusal(
    console: Callable[[User | None], Client], adam: User, bob: User, acme: Tenant
) -> None:
    path = invite(console(adam), "weak@example.test")
    visitor = console(None)
    weak = visitor.post(path, {"username": "weak", "password": "12345678", "password_again": "12345678"})
    assert weak.status_code == 422
    errors = weak.context["signup_form"].errors["password"]
    assert any("too common" in e for e in errors) and any("entirely numeric" in e for e in errors)
    taken = visitor.post(
        path, {"username": "bob", "password": "a long unusual phrase", "password_again": "a long unusual phrase"}
    )
    assert taken.status_code == 422 and "already exists" in taken.context["signup_form"].errors["username"][0]
    differ = visitor.post(path, {"username": "weak", "password": "a long unusual phrase", "password_again": "other"})
    assert differ.status_code == 422 and "differ" in differ.context["signup_form"].errors["password_again"][0]
    assert not User.objects.filter(email="weak@example.test").exists()
    assert console(None).get(path).status_code == 200, "refusals leave the invitation open"


def test_it_sends_an_invitee_who_has_an_account_to_sign_in(
    console: Callable[[User | None], Client], adam: User, acme: Tenant
) -> None:
    User.objects.create_user("known", email="known@example.test")
    path = invite(console(adam), "known@example.test")
    visitor = console(None)
    shown = visitor.get(path)
    assert shown.status_code == 302 and shown["Location"].startswith("/login/?next=/invite/")
    posted = visitor.post(
        path, {"username": "k2", "password": "a long unusual phrase", "password_again": "a long unusual phrase"}
    )
    assert posted.status_code == 302 and posted["Location"].startswith("/login/")
    assert User.objects.filter(email="known@example.test").count() == 1
    assert not Membership.objects.for_tenant(acme).filter(user__username="known").exists()
