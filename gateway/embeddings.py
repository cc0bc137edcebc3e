"""Embeddings: requests go through the micro-batcher to the replica picked, and are split back.

Replicas the platform publishes are called through the gateway's aiohttp session; tenant-given endpoints through
``ExternalUpstream`` (the address policy, then the checked address). An upstream client error in OpenAI's shape is
passed to the client with its status; a merged batch that gets one is re-sent request by request (the batcher's
``retry_alone``), so one request's bad input never fails the others merged with it.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from gateway.asgi import Send, respond
from gateway.errors import GatewayError, bad_gateway, gateway_timeout, service_unavailable
from gateway.external import EndpointRefused
from gateway.generation import is_openai_error
from gateway.outcome import LEASE_MARGIN_S, Outcome
from gateway.proxy import UpstreamFailure, rewrite_model
from gateway.routing import NoReplica
from gateway.snapshot import DeploymentEntry
from gateway.upstream import UpstreamConnectError
from gateway.validation import ParsedRequest

if TYPE_CHECKING:
    from gateway.app import Gateway

_PLATFORM, _TENANT_GIVEN = "p", "t"


class UpstreamRejected(GatewayError):
    """The upstream refused the input with an OpenAI-shaped client error: the client reads it, status and body."""

    def __init__(self, status: int, data: bytes) -> None:
        super().__init__(status, "the upstream refused the request", "invalid_request_error", None)
        self.data = data


def embeddings_batch_key(endpoint: str, payload: dict[str, Any], tenant_given: bool = False) -> str:
    """Requests merge only when they go to the same replica, for the same model, with the same options."""
    options = (str(payload.get("encoding_format") or ""), str(payload.get("dimensions") or ""))
    origin = _TENANT_GIVEN if tenant_given else _PLATFORM
    return "\x00".join((endpoint, origin, str(payload["model"]), *options))


async def send_embeddings_batch(gw: Gateway, batch_key: str, body: dict[str, Any]) -> dict[str, Any]:
    """The batcher's ``send``: POST one (possibly merged) embeddings body to the replica named in the key."""
    endpoint, origin, _ = batch_key.split("\x00", 2)
    cfg = gw.config
    try:
        async with asyncio.timeout(cfg.total_timeout_s):  # the batch outlives its callers' own timeouts otherwise
            if origin == _TENANT_GIVEN:
                status, data = await _post_tenant_given(gw, endpoint, orjson.dumps(body))
            else:
                status, data = await _post_platform(gw, endpoint, orjson.dumps(body))
    except TimeoutError:
        raise UpstreamFailure(gateway_timeout("The model server did not answer in time."), "timeout") from None
    if status >= 300 or status < 200:
        if 400 <= status < 500 and status not in (401, 403) and is_openai_error(data):
            raise UpstreamRejected(status, data)
        raise UpstreamFailure(bad_gateway(f"The model server answered {status}."), "status")
    try:
        result = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamFailure(bad_gateway("The model server sent invalid JSON."), "status") from None
    if not isinstance(result, dict):
        raise UpstreamFailure(bad_gateway("The model server sent an unexpected answer."), "status")
    return result


def _refused(gw: Gateway, endpoint: str, kind: str = "connect") -> UpstreamFailure:
    """Nothing was sent (no connection, or the address policy refused the endpoint): another replica may serve."""
    if kind == "connect":  # a policy refusal is not ejected: the next snapshot may allow the endpoint
        gw.balancer.eject(endpoint)
    return UpstreamFailure(
        service_unavailable("The replica refused the connection.", "no_replica_available", 1.0), kind
    )


async def _post_platform(gw: Gateway, endpoint: str, body: bytes) -> tuple[int, bytes]:
    cfg = gw.config
    timeout = aiohttp.ClientTimeout(total=None, connect=cfg.connect_timeout_s, sock_connect=cfg.connect_timeout_s)
    try:
        async with gw.session.post(
            endpoint + "/v1/embeddings",
            data=body,
            headers={"content-type": "application/json"},
            timeout=timeout,
            allow_redirects=False,
        ) as response:
            return response.status, await response.read()
    except aiohttp.ClientConnectorError:
        raise _refused(gw, endpoint) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamFailure(
            bad_gateway(f"The model server connection failed: {type(exc).__name__}."), "reset"
        ) from None


async def _post_tenant_given(gw: Gateway, endpoint: str, body: bytes) -> tuple[int, bytes]:
    cfg = gw.config
    request_id = "emb_" + os.urandom(8).hex()  # a batch is several requests: it gets an id of its own
    try:
        async with asyncio.timeout(cfg.first_byte_timeout_s):
            response = await gw.external.post(endpoint, "/v1/embeddings", body, request_id, cfg.connect_timeout_s)
    except UpstreamConnectError as exc:
        raise _refused(gw, endpoint, "refused" if isinstance(exc, EndpointRefused) else "connect") from None
    except OSError as exc:
        raise UpstreamFailure(
            bad_gateway(f"The model server connection failed: {type(exc).__name__}."), "reset"
        ) from None
    clean = False
    try:
        data = await response.read()
        clean = True
    except OSError as exc:
        raise UpstreamFailure(
            bad_gateway(f"The model server connection failed: {type(exc).__name__}."), "reset"
        ) from None
    finally:
        if clean:
            response.release()
        else:
            response.close()
    return response.status, data


async def serve_embeddings(
    gw: Gateway,
    parsed: ParsedRequest,
    deployment: DeploymentEntry,
    send: Send,
    rid: str,
    usage_id: str,
    rate_headers: dict[str, str],
    outcome: Outcome,
    timeout_s: float,
) -> None:
    payload = parsed.payload
    excluded: set[str] = set()
    for attempt in range(gw.config.retries + 1):
        try:
            revision, endpoint = gw.balancer.pick(deployment, frozenset(excluded))
        except NoReplica as exc:
            raise UpstreamFailure(
                service_unavailable(
                    f"No replica of '{deployment.name}' is reachable.", "no_replica_available", exc.retry_after_s
                ),
                "no_replica",
            ) from None
        if outcome.revision is None:
            gw.load.started(usage_id, deployment.id, revision.id, timeout_s + LEASE_MARGIN_S)
        outcome.revision = revision
        payload["model"] = revision.model or deployment.model
        gw.balancer.acquire(endpoint)
        try:
            result = await gw.batcher.submit(embeddings_batch_key(endpoint, payload, revision.tenant_given), payload)
            break
        except UpstreamRejected as rejected:
            # A client error the model server found (e.g. input too long) is the client's to read, as-is.
            patterns = revision.model_patterns or deployment.model_patterns
            outcome.status = rejected.status
            outcome.finished = True
            await respond(send, rejected.status, rewrite_model(rejected.data, patterns), rid, rate_headers)
            return
        except UpstreamFailure as failure:
            if failure.kind not in ("connect", "refused") or attempt == gw.config.retries:
                raise
            excluded.add(endpoint)
        except ValueError as exc:  # the batcher could not split a merged answer
            raise UpstreamFailure(bad_gateway(f"The model server sent a bad batch answer: {exc}"), "status") from None
        finally:
            gw.balancer.release(endpoint)
    outcome.charge(result.get("usage"), parsed.prompt_estimate, 0, rid, deployment.name)
    result["model"] = deployment.name
    try:
        answer = orjson.dumps(result)
    except orjson.JSONEncodeError:  # an upstream answer nested past orjson's 254 levels: no answer to relay
        raise UpstreamFailure(bad_gateway("The model server sent an answer nested too deeply."), "status") from None
    outcome.status = 200
    outcome.finished = True
    await respond(send, 200, answer, rid, rate_headers)
