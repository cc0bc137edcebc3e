"""Messages appear once, where the action happened: a full page shows them at its top; an htmx partial carries them
in ``X-Console-Messages`` (console.js shows them beside the swapped part) and they never pile up on the next page."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib import messages
from django.contrib.auth.models import User
from django.contrib.messages.storage.cookie import CookieStorage
from django.http import HttpResponse
from django.template.loader import render_to_string
from django.test import Client, RequestFactory

from controlplane.console import MESSAGES_HEADER, messages_for_htmx
from deployments import secrets
from tenants.models import Tenant

pytestmark = pytest.mark.django_db

Console = Callable[[User | None], Client]
URL = "/t/acme/secrets/"
HTMX = {"HX-Request": "true"}
ROTATED = "Secret hf-token is at version 2; what uses it picks it up shortly."


@pytest.fixture
def hf_token(acme: Tenant) -> None:
    secrets.create_secret(acme, name="hf-token", value="hf_first-value", actor=None)


def carried(response: Any) -> list[dict[str, str]]:
    raw = response.headers.get(MESSAGES_HEADER)
    return json.loads(raw) if raw else []


def test_an_htmx_action_carries_its_message_in_the_partial_once(console: Console, adam: User, hf_token: None) -> None:
    client = console(adam)

    # The POST redirects; htmx follows it with an htmx GET of the partial, which carries the message.
    answer = client.post(URL, {"action": "rotate", "name": "hf-token", "value": "hf_second"}, follow=True, headers=HTMX)
    next_page = client.get("/t/acme/members/").content.decode()

    assert answer.redirect_chain == [(URL, 302)]
    assert "<html" not in answer.content.decode()
    assert carried(answer) == [{"level": "success", "text": ROTATED}]
    assert ROTATED not in next_page and 'class="messages"' not in next_page


def test_two_htmx_actions_never_stack_up_on_the_next_page(console: Console, adam: User, hf_token: None) -> None:
    client = console(adam)
    for value in ("hf_second", "hf_third"):
        client.post(URL, {"action": "rotate", "name": "hf-token", "value": value}, follow=True, headers=HTMX)

    assert "Secret hf-token is at version" not in client.get(URL).content.decode()


def test_a_full_page_shows_its_message_at_the_top_once(console: Console, adam: User, hf_token: None) -> None:
    client = console(adam)

    after = client.post(URL, {"action": "rotate", "name": "hf-token", "value": "hf_second"}, follow=True)
    again = client.get(URL)

    assert f'<p class="banner success" role="status">{ROTATED}</p>' in after.content.decode()
    assert MESSAGES_HEADER not in after.headers
    assert ROTATED not in again.content.decode()


def test_a_partial_without_messages_has_no_header(console: Console, bob: User, hf_token: None) -> None:
    assert MESSAGES_HEADER not in console(bob).get(URL, headers=HTMX).headers


def test_the_header_stays_ascii_whatever_the_message_says() -> None:
    request = RequestFactory().get("/")
    request._messages = CookieStorage(request)  # type: ignore[attr-defined]
    messages.success(request, "Café « prêt » ✓")
    messages.error(request, 'line one\nline "two"')

    header = messages_for_htmx(request, HttpResponse())[MESSAGES_HEADER]

    assert header.isascii() and "\n" not in header
    assert json.loads(header) == [
        {"level": "success", "text": "Café « prêt » ✓"},
        {"level": "error", "text": 'line one\nline "two"'},
    ]
    assert request._messages.used  # type: ignore[attr-defined]  # taken: the next page will not show them again


def test_errors_are_alerts_and_the_rest_status_messages() -> None:
    class Shown:
        def __init__(self, level_tag: str, text: str) -> None:
            self.level_tag, self.tags, self.text = level_tag, level_tag, text

        def __str__(self) -> str:
            return self.text

    shown = render_to_string(
        "includes/messages.html", {"messages": [Shown("error", "Nope"), Shown("success", "Done"), Shown("info", "FYI")]}
    )

    assert '<p class="banner error" role="alert">Nope</p>' in shown
    assert '<p class="banner success" role="status">Done</p>' in shown
    assert '<p class="banner info" role="status">FYI</p>' in shown
