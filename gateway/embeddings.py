"""Embeddings: requests go through the micro-batcher to the replica picked, and are split back.

The batcher's upstream call is ``gateway.embeddings_upstream`` (the library transport for replicas the platform
publishes, ``ExternalUpstream`` for tenant-given endpoints). An upstream client error in OpenAI's shape is
passed to the client with its status.
"""

from __future__ import annotations

import orjson

from gateway.asgi import respond
from gateway.context import GatewayContext
from gateway.embeddings_upstream import UpstreamRejected, embeddings_batch_key
from gateway.errors import UpstreamFailure, bad_gateway, service_unavailable
from gateway.outcome import LEASE_MARGIN_S, Admitted
from gateway.proxy import rewrite_model
from gateway.routing import NoReplica
from gateway.snapshot_index import DeploymentEntry


async def serve_embeddings(ctx: GatewayContext, call: Admitted, deployment: DeploymentEntry) -> None:
    """Submit the request to the batcher for a replica of ``deployment`` and answer with its share."""
    parsed, outcome, balancer = call.parsed, call.outcome, ctx.balancer
    payload = parsed.payload
    excluded: set[str] = set()
    retries = ctx.config.retries
    for attempt in range(retries + 1):
        try:
            revision, endpoint = balancer.pick(deployment, frozenset(excluded))
        except NoReplica as exc:
            raise UpstreamFailure(
                service_unavailable(
                    f"No replica of '{deployment.name}' is reachable.", "no_replica_available", exc.retry_after_s
                ),
                "no_replica",
            ) from None
        if outcome.revision is None:
            ctx.load.started(call.usage_id, deployment.id, revision.id, call.timeout_s + LEASE_MARGIN_S)
        outcome.revision = revision
        payload["model"] = revision.model or deployment.model
        balancer.acquire(endpoint)
        try:
            batch_key = embeddings_batch_key(endpoint, payload, revision.tenant_given, deployment.upstream_key)
            result = await ctx.batcher.submit(batch_key, payload)
            break
        except UpstreamRejected as rejected:
            # A client error the model server found (e.g. input too long) is the client's to read, as-is.
            patterns = revision.model_patterns or deployment.model_patterns
            outcome.status = rejected.status
            outcome.finished = True
            data = rewrite_model(rejected.data, patterns)
            await respond(call.send, rejected.status, data, call.rid, call.rate_headers)
            return
        except UpstreamFailure as failure:
            if failure.kind not in ("connect", "refused") or attempt == retries:
                raise
            excluded.add(endpoint)
        except ValueError as exc:  # the batcher could not split a merged answer
            raise UpstreamFailure(bad_gateway(f"The model server sent a bad batch answer: {exc}"), "status") from None
        finally:
            balancer.release(endpoint)
    outcome.charge(result.get("usage"), parsed.prompt_estimate, 0, call.rid, deployment.name)
    result["model"] = deployment.name
    try:
        answer = orjson.dumps(result)
    except orjson.JSONEncodeError:  # an upstream answer nested past orjson's 254 levels: no answer to relay
        raise UpstreamFailure(bad_gateway("The model server sent an answer nested too deeply."), "status") from None
    outcome.status = 200
    outcome.finished = True
    await respond(call.send, 200, answer, call.rid, call.rate_headers)
