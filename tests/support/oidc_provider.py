"""A real OpenID Connect provider for the single sign-on tests: tests/oidc_provider/provider.js (npm ``oidc-provider``)
on a free port of 127.0.0.1, with the clients and accounts a test gives it.

- ``provider_missing()``: why it cannot run here (no node, or ``npm ci`` not run), or None. On CI that is a failure
  (``make test-deps`` installs it), elsewhere a skip.
- ``running_provider(tmp, clients, accounts)``: the provider, started and stopped.
- ``through_provider(client, account)``: a Django test client's sign-in through the provider's login page, the
  provider's side driven with ``requests``; returns the console's answer to the callback (``callback_url``: the
  callback it would have followed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import requests

from tests.support.browser import REPO

PROVIDER_DIR = REPO / "tests" / "oidc_provider"
CLIENT_ID = "frontdoor-console"
CLIENT_SECRET = "test-client-secret-0123456789"


@dataclass(frozen=True)
class Account:
    """A person at the provider: their login, password and the claims it releases about them."""

    login: str
    email: str
    email_verified: bool = True
    groups: tuple[str, ...] = ()
    password: str = "provider-password-1"

    def as_config(self) -> dict[str, Any]:
        claims = {"email": self.email, "email_verified": self.email_verified, "groups": list(self.groups)}
        return {"password": self.password, "claims": {**claims, "name": self.login.title()}}


@dataclass
class RunningProvider:
    issuer: str
    process: subprocess.Popen[str]


def provider_missing() -> str | None:
    if shutil.which("node") is None:
        return "node is missing (the test OpenID Connect provider runs on it)"
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        return "tests/oidc_provider has no node_modules: run `make test-deps` (npm ci there)"
    return None


def require_provider() -> None:
    """Skip (fail on CI) the calling test's module when the provider cannot run."""
    if (reason := provider_missing()) is not None:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: on CI `make test-deps` must install it", pytrace=False)
        pytest.skip(reason)


def client_for(console: str) -> dict[str, Any]:
    """The console as the provider registers it: its callback and where sign-out returns."""
    return {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "redirect_uris": [f"{console}/oidc/callback/"],
        "post_logout_redirect_uris": [f"{console}/login/"],
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
    }


@contextmanager
def running_provider(tmp: Path, clients: list[dict[str, Any]], accounts: list[Account]) -> Iterator[RunningProvider]:
    config = tmp / "oidc-provider.json"
    config.write_text(json.dumps({"clients": clients, "accounts": {a.login: a.as_config() for a in accounts}}))
    process = subprocess.Popen(
        ["node", "provider.js", str(config)],
        cwd=PROVIDER_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    first_line: list[str] = []
    reader = threading.Thread(target=lambda: first_line.append(process.stdout.readline() if process.stdout else ""))
    reader.start()
    reader.join(timeout=20)
    try:
        line = first_line[0] if first_line else ""
        if not line.startswith("issuer "):
            raise RuntimeError(f"the test OpenID Connect provider did not start (exit {process.poll()}): {line!r}")
        yield RunningProvider(issuer=line.split()[1], process=process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _follow_at_provider(browser: requests.Session, url: str, stop_at: str, **post: str) -> str:
    """Follow redirects at the provider (submitting the login form when given) until one points at ``stop_at``."""
    response = browser.post(url, data=post, allow_redirects=False, timeout=10) if post else None
    next_url = url if response is None else urljoin(url, response.headers.get("location", ""))
    for _ in range(10):
        if next_url.startswith(stop_at):
            return next_url
        response = browser.get(next_url, allow_redirects=False, timeout=10)
        if response.status_code not in (302, 303):
            return next_url
        next_url = urljoin(next_url, response.headers["location"])
    raise AssertionError(f"the provider redirected too often, last to {next_url}")


def callback_url(client: Any, account: Account, *, start: str = "/oidc/authenticate/") -> str:
    """Start a sign-in with a Django test client and sign in at the provider: the callback path it sends back to."""
    started = client.get(start)
    assert started.status_code == 302, started
    authorize = started["Location"]
    assert urlsplit(authorize).hostname == "127.0.0.1", authorize
    browser = requests.Session()
    login_page = _follow_at_provider(browser, authorize, "http://testserver")
    assert "/interaction/" in login_page, login_page
    back = _follow_at_provider(browser, login_page, "http://testserver", login=account.login, password=account.password)
    assert back.startswith("http://testserver/oidc/callback/"), back
    return back.removeprefix("http://testserver")


def through_provider(client: Any, account: Account, *, start: str = "/oidc/authenticate/") -> Any:
    """Sign in through the provider with a Django test client: the console's answer to the callback."""
    return client.get(callback_url(client, account, start=start))
