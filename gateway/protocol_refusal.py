"""Whether a deployment answers a route: each speaks one protocol, and images only when it declares them.

A request on the other protocol is refused with a 400 that says which routes the model has, before admission:
nothing is reserved, nothing reaches a replica, and the client learns what to call instead.
"""

from __future__ import annotations

from controlplane.contracts.protocols import OPENAI, V2
from gateway.errors import GatewayError, invalid_request
from gateway.snapshot_index import DeploymentEntry
from gateway.validation import IMAGES


def protocol_refusal(deployment: DeploymentEntry, kind: str, protocol: str) -> GatewayError | None:
    """The refusal of a ``kind`` request in ``protocol`` for ``deployment``; None when it serves it."""
    name = deployment.name
    if deployment.protocol != protocol:
        if deployment.protocol == V2:
            message = f"The model '{name}' serves the Open Inference Protocol (v2): POST /v2/models/{name}/infer."
        elif deployment.protocol == OPENAI:
            message = (
                f"The model '{name}' serves the OpenAI API, not the Open Inference Protocol (v2): call it on "
                "/v1/chat/completions, /v1/completions or /v1/embeddings."
            )
        else:
            message = f"The model '{name}' speaks a protocol this gateway does not route ({deployment.protocol!r})."
        return invalid_request(message, "model", "wrong_protocol")
    if kind == IMAGES and not deployment.image_generation:
        return invalid_request(f"The model '{name}' does not serve image generation.", "model", "model_not_supported")
    return None
