"""The provider as the flow sees it: its discovery document, and the settings mozilla-django-oidc asks for.

The endpoints come from ``<issuer>/.well-known/openid-configuration``, fetched the first time a sign-in needs them
and kept for an hour, never at start-up (a provider that is down must not stop the console from starting, nor
password sign-in from working). The document must name the configured issuer, as OpenID Connect Discovery requires:
a document for another issuer would have the backend trust another provider's tokens.

The library reads its settings by name (``get_settings("OIDC_RP_CLIENT_ID")``); ``library_setting`` answers those
names from ``settings.FRONTDOOR_OIDC`` and the document, so ``OidcSettings`` stays the one source.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import requests
from django.conf import settings
from django.http import Http404
from mozilla_django_oidc.utils import import_from_settings

from tenants.sso.config import OidcSettings

DISCOVERY_TTL_S = 3600.0
MAX_DOCUMENT_BYTES = 256 * 1024
_ENDPOINTS = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
}

_documents: dict[str, tuple[float, dict[str, Any]]] = {}
_lock = threading.Lock()


class ProviderUnavailable(Exception):
    """The provider's discovery document could not be had, or does not describe the configured issuer."""


def current() -> OidcSettings | None:
    """The configured provider, or None when single sign-on is off."""
    return getattr(settings, "FRONTDOOR_OIDC", None)


def required() -> OidcSettings:
    """The configured provider; 404 where single sign-on is off (its routes then do not exist)."""
    config = current()
    if config is None:
        raise Http404("single sign-on is not configured")
    return config


def _fetch(config: OidcSettings) -> dict[str, Any]:
    url = config.issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        response = requests.get(url, timeout=config.timeout_s, allow_redirects=False)
        response.raise_for_status()
        if len(response.content) > MAX_DOCUMENT_BYTES:
            raise ProviderUnavailable(f"{url} answered more than {MAX_DOCUMENT_BYTES} bytes")
        document = response.json()
    except (requests.RequestException, ValueError) as exc:
        raise ProviderUnavailable(f"{url}: {exc}") from exc
    if not isinstance(document, dict) or document.get("issuer") != config.issuer:
        raise ProviderUnavailable(f"{url} describes issuer {document.get('issuer')!r}, not {config.issuer!r}")
    missing = [key for key in _ENDPOINTS.values() if not isinstance(document.get(key), str)]
    if missing:
        raise ProviderUnavailable(f"{url} names no {', '.join(missing)}")
    return document


def metadata(config: OidcSettings) -> dict[str, Any]:
    """The provider's discovery document (cached for ``DISCOVERY_TTL_S``); ``ProviderUnavailable`` when unreachable."""
    with _lock:
        cached = _documents.get(config.issuer)
    if cached is not None and time.monotonic() - cached[0] < DISCOVERY_TTL_S:
        return cached[1]
    document = _fetch(config)
    with _lock:
        _documents[config.issuer] = (time.monotonic(), document)
    return document


def forget_metadata() -> None:
    """Drop the cached documents (the next sign-in fetches them again)."""
    with _lock:
        _documents.clear()


def library_setting(name: str, *default: Any) -> Any:
    """The value mozilla-django-oidc's views and backend ask for by ``name``."""
    config = required()
    if name in _ENDPOINTS:
        return metadata(config)[_ENDPOINTS[name]]
    answers: dict[str, Any] = {
        "OIDC_RP_CLIENT_ID": config.client_id,
        "OIDC_RP_CLIENT_SECRET": config.client_secret,
        "OIDC_RP_SCOPES": config.scopes,
        "OIDC_RP_SIGN_ALGO": config.sign_algorithm,
        "OIDC_TOKEN_USE_BASIC_AUTH": config.token_auth_method == "client_secret_basic",  # noqa: S105
        "OIDC_USE_PKCE": True,
        "OIDC_PKCE_CODE_CHALLENGE_METHOD": "S256",
        "OIDC_USE_NONCE": True,
        "OIDC_TIMEOUT": config.timeout_s,
        "OIDC_VERIFY_SSL": True,
        # Kept for sign-out: the provider's end-session endpoint wants it as id_token_hint.
        "OIDC_STORE_ID_TOKEN": True,
        "OIDC_STORE_ACCESS_TOKEN": False,
        "OIDC_ALLOW_UNSECURED_JWT": False,
        # Accounts are made (or refused) by tenants.sso.accounts, which knows the reasons; the library only asks.
        "OIDC_CREATE_USER": True,
        "LOGIN_REDIRECT_URL_FAILURE": settings.LOGIN_URL,
    }
    if name in answers:
        return answers[name]
    return import_from_settings(name, *default)
