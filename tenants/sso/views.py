"""The sign-in page, the code flow's two routes and sign-out, with single sign-on.

- ``SignInView`` (``/login/``): the rate-limited password form, a "Sign in with <provider>" button when single sign-on
  is on, and the form refused (403) when ``FRONTDOOR_PASSWORD_SIGN_IN`` is off.
- ``SsoStartView`` (``/oidc/authenticate/``) sends the browser to the provider with state, nonce and a PKCE
  challenge; ``SsoCallbackView`` (``/oidc/callback/``) takes the code back. A refusal or a failure is never an
  error page: the browser goes back to the sign-in page with a message saying what happened.
- ``SignOutView`` (``/logout/``) signs out here and, for someone who came in through the provider, there too: the
  browser goes to the provider's ``end_session_endpoint`` (RP-initiated logout), which sends it back to sign-in.

Every sign-in and sign-out is audited (``tenants.sso.audit``).
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import views as auth_views
from django.contrib.auth.models import User
from django.core.exceptions import SuspiciousOperation
from django.forms import Form
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, resolve_url
from django.urls import Resolver404, resolve, reverse
from django.utils import timezone
from django.views import View
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from controlplane.loginlimit import RateLimitedLoginView
from tenants.models import Invitation
from tenants.sso.accounts import SignInRefused
from tenants.sso.audit import record_sign_in, record_sign_out, sign_in_method
from tenants.sso.backend import password_sign_in_enabled
from tenants.sso.provider import ProviderUnavailable, current, library_setting, metadata, required

log = logging.getLogger(__name__)


class SignInView(RateLimitedLoginView):
    """``/login/``: the password form (while allowed) and the provider's button (when configured)."""

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        config = current()
        context["sso_name"] = config.provider_name if config is not None else ""
        context["password_sign_in_off"] = not password_sign_in_enabled()
        return context

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not password_sign_in_enabled():
            refused = f"Password sign-in is turned off. Sign in with {required().provider_name}."
            context = self.get_context_data(form=self.form_class(request), refused=refused)
            return self.render_to_response(context, status=403)
        return super().post(request, *args, **kwargs)

    def form_valid(self, form: Form) -> HttpResponse:
        response = super().form_valid(form)  # type: ignore[arg-type]
        assert isinstance(self.request.user, User)
        record_sign_in(self.request, self.request.user, "password")
        return response


class SsoStartView(OIDCAuthenticationRequestView):  # type: ignore[misc]
    """``/oidc/authenticate/?next=<path>``: to the provider's authorization endpoint."""

    get_settings = staticmethod(library_setting)

    def __init__(self, **kwargs: Any) -> None:
        # The library's __init__ reads the endpoint; here it is read in get(), where a failure can be answered.
        View.__init__(self, **kwargs)

    def get(self, request: HttpRequest) -> HttpResponse:
        config = required()
        try:
            self.OIDC_OP_AUTH_ENDPOINT = library_setting("OIDC_OP_AUTHORIZATION_ENDPOINT")
        except ProviderUnavailable as exc:
            log.warning("single sign-on: %s", exc)
            messages.error(request, f"{config.provider_name} cannot be reached. Try again in a minute.")
            return redirect(settings.LOGIN_URL)
        self.OIDC_RP_CLIENT_ID = config.client_id
        return super().get(request)  # type: ignore[no-any-return]


def _is_invitation_link(url: str) -> bool:
    try:
        return resolve(urlsplit(url).path).url_name == "console-invitation"
    except Resolver404:
        return False


class SsoCallbackView(OIDCAuthenticationCallbackView):  # type: ignore[misc]
    """``/oidc/callback/?code&state``: the provider's answer, exchanged, checked and signed in."""

    get_settings = staticmethod(library_setting)

    def get(self, request: HttpRequest) -> HttpResponse:
        config = required()
        self.started = timezone.now()
        try:
            return super().get(request)  # type: ignore[no-any-return]
        except SignInRefused as exc:
            log.warning("single sign-on refused: %s", exc)
            return self._back_to_sign_in(str(exc))
        except (SuspiciousOperation, requests.RequestException, ProviderUnavailable) as exc:
            # A replayed or forged callback, a token the checks refuse, or the provider failing mid-flow.
            log.warning("single sign-on failed: %s: %s", type(exc).__name__, exc)
            return self._back_to_sign_in(f"Sign-in through {config.provider_name} failed. Try again.")

    def _back_to_sign_in(self, message: str) -> HttpResponse:
        messages.error(self.request, message)
        return HttpResponseRedirect(self.failure_url)

    def login_failure(self) -> HttpResponse:
        # The provider answered with an error (the person cancelled, say), or the flow's state is gone. Its
        # error_description is not shown: anyone can make a callback URL carrying any text.
        return self._back_to_sign_in(f"Sign-in through {required().provider_name} did not complete.")

    def login_success(self) -> HttpResponse:
        response = super().login_success()
        record_sign_in(self.request, self.user, "oidc")
        return response  # type: ignore[no-any-return]

    @property
    def success_url(self) -> str:
        url = str(super().success_url)
        joined = list(
            Invitation.unscoped_objects.select_related("tenant")
            .filter(accepted_by=self.user, accepted_at__gte=self.started)
            .order_by("accepted_at")
        )
        for invitation in joined:
            messages.success(self.request, f"Welcome to {invitation.tenant.name}.")
        # The link that brought the invitee here was just used: its page would only say so.
        if joined and _is_invitation_link(url):
            return reverse("console-overview", kwargs={"tenant": joined[0].tenant.slug})
        return url


def end_session_url(request: HttpRequest) -> str | None:
    """Where to send a browser signing out of a session begun at the provider (None: nowhere, sign out here only)."""
    config = current()
    id_token = request.session.get("oidc_id_token")
    if config is None or sign_in_method(request) != "oidc" or not isinstance(id_token, str):
        return None
    try:
        endpoint = metadata(config).get("end_session_endpoint")
    except ProviderUnavailable as exc:
        log.warning("single sign-on: signing out here only: %s", exc)
        return None
    if not isinstance(endpoint, str) or not endpoint:
        return None
    params = {
        "id_token_hint": id_token,
        "client_id": config.client_id,
        "post_logout_redirect_uri": request.build_absolute_uri(resolve_url(settings.LOGOUT_REDIRECT_URL)),
    }
    return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(params)}"


class SignOutView(auth_views.LogoutView):
    """``/logout/`` (POST): Django's sign-out, audited, then the provider's when the session began there."""

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        at_provider = None
        if isinstance(request.user, User):
            # Read before Django's logout empties the session.
            at_provider = end_session_url(request)
            record_sign_out(request, request.user)
        response = super().post(request, *args, **kwargs)
        return HttpResponseRedirect(at_provider) if at_provider else response
