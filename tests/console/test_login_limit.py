"""Failed sign-ins are limited per client IP across usernames, per username across IPs, and per pair; the client IP
comes from X-Forwarded-For only behind a trusted proxy."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client

from controlplane import loginlimit

PAIR_LIMIT = 2


@pytest.fixture(autouse=True)
def small_limit(settings: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.LOGIN_RATE_LIMIT_PER_MINUTE = PAIR_LIMIT  # type: ignore[attr-defined]
    # Dozens of sign-ins per test: a fast hasher keeps them quick (what is tested is the counting, not hashing).
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # type: ignore[attr-defined]
    monkeypatch.delenv("FRONTDOOR_TRUSTED_PROXIES", raising=False)


@pytest.fixture
def signer(db: None) -> User:
    return User.objects.create_user("signer", password="correct horse battery")


def fail(client: Client, username: str, ip: str, **headers: str) -> int:
    return client.post("/login/", {"username": username, "password": "wrong"}, REMOTE_ADDR=ip, **headers).status_code


def test_it_refuses_one_ip_spraying_many_usernames(console: Callable[[User | None], Client], signer: User) -> None:
    client = console(None)
    ip_limit = loginlimit.IP_FACTOR * PAIR_LIMIT
    # Each username stays under the pair limit; only the IP's total trips.
    codes = [fail(client, f"user{i // (PAIR_LIMIT - 1)}", "203.0.113.5") for i in range(ip_limit)]
    assert codes == [200] * ip_limit
    refused = client.post(
        "/login/", {"username": "signer", "password": "correct horse battery"}, REMOTE_ADDR="203.0.113.5"
    )
    assert refused.status_code == 429 and "from your network" in refused.content.decode()
    assert refused["Retry-After"] == str(loginlimit.WINDOW_S)
    assert "_auth_user_id" not in client.session
    # Another address is unaffected.
    elsewhere = client.post(
        "/login/", {"username": "signer", "password": "correct horse battery"}, REMOTE_ADDR="203.0.113.6"
    )
    assert elsewhere.status_code == 302


def test_it_refuses_one_user_guessed_from_many_ips_only_at_the_higher_threshold(
    console: Callable[[User | None], Client], signer: User
) -> None:
    client = console(None)
    user_limit = loginlimit.USER_FACTOR * PAIR_LIMIT
    assert loginlimit.USER_FACTOR > 1, "one client (held to the pair limit) must never lock a user out"
    # One failure per address: no pair or IP counter comes near its limit.
    codes = [fail(client, "signer", f"198.51.100.{i}") for i in range(user_limit)]
    assert codes == [200] * user_limit
    refused = client.post(
        "/login/", {"username": "signer", "password": "correct horse battery"}, REMOTE_ADDR="198.51.100.250"
    )
    assert refused.status_code == 429 and "for this account" in refused.content.decode()
    # Other users from those addresses can still sign in.
    User.objects.create_user("other", password="another horse battery")
    ok = client.post("/login/", {"username": "other", "password": "another horse battery"}, REMOTE_ADDR="198.51.100.1")
    assert ok.status_code == 302


def test_it_ignores_x_forwarded_for_without_a_trusted_proxy(
    console: Callable[[User | None], Client], signer: User
) -> None:
    client = console(None)
    # Rotating the header does not escape the pair limit: the address is REMOTE_ADDR.
    for i in range(PAIR_LIMIT):
        assert fail(client, "signer", "192.0.2.9", HTTP_X_FORWARDED_FOR=f"10.0.0.{i}") == 200
    assert fail(client, "signer", "192.0.2.9", HTTP_X_FORWARDED_FOR="10.0.0.99") == 429


def test_it_believes_x_forwarded_for_from_a_trusted_proxy(
    console: Callable[[User | None], Client], signer: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRONTDOOR_TRUSTED_PROXIES", "192.0.2.1, 192.0.2.2")
    client = console(None)
    via_proxies = {"REMOTE_ADDR": "192.0.2.2", "HTTP_X_FORWARDED_FOR": "1.1.1.1, 203.0.113.7, 192.0.2.1"}
    for _ in range(PAIR_LIMIT):
        assert client.post("/login/", {"username": "signer", "password": "wrong"}, **via_proxies).status_code == 200
    assert client.post("/login/", {"username": "signer", "password": "wrong"}, **via_proxies).status_code == 429
    # The client is 203.0.113.7 (the nearest untrusted hop; "1.1.1.1" was typed by the client itself), so another
    # client behind the same proxy is not refused.
    other = {"REMOTE_ADDR": "192.0.2.2", "HTTP_X_FORWARDED_FOR": "203.0.113.8, 192.0.2.1"}
    response = client.post("/login/", {"username": "signer", "password": "correct horse battery"}, **other)
    assert response.status_code == 302


def test_it_clears_the_pair_counter_on_success_but_not_the_ip_counter(
    console: Callable[[User | None], Client], signer: User
) -> None:
    client = console(None)
    assert fail(client, "signer", "192.0.2.50") == 200
    ok = client.post("/login/", {"username": "signer", "password": "correct horse battery"}, REMOTE_ADDR="192.0.2.50")
    assert ok.status_code == 302
    from controlplane.redis import get_redis

    request = type("R", (), {"META": {"REMOTE_ADDR": "192.0.2.50"}})()
    keys = loginlimit.counter_keys(request, "signer")  # type: ignore[arg-type]
    assert get_redis().get(keys["pair"]) is None and get_redis().get(keys["user"]) is None
    assert int(get_redis().get(keys["ip"]) or 0) == 1
