"""Who may open which console page: anonymous is sent to sign in, outsiders get 404, weak roles 403."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client

from deployments.models import ModelDeployment
from tenants.models import Tenant

PAGES = [
    # (path, role needed to read)
    ("/t/acme/", "viewer"),
    ("/t/acme/deployments/", "viewer"),
    ("/t/acme/deployments/chat/", "viewer"),
    ("/t/acme/deployments/chat/manifests/", "viewer"),
    ("/t/acme/members/", "viewer"),
    ("/t/acme/deployments/new/", "member"),
    ("/t/acme/keys/", "member"),
    ("/t/acme/audit/", "admin"),
]
RANK = {"viewer": 0, "member": 1, "admin": 2, "owner": 3}


@pytest.fixture
def chat(acme: Tenant, make_deployment: Callable[..., ModelDeployment]) -> ModelDeployment:
    return make_deployment(acme, "chat")


@pytest.mark.parametrize(("path", "needed"), PAGES)
@pytest.mark.parametrize("persona", ["anonymous", "charlie", "vera", "bob", "adam", "alice", "staff"])
def test_it_applies_the_api_roles_to_every_page(
    request: pytest.FixtureRequest,
    console: Callable[[User | None], Client],
    chat: ModelDeployment,
    path: str,
    needed: str,
    persona: str,
) -> None:
    user = None if persona == "anonymous" else request.getfixturevalue(persona)
    response = console(user).get(path)
    if persona == "anonymous":
        assert response.status_code == 302 and response["Location"].startswith("/login/")
    elif persona == "charlie":
        assert response.status_code == 404  # another tenant's pages do not exist for him
    else:
        role = (
            "owner"
            if persona == "staff"
            else {"vera": "viewer", "bob": "member", "adam": "admin", "alice": "owner"}[persona]
        )
        assert response.status_code == (200 if RANK[role] >= RANK[needed] else 403)


def test_it_refuses_changes_from_a_viewer_even_without_buttons(
    console: Callable[[User | None], Client], vera: User, chat: ModelDeployment
) -> None:
    client = console(vera)
    page = client.get("/t/acme/deployments/chat/").content.decode()
    assert "Save replica bounds" not in page and "Delete…" not in page and "Set traffic" not in page
    response = client.post("/t/acme/deployments/chat/scale/", {"min_replicas": 0, "max_replicas": 1})
    assert response.status_code == 403
    assert client.post("/t/acme/deployments/chat/delete/", {"confirm_name": "chat"}).status_code == 403
    chat.refresh_from_db()
    assert chat.desired_state == ModelDeployment.DesiredState.RUNNING


def test_it_refuses_changes_in_a_suspended_tenant(
    console: Callable[[User | None], Client], alice: User, chat: ModelDeployment
) -> None:
    Tenant.objects.filter(pk=chat.tenant_id).update(status=Tenant.Status.SUSPENDED)
    client = console(alice)
    assert "suspended" in client.get("/t/acme/").content.decode()
    assert client.post("/t/acme/deployments/chat/scale/", {"min_replicas": 0, "max_replicas": 1}).status_code == 403


def test_it_sends_home_to_the_first_tenant(console: Callable[[User | None], Client], bob: User) -> None:
    response = console(bob).get("/")
    assert response.status_code == 302 and response["Location"] == "/t/acme/"


def test_it_tells_a_user_without_tenant_what_to_do(console: Callable[[User | None], Client], db: None) -> None:
    loner = User.objects.create_user("loner", email="loner@example.test")
    page = console(loner).get("/").content.decode()
    assert "not in any tenant" in page and "loner@example.test" in page


def test_it_puts_the_csrf_token_on_every_htmx_request(console: Callable[[User | None], Client], bob: User) -> None:
    page = console(bob).get("/t/acme/").content.decode()
    assert 'hx-headers=\'{"X-CSRFToken": "' in page
    external_assets = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(?:https?:)?//', page)
    assert "htmx" in page and external_assets == [], "assets are served locally, never from a CDN"


def test_it_sends_staff_home_to_the_staff_pages(console: Callable[[User | None], Client], staff: User) -> None:
    response = console(staff).get("/")
    assert response.status_code == 302 and response["Location"] == "/staff/"
