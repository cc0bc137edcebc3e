"""Who may open the staff pages and the tenant Usage page: staff only / the tenant's members; others get a 404."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from tenants.models import Tenant

STAFF_URLS = ["/staff/", "/staff/usage/", "/staff/usage/?format=csv", "/staff/capacity/", "/staff/tenants/acme/quota/"]


@pytest.fixture
def people(alice: User, bob: User, vera: User, charlie: User, staff: User) -> dict[str, User | None]:
    return {"anonymous": None, "alice": alice, "bob": bob, "vera": vera, "charlie": charlie, "staff": staff}


@pytest.mark.parametrize("url", STAFF_URLS)
@pytest.mark.parametrize("persona", ["alice", "charlie", "vera"])
def test_it_hides_staff_pages_from_non_staff(
    url: str, persona: str, people: dict[str, Any], client_as: Callable[[User | None], Client]
) -> None:
    assert client_as(people[persona]).get(url).status_code == 404


@pytest.mark.parametrize("url", STAFF_URLS)
def test_it_sends_anonymous_visitors_to_sign_in(url: str, client_as: Callable[[User | None], Client]) -> None:
    response = client_as(None).get(url)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


@pytest.mark.parametrize("url", STAFF_URLS)
def test_it_shows_staff_pages_to_staff(
    url: str, acme: Tenant, staff: User, client_as: Callable[[User | None], Client]
) -> None:
    assert client_as(staff).get(url).status_code == 200


def test_it_refuses_quota_changes_from_non_staff(
    alice: User, acme: Tenant, client_as: Callable[[User | None], Client]
) -> None:
    response = client_as(alice).post("/staff/tenants/acme/quota/", {"max_deployments": 999})
    assert response.status_code == 404
    acme.quota.refresh_from_db()
    assert acme.quota.max_deployments != 999


@pytest.mark.parametrize(("persona", "status"), [("alice", 200), ("bob", 200), ("vera", 200), ("staff", 200),
                                                 ("charlie", 404)])  # fmt: skip
def test_it_shows_the_usage_page_to_members_only(
    persona: str, status: int, people: dict[str, Any], client_as: Callable[[User | None], Client]
) -> None:
    assert client_as(people[persona]).get("/t/acme/usage/").status_code == status
    assert client_as(people[persona]).get("/t/acme/usage/?format=csv").status_code == status


def test_it_answers_404_for_an_unknown_tenant(staff: User, client_as: Callable[[User | None], Client]) -> None:
    assert client_as(staff).get("/staff/tenants/nope/quota/").status_code == 404
    assert client_as(staff).get("/t/nope/usage/").status_code == 404
