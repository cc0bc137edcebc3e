"""Image generation (``/v1/images/generations``): the upstream call for the revision picked, relayed whole.

The answer carries the images themselves (``b64_json``; the gateway keeps no files to give URLs for). A success is
metered in the images answered, at most the ``n`` asked: an upstream answering more is not believed beyond what was
admitted. A client error in OpenAI's shape (a prompt the model refuses) reaches the client as it is.
"""

from __future__ import annotations

import time

import orjson

from gateway.asgi import respond
from gateway.context import GatewayContext
from gateway.errors import UpstreamFailure, bad_gateway, is_openai_error
from gateway.outcome import Admitted
from gateway.proxy import connection_failed, end_attempt, open_upstream
from gateway.snapshot_index import DeploymentEntry, RevisionEntry


async def serve_images(ctx: GatewayContext, call: Admitted, deployment: DeploymentEntry) -> None:
    """Call a replica of ``deployment`` for an image generation and answer with its images."""
    parsed, outcome = call.parsed, call.outcome
    bodies: dict[str, bytes] = {}

    def body_for(revision: RevisionEntry) -> bytes:
        model = revision.model or deployment.model
        if model not in bodies:
            bodies[model] = orjson.dumps({**parsed.payload, "model": model})
        return bodies[model]

    outcome.upstream_at = time.perf_counter()
    attempt = await open_upstream(ctx, call, deployment, body_for)
    response = attempt.response
    clean = False
    try:
        data = await response.read()
        outcome.ttft_ms = (time.perf_counter() - outcome.upstream_at) * 1000
        if 200 <= response.status < 300:
            images = _images_in(data)
            if images is None:
                outcome.upstream_error = "status"
                message = f"The model server for '{deployment.name}' sent no images."
                raise UpstreamFailure(bad_gateway(message), "status")
            outcome.units = min(images, parsed.units)
            outcome.status = 200
        elif 400 <= response.status < 500 and response.status not in (401, 403) and is_openai_error(data):
            outcome.status = response.status
        else:
            outcome.upstream_error = "status"
            raise UpstreamFailure(
                bad_gateway(f"The model server for '{deployment.name}' answered {response.status}."), "status"
            )
        outcome.finished = True
        await respond(call.send, outcome.status, data, call.rid, call.rate_headers)
        clean = True
    except OSError as exc:  # the transports' UpstreamReset
        raise connection_failed(exc) from None
    finally:
        end_attempt(ctx, attempt, clean)


def _images_in(data: bytes) -> int | None:
    """How many images an answer carries (``data``, a list); None when it is not an images answer."""
    try:
        answer = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    images = answer.get("data") if isinstance(answer, dict) else None
    return len(images) if isinstance(images, list) else None
