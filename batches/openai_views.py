"""The control plane's side of the gateway's ``/v1/files`` and ``/v1/batches`` routes, in OpenAI's shapes.

Only the gateway calls these (under ``batch_wire.INTERNAL_PREFIX``): it authenticated the caller's inference key and
names the tenant and the key in headers, which count only beside the internal token. Everything here is scoped to
that tenant, so another tenant's file or batch is a 404 like one that does not exist. Errors are OpenAI's
``{"error": {"message", "type", "param", "code"}}``; nothing a client sends can make this a 500.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

import orjson
from django.conf import settings
from django.core.files.uploadhandler import TemporaryFileUploadHandler
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseBase, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from batches import services, storage
from batches.models import Batch, BatchFile
from batches.shapes import batch_object, file_object, page
from controlplane.access import Principal
from controlplane.contracts.batch_wire import KEY_HEADER, TENANT_HEADER, TOKEN_HEADER, token_matches
from controlplane.domain_errors import Conflict, DomainError, Invalid, NotFound, QuotaExceeded
from tenants.models import ApiKey, Tenant

MAX_PAGE = 100
DOWNLOAD_CHUNK_BYTES = 256 * 1024  # a download's pieces on their way to the gateway
View = Callable[..., HttpResponseBase]


def openai_error(status: int, message: str, code: str, param: str | None = None) -> JsonResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JsonResponse(body, status=status)


def _meta(request: HttpRequest, header: str) -> str:
    return str(request.META.get("HTTP_" + header.upper().replace("-", "_"), ""))


class Caller:
    def __init__(self, tenant: Tenant, key: ApiKey, request_id: str) -> None:
        self.tenant = tenant
        self.key = key
        self.request_id = request_id
        self.actor = Principal(None, key, None, False)


def internal(view: Callable[..., HttpResponseBase]) -> View:
    """Let in only the gateway (the internal token), as the tenant and key it names; OpenAI errors for the rest."""

    @csrf_exempt
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not token_matches(_meta(request, TOKEN_HEADER), settings.FRONTDOOR_INTERNAL_TOKEN):
            return openai_error(401, "This route is internal to the platform.", "invalid_internal_token")
        tenant = Tenant.objects.filter(slug=_meta(request, TENANT_HEADER)).first()
        key = None if tenant is None else services.key_of(tenant, _meta(request, KEY_HEADER))
        if tenant is None or key is None:
            return openai_error(401, "Incorrect API key provided.", "invalid_api_key")
        caller = Caller(tenant, key, str(getattr(request, "request_id", "") or _meta(request, "x-request-id"))[:64])
        try:
            return view(request, caller, *args, **kwargs)
        except NotFound as exc:
            return openai_error(404, exc.message, "not_found")
        except services.FileTooLarge as exc:
            return openai_error(413, _first(exc), "file_too_large", "file")
        except Invalid as exc:
            param = next(iter(exc.fields), None)
            return openai_error(400, _first(exc), "invalid_request", None if param == "non_field_errors" else param)
        except QuotaExceeded as exc:
            return openai_error(429, exc.message, "quota_exceeded")
        except Conflict as exc:
            return openai_error(409, exc.message, exc.code)
        except DomainError as exc:
            return openai_error(400, exc.message, exc.code)

    return wrapper


def _first(error: Invalid) -> str:
    messages = next(iter(error.fields.values()), [error.message])
    return str(messages[0] if isinstance(messages, list) and messages else messages)


def _method_not_allowed(request: HttpRequest) -> JsonResponse:
    return openai_error(405, f"Method {request.method} is not allowed here.", "method_not_allowed")


# --- files -----------------------------------------------------------------------------------------------------


class BoundedUploadHandler(TemporaryFileUploadHandler):
    """Spools the upload to disk, as Django does for large files, and stops at the configured size."""

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        if start + len(raw_data) > settings.FRONTDOOR_BATCH_MAX_FILE_BYTES:
            raise services.FileTooLarge(
                {"file": [f"the file is larger than {settings.FRONTDOOR_BATCH_MAX_FILE_BYTES} bytes"]}
            )
        return super().receive_data_chunk(raw_data, start)


@internal
def files(request: HttpRequest, caller: Caller) -> HttpResponseBase:
    if request.method == "GET":
        found = BatchFile.objects.for_tenant(caller.tenant)
        purpose = request.GET.get("purpose")
        if purpose:
            found = found.filter(purpose=purpose)
        return _listing(request, found, file_object)
    if request.method != "POST":
        return _method_not_allowed(request)
    declared = request.META.get("CONTENT_LENGTH") or ""
    if declared.isdigit() and int(declared) > settings.FRONTDOOR_BATCH_MAX_FILE_BYTES + 64 * 1024:
        raise services.FileTooLarge(
            {"file": [f"the file is larger than {settings.FRONTDOOR_BATCH_MAX_FILE_BYTES} bytes"]}
        )
    if not (request.content_type or "").startswith("multipart/form-data"):
        raise Invalid({"file": ["send the file as multipart/form-data with fields 'file' and 'purpose'"]})
    request.upload_handlers = [BoundedUploadHandler(request)]
    try:
        upload = request.FILES.get("file")
        purpose = request.POST.get("purpose", "")
    except services.FileTooLarge:
        raise
    except Exception as exc:  # a malformed multipart body (Django raises several kinds)
        raise Invalid({"file": [f"the multipart body could not be read ({type(exc).__name__})"]}) from None
    if upload is None:
        raise Invalid({"file": ["the 'file' field is missing"]})
    created = services.upload_file(
        caller.tenant,
        actor=caller.actor,
        request_id=caller.request_id,
        filename=upload.name or "",
        purpose=purpose,
        content=upload,
        size=upload.size or 0,
    )
    return JsonResponse(file_object(created))


@internal
def file_detail(request: HttpRequest, caller: Caller, file_id: str) -> HttpResponseBase:
    if request.method == "GET":
        return JsonResponse(file_object(services.get_file(caller.tenant, file_id)))
    if request.method == "DELETE":
        gone = services.delete_file(caller.tenant, file_id, actor=caller.actor, request_id=caller.request_id)
        return JsonResponse({"id": gone.public_id, "object": "file", "deleted": True})
    return _method_not_allowed(request)


@internal
def file_content(request: HttpRequest, caller: Caller, file_id: str) -> HttpResponseBase:
    if request.method != "GET":
        return _method_not_allowed(request)
    found = services.get_file(caller.tenant, file_id)
    return content_response(found)


def content_response(found: BatchFile) -> StreamingHttpResponse:
    """A file's content, streamed from storage (the console's downloads use it too)."""
    response = StreamingHttpResponse(
        storage.read_chunks(found.storage_name, DOWNLOAD_CHUNK_BYTES), content_type="application/octet-stream"
    )
    response["Content-Length"] = str(found.bytes)
    response["Content-Disposition"] = f'attachment; filename="{found.public_id}.jsonl"'
    return response


# --- batches ---------------------------------------------------------------------------------------------------


@internal
def batches(request: HttpRequest, caller: Caller) -> HttpResponseBase:
    if request.method == "GET":
        found = Batch.objects.for_tenant(caller.tenant).select_related("output_file", "error_file")
        return _listing(request, found, batch_object)
    if request.method != "POST":
        return _method_not_allowed(request)
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        raise Invalid(["the body is not valid JSON"]) from None
    if not isinstance(body, dict):
        raise Invalid(["the body must be a JSON object"])
    created = services.create_batch(
        caller.tenant,
        actor=caller.actor,
        request_id=caller.request_id,
        input_file_id=body.get("input_file_id"),
        endpoint=body.get("endpoint"),
        completion_window=body.get("completion_window"),
        metadata=body.get("metadata"),
    )
    return JsonResponse(batch_object(created))


@internal
def batch_detail(request: HttpRequest, caller: Caller, batch_id: str) -> HttpResponseBase:
    if request.method != "GET":
        return _method_not_allowed(request)
    return JsonResponse(batch_object(services.get_batch(caller.tenant, batch_id)))


@internal
def batch_cancel(request: HttpRequest, caller: Caller, batch_id: str) -> HttpResponseBase:
    if request.method != "POST":
        return _method_not_allowed(request)
    cancelled = services.cancel_batch(caller.tenant, batch_id, actor=caller.actor, request_id=caller.request_id)
    return JsonResponse(batch_object(cancelled))


def _listing(request: HttpRequest, found: QuerySet[Any], shape: Callable[[Any], dict[str, Any]]) -> JsonResponse:
    """OpenAI's cursor pages: newest first, ``after`` an id, ``limit`` 1 to 100 (20 unless said)."""
    raw_limit = request.GET.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise Invalid({"limit": [f"limit must be an integer from 1 to {MAX_PAGE}"]})
    limit = int(raw_limit)
    after = request.GET.get("after")
    if after:
        anchor = found.filter(public_id=after).values_list("created_at", "id").first()
        if anchor is None:
            raise Invalid({"after": [f"no object {after!r} to list after"]})
        created, pk = anchor
        found = found.filter(created_at__lt=created) | found.filter(created_at=created, id__lt=pk)
    rows = list(found.order_by("-created_at", "-id")[: limit + 1])
    return JsonResponse(page([shape(row) for row in rows[:limit]], len(rows) > limit))
