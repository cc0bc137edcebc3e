"""The Connect panel in a real browser: snippets with the model filled in behind keyboard tabs, copy buttons that
copy, and the playground, which sends a real request from the page through a real gateway and shows the answer,
with the pasted key going to the gateway only, and kept nowhere.

A model server and a gateway on 127.0.0.1 that allows the console's origin (``FRONTDOOR_GATEWAY_CORS_ORIGINS``); the
gateway's snapshot is published by hand (``World``) with the console's tenant and deployment names, so the test needs
no worker or agent. The console is ``http://localhost:<port>``, the gateway ``http://127.0.0.1:<port>``: every
playground request is cross-origin, as it is in an installation.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
import redis
from django.contrib.auth.models import User

from deployments import services
from tenants.models import Tenant
from tests.browser.conftest import PASSWORD
from tests.support.gateway import (
    BASE_PREFIX,
    REDIS_URL,
    Key,
    Process,
    World,
    clear_prefix,
    start_gateway,
    start_modelserver,
    stop,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Request

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

V2_BODY = (
    '{"inputs": [{"name": "user_id", "shape": [2], "datatype": "INT64", "data": [1, 2]}, '
    '{"name": "item_id", "shape": [2], "datatype": "INT64", "data": [10, 20]}]}'
)


@pytest.fixture(scope="module")
def served(live_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Process, Key]]:
    """A gateway that allows the console's origin, serving acme's ``painter`` (chat and images) and ``ranker`` (v2)."""
    tmp = tmp_path_factory.mktemp("connect")
    client = redis.Redis.from_url(REDIS_URL)
    prefix = f"{BASE_PREFIX}-{uuid.uuid4().hex[:6]}"
    chat = start_modelserver(tmp)
    ranker = start_modelserver(tmp, "--protocol", "v2", "--model-name", "frontdoor/ranker")
    gateway = start_gateway(tmp, prefix, FRONTDOOR_GATEWAY_CORS_ORIGINS=str(live_server.url))
    try:
        world = World(client, prefix)
        world.tenants["acme"] = world.tenants.pop(world.tenant())
        world.deployment("acme", "painter", [chat.url], image_generation=True)
        world.deployment("acme", "ranker", [ranker.url], model="frontdoor/ranker", protocol="v2")
        key = world.key("acme")
        world.publish(gateway)
        yield gateway, key
    finally:
        for process in (gateway, ranker, chat):
            stop(process.proc)
        clear_prefix(client, prefix)
        client.close()


@pytest.fixture
def on_gateway(served: tuple[Process, Key], settings: Any) -> tuple[Process, Key]:
    settings.FRONTDOOR_GATEWAY_URL = served[0].url  # what the panel shows and the playground calls
    return served


@pytest.fixture
def painter(acme: Tenant) -> None:
    services.create_deployment(
        acme, {"name": "painter", "model": "frontdoor/sim-chat", "image_generation": True}, actor=None
    )


@pytest.fixture
def ranker(acme: Tenant) -> None:
    services.create_deployment(acme, {"name": "ranker", "model": "frontdoor/ranker", "protocol": "v2"}, actor=None)


def stored_anywhere(page: Page) -> str:
    """Everything the console's origin keeps in this browser: local and session storage, and every cookie."""
    kept = page.evaluate("() => JSON.stringify([{...localStorage}, {...sessionStorage}, document.cookie])")
    return str(kept) + str(page.context.cookies())


def test_it_shows_the_snippets_with_the_model_behind_keyboard_tabs_and_copies_them(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, vera: User, painter: None, on_gateway: Any
) -> None:
    from playwright.sync_api import expect

    gateway, _ = on_gateway
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=console_url)
    sign_in(page, vera)
    page.goto(f"{console_url}/t/acme/deployments/painter/")

    panel = page.get_by_role("region", name="Connect")
    expect(panel.locator("#connect-base")).to_have_text(f"{gateway.url}/v1")
    curl_tab = panel.get_by_role("tab", name="curl")
    expect(curl_tab).to_have_attribute("aria-selected", "true")
    expect(panel.locator("#connect-curl-code")).to_contain_text('"model": "painter"')
    expect(panel.locator("#connect-python")).to_be_hidden()

    # Arrow keys, Home and End move between the tabs (focus and selection together); Tab enters the panel.
    curl_tab.focus()
    page.keyboard.press("ArrowRight")
    python_tab = panel.get_by_role("tab", name="Python")
    expect(python_tab).to_be_focused()
    expect(python_tab).to_have_attribute("aria-selected", "true")
    expect(panel.locator("#connect-python")).to_be_visible()
    expect(panel.locator("#connect-curl")).to_be_hidden()
    page.keyboard.press("End")
    expect(panel.get_by_role("tab", name="Images")).to_be_focused()
    page.keyboard.press("ArrowRight")
    expect(curl_tab).to_be_focused()
    page.keyboard.press("ArrowLeft")
    expect(panel.get_by_role("tab", name="Images")).to_be_focused()  # the arrows wrap around
    page.keyboard.press("Home")
    expect(curl_tab).to_be_focused()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Tab")
    expect(panel.locator("#connect-python")).to_be_focused()

    panel.get_by_role("button", name="Copy the Python snippet").click()
    expect(panel.get_by_role("button", name="Copy the Python snippet")).to_have_text("Copied")
    copied = page.evaluate("() => navigator.clipboard.readText()")
    assert copied == panel.locator("#connect-python-code").inner_text().strip()
    assert f'OpenAI(base_url="{gateway.url}/v1"' in copied and 'model="painter"' in copied


def test_the_playground_sends_one_request_through_the_gateway_and_the_key_goes_nowhere_else(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, vera: User, painter: None, on_gateway: Any
) -> None:
    from playwright.sync_api import expect

    gateway, key = on_gateway
    sign_in(page, vera)
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request))
    page.goto(f"{console_url}/t/acme/deployments/painter/")

    playground = page.locator("[data-playground]")
    playground.get_by_label("API key").fill(key.full)
    playground.get_by_label("Message").fill("Say hello")
    playground.get_by_role("button", name="Send").click()
    result = playground.locator("[data-playground-result]")
    expect(result.locator("[data-playground-status]")).to_have_text("200 OK")
    expect(result.locator("[data-playground-answer]")).not_to_be_empty()
    expect(result.locator("[data-playground-latency]")).to_have_text(_milliseconds())
    expect(result.locator("[data-playground-rid]")).not_to_have_text("—")  # the gateway's x-request-id, exposed

    # An image, too: the answer's PNG is shown.
    playground.get_by_label("Image").check()
    playground.get_by_label("Message").fill("a lighthouse at dusk")
    playground.get_by_role("button", name="Send").click()
    image = result.locator("img[data-playground-image]")
    expect(image).to_be_visible()
    natural_width = "() => document.querySelector('img[data-playground-image]').naturalWidth"
    page.wait_for_function(f"() => ({natural_width})() > 0")  # decoded: the answer was a PNG
    assert page.evaluate(natural_width) == 256

    to_gateway = [r for r in requests if r.url.startswith(gateway.url)]
    assert [(r.method, r.url) for r in to_gateway] == [
        ("POST", f"{gateway.url}/v1/chat/completions"),
        ("POST", f"{gateway.url}/v1/images/generations"),
    ]
    for sent in to_gateway:
        headers = sent.all_headers()
        assert headers["authorization"] == f"Bearer {key.full}"
        assert headers["origin"] == console_url and "cookie" not in headers
    others = [r for r in requests if not r.url.startswith(gateway.url)]
    assert others and all(r.url.startswith(console_url) for r in others)
    for sent in others:
        seen = sent.url + str(sent.all_headers()) + (sent.post_data or "")
        assert key.full not in seen and key.key_id not in seen, sent.url
    assert key.full not in stored_anywhere(page)

    page.reload()
    expect(page.locator("[data-playground]").get_by_label("API key")).to_have_value("")


def test_the_v2_playground_infers_with_the_rankers_inputs_and_shows_a_refusal_readably(
    page: Page, sign_in: Callable[[Page, User], None], console_url: str, bob: User, ranker: None, on_gateway: Any
) -> None:
    from playwright.sync_api import expect

    _, key = on_gateway
    sign_in(page, bob)
    page.goto(f"{console_url}/t/acme/deployments/ranker/")

    playground = page.locator("[data-playground]")
    expect(playground.get_by_label("Request body (JSON)")).to_have_value(V2_BODY)  # the built-in ranker's inputs
    status = playground.locator("[data-playground-status]")
    answer = playground.locator("[data-playground-answer]")
    # What the browser would refuse to send, or the gateway to route, is refused in the page: nothing is sent.
    for key_given, model, body, refused in [
        ("fd live key", "ranker", "{}", "connect-key"),
        (key.full, "Not A Name", "{}", "connect-model"),
        (key.full, "ranker", "{not json", "connect-body"),
    ]:
        playground.get_by_label("API key").fill(key_given)
        playground.get_by_label("Model").fill(model)
        playground.get_by_label("Request body (JSON)").fill(body)
        playground.get_by_role("button", name="Send").click()
        assert page.evaluate(f"() => document.getElementById('{refused}').validity.valid") is False
        expect(playground.locator("[data-playground-result]")).to_be_hidden()
    playground.get_by_label("Model").fill("ranker")
    playground.get_by_label("Request body (JSON)").fill(V2_BODY)
    playground.get_by_label("API key").fill("fd_live_abcd1234_" + "A" * 40)
    playground.get_by_role("button", name="Send").click()
    expect(status).to_have_text("401 Unauthorized")
    expect(answer).to_contain_text("API key")  # the gateway's message: readable, the answer carried CORS headers

    playground.get_by_label("API key").fill(key.full)
    playground.get_by_role("button", name="Send").click()
    expect(status).to_have_text("200 OK")
    expect(answer).to_have_text(_matching(r"^score \(FP32, 2\): \[-?[0-9.e-]+,-?[0-9.e-]+\]$"))
    expect(playground.locator("img[data-playground-image]")).to_be_hidden()


def test_a_console_origin_the_gateway_does_not_allow_gets_no_answer(
    page: Page, with_password: Callable[[User], User], console_url: str, vera: User, painter: None, on_gateway: Any
) -> None:
    from playwright.sync_api import expect

    _, key = on_gateway
    other_origin = console_url.replace("localhost", "127.0.0.1")  # the same console, an origin not on the list
    with_password(vera)
    page.goto(f"{other_origin}/login/")
    page.get_by_label("Username").fill(vera.get_username())
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/login/" not in url)
    page.goto(f"{other_origin}/t/acme/deployments/painter/")

    playground = page.locator("[data-playground]")
    playground.get_by_label("API key").fill(key.full)
    playground.get_by_role("button", name="Send").click()
    expect(playground.locator("[data-playground-status]")).to_have_text("No answer")
    expect(playground.locator("[data-playground-answer]")).to_contain_text("FRONTDOOR_GATEWAY_CORS_ORIGINS")


def test_without_script_every_snippet_shows_under_its_heading_and_there_is_no_playground(
    browser: Browser,
    sign_in: Callable[[Page, User], None],
    console_url: str,
    vera: User,
    painter: None,
    on_gateway: Any,
) -> None:
    from playwright.sync_api import expect

    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        sign_in(page, vera)
        page.goto(f"{console_url}/t/acme/deployments/painter/")

        panel = page.get_by_role("region", name="Connect")
        expect(panel.locator('[role="tablist"]')).to_be_hidden()
        for heading in ("curl", "Python", "JavaScript", "Images"):
            expect(panel.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        expect(panel.locator("#connect-js-code")).to_contain_text('model: "painter"')
        expect(page.locator("[data-playground]")).to_be_hidden()  # its form would need the script
    finally:
        context.close()


def _milliseconds() -> re.Pattern[str]:
    return re.compile(r"^\d+ ms$")


def _matching(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)
