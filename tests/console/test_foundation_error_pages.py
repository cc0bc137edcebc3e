"""The console's own 403, 404 and 500 pages: styled like the console, never a list of routes (DEBUG or not), the
API's misses still JSON, and a missing slash still added."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client, RequestFactory

from controlplane.urls import console_server_error
from tenants.models import Tenant

pytestmark = pytest.mark.django_db

Console = Callable[[User | None], Client]

# What Django's debug 404 page says; the console's page says none of it.
TECHNICAL = ("URLconf", "Django tried these URL patterns", "Using the URLconf", "DEBUG = True", "t/&lt;slug:tenant&gt;")


def without_csrf_token(page: str) -> str:
    return re.sub(r"\b[A-Za-z0-9]{64}\b", "", page)  # the masked token differs on every render


def assert_console_404(response: Any) -> str:
    page = response.content.decode()
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")
    assert '<h1 id="error-h">Page not found</h1>' in page and 'class="topbar"' in page
    assert "/static/console/console.css" in page
    for text in TECHNICAL:
        assert text not in page
    return page


@pytest.mark.parametrize("debug", [False, True], ids=["production", "debug"])
def test_an_unknown_path_gets_the_console_404_page(console: Console, bob: User, settings: Any, debug: bool) -> None:
    settings.DEBUG = debug

    page = assert_console_404(console(bob).get("/t/acme/no-such-page/"))

    assert "<code>/t/acme/no-such-page/</code>" in page
    assert 'href="/t/acme/">Acme</a>' in page  # the way back: the user's tenants


@pytest.mark.parametrize("debug", [False, True], ids=["production", "debug"])
def test_the_404_page_escapes_the_path(console: Console, bob: User, settings: Any, debug: bool) -> None:
    settings.DEBUG = debug

    page = assert_console_404(console(bob).get("/%3Cscript%3Ealert(1)%3C/script%3E/"))

    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page


def test_signed_out_visitors_get_the_same_404_without_a_tenant_list(console: Console, acme: Tenant) -> None:
    page = assert_console_404(console(None).get("/nowhere/"))

    assert "Acme" not in page and 'href="/"' in page


def test_another_tenants_page_is_the_same_404_as_a_missing_one(console: Console, charlie: User, acme: Tenant) -> None:
    client = console(charlie)
    hidden = assert_console_404(client.get("/t/acme/deployments/"))
    missing = assert_console_404(client.get("/t/no-such-tenant/deployments/"))

    assert without_csrf_token(hidden.replace("/t/acme/", "/t/no-such-tenant/")) == without_csrf_token(missing)


@pytest.mark.parametrize("debug", [False, True], ids=["production", "debug"])
@pytest.mark.parametrize("path", ["/api/v1/no-such-route/", "/api/nothing", "/api/v1/tenants/acme/nope/"])
def test_the_apis_misses_stay_json(console: Console, bob: User, settings: Any, debug: bool, path: str) -> None:
    settings.DEBUG = debug

    response = console(bob).get(path)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_a_missing_slash_is_added_to_a_real_route_only(console: Console, bob: User) -> None:
    client = console(bob)

    added = client.get("/t/acme/members?page=2")
    head = client.head("/t/acme/members")
    not_a_route = client.get("/t/acme/no-such-page")
    posted = client.post("/t/acme/members", {"action": "add"})

    assert added.status_code == 301 and added["Location"] == "/t/acme/members/?page=2"
    assert head.status_code == 301
    assert_console_404(not_a_route)
    assert_console_404(posted)  # a POST is never redirected (its body would be lost)


def test_a_role_too_weak_gets_the_console_403_page_with_the_reason(console: Console, vera: User) -> None:
    response = console(vera).get("/t/acme/deployments/new/")

    page = response.content.decode()
    assert response.status_code == 403
    assert '<h1 id="error-h">You can\'t do this here</h1>' in page and 'class="topbar"' in page
    assert "This needs the &#x27;member&#x27; role in tenant &#x27;acme&#x27;." in page


def test_a_crash_gets_the_console_500_page_with_its_request_id(
    bob: User, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deployments.console import views

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(views.OverviewView, "get", crash)
    client = Client(raise_request_exception=False)
    client.force_login(bob)

    response = client.get("/t/acme/", HTTP_X_REQUEST_ID="req-500-test-0001")

    page = response.content.decode()
    assert response.status_code == 500
    assert "Something went wrong on our side" in page and "/static/console/console.css" in page
    assert "<code>req-500-test-0001</code>" in page
    assert "boom" not in page and "Traceback" not in page


def test_the_500_page_needs_no_database(django_assert_num_queries: Any) -> None:
    request = RequestFactory().get("/t/acme/")
    request.request_id = "abc"  # type: ignore[attr-defined]

    with django_assert_num_queries(0):
        response = console_server_error(request)

    assert response.status_code == 500 and b"<code>abc</code>" in response.content


def test_an_api_crash_answers_json() -> None:
    request = RequestFactory().get("/api/v1/tenants/")
    request.request_id = "abc"  # type: ignore[attr-defined]

    response = console_server_error(request)

    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert b'"server_error"' in response.content and b"request id abc" in response.content
