"""The gateway as a plain ASGI app: ``create_app()`` gives the app; its lifespan builds and closes the context.

No web framework. The lifespan's startup builds the ``GatewayContext`` (``gateway.context``: Redis, the upstream
transports, the snapshot, the metrics listener, the background tasks); every HTTP request then goes to
``gateway.routes.handle_http`` with it, and the shutdown closes it.
"""

from __future__ import annotations

from gateway.asgi import Receive, Scope, Send
from gateway.config import GatewayConfig
from gateway.context import GatewayContext, build_context
from gateway.external import AsyncResolver, system_resolve
from gateway.routes import handle_http


class GatewayApp:
    """The ASGI application: HTTP requests once the lifespan started, and the lifespan itself."""

    def __init__(self, config: GatewayConfig, resolver: AsyncResolver = system_resolve) -> None:
        self.config = config
        self.resolver = resolver
        # Set by the lifespan's startup; the server sends no request before that completed.
        self.context: GatewayContext | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            context = self.context
            if context is None:
                raise RuntimeError("the gateway serves requests only under a server that runs its lifespan")
            await handle_http(context, scope, receive, send)
        elif kind == "lifespan":
            await self.lifespan(receive, send)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.context = await build_context(self.config, self.resolver)
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.context is not None:
                    await self.context.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(config: GatewayConfig | None = None, resolver: AsyncResolver = system_resolve) -> GatewayApp:
    """The ASGI application (uvicorn: ``gateway.app:create_app`` with ``factory=True``).

    ``resolver``: how the host names of tenant-given endpoints are looked up (tests pass one).
    """
    return GatewayApp(config or GatewayConfig.from_env(), resolver)
