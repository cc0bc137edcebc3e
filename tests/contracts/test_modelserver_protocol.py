"""The model server's copies of the protocol names are the platform's: it is staged alone, so it cannot import them."""

from __future__ import annotations

from controlplane.contracts import protocols
from modelserver import protocol


def test_the_model_server_speaks_the_platforms_protocol_names() -> None:
    for name in ("OPENAI", "V2", "PROTOCOLS", "BUILTIN_PROTOCOL_FLAG", "INFERENCE_HEADER_CONTENT_LENGTH", "DATATYPES"):
        assert getattr(protocol, name) == getattr(protocols, name), name
