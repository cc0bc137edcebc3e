"""The names the model server shares with the platform about its modes and the Open Inference Protocol.

The model server is staged and shipped alone (the local agent copies only this package into a replica's environment;
its image holds nothing else), so it imports nothing of the project: these are copies of
``controlplane.contracts.protocols``, and tests/contracts/test_modelserver_protocol.py keeps them equal.
"""

from __future__ import annotations

OPENAI = "openai"
V2 = "v2"
PROTOCOLS = (OPENAI, V2)
BUILTIN_PROTOCOL_FLAG = "--protocol"
INFERENCE_HEADER_CONTENT_LENGTH = "inference-header-content-length"
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
