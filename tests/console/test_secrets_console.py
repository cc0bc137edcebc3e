"""The secrets page: names and use listed to the tenant, never a value; admins create, rotate and delete through the
service; members, viewers and other tenants change nothing. And the deployment form's secret fields."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.test import Client

from deployments import secrets
from deployments.console.forms import DeploymentForm, parse_secret_env
from deployments.models import ModelDeployment, TenantSecret
from tenants.models import AuditEvent, Tenant

pytestmark = pytest.mark.django_db

URL = "/t/acme/secrets/"
TOKEN = "hf_console-value-that-must-never-show"
ROTATED = "hf_rotated-value-that-must-never-show"
VALUES = (TOKEN, ROTATED)

Console = Callable[[User | None], Client]


class Seen:
    """Every response body a test got, so the test can say no value was in any of them."""

    def __init__(self) -> None:
        self.bodies: list[str] = []

    def __call__(self, response: Any) -> Any:
        self.bodies.append(response.content.decode())
        return response

    def assert_no_value(self) -> None:
        assert self.bodies
        for body in self.bodies:
            for value in VALUES:
                assert value not in body


@pytest.fixture
def seen() -> Iterator[Seen]:
    watcher = Seen()
    yield watcher
    watcher.assert_no_value()


def make_secret(tenant: Tenant, name: str = "hf-token", **fields: str) -> TenantSecret:
    return secrets.create_secret(tenant, name=name, value=fields.pop("value", TOKEN), actor=None, **fields)


def stored(tenant: Tenant) -> dict[str, int]:
    return dict(TenantSecret.objects.for_tenant(tenant).values_list("name", "version"))


def test_it_lists_names_kinds_and_users_but_never_a_value(
    console: Console, vera: User, acme: Tenant, make_deployment: Callable[..., ModelDeployment], seen: Seen
) -> None:
    make_secret(acme)
    make_secret(acme, "ghcr", kind="registry", registry_server="ghcr.io", registry_username="acme-bot")
    make_deployment(acme, "chat", secret_env={"HF_TOKEN": "hf-token"})

    response = seen(console(vera).get(URL))

    assert response.status_code == 200
    page = response.content.decode()
    assert "<code>hf-token</code>" in page and "<code>ghcr</code>" in page
    assert "<code>acme-bot</code> at <code>ghcr.io</code>" in page
    assert 'href="/t/acme/deployments/chat/">chat</a>' in page
    assert f'href="{URL}"' in page  # the nav link
    assert [row.used_by for row in response.context["rows"]] == [[], ["chat"]]  # ordered by name: ghcr, hf-token


def test_it_answers_htmx_with_the_table_alone(console: Console, bob: User, acme: Tenant, seen: Seen) -> None:
    make_secret(acme)

    partial = seen(console(bob).get(URL, HTTP_HX_REQUEST="true")).content.decode()

    assert "<html" not in partial and "<code>hf-token</code>" in partial


def test_an_admin_creates_a_secret_through_the_service(console: Console, adam: User, acme: Tenant, seen: Seen) -> None:
    client = console(adam)
    page = seen(client.get(URL)).content.decode()
    assert 'type="password" name="value"' in page and 'value="create"' in page

    response = seen(client.post(URL, {"action": "create", "name": "hf-token", "kind": "generic", "value": TOKEN}))

    assert response.status_code == 302 and response["Location"] == URL
    assert stored(acme) == {"hf-token": 1}
    assert secrets.reveal(TenantSecret.objects.for_tenant(acme).get()) == TOKEN
    assert AuditEvent.objects.for_tenant(acme).filter(action="secret.create", actor=adam).count() == 1
    assert "Secret hf-token created." in seen(client.get(URL)).content.decode()


def test_it_creates_a_registry_login(console: Console, adam: User, acme: Tenant, seen: Seen) -> None:
    login = {"kind": "registry", "registry_server": "ghcr.io", "registry_username": "acme-bot", "value": TOKEN}

    response = seen(console(adam).post(URL, {"action": "create", "name": "ghcr", **login}))

    assert response.status_code == 302
    secret = TenantSecret.objects.for_tenant(acme).get()
    assert (secret.kind, secret.registry_server, secret.registry_username) == ("registry", "ghcr.io", "acme-bot")


def test_the_services_refusals_land_on_the_fields_and_the_value_is_not_kept(
    console: Console, adam: User, acme: Tenant, seen: Seen
) -> None:
    client = console(adam)
    bad_name = seen(client.post(URL, {"action": "create", "name": "Not_A_Name", "kind": "generic", "value": TOKEN}))
    no_host = seen(client.post(URL, {"action": "create", "name": "ghcr", "kind": "registry", "value": TOKEN}))
    make_secret(acme)
    twice = seen(client.post(URL, {"action": "create", "name": "hf-token", "kind": "generic", "value": TOKEN}))

    for response in (bad_name, no_host, twice):
        assert response.status_code == 422
        assert 'type="password" name="value"' in response.content.decode()
    assert set(bad_name.context["form"].errors) == {"name"}
    no_host_errors = no_host.context["form"].errors
    assert no_host_errors["registry_server"] == ["a registry secret needs the registry's host"]
    assert no_host_errors["registry_username"] == ["a registry secret needs the user name it logs in as"]
    assert "already has a secret named 'hf-token'" in twice.context["form"].errors["name"][0]
    assert 'value="Not_A_Name"' in bad_name.content.decode()  # the rest of the input is kept
    assert stored(acme) == {"hf-token": 1}


def test_an_admin_rotates_a_value_and_the_version_goes_up(
    console: Console, alice: User, acme: Tenant, seen: Seen
) -> None:
    make_secret(acme)
    client = console(alice)

    response = seen(client.post(URL, {"action": "rotate", "name": "hf-token", "value": ROTATED}))

    assert response.status_code == 302
    assert stored(acme) == {"hf-token": 2}
    assert secrets.reveal(TenantSecret.objects.for_tenant(acme).get()) == ROTATED
    assert AuditEvent.objects.for_tenant(acme).filter(action="secret.update", actor=alice).count() == 1
    assert "version 2" in seen(client.get(URL)).content.decode()


def test_a_rotation_without_a_value_is_a_field_error_on_its_row(
    console: Console, adam: User, acme: Tenant, seen: Seen
) -> None:
    make_secret(acme)

    response = seen(console(adam).post(URL, {"action": "rotate", "name": "hf-token", "value": ""}))

    assert response.status_code == 422
    (row,) = response.context["rows"]
    assert row.rotate_form.errors == {"value": ["enter the new value"]}
    assert "<details open>" in response.content.decode()
    assert stored(acme) == {"hf-token": 1}


def test_a_registry_login_changes_its_user_and_keeps_its_value(
    console: Console, adam: User, acme: Tenant, seen: Seen
) -> None:
    make_secret(acme, "ghcr", kind="registry", registry_server="ghcr.io", registry_username="acme-bot")
    rotate = {"action": "rotate", "name": "ghcr", "value": "", "registry_server": "ghcr.io"}

    response = seen(console(adam).post(URL, {**rotate, "registry_username": "acme-ci"}))

    assert response.status_code == 302
    secret = TenantSecret.objects.for_tenant(acme).get()
    assert (secret.registry_username, secret.version, secrets.reveal(secret)) == ("acme-ci", 2, TOKEN)


def test_an_admin_deletes_a_secret(console: Console, adam: User, acme: Tenant, seen: Seen) -> None:
    make_secret(acme)

    response = seen(console(adam).post(URL, {"action": "delete", "name": "hf-token"}))

    assert response.status_code == 302
    assert stored(acme) == {}
    assert AuditEvent.objects.for_tenant(acme).filter(action="secret.delete", actor=adam).count() == 1


def test_a_secret_in_use_is_not_deleted_and_the_page_names_its_users(
    console: Console, adam: User, acme: Tenant, make_deployment: Callable[..., ModelDeployment], seen: Seen
) -> None:
    make_secret(acme)
    make_deployment(acme, "chat", secret_env={"HF_TOKEN": "hf-token"})

    response = seen(console(adam).post(URL, {"action": "delete", "name": "hf-token"}))

    assert response.status_code == 409
    assert response.context["action_error"] == "secret 'hf-token' is used by chat; stop using it there first"
    assert "is used by chat" in response.content.decode()
    assert stored(acme) == {"hf-token": 1}


@pytest.mark.parametrize("persona", ["bob", "vera"])
def test_members_and_viewers_see_the_list_without_forms_and_cannot_write(
    console: Console, persona: str, request: pytest.FixtureRequest, acme: Tenant, seen: Seen
) -> None:
    make_secret(acme)
    client = console(request.getfixturevalue(persona))

    page = seen(client.get(URL)).content.decode()

    assert "<code>hf-token</code>" in page
    assert 'type="password"' not in page and "Create secret" not in page and 'value="delete"' not in page
    for body in (
        {"action": "create", "name": "other", "kind": "generic", "value": TOKEN},
        {"action": "rotate", "name": "hf-token", "value": ROTATED},
        {"action": "delete", "name": "hf-token"},
    ):
        assert seen(client.post(URL, body)).status_code == 403
    assert stored(acme) == {"hf-token": 1}


def test_another_tenants_secrets_are_out_of_sight_and_reach(
    console: Console, adam: User, charlie: User, acme: Tenant, globex: Tenant, seen: Seen
) -> None:
    make_secret(acme)
    make_secret(globex, "globex-key")

    assert seen(console(charlie).get(URL)).status_code == 404
    assert seen(console(charlie).post(URL, {"action": "delete", "name": "hf-token"})).status_code == 404
    admin = console(adam)
    assert "globex-key" not in seen(admin.get(URL)).content.decode()
    assert seen(admin.post(URL, {"action": "delete", "name": "globex-key"})).status_code == 404
    assert seen(admin.post(URL, {"action": "rotate", "name": "globex-key", "value": ROTATED})).status_code == 404
    assert stored(acme) == {"hf-token": 1} and stored(globex) == {"globex-key": 1}


def test_an_unknown_action_is_refused_on_the_page(console: Console, adam: User, acme: Tenant, seen: Seen) -> None:
    response = seen(console(adam).post(URL, {"action": "reveal", "name": "hf-token"}))

    assert response.status_code == 422 and response.context["action_error"] == "unknown action 'reveal'"


def test_it_enforces_csrf(adam: User, acme: Tenant, redis_prefix: str, seen: Seen) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(adam)

    refused = seen(client.post(URL, {"action": "create", "name": "hf-token", "kind": "generic", "value": TOKEN}))
    seen(client.get(URL))
    token = client.cookies["csrftoken"].value
    accepted = seen(
        client.post(
            URL,
            {"action": "create", "name": "hf-token", "kind": "generic", "value": TOKEN, "csrfmiddlewaretoken": token},
        )
    )

    assert refused.status_code == 403
    assert accepted.status_code == 302
    assert stored(acme) == {"hf-token": 1}


# ---------------------------------------------------------------- the deployment form's secret fields

NEW = {
    "name": "chat",
    "runtime": "builtin",
    "model": "frontdoor/sim-chat",
    "gpu_count": "0",
    "min_replicas": "1",
    "max_replicas": "1",
    "target_concurrency": "8",
    "timeout_s": "120",
}


def test_the_deployment_form_sets_secret_env_from_lines(console: Console, bob: User, acme: Tenant) -> None:
    make_secret(acme)

    response = console(bob).post("/t/acme/deployments/new/", NEW | {"secret_env": "\n  HF_TOKEN = hf-token \n\n"})

    assert response.status_code == 302
    assert ModelDeployment.objects.for_tenant(acme).get().secret_env == {"HF_TOKEN": "hf-token"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("HF_TOKEN", "line 1: write VAR=secret-name"),
        ("=hf-token", "line 1: write VAR=secret-name"),
        ("HF_TOKEN=", "line 1: write VAR=secret-name"),
        ("A=hf-token\nA=hf-token", "line 2: A is set twice"),
    ],
)
def test_a_malformed_secret_env_line_is_a_field_error(
    console: Console, bob: User, acme: Tenant, text: str, message: str
) -> None:
    make_secret(acme)

    response = console(bob).post("/t/acme/deployments/new/", NEW | {"secret_env": text})

    assert response.status_code == 422
    assert response.context["form"].errors == {"secret_env": [message]}
    assert not ModelDeployment.objects.for_tenant(acme).exists()


def test_a_value_pasted_for_a_secret_name_is_refused_without_being_echoed(
    console: Console, bob: User, acme: Tenant
) -> None:
    response = console(bob).post("/t/acme/deployments/new/", NEW | {"secret_env": f"HF_TOKEN={TOKEN}"})

    assert response.status_code == 422
    (error,) = response.context["form"].errors["secret_env"]
    assert error.startswith("line 1: HF_TOKEN is not set to a secret's name") and TOKEN not in error


def test_the_services_secret_refusals_land_on_the_deployment_fields(console: Console, bob: User, acme: Tenant) -> None:
    make_secret(acme)
    asked = NEW | {"secret_env": "HF_TOKEN=no-such-secret", "upstream_key_secret": "hf-token"}

    response = console(bob).post("/t/acme/deployments/new/", asked)

    assert response.status_code == 422
    errors = response.context["form"].errors
    assert errors["secret_env"] == ["HF_TOKEN: the tenant has no secret named 'no-such-secret'"]
    assert errors["upstream_key_secret"] == ["only runtime 'external' sends an upstream key"]


def test_the_upstream_key_is_a_choice_of_the_tenants_generic_secrets(acme: Tenant, globex: Tenant) -> None:
    make_secret(acme)
    make_secret(acme, "ghcr", kind="registry", registry_server="ghcr.io", registry_username="acme-bot")
    make_secret(globex, "globex-key")

    form = DeploymentForm(tenant=acme)

    choices = form.fields["upstream_key_secret"].choices  # type: ignore[attr-defined]
    assert list(choices) == [("", "none"), ("hf-token", "hf-token")]


def test_parse_secret_env_reports_every_bad_line() -> None:
    with pytest.raises(ValidationError) as caught:
        parse_secret_env("GOOD=hf-token\nbad line\nX=Not_Valid")

    assert caught.value.messages == [
        "line 2: write VAR=secret-name",
        "line 3: X is not set to a secret's name (lower-case letters, digits and '-', starting and ending with a "
        "letter or digit)",
    ]
