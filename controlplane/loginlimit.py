"""Sign-in with failed attempts rate-limited per client IP and username, in Redis (shared by every web process).

Each failed attempt increments ``<prefix>:login:<ip>:<sha256(username)>`` (expiring after a minute); once it
reaches ``LOGIN_RATE_LIMIT_PER_MINUTE`` further attempts are refused with 429 before the password is even checked,
so guessing costs a minute per batch. A successful sign-in clears the counter. The username is hashed so the key
never holds what someone typed.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse

from controlplane.redis import get_redis, redis_key

WINDOW_S = 60


def _client_ip(request: HttpRequest) -> str:
    # REMOTE_ADDR only: X-Forwarded-For is client-controlled unless a trusted proxy rewrites it.
    return str(request.META.get("REMOTE_ADDR") or "unknown")


def attempts_key(request: HttpRequest, username: str) -> str:
    digest = hashlib.sha256(username.strip().lower().encode()).hexdigest()[:32]
    return redis_key("login", _client_ip(request), digest)


def failed_attempts(request: HttpRequest, username: str) -> int:
    return int(get_redis().get(attempts_key(request, username)) or 0)


def record_failure(request: HttpRequest, username: str) -> int:
    key = attempts_key(request, username)
    pipe = get_redis().pipeline()
    pipe.incr(key)
    pipe.expire(key, WINDOW_S, nx=True)
    count, _ = pipe.execute()
    return int(count)


def clear_failures(request: HttpRequest, username: str) -> None:
    get_redis().delete(attempts_key(request, username))


class RateLimitedLoginView(auth_views.LoginView):
    """Django's LoginView, refusing (429) an IP+username pair that failed too often in the last minute."""

    template_name = "registration/login.html"
    form_class = AuthenticationForm
    redirect_authenticated_user = True

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        username = str(request.POST.get("username", ""))
        if failed_attempts(request, username) >= settings.LOGIN_RATE_LIMIT_PER_MINUTE:
            # An unbound form: validating this one would check the password, which is what we refuse to do.
            form = self.form_class(request, initial={"username": username})
            context = self.get_context_data(form=form, refused="Too many failed sign-in attempts. Wait a minute.")
            return self.render_to_response(context, status=429)
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        record_failure(self.request, str(self.request.POST.get("username", "")))
        return super().form_invalid(form)

    def form_valid(self, form: AuthenticationForm) -> HttpResponse:
        clear_failures(self.request, str(self.request.POST.get("username", "")))
        return super().form_valid(form)
