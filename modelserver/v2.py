"""The Open Inference Protocol (v2, REST): server and model metadata, health, readiness and infer for one model.

Only the served model's name resolves; any other name, a version other than "1" or an unknown route is a 404,
all in the protocol's error shape ``{"error": "<message>"}``.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

from modelserver.asgi import (
    BodyTooLarge,
    Receive,
    Scope,
    Send,
    V2Error,
    read_body,
    run_unless_disconnected,
    send_bytes,
    send_json,
)
from modelserver.faults import Faults
from modelserver.metrics import Metrics
from modelserver.protocol import INFERENCE_HEADER_CONTENT_LENGTH
from modelserver.scheduler import SequenceScheduler
from modelserver.tensors import InferRequest, encode_response, parse_infer_request
from modelserver.v2_model import MODEL_VERSION, RankerModel, ScoringBatch

SERVER_NAME = "frontdoor-modelserver"
EXTENSIONS = ["binary_tensor_data"]
ENDPOINT = "infer"  # the ``endpoint`` label of infer requests in modelserver_requests_total
MODELS_PREFIX = "/v2/models/"
BINARY_HEADERS = [(b"content-type", b"application/octet-stream")]
ZLIB_WBITS = {"gzip": 31, "deflate": 15}  # what tritonclient's request_compression_algorithm sends


def _server_version() -> str:
    try:
        return metadata.version("frontdoor")
    except metadata.PackageNotFoundError:
        return "0.1.0"


@dataclass(frozen=True)
class Route:
    kind: str  # "server", "live", "ready", "model", "model_ready" or "infer"

    @property
    def method(self) -> str:
        return "POST" if self.kind == "infer" else "GET"


_MODEL_ROUTES = {"": "model", "ready": "model_ready", "infer": "infer"}
_SERVER_ROUTES = {"/v2": "server", "/v2/health/live": "live", "/v2/health/ready": "ready"}


def resolve_route(path: str, model_name: str) -> Route:
    """The route ``path`` names; names may hold ``/``, so the served name is matched as a prefix, not a segment."""
    if path in _SERVER_ROUTES:
        return Route(_SERVER_ROUTES[path])
    if not path.startswith(MODELS_PREFIX):
        raise V2Error(404, f"Unknown route: {path[:200]}.")
    rest = path[len(MODELS_PREFIX) :]
    if rest != model_name and not rest.startswith(model_name + "/"):
        raise V2Error(404, f"Request for unknown model: '{rest[:128]}' is not found.")
    tail = rest[len(model_name) + 1 :]
    if tail.startswith("versions/"):
        version, _, tail = tail[len("versions/") :].partition("/")
        if version != MODEL_VERSION:
            raise V2Error(404, f"Request for unknown model version: '{model_name}' has no version '{version[:64]}'.")
    if tail not in _MODEL_ROUTES:
        raise V2Error(404, f"Unknown route: {path[:200]}.")
    return Route(_MODEL_ROUTES[tail])


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body as sent before ``Content-Encoding``; a bomb is stopped at ``limit`` bytes."""
    if encoding is None or encoding.strip().lower() in ("", "identity"):
        return body
    wbits = ZLIB_WBITS.get(encoding.strip().lower())
    if wbits is None:
        raise V2Error(415, f"Unsupported Content-Encoding '{encoding[:32]}'; use gzip, deflate or none.")
    inflater = zlib.decompressobj(wbits)
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise V2Error(400, f"The {encoding} body could not be decompressed: {exc}") from exc
    if len(plain) > limit:
        raise V2Error(413, f"The decompressed request body is larger than {limit} bytes.")
    if not inflater.eof:
        raise V2Error(400, f"The {encoding} body is truncated.")
    return plain


class V2Service:
    """Answers ``/v2`` for one :class:`RankerModel`; faults, queueing and counters are shared with the server."""

    def __init__(
        self,
        model: RankerModel,
        faults: Faults,
        scheduler: SequenceScheduler,
        metrics: Metrics,
        ready: Callable[[], bool],
        max_body_bytes: int,
    ) -> None:
        self.model = model
        self.faults = faults
        self.scheduler = scheduler
        self.metrics = metrics
        self.ready = ready
        self.max_body_bytes = max_body_bytes
        self.version = _server_version()

    async def serve(self, scope: Scope, path: str, method: str, receive: Receive, send: Send) -> None:
        route = resolve_route(path, self.model.name)
        if method != route.method:
            raise V2Error(405, f"Method {method[:16]} is not allowed on {path[:200]}; use {route.method}.")
        if route.kind == "infer":
            try:
                await self._infer(scope, receive, send)
            except V2Error as error:
                self.metrics.count_request(ENDPOINT, error.status)
                raise
        elif route.kind == "server":
            await send_json(send, 200, {"name": SERVER_NAME, "version": self.version, "extensions": EXTENSIONS})
        elif route.kind == "live":
            await send_json(send, 200, {"live": True})
        elif route.kind == "ready":
            ready = self.ready()
            await send_json(send, 200 if ready else 503, {"ready": ready})
        elif route.kind == "model":
            await send_json(send, 200, self.model.metadata())
        else:  # model_ready
            ready = self.ready()
            await send_json(send, 200 if ready else 503, {"name": self.model.name, "ready": ready})

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        try:
            body = await read_body(receive, self.max_body_bytes)
        except BodyTooLarge as exc:
            raise V2Error(413, str(exc)) from exc
        return _decompress(body, _header(scope, b"content-encoding"), self.max_body_bytes)

    async def _infer(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._body(scope, receive)
        if not self.ready():
            raise V2Error(503, "The model is not ready yet; retry shortly.")
        request = parse_infer_request(body, _header(scope, INFERENCE_HEADER_CONTENT_LENGTH.encode()))
        batch = self.model.prepare(request)
        if self.faults.should_fail():
            self.metrics.injected_errors += 1
            raise V2Error(500, "Simulated upstream failure (error_rate fault).")
        work = self._run(request, batch, send)
        # Watching for a disconnect costs a task; only pay it when the request can wait.
        if self.faults.settings.stall_ms > 0 or self.scheduler.running >= self.scheduler.max_num_seqs:
            if await run_unless_disconnected(receive, work):
                self.metrics.cancelled += 1
                self.metrics.count_request(ENDPOINT, 499)
        else:
            await work

    async def _run(self, request: InferRequest, batch: ScoringBatch, send: Send) -> None:
        await self.scheduler.acquire()
        try:
            if self.faults.settings.stall_ms > 0:
                await asyncio.sleep(self.faults.settings.stall_ms / 1000.0)
            outputs = self.model.run(batch)
        finally:
            self.scheduler.release()
        body, header_length = encode_response(self.model.name, MODEL_VERSION, request, outputs)
        self.metrics.count_request(ENDPOINT, 200)
        if header_length is None:
            await send_bytes(send, 200, body)
        else:
            headers = [*BINARY_HEADERS, (INFERENCE_HEADER_CONTENT_LENGTH.encode(), str(header_length).encode())]
            await send_bytes(send, 200, body, headers)
