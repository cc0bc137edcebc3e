"""Request id propagation, and refusing requests no view could answer (NUL in the path, oversized bodies).

Every response carries ``x-request-id`` (taken from the client or made here).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound, JsonResponse

from controlplane.errors import error_body

_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class RequestIdMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        presented = request.headers.get("x-request-id", "")
        request_id = presented if _VALID_ID.match(presented) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        response = self.get_response(request)
        response["x-request-id"] = request_id
        return response


def _is_api(request: HttpRequest) -> bool:
    return request.path_info.startswith("/api/")


class HostileRequestMiddleware:
    """A NUL or other control character in the path is a 404 (Postgres refuses NUL in text, which would be a 500);
    a body whose declared length exceeds ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is a 413, in the API's JSON error shape
    under ``/api/``. Bodies without a declared length are bounded as Django reads them (the API's exception
    handler maps that to the same 413)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if _CONTROL.search(request.path_info):
            if _is_api(request):
                return JsonResponse(error_body(404, "not_found", "no such resource"), status=404)
            return HttpResponseNotFound("Not found")
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        declared = request.META.get("CONTENT_LENGTH") or ""
        if limit is not None and declared.isdigit() and int(declared) > limit and _is_api(request):
            message = f"the request body is larger than {limit} bytes"
            return JsonResponse(error_body(413, "request_too_large", message), status=413)
        return self.get_response(request)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
