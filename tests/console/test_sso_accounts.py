"""Which account a provider's claims sign in as: a verified e-mail's, and never an unverified one's."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User

from tenants.invitations import create_invitation
from tenants.models import Tenant
from tenants.sso.accounts import SignInRefused, account_for, verified_email


def claims(email: Any = "alice@example.test", verified: Any = True) -> dict[str, Any]:
    return {"sub": "p-1", "email": email, "email_verified": verified}


@pytest.mark.parametrize("verified", [True, "true", "TRUE"])
def test_it_takes_an_address_the_provider_verified(verified: Any) -> None:
    assert verified_email(claims(" Alice@Example.TEST ", verified)) == "alice@example.test"


@pytest.mark.parametrize("verified", [False, "false", None, 1, "yes"])
def test_it_refuses_an_address_the_provider_did_not_verify(verified: Any) -> None:
    with pytest.raises(SignInRefused, match=re.escape("has not verified alice@example.test")):
        verified_email(claims(verified=verified))


def test_it_refuses_an_unverified_address_without_the_flag_at_all() -> None:
    with pytest.raises(SignInRefused, match="has not verified"):
        verified_email({"email": "alice@example.test"})


@pytest.mark.parametrize("email", [None, "", 42, "not-an-address", "a@" + "b" * 250 + ".test"])
def test_it_refuses_a_missing_or_unusable_address(email: Any) -> None:
    with pytest.raises(SignInRefused, match=r"no e-mail address|cannot use"):
        verified_email(claims(email))


def test_a_verified_address_signs_in_as_its_account_whatever_its_case(alice: User) -> None:
    assert account_for("ALICE@example.test".lower(), create_users=True) == (alice, False)
    User.objects.filter(pk=alice.pk).update(email="Alice@Example.Test")
    assert account_for("alice@example.test", create_users=True) == (alice, False)


def test_an_unknown_address_gets_an_account_named_after_it(db: None) -> None:
    user, created = account_for("new.person+ml@example.test", create_users=True)
    assert created and user.username == "new.person+ml@example.test" and user.email == "new.person+ml@example.test"
    assert not user.has_usable_password()


def test_a_taken_username_gets_a_suffix(db: None) -> None:
    User.objects.create_user("sam@example.test", email="someone-else@example.test")
    user, _ = account_for("sam@example.test", create_users=True)
    assert user.username == "sam@example.test-2"


def test_characters_usernames_cannot_hold_are_replaced(db: None) -> None:
    user, _ = account_for("o'brien!@example.test", create_users=True)
    assert user.username == "o-brien-@example.test"
    user.full_clean()


def test_it_refuses_an_address_two_accounts_share(alice: User) -> None:
    User.objects.create_user("alice-two", email="ALICE@example.test")
    with pytest.raises(SignInRefused, match=re.escape("Several accounts use alice@example.test")):
        account_for("alice@example.test", create_users=True)


def test_it_refuses_a_disabled_account(alice: User) -> None:
    User.objects.filter(pk=alice.pk).update(is_active=False)
    with pytest.raises(SignInRefused, match="disabled"):
        account_for("alice@example.test", create_users=True)


def test_without_account_creation_only_an_invited_address_gets_one(acme: Tenant) -> None:
    with pytest.raises(SignInRefused, match=re.escape("No account uses ivy@example.test")):
        account_for("ivy@example.test", create_users=False)
    assert not User.objects.filter(email="ivy@example.test").exists()
    create_invitation(acme, email="ivy@example.test", role="member", invited_by=None, actor=None)
    user, created = account_for("ivy@example.test", create_users=False)
    assert created and user.email == "ivy@example.test"
