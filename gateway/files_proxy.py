"""The Batch API's files and batches routes, forwarded to the control plane on behalf of the key that called.

The control plane stores the files and runs the batches; the gateway authenticates the caller's key exactly as
for inference and forwards the request to ``INTERNAL_PREFIX`` + the same path (the query string as it came), naming
the tenant and the key it resolved beside the internal token (``controlplane.contracts.batch_wire``). Nothing of the
client's own credentials or ``x-frontdoor-*`` headers travels on. Bodies stream both ways and are never held whole:
an upload passes through chunk by chunk as it arrives (``max_file_bytes`` at most, counted as it goes), and a
file's content comes back the same way. The control plane failing before its answer started is one 503
``controlplane_unavailable``; the cause goes to the log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
from yarl import URL

from controlplane.contracts import batch_wire
from gateway.asgi import Receive, Scope, Send, request_id_from
from gateway.auth import INFERENCE_SCOPE
from gateway.context import GatewayContext
from gateway.errors import GatewayError, body_too_large, invalid_request, service_unavailable

log = logging.getLogger("frontdoor.gateway.files")

PREFIXES = ("/v1/files", "/v1/batches")
# No total timeout (a 200 MB upload takes its time); once the request is sent, the control plane may be silent
# this long between two chunks of its answer.
READ_TIMEOUT_S = 300.0
RELAYED_HEADERS = ("content-type", "content-length", "content-disposition")

# The routes by shape, with their methods: the collection, one of its items (an opaque id), an item's action.
_COLLECTIONS = {"files": ("GET", "POST"), "batches": ("GET", "POST")}
_ITEMS = {"files": ("GET", "DELETE"), "batches": ("GET",)}
_ACTIONS = {("files", "content"): ("GET",), ("batches", "cancel"): ("POST",)}


def route_methods(scope: Scope) -> tuple[str, ...] | None:
    """The methods of the files or batches route the request's path names, or None when it names none (a 404).

    The path is read as the client sent it (``raw_path``): an id is 1 to 64 of ``[A-Za-z0-9_-]``, so a ``..``, an
    encoded slash or any other escape is no route, and the path forwarded is exactly the one matched.
    """
    parts = _raw_path(scope).split("/")
    if len(parts) < 3 or parts[0] != "" or parts[1] != "v1":
        return None
    collection = parts[2]
    if len(parts) == 3:
        return _COLLECTIONS.get(collection)
    if not batch_wire.is_plain_id(parts[3]):
        return None
    if len(parts) == 4:
        return _ITEMS.get(collection)
    if len(parts) == 5:
        return _ACTIONS.get((collection, parts[4]))
    return None


def _raw_path(scope: Scope) -> str:
    raw = scope.get("raw_path")
    return raw.decode("latin-1") if isinstance(raw, bytes) else str(scope["path"])


class _Upload:
    """The request body, handed on chunk by chunk as it arrives; stops at ``limit`` bytes or a client gone."""

    __slots__ = ("client_gone", "done", "limit", "receive", "size", "too_large")

    def __init__(self, receive: Receive, limit: int) -> None:
        self.receive = receive
        self.limit = limit
        self.size = 0
        self.too_large = False
        self.client_gone = False
        self.done = False  # read to its end: nothing else reads ``receive`` any more

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.client_gone = True
                raise ConnectionAbortedError("the client went away during its upload")
            chunk: bytes = message.get("body", b"")
            self.size += len(chunk)
            if self.size > self.limit:
                self.too_large = True  # aiohttp reports the stop as a broken request: this says why
                raise ConnectionAbortedError(f"the upload passed {self.limit} bytes")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                self.done = True
                return


async def forward(ctx: GatewayContext, scope: Scope, receive: Receive, send: Send, started: float) -> None:
    """Authenticate a request to a files or batches route (``route_methods`` allowed it) and forward it."""
    method: str = scope["method"]
    path: str = scope["path"]
    authorization = rid_header = content_type = content_length = None
    chunked = False
    for name, value in scope["headers"]:
        if name == b"transfer-encoding":
            chunked = True
        elif name == b"authorization":
            authorization = value
        elif name == b"x-request-id":
            rid_header = value
        elif name == b"content-type":
            content_type = value
        elif name == b"content-length":
            content_length = value
    rid = request_id_from(rid_header)
    tenant = ""
    try:
        principal = ctx.auth.authenticate(authorization, ctx.store.current, (INFERENCE_SCOPE,))
        tenant = principal.tenant.slug
        query: bytes = scope.get("query_string", b"")
        if not all(0x21 <= byte <= 0x7E and byte != 0x23 for byte in query):  # printable, no fragment
            raise invalid_request("The query string of your request is not plain URL text.", None, "invalid_url")
        limit = ctx.config.max_file_bytes
        # A malformed Content-Length is not trusted either way: it is not forwarded, and the bytes are counted.
        length = content_length.decode() if content_length is not None and content_length.isdigit() else None
        if length is not None and int(length) > limit:
            raise body_too_large(limit)
        if chunked and length is None:
            # The control plane reads a body of the length declared (WSGI): a chunked one would arrive empty.
            raise GatewayError(
                411, "Send the request with a Content-Length header.", "invalid_request_error", "length_required"
            )
    except GatewayError as error:
        await ctx.replies.error(send, rid, method, path, started, error, tenant)
        return

    headers = {
        "x-request-id": rid,
        batch_wire.TOKEN_HEADER: ctx.config.internal_token,
        batch_wire.TENANT_HEADER: tenant,
        batch_wire.KEY_HEADER: principal.key.key_id,
    }
    upload = None
    if method == "POST":
        upload = _Upload(receive, limit)
        if content_type is not None:
            headers["Content-Type"] = content_type.decode("latin-1")
        if length is not None:
            headers["Content-Length"] = length
    target = ctx.config.controlplane_url + batch_wire.INTERNAL_PREFIX + _raw_path(scope)
    url = URL(target + "?" + query.decode("ascii") if query else target, encoded=True)
    cfg = ctx.config
    timeout = aiohttp.ClientTimeout(
        total=None, connect=cfg.connect_timeout_s, sock_connect=cfg.connect_timeout_s, sock_read=READ_TIMEOUT_S
    )
    try:
        response = await ctx.controlplane.request(
            method,
            url,
            data=upload.chunks() if upload is not None else None,
            headers=headers,
            timeout=timeout,
            allow_redirects=False,
        )
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
        if upload is not None and upload.client_gone:
            ctx.replies.finished(rid, method, path, tenant, "", 499, started)
            return
        if upload is not None and upload.too_large:
            refusal = body_too_large(upload.limit)
        else:
            log.warning(
                "request %s: %s %s: the control plane failed: %s: %s", rid, method, path, type(exc).__name__, exc
            )
            refusal = service_unavailable(
                "The files and batches service is unavailable; retry shortly.", "controlplane_unavailable", 1.0
            )
        await ctx.replies.error(send, rid, method, path, started, refusal, tenant)
        return
    status = await _relay(response, receive, send, rid, upload is None or upload.done)
    ctx.replies.finished(rid, method, path, tenant, "", status, started)


async def _relay(response: aiohttp.ClientResponse, receive: Receive, send: Send, rid: str, body_read: bool) -> int:
    """Send the control plane's answer on as it arrives; the status to log (499: the client went away, 502: the
    control plane broke off after the answer started, which the client sees as a cut connection).

    ``body_read``: the request body was read to its end, so a disconnect can be watched for (nothing else reads
    ``receive`` now) and stops the relay at once instead of reading a whole download for nobody.
    """
    status = response.status
    headers = [(b"x-request-id", rid.encode())]
    for name in RELAYED_HEADERS:
        value = response.headers.get(name)
        if value is not None:
            headers.append((name.encode(), value.encode("latin-1")))
    task = asyncio.current_task()
    assert task is not None
    finished = client_gone = False

    def on_disconnect(done: asyncio.Task[None]) -> None:
        nonlocal client_gone
        if done.cancelled() or finished:
            return
        client_gone = True
        task.cancel()

    watcher = None
    if body_read:
        watcher = asyncio.create_task(_wait_disconnect(receive))
        watcher.add_done_callback(on_disconnect)
    clean = False
    try:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        async for chunk in response.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finished = True  # the last message is on its way: a disconnect now is no abort
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        clean = True
    except asyncio.CancelledError:
        if not client_gone:
            raise
        task.uncancel()
        status = 499
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        # The status went out: the client can only see the connection cut (the server closes it unfinished).
        log.warning("request %s: the control plane's answer broke off: %s: %s", rid, type(exc).__name__, exc)
        status = 502
    finally:
        finished = True
        if watcher is not None:
            watcher.cancel()
        if clean:
            response.release()
        else:
            response.close()
    return status


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
