"""Browser harness: Playwright driving Debian's chromium (never ``playwright install``) against the console.

- ``page``: a fresh browser page (1280×900) of one headless chromium per session.
- ``console_url``: pytest-django's ``live_server`` (a transactional test database), serving the console.
- ``sign_in(page, user)``: signs in through the real form (personas get the password ``PASSWORD``).
- ``stack``: the real processes around the console — a Celery worker (``--pool=solo``, with an embedded beat that
  resyncs every second) on the test database, the local agent (real model-server replicas) and the gateway, all on
  this test's Redis prefix; reused from tests/support/localagent.py and tests/support/gateway.py.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.browser import DESKTOP, Stack
from tests.support.worker import Worker

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from playwright.sync_api import Browser, Page


def pytest_configure(config: pytest.Config) -> None:
    # Playwright's sync API runs an event loop in this thread; Django refuses ORM calls from such a thread unless
    # told the loop is not serving anything (it is not: it only drives the browser). Set in the browser run only
    # (a hook, not at import).
    os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
PASSWORD = "browser-test-password-1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            raise pytest.UsageError(f"{CHROMIUM} is missing on CI: `make test` installs Debian's chromium")
        skip = pytest.mark.skip(reason=f"{CHROMIUM} is missing: apt-get install -y chromium")
        for item in items:
            if item.get_closest_marker("browser"):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(15_000)
    new_page = context.new_page()
    new_page.on("dialog", lambda dialog: dialog.accept())  # confirm() before revoking or removing
    yield new_page
    context.close()


@pytest.fixture
def console_url(live_server: Any, redis_prefix: str) -> str:
    return str(live_server.url)


@pytest.fixture
def with_password() -> Callable[[User], User]:
    def set_password(user: User) -> User:
        user.set_password(PASSWORD)
        user.save(update_fields=["password"])
        return user

    return set_password


@pytest.fixture
def sign_in(console_url: str, with_password: Callable[[User], User]) -> Callable[[Page, User], None]:
    def go(page: Page, user: User) -> None:
        with_password(user)
        page.goto(f"{console_url}/login/")
        page.get_by_label("Username").fill(user.get_username())
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/login/" not in url)

    return go


@pytest.fixture
def stack(live_server: Any, redis_url: str, redis_prefix: str, tmp_path: Path) -> Iterator[Stack]:
    from django.conf import settings

    from tests.support.gateway import start_gateway, stop
    from tests.support.localagent import agent_factory

    with agent_factory(redis_url, redis_prefix, tmp_path) as make_agent:
        agent = make_agent()
        agent_env = {k: v for k, v in agent.env.items() if k.startswith("FRONTDOOR_LOCAL_")}
        worker = Worker(tmp_path, redis_prefix, agent_env)
        gateway = start_gateway(tmp_path, redis_prefix, redis_url, FRONTDOOR_KEY_PEPPER=settings.FRONTDOOR_KEY_PEPPER)
        try:
            yield Stack(gateway_url=gateway.url, worker=worker)
        finally:
            stop(gateway.proc)
            worker.stop()
            # Replicas must not outlive the test: stop the agent first (it would restart them), then its replicas.
            agent.terminate()
            agent.stop_all()
    shutil.rmtree(tmp_path / "state", ignore_errors=True)
