"""Every route under /api/v1 × every verb × every persona: who gets in, who gets 401/403/404, nothing changes.

The route list comes from the URL resolver, so routes added later (deployments, revisions, ...) are covered
without editing this file. For a tenant-scoped route the expected answer is derived from the view itself
(``required_role`` and ``staff_actions`` of its ``TenantScopedViewSet``):

- anonymous: 401 (or 403);
- a user or key of another tenant: 404, never a 403 that confirms the tenant exists;
- an ``inference``-only key: 403;
- a role below the action's role, or a non-staff principal on a staff action: 403;
- otherwise: in (the request may still be a 400/404/409 on its payload or object; endpoint tests check those).

Every refusal must leave every row of the control plane unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.permissions import SAFE_METHODS
from rest_framework.test import APIClient

from controlplane.api import TenantScopedViewSet
from deployments.models import DeploymentEvent, ModelDeployment, Revision
from tenants.models import ApiKey, Role, Tenant, role_at_least
from tests.support.batch_rows import make_batch, request_lines, store_file
from tests.support.batches import reset_batch_storage

pytestmark = pytest.mark.django_db

_GROUP = re.compile(r"\(\?P<(?P<name>\w+)>[^)]*\)")


@dataclass(frozen=True)
class Route:
    template: str  # e.g. "/api/v1/tenants/{tenant}/keys/{key_id}/"
    method: str
    view: Any  # the view class
    action: str | None  # the viewset action, when a viewset

    @property
    def kwargs(self) -> list[str]:
        return re.findall(r"{(\w+)}", self.template)

    @property
    def tenant_scoped(self) -> bool:
        return issubclass(self.view, TenantScopedViewSet) and "tenant" in self.kwargs

    def __str__(self) -> str:
        return f"{self.method} {self.template}"


def _walk(patterns: list[Any], prefix: str) -> list[tuple[str, URLPattern]]:
    found: list[tuple[str, URLPattern]] = []
    for entry in patterns:
        regex = entry.pattern.regex.pattern.lstrip("^").replace(r"\Z", "").rstrip("$")
        if isinstance(entry, URLResolver):
            found += _walk(entry.url_patterns, prefix + regex)
        else:
            found.append((prefix + regex, entry))
    return found


def api_routes() -> list[Route]:
    """Every (route, verb) under /api/v1, from the resolver."""
    routes: list[Route] = []
    for regex, pattern in _walk(get_resolver().url_patterns, ""):
        if not regex.startswith("api/v1/"):
            continue
        template = "/" + _GROUP.sub(lambda m: "{" + m.group("name") + "}", regex).replace("\\", "").replace("/?", "/")
        callback = pattern.callback
        view = getattr(callback, "cls", None)
        if view is None:
            continue
        actions: dict[str, str] | None = getattr(callback, "actions", None)
        if actions:
            pairs = [(method.upper(), name) for method, name in actions.items() if method not in {"head", "options"}]
        else:
            names = [m for m in view.http_method_names if m not in {"head", "options", "trace"} and hasattr(view, m)]
            pairs = [(m.upper(), None) for m in names]
        routes += [Route(template, method, view, name) for method, name in pairs]
    return sorted(routes, key=str)


ROUTES = api_routes()

PERSONAS = [
    "anonymous",
    "charlie",
    "outsider_key",
    "inference_key",
    "vera",
    "read_key",
    "bob",
    "adam",
    "manage_key",
    "alice",
    "staff",
]
# Effective role in acme and staff-ness; None = no access.
ROLE_OF: dict[str, tuple[str | None, bool]] = {
    "vera": (Role.VIEWER, False),
    "read_key": (Role.VIEWER, False),
    "bob": (Role.MEMBER, False),
    "adam": (Role.ADMIN, False),
    "manage_key": (Role.ADMIN, False),
    "alice": (Role.OWNER, False),
    "staff": (Role.OWNER, True),
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
    issue_key: Any,
    settings: Any,
    tmp_path: Path,
) -> dict[str, Any]:
    """Tenant acme with one row of everything, so that lookups of real objects are exercised."""
    key, _ = issue_key(acme, ["inference"])
    reset_batch_storage(settings, tmp_path / "files")
    make_batch(acme, store_file(acme, request_lines(2)))  # running: cancel is allowed; its input has content
    deployment = ModelDeployment.unscoped_objects.create(tenant=acme, name="chat", model="frontdoor/sim-chat")
    Revision.unscoped_objects.create(deployment=deployment, number=1, spec=deployment.revision_spec(), weight=100)
    DeploymentEvent.record(deployment, "Created", "matrix fixture")
    from controlplane.audit import record_audit

    record_audit(None, acme, "tenant.update", acme, {})
    users = {"alice": alice, "adam": adam, "bob": bob, "vera": vera, "charlie": charlie, "staff": staff}
    # Known values of URL kwargs that are not the view's own lookup (parents of nested routes).
    known = {"tenant": "acme", "username": "bob", "key_id": key.key_id, "deployment_name": "chat", "deployment": "chat"}
    return {"users": users, "known": known, "issue_key": issue_key, "acme": acme, "globex": globex}


def client_for(persona: str, world: dict[str, Any]) -> APIClient:
    client = APIClient()
    scopes = {
        "inference_key": ["inference"],
        "read_key": ["read"],
        "manage_key": ["manage"],
        "outsider_key": ["manage"],
    }
    if persona in scopes:
        tenant = world["globex"] if persona == "outsider_key" else world["acme"]
        _, full_key = world["issue_key"](tenant, scopes[persona])
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {full_key}")
    elif persona != "anonymous":
        client.force_login(world["users"][persona])
    return client


def _lookup_value(route: Route, kwarg: str, acme: Tenant) -> str | None:
    """The value of the view's own lookup kwarg for an existing object of acme, when the view says how."""
    view = route.view
    if not issubclass(view, TenantScopedViewSet):
        return None
    if kwarg not in {view.lookup_url_kwarg or view.lookup_field, view.lookup_field}:
        return None
    manager = getattr(view.model, "objects", None)
    if manager is None or not hasattr(manager, "for_tenant"):
        return None
    obj: Any = manager.for_tenant(acme).order_by("pk").first()
    for part in view.lookup_field.split("__"):
        obj = getattr(obj, part, None)
    return None if obj is None else str(obj)


def build_url(route: Route, world: dict[str, Any]) -> tuple[str, bool]:
    """The concrete URL and whether every kwarg named a real object (else a placeholder was used)."""
    resolved = True
    values: dict[str, str] = {}
    for kwarg in route.kwargs:
        value = world["known"].get(kwarg) or _lookup_value(route, kwarg, world["acme"])
        if value is None:
            resolved = False
            value = "no-such-object"
        values[kwarg] = value
    return route.template.format(**values), resolved


def snapshot() -> dict[str, list[dict[str, Any]]]:
    """Every row of the control plane's tables (bookkeeping timestamps of authentication left out)."""
    volatile = {"last_used_at", "last_login"}
    rows: dict[str, list[dict[str, Any]]] = {}
    for model in apps.get_models():
        if model._meta.app_label not in {"tenants", "quotas", "deployments", "batches", "auth"}:
            continue
        values = model._default_manager.order_by("pk").values()
        rows[model._meta.label] = [{k: v for k, v in row.items() if k not in volatile} for row in values]
    return rows


def expected(route: Route, persona: str) -> str:
    """'unauthenticated', 'not_found', 'forbidden', 'allowed' or 'any' (no rule known for this route)."""
    if persona == "anonymous":
        return "unauthenticated"
    if route.tenant_scoped:
        if persona in {"charlie", "outsider_key"}:
            return "not_found"
        if persona == "inference_key":
            return "forbidden"
        role, is_staff = ROLE_OF[persona]
        view = route.view(action=route.action)
        needed = view.required_role(SimpleNamespace(method=route.method))
        if route.action in view.staff_actions and not is_staff:
            return "forbidden"
        return "allowed" if role_at_least(role, needed) else "forbidden"
    if route.template == "/api/v1/tenants/":
        if persona == "inference_key":
            return "forbidden"
        if route.method == "POST":
            return "allowed" if persona == "staff" else "forbidden"
        return "allowed"
    return "any"


def send(client: APIClient, method: str, url: str) -> Any:
    return client.generic(method, url, "{}" if method not in SAFE_METHODS else "", content_type="application/json")


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("route", ROUTES, ids=str)
def test_the_matrix(route: Route, persona: str, world: dict[str, Any]) -> None:
    client = client_for(persona, world)
    url, resolved = build_url(route, world)
    rule = expected(route, persona)
    before = snapshot()
    response = send(client, route.method, url)
    code = response.status_code
    if rule == "unauthenticated":
        assert code in {401, 403}, (url, code)
    elif rule == "not_found":
        assert code == 404, (url, code, response.content)
    elif rule == "forbidden":
        # Role checks run before object lookup; an unresolved parent may still be looked up first.
        assert code == 403 or (not resolved and code == 404), (url, code, response.content)
    elif rule == "allowed":
        assert code not in {401, 403}, (url, code, response.content)
        if resolved and route.method in SAFE_METHODS:
            assert code == 200, (url, code, response.content)
    if rule != "allowed":
        assert snapshot() == before, f"{persona} was refused {route} but rows changed"
        if code >= 400:
            assert set(response.json()["error"]) >= {"code", "message"}


def test_the_matrix_covers_every_api_route() -> None:
    templates = {route.template for route in ROUTES}
    for expected_template in [
        "/api/v1/tenants/",
        "/api/v1/tenants/{tenant}/",
        "/api/v1/tenants/{tenant}/members/{username}/",
        "/api/v1/tenants/{tenant}/keys/{key_id}/revoke/",
        "/api/v1/tenants/{tenant}/quota/",
        "/api/v1/tenants/{tenant}/audit-events/",
        "/api/v1/tenants/{tenant}/batches/{batch_id}/cancel/",
        "/api/v1/tenants/{tenant}/files/{file_id}/content/",
    ]:
        assert expected_template in templates
    assert all(route.method in {"GET", "POST", "PUT", "PATCH", "DELETE"} for route in ROUTES)


def test_api_keys_are_never_created_by_refused_requests(world: dict[str, Any]) -> None:
    before = ApiKey.objects.unscoped().count()
    client_for("vera", world).post("/api/v1/tenants/acme/keys/", {"name": "x", "scopes": ["read"]}, format="json")
    assert ApiKey.objects.unscoped().count() == before
