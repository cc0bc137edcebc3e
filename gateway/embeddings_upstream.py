"""The embeddings micro-batcher's upstream call: one (possibly merged) body POSTed to the replica its key names.

Replicas the platform publishes are called through the library transport; tenant-given endpoints through
``ExternalUpstream`` (the address policy, then the checked address). An upstream client error in OpenAI's shape
is ``UpstreamRejected``: the batcher re-sends a merged batch that gets one request by request (``retry_alone``),
so one request's bad input never fails the others merged with it.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import orjson

from gateway.config import GatewayConfig
from gateway.errors import (
    GatewayError,
    UpstreamFailure,
    bad_gateway,
    gateway_timeout,
    is_openai_error,
    service_unavailable,
)
from gateway.external import EndpointRefused, ExternalUpstream
from gateway.routing import Balancer
from gateway.transport import Transports, UpstreamAnswer, UpstreamConnectError

PATH = "/v1/embeddings"
_PLATFORM, _TENANT_GIVEN = "p", "t"


class UpstreamRejected(GatewayError):
    """The upstream refused the input with an OpenAI-shaped client error: the client reads it, status and body."""

    def __init__(self, status: int, data: bytes) -> None:
        super().__init__(status, "the upstream refused the request", "invalid_request_error", None)
        self.data = data


def embeddings_batch_key(
    endpoint: str, payload: dict[str, Any], tenant_given: bool = False, upstream_key: str = ""
) -> str:
    """Requests merge only when they go to the same replica, for the same model, with the same options, and (to a
    tenant-given endpoint) with the same upstream key: one deployment's requests are never sent with another's.

    ``upstream_key`` is visible ASCII (``upstream_key_problem``), so it holds no NUL: the key splits back apart.
    """
    options = (str(payload.get("encoding_format") or ""), str(payload.get("dimensions") or ""))
    origin = _TENANT_GIVEN if tenant_given else _PLATFORM
    bearer = upstream_key if tenant_given else ""
    return "\x00".join((endpoint, origin, bearer, str(payload["model"]), *options))


class EmbeddingsUpstream:
    """``send(batch_key, body)``, the batcher's ``send``: the upstream's answer to one batch, or an error."""

    def __init__(
        self, config: GatewayConfig, balancer: Balancer, transports: Transports, external: ExternalUpstream
    ) -> None:
        self.config = config
        self.balancer = balancer
        self.transports = transports
        self.external = external

    async def send(self, batch_key: str, body: dict[str, Any]) -> dict[str, Any]:
        endpoint, origin, bearer, _ = batch_key.split("\x00", 3)
        data = orjson.dumps(body)
        # A batch is several requests: it gets an id of its own.
        request_id = "emb_" + os.urandom(8).hex()
        try:
            # A batch has a timeout of its own: merged, it would otherwise outlive its callers' timeouts.
            async with asyncio.timeout(self.config.total_timeout_s):
                if origin == _TENANT_GIVEN:
                    status, answer = await self._post_tenant_given(endpoint, data, request_id, bearer)
                else:
                    status, answer = await self._post_platform(endpoint, data, request_id)
        except TimeoutError:
            raise UpstreamFailure(gateway_timeout("The model server did not answer in time."), "timeout") from None
        if status >= 300 or status < 200:
            if 400 <= status < 500 and status not in (401, 403) and is_openai_error(answer):
                raise UpstreamRejected(status, answer)
            raise UpstreamFailure(bad_gateway(f"The model server answered {status}."), "status")
        try:
            result = orjson.loads(answer)
        except orjson.JSONDecodeError:
            raise UpstreamFailure(bad_gateway("The model server sent invalid JSON."), "status") from None
        if not isinstance(result, dict):
            raise UpstreamFailure(bad_gateway("The model server sent an unexpected answer."), "status")
        return result

    def _refused(self, endpoint: str, kind: str = "connect") -> UpstreamFailure:
        """Nothing was sent (no connection, or the address policy refused the endpoint): another replica may serve."""
        if kind == "connect":  # a policy refusal is not ejected: the next snapshot may allow the endpoint
            self.balancer.eject(endpoint)
        return UpstreamFailure(
            service_unavailable("The replica refused the connection.", "no_replica_available", 1.0), kind
        )

    async def _post_platform(self, endpoint: str, body: bytes, request_id: str) -> tuple[int, bytes]:
        try:
            transport, destination = self.transports.library_for_replica(endpoint)
            response = await transport.send(destination, PATH, body, request_id, self.config.connect_timeout_s)
        except UpstreamConnectError:
            raise self._refused(endpoint) from None
        except OSError as exc:
            raise _reset(exc) from None
        return await _read(response)

    async def _post_tenant_given(self, endpoint: str, body: bytes, request_id: str, bearer: str) -> tuple[int, bytes]:
        cfg = self.config
        try:
            async with asyncio.timeout(cfg.first_byte_timeout_s):
                response = await self.external.post(endpoint, PATH, body, request_id, cfg.connect_timeout_s, bearer)
        except UpstreamConnectError as exc:
            raise self._refused(endpoint, "refused" if isinstance(exc, EndpointRefused) else "connect") from None
        except OSError as exc:
            raise _reset(exc) from None
        return await _read(response)


async def _read(response: UpstreamAnswer) -> tuple[int, bytes]:
    clean = False
    try:
        data = await response.read()
        clean = True
    except OSError as exc:
        raise _reset(exc) from None
    finally:
        if clean:
            response.release()
        else:
            response.close()
    return response.status, data


def _reset(exc: OSError) -> UpstreamFailure:
    return UpstreamFailure(bad_gateway(f"The model server connection failed: {type(exc).__name__}."), "reset")
