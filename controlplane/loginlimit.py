"""Sign-in with failed attempts rate-limited in Redis (shared by every web process), counted three ways.

Each failed attempt increments three counters, each expiring a minute after its first failure:

- ``<prefix>:login:pair:<ip>:<sha256(username)>``: one client guessing one user's password; refused at
  ``LOGIN_RATE_LIMIT_PER_MINUTE`` (N);
- ``<prefix>:login:ip:<ip>``: one client spraying many usernames; refused at ``IP_FACTOR`` × N;
- ``<prefix>:login:user:<sha256(username)>``: many clients (a botnet) guessing one user; refused at ``USER_FACTOR`` × N.
  This one is a trade-off: it lets anyone who can send that many failures lock the user out for a minute. One
  client adds at most N failures per username (the pair limit), so only ``USER_FACTOR`` or more clients together
  can trip it.

Once a counter reaches its limit, further attempts are refused with 429 before the password is even checked, so
guessing costs a minute per batch. A successful sign-in clears the pair and user counters, never the IP counter (an
attacker holding one valid account must not be able to reset the budget of the address spraying from it). The
username is hashed so no key holds what someone typed.

The client address is ``REMOTE_ADDR``; ``X-Forwarded-For`` is believed only when ``REMOTE_ADDR`` is one of
``FRONTDOOR_TRUSTED_PROXIES`` (comma-separated IPs), since anyone can send that header.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse

from controlplane.contracts.env import env_list
from controlplane.redis import get_redis, redis_key

WINDOW_S = 60
IP_FACTOR = 5
USER_FACTOR = 20


def trusted_proxies() -> frozenset[str]:
    """``FRONTDOOR_TRUSTED_PROXIES``, read on each sign-in attempt (not the hot path; tests may change it)."""
    return frozenset(env_list("FRONTDOOR_TRUSTED_PROXIES"))


def client_ip(request: HttpRequest) -> str:
    """The client's address: ``REMOTE_ADDR``, or the nearest untrusted hop of ``X-Forwarded-For`` behind a trusted
    proxy (each trusted proxy appends the address it saw, so hops right of the client are all trusted ones)."""
    remote = str(request.META.get("REMOTE_ADDR") or "unknown")
    proxies = trusted_proxies()
    if remote not in proxies:
        return remote
    hops = [hop.strip() for hop in str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",") if hop.strip()]
    for hop in reversed(hops):
        if hop not in proxies:
            return hop
    return hops[0] if hops else remote


def _user_digest(username: str) -> str:
    return hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]


def counter_keys(request: HttpRequest, username: str) -> dict[str, str]:
    """The Redis key of each counter: ``pair``, ``ip`` and ``user``."""
    ip, digest = client_ip(request), _user_digest(username)
    return {
        "pair": redis_key("login", "pair", ip, digest),
        "ip": redis_key("login", "ip", ip),
        "user": redis_key("login", "user", digest),
    }


def limits() -> dict[str, int]:
    per_pair = int(settings.LOGIN_RATE_LIMIT_PER_MINUTE)
    return {"pair": per_pair, "ip": IP_FACTOR * per_pair, "user": USER_FACTOR * per_pair}


def exhausted(request: HttpRequest, username: str) -> str | None:
    """Which counter (``pair``, ``ip`` or ``user``) has reached its limit, or None (one MGET)."""
    keys = counter_keys(request, username)
    values = get_redis().mget(list(keys.values()))
    for (name, _), value in zip(keys.items(), values, strict=True):
        if int(value or 0) >= limits()[name]:
            return name
    return None


def record_failure(request: HttpRequest, username: str) -> None:
    pipe = get_redis().pipeline()
    for key in counter_keys(request, username).values():
        pipe.incr(key)
        pipe.expire(key, WINDOW_S, nx=True)
    pipe.execute()


def clear_failures(request: HttpRequest, username: str) -> None:
    keys = counter_keys(request, username)
    get_redis().delete(keys["pair"], keys["user"])


REFUSALS = {
    "pair": "Too many failed sign-in attempts. Wait a minute.",
    "ip": "Too many failed sign-in attempts from your network. Wait a minute.",
    "user": "Too many failed sign-in attempts for this account. Wait a minute.",
}


class RateLimitedLoginView(auth_views.LoginView):
    """Django's LoginView, refusing (429) once a client, a user or the pair failed too often in the last minute."""

    template_name = "registration/login.html"
    form_class = AuthenticationForm
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        username = str(request.POST.get("username", ""))
        if (which := exhausted(request, username)) is not None:
            # An unbound form: validating this one would check the password, which is what we refuse to do.
            form = self.form_class(request, initial={"username": username})
            context = self.get_context_data(form=form, refused=REFUSALS[which])
            response = self.render_to_response(context, status=429)
            response["Retry-After"] = str(WINDOW_S)
            return response
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        record_failure(self.request, str(self.request.POST.get("username", "")))
        return super().form_invalid(form)

    def form_valid(self, form: AuthenticationForm) -> HttpResponse:
        clear_failures(self.request, str(self.request.POST.get("username", "")))
        return super().form_valid(form)
