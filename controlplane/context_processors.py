"""Template context every console page gets: where the gateway is, for the snippets that call it."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest


@dataclass(frozen=True, slots=True)
class GatewayAddress:
    """``FRONTDOOR_GATEWAY_URL`` as the snippets write it."""

    url: str  # without a trailing slash: routes are appended to it
    netloc: str  # host[:port], what tritonclient's InferenceServerClient takes
    https: bool  # tritonclient needs ssl=True then


def gateway(request: HttpRequest) -> dict[str, GatewayAddress]:
    url = settings.FRONTDOOR_GATEWAY_URL.rstrip("/")
    parts = urlsplit(url)
    return {"gateway": GatewayAddress(url, parts.netloc, parts.scheme == "https")}
