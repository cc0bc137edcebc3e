"""Open Inference Protocol (v2) infer and model metadata: the upstream call for the revision picked, relayed whole.

The client names the deployment; the replicas answer to the revision's model name (``RevisionEntry.model``), so the
upstream path names that one and the answer's ``model_name`` (infer) or ``name`` (metadata) names the deployment
again. A binary answer (``Inference-Header-Content-Length``) has only its JSON header rewritten, its length header
following; the tensor bytes pass through. A client error in the protocol's shape (a wrong shape or data type the
model server found) reaches the client as it is; anything else the replica answers is a 502.

A success is metered in the inferences the request asked (``ParsedRequest.units``); metadata in none.
"""

from __future__ import annotations

import time
from urllib.parse import quote

import orjson

from gateway.asgi import respond
from gateway.context import GatewayContext
from gateway.errors import UpstreamFailure, bad_gateway
from gateway.outcome import Admitted
from gateway.proxy import connection_failed, end_attempt, open_upstream
from gateway.snapshot_index import DeploymentEntry, RevisionEntry
from gateway.transport import RequestHead
from gateway.validation import V2_INFER

METADATA_GET = RequestHead("GET")
JSON_INFER = RequestHead("POST")


async def serve_v2_model(ctx: GatewayContext, call: Admitted, deployment: DeploymentEntry) -> None:
    """Call a replica of ``deployment`` for a v2 infer or model metadata and answer with what it says."""
    parsed, outcome = call.parsed, call.outcome
    infer = parsed.kind == V2_INFER
    if not infer:
        head = METADATA_GET
    elif parsed.inference_header:
        head = RequestHead("POST", "application/octet-stream", parsed.inference_header)
    else:
        head = JSON_INFER

    def path_for(revision: RevisionEntry) -> str:
        return f"/v2/models/{quote(revision.model or deployment.model, safe='')}{parsed.v2_path}"

    outcome.upstream_at = time.perf_counter()
    attempt = await open_upstream(ctx, call, deployment, lambda _: parsed.raw, path_for, head)
    response = attempt.response
    upstream_model = attempt.revision.model or deployment.model
    clean = False
    try:
        data = await response.read()
        outcome.ttft_ms = (time.perf_counter() - outcome.upstream_at) * 1000
        if 200 <= response.status < 300:
            headers = dict(call.rate_headers)
            if response.inference_header:
                data, length = _renamed_binary(data, response.inference_header, upstream_model, deployment.name)
                headers["inference-header-content-length"] = str(length)
            else:
                data = _renamed(data, upstream_model, deployment.name, "model_name" if infer else "name")
            content_type = b"application/octet-stream" if response.inference_header else b"application/json"
            outcome.units = parsed.units if infer else 0
            outcome.status = 200
            outcome.finished = True
            await respond(call.send, 200, data, call.rid, headers, content_type)
        elif 400 <= response.status < 500 and response.status not in (401, 403) and _is_v2_error(data):
            # The model server's own refusal of this input (a shape, a data type): the client's to read.
            outcome.status = response.status
            outcome.finished = True
            await respond(call.send, response.status, data, call.rid, call.rate_headers)
        else:
            outcome.upstream_error = "status"
            raise UpstreamFailure(
                bad_gateway(f"The model server for '{deployment.name}' answered {response.status}."), "status"
            )
        clean = True
    except OSError as exc:  # the transports' UpstreamReset
        raise connection_failed(exc) from None
    finally:
        end_attempt(ctx, attempt, clean)


def _renamed(data: bytes, upstream: str, mine: str, field: str) -> bytes:
    """``data`` with its ``field`` naming the deployment instead of the upstream model; as it is when it has none."""
    if upstream == mine:
        return data
    key = orjson.dumps(field)
    for separator in (b":", b": "):
        pattern = key + separator + orjson.dumps(upstream)
        if pattern in data:
            return data.replace(pattern, key + separator + orjson.dumps(mine), 1)
    return data


def _renamed_binary(data: bytes, header: str, upstream: str, mine: str) -> tuple[bytes, int]:
    """A binary answer with its JSON header renamed, and the header's new length."""
    if not header.isdigit() or int(header) > len(data):
        raise UpstreamFailure(bad_gateway("The model server sent a bad Inference-Header-Content-Length."), "status")
    length = int(header)
    renamed = _renamed(data[:length], upstream, mine, "model_name")
    return renamed + data[length:], len(renamed)


def _is_v2_error(data: bytes) -> bool:
    """The body is the protocol's error shape, ``{"error": "<message>"}``."""
    try:
        answer = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(answer, dict) and isinstance(answer.get("error"), str)
