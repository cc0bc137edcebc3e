"""Every console route × every verb it handles × every persona: who gets in, who is sent to sign in, 403 or 404.

The routes come from the URL resolver (``controlplane/console_urls.py``, which includes ``quotas/console_urls.py``),
so a page added later is covered without editing this file; a route that is neither a tenant page
(``TenantConsoleView``) nor a staff page (``StaffView``) must be named in ``UNSCOPED`` or the first test fails.
The expected answer comes from the view's own ``read_role`` (GET) and ``write_role`` (POST):

- anonymous: a redirect to ``/login/``;
- charlie (owner of another tenant): 404 on acme's pages and on staff pages, never a 403 that confirms they exist;
- a member of acme: 403 below the view's role, else in; 404 on staff pages;
- staff: in everywhere.

Every refusal leaves every row of the control plane unchanged (rows counted and compared before/after).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.test import Client
from django.urls import URLPattern, URLResolver

from controlplane import console_urls
from controlplane.console import TenantConsoleView
from deployments import services as deployment_services
from deployments.models import ModelDeployment
from quotas.console import StaffView
from tenants import invitations
from tenants.models import ApiKey, Role, Tenant, role_at_least
from tests.support.batch_rows import make_batch, request_lines, store_file
from tests.support.batches import reset_batch_storage

pytestmark = pytest.mark.django_db

# Routes outside both rules, each with its own tests (sign-in, home, invitations).
UNSCOPED = {
    "console-home",
    "login",
    "logout",
    "console-invitation",
    "oidc_authentication_init",
    "oidc_authentication_callback",
}
_CONVERTER = re.compile(r"<(?:\w+:)?(\w+)>")


@dataclass(frozen=True)
class Route:
    name: str
    template: str  # "/t/{tenant}/deployments/{name}/"
    method: str
    view: type

    def __str__(self) -> str:
        return f"{self.method} {self.template}"


def _walk(patterns: list[Any], prefix: str) -> list[tuple[str, URLPattern]]:
    found: list[tuple[str, URLPattern]] = []
    for entry in patterns:
        if isinstance(entry, URLResolver):
            found += _walk(entry.url_patterns, prefix + str(entry.pattern))
        else:
            found.append((prefix + str(entry.pattern), entry))
    return found


def console_routes() -> list[Route]:
    """Every (route, verb) of the console, from the resolver; verbs are the handlers the view defines."""
    routes: list[Route] = []
    for pattern_text, pattern in _walk(console_urls.urlpatterns, "/"):
        view = getattr(pattern.callback, "view_class", None)
        template = _CONVERTER.sub(lambda m: "{" + m.group(1) + "}", pattern_text)
        for method in ("get", "post", "put", "patch", "delete"):
            if view is not None and hasattr(view, method):
                routes.append(Route(str(pattern.name), template, method.upper(), view))
    return sorted(routes, key=str)


ROUTES = [r for r in console_routes() if r.name not in UNSCOPED]
PERSONAS = ["anonymous", "charlie", "vera", "bob", "adam", "alice", "staff"]
ROLE_OF = {"vera": Role.VIEWER, "bob": Role.MEMBER, "adam": Role.ADMIN, "alice": Role.OWNER}


def test_it_knows_every_console_route() -> None:
    unknown = [
        str(r)
        for r in console_routes()
        if r.name not in UNSCOPED and not issubclass(r.view, TenantConsoleView | StaffView)
    ]
    assert unknown == [], "classify these routes (tenant page, staff page or UNSCOPED)"
    assert {r.name for r in ROUTES} >= {
        "console-overview",
        "console-usage",
        "console-deployment-rollout",
        "console-deployment-slo",
        "console-settings",
        "console-batches",
        "console-batch-cancel",
        "console-batch-file",
        "staff-home",
    }


@pytest.fixture
def world(
    acme: Tenant,
    globex: Tenant,
    alice: User,
    adam: User,
    bob: User,
    vera: User,
    charlie: User,
    staff: User,
    make_deployment: Callable[..., ModelDeployment],
    issue_key: Callable[..., tuple[ApiKey, str]],
    settings: Any,
    tmp_path: Path,
) -> dict[str, Any]:
    """acme with one of everything (a deployment with a second revision, a key, an open invitation, a running
    batch and its input file)."""
    chat = make_deployment(acme, "chat")
    deployment_services.update_deployment(chat, {"model": "frontdoor/sim-chat-v2"}, canary_weight=0, actor=None)
    key, _ = issue_key(acme, ["inference"])
    invitation, _ = invitations.create_invitation(
        acme, email="guest@example.test", role=Role.MEMBER, invited_by=None, actor=None
    )
    reset_batch_storage(settings, tmp_path / "files")
    batch = make_batch(acme, store_file(acme, request_lines(2)))
    known = {
        "tenant": "acme",
        "slug": "acme",
        "name": "chat",
        "key_id": key.key_id,
        "username": "bob",
        "pk": str(invitation.pk),
        "batch_id": batch.public_id,
        "file_id": batch.input_file_public_id,
    }
    users = {"alice": alice, "adam": adam, "bob": bob, "vera": vera, "charlie": charlie, "staff": staff}
    return {"known": known, "users": users}


def snapshot() -> dict[str, list[dict[str, Any]]]:
    """Every row of the control plane's tables (sign-in bookkeeping left out)."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for model in apps.get_models():
        if model._meta.app_label in {"tenants", "quotas", "deployments", "batches", "auth"}:
            values = model._default_manager.order_by("pk").values()
            rows[model._meta.label] = [{k: v for k, v in row.items() if k != "last_login"} for row in values]
    return rows


def expected(route: Route, persona: str) -> str:
    """'login', 'not_found', 'forbidden' or 'allowed'."""
    if persona == "anonymous":
        return "login"
    if issubclass(route.view, StaffView):
        return "allowed" if persona == "staff" else "not_found"
    if persona == "charlie":
        return "not_found"
    if persona == "staff":
        return "allowed"
    needed = route.view.read_role if route.method == "GET" else route.view.write_role  # type: ignore[attr-defined]
    return "allowed" if role_at_least(ROLE_OF[persona], needed) else "forbidden"


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_the_matrix(
    route: Route, persona: str, world: dict[str, Any], console: Callable[[User | None], Client]
) -> None:
    client = console(None if persona == "anonymous" else world["users"][persona])
    url = route.template.format(**world["known"])
    rule = expected(route, persona)
    before = snapshot()
    body = "" if route.method == "GET" else "action=none"
    response = client.generic(route.method, url, body, content_type="application/x-www-form-urlencoded")
    code = response.status_code
    if rule == "login":
        assert code == 302 and response["Location"].startswith("/login/?next="), (url, code)
    elif rule == "not_found":
        assert code == 404, (url, code)
    elif rule == "forbidden":
        assert code == 403, (url, code)
    else:
        assert code not in {401, 403, 404} and code < 500, (url, code)
        if route.method == "GET":
            assert code == 200, (url, code)
    if rule != "allowed":
        assert snapshot() == before, f"{persona} was refused {route} but rows changed"
