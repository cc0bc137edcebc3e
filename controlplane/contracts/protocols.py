"""Which API a deployment's replicas speak, and the Open Inference Protocol (v2) names every side shares.

A deployment speaks one protocol: ``OPENAI`` (chat, completions, embeddings and, when it declares
``image_generation``, images) or ``V2``, the Open Inference Protocol of Triton and KServe (``/v2/models/<name>/infer``).
The runtime decides for vLLM and TGI (OpenAI) and Triton (v2); the built-in server and tenant-given endpoints speak
either, as the deployment says. The control plane checks and publishes it (``snapshot.DeploymentDoc.protocol``), the
gateway routes by it, the local agent starts the built-in server in that mode (``BUILTIN_PROTOCOL_FLAG``).
Django-free.
"""

from __future__ import annotations

from collections.abc import Mapping

OPENAI = "openai"
V2 = "v2"
PROTOCOLS = (OPENAI, V2)

# The protocols each runtime may speak; the first is its default.
RUNTIME_PROTOCOLS: dict[str, tuple[str, ...]] = {
    "vllm": (OPENAI,),
    "tgi": (OPENAI,),
    "triton": (V2,),
    "builtin": (OPENAI, V2),
    "external": (OPENAI, V2),
}

# The built-in model server's flag for its mode (``python -m modelserver --protocol v2``); the platform sets it.
BUILTIN_PROTOCOL_FLAG = "--protocol"

# The binary tensor data extension: the length of the JSON header that starts the body (request and response).
INFERENCE_HEADER_CONTENT_LENGTH = "inference-header-content-length"

# The tensor data types of the protocol (``$datatype``); BYTES carries strings.
DATATYPES = frozenset(
    {
        "BOOL",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "FP16",
        "FP32",
        "FP64",
        "BF16",
        "BYTES",
    }
)


def default_protocol(runtime: str) -> str:
    """The protocol a deployment of ``runtime`` speaks when it names none."""
    return RUNTIME_PROTOCOLS.get(runtime, (OPENAI,))[0]


def protocol_refusal(runtime: str, protocol: str) -> str:
    """Why ``runtime`` cannot speak ``protocol`` ("" when it can)."""
    if protocol not in PROTOCOLS:
        return f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}"
    allowed = RUNTIME_PROTOCOLS.get(runtime, (OPENAI,))
    if protocol not in allowed:
        return f"runtime {runtime!r} speaks {' or '.join(allowed)}, not {protocol!r}"
    return ""


def builtin_mode_args(spec: Mapping[str, object]) -> list[str]:
    """The built-in server's mode flag for a revision's frozen spec: none for OpenAI, its default mode, so a replica
    of a revision made before protocols existed starts exactly as it did. The spec carries ``protocol`` only when it
    is not the runtime's default."""
    protocol = str(spec.get("protocol") or default_protocol(str(spec.get("runtime") or "builtin")))
    return [] if protocol == OPENAI else [BUILTIN_PROTOCOL_FLAG, protocol]
