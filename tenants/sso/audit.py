"""Sign-in and sign-out in the audit trail: ``user.sign_in`` and ``user.sign_out``, with how (``oidc`` or
``password``), the signed-in user as the actor and no tenant (they are the platform's events, read in the admin).

Only the console's own sign-in and sign-out pages record them, not Django's ``user_logged_in`` signal, which test
clients' ``force_login`` sends too.
"""

from __future__ import annotations

from typing import Literal

from django.contrib.auth.models import User
from django.http import HttpRequest

from controlplane.audit import Actor, record_audit

Method = Literal["oidc", "password"]
# Set in the session by a sign-in through the provider: sign-out then knows how its user came in.
SESSION_METHOD = "frontdoor_sign_in_method"


def _actor(request: HttpRequest, user: User) -> Actor:
    return Actor(user_id=user.pk, api_key_id=None, request_id=str(getattr(request, "request_id", "") or ""))


def record_sign_in(request: HttpRequest, user: User, method: Method) -> None:
    request.session[SESSION_METHOD] = method
    record_audit(_actor(request, user), None, "user.sign_in", user, {"method": method})


def sign_in_method(request: HttpRequest) -> Method:
    return "oidc" if request.session.get(SESSION_METHOD) == "oidc" else "password"


def record_sign_out(request: HttpRequest, user: User) -> None:
    record_audit(_actor(request, user), None, "user.sign_out", user, {"method": sign_in_method(request)})
