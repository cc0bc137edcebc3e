"""Embeddings: requests go through the micro-batcher to the replica picked, and are split back."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from gateway.asgi import Send, respond
from gateway.errors import bad_gateway, service_unavailable
from gateway.outcome import LEASE_MARGIN_S, Outcome
from gateway.proxy import UpstreamFailure
from gateway.routing import NoReplica
from gateway.snapshot import DeploymentEntry
from gateway.validation import ParsedRequest

if TYPE_CHECKING:
    from gateway.app import Gateway


def embeddings_batch_key(endpoint: str, payload: dict[str, Any]) -> str:
    """Requests merge only when they go to the same replica, for the same model, with the same options."""
    options = (str(payload.get("encoding_format") or ""), str(payload.get("dimensions") or ""))
    return "\x00".join((endpoint, str(payload["model"]), *options))


async def send_embeddings_batch(gw: Gateway, batch_key: str, body: dict[str, Any]) -> dict[str, Any]:
    """The batcher's ``send``: POST one (possibly merged) embeddings body to the replica named in the key."""
    endpoint = batch_key.split("\x00", 1)[0]
    cfg = gw.config
    timeout = aiohttp.ClientTimeout(total=None, connect=cfg.connect_timeout_s, sock_connect=cfg.connect_timeout_s)
    try:
        async with gw.session.post(
            endpoint + "/v1/embeddings",
            data=orjson.dumps(body),
            headers={"content-type": "application/json"},
            timeout=timeout,
        ) as response:
            data = await response.read()
            if response.status >= 400:
                raise UpstreamFailure(bad_gateway(f"The model server answered {response.status}."), "status")
    except aiohttp.ClientConnectorError:
        gw.balancer.eject(endpoint)
        raise UpstreamFailure(
            service_unavailable("The replica refused the connection.", "no_replica_available", 1.0), "connect"
        ) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamFailure(
            bad_gateway(f"The model server connection failed: {type(exc).__name__}."), "reset"
        ) from None
    try:
        result = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamFailure(bad_gateway("The model server sent invalid JSON."), "status") from None
    if not isinstance(result, dict):
        raise UpstreamFailure(bad_gateway("The model server sent an unexpected answer."), "status")
    return result


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
            result = await gw.batcher.submit(embeddings_batch_key(endpoint, payload), payload)
            break
        except UpstreamFailure as failure:
            if failure.kind != "connect" or attempt == gw.config.retries:
                raise
            excluded.add(endpoint)
        except ValueError as exc:  # the batcher could not split a merged answer
            raise UpstreamFailure(bad_gateway(f"The model server sent a bad batch answer: {exc}"), "status") from None
        finally:
            gw.balancer.release(endpoint)
    usage = result.get("usage")
    if not isinstance(usage, dict):
        usage = {}
    outcome.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    result["model"] = deployment.name
    outcome.status = 200
    outcome.finished = True
    await respond(send, 200, orjson.dumps(result), rid, rate_headers)
