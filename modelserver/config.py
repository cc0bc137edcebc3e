"""Model server settings: defaults, overridden by ``MODELSERVER_*`` environment variables, overridden by flags."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from modelserver.protocol import BUILTIN_PROTOCOL_FLAG, OPENAI, PROTOCOLS, V2

SIM_EMBEDDINGS = "sim"
MINILM_EMBEDDINGS = "minilm"
MINILM_MODEL_NAME = "all-MiniLM-L6-v2"
EMBEDDINGS_KINDS = (SIM_EMBEDDINGS, MINILM_EMBEDDINGS)
DEFAULT_MODEL_NAMES = {OPENAI: "frontdoor/sim-chat", V2: "frontdoor-ranker"}


class ConfigError(ValueError):
    """A setting has a value the server cannot run with."""


@dataclass
class FaultSettings:
    """Failure knobs for tests; they can also be changed at run time through ``POST /admin/faults``."""

    error_rate: float = 0.0  # fraction of inference requests answered 500 (deterministic, see faults.py)
    stall_ms: int = 0  # delay before the first byte of every inference response
    truncate_after: int = 0  # streams stop after this many chunks, without [DONE]; 0 = never
    startup_delay_ms: int = 0  # /health answers 503 until this long after start

    def validate(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ConfigError("error_rate must be between 0 and 1")
        for name in ("stall_ms", "truncate_after", "startup_delay_ms"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative")


@dataclass
class ModelServerConfig:
    """Everything the server needs; :func:`modelserver.app.create_app` takes one of these."""

    host: str = "127.0.0.1"
    port: int = 9000
    # "openai" (chat, completions, embeddings, images) or "v2" (the Open Inference Protocol, one ranking model).
    protocol: str = OPENAI
    model_name: str = ""  # empty: "frontdoor/sim-chat" for openai, "frontdoor-ranker" for v2
    embeddings_model: str = SIM_EMBEDDINGS  # "sim" or "minilm"
    embeddings_model_name: str = ""  # empty: "frontdoor/sim-embed" for sim, "all-MiniLM-L6-v2" for minilm
    embedding_dim: int = 384  # simulator only; MiniLM is always 384
    ttft_ms: float = 0.0  # simulated time to first token
    tokens_per_s: float = 0.0  # simulated decode speed; 0 = no delay between tokens
    max_num_seqs: int = 256  # requests served at once; the rest wait in a FIFO queue
    default_max_tokens: int = 16
    log_level: str = "warning"
    # On SIGTERM: stop accepting, finish what is in flight (streams included) for at most this long, then exit.
    graceful_shutdown_s: int = 30  # whole seconds (uvicorn's timeout_graceful_shutdown)
    faults: FaultSettings = field(default_factory=FaultSettings)

    def __post_init__(self) -> None:
        if not self.model_name:
            self.model_name = DEFAULT_MODEL_NAMES.get(self.protocol, DEFAULT_MODEL_NAMES[OPENAI])
        if not self.embeddings_model_name:
            self.embeddings_model_name = (
                MINILM_MODEL_NAME if self.embeddings_model == MINILM_EMBEDDINGS else "frontdoor/sim-embed"
            )

    def validate(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"protocol must be one of {', '.join(PROTOCOLS)}")
        if self.embeddings_model not in EMBEDDINGS_KINDS:
            raise ConfigError(f"embeddings_model must be one of {', '.join(EMBEDDINGS_KINDS)}")
        if self.embedding_dim < 1:
            raise ConfigError("embedding_dim must be at least 1")
        if self.max_num_seqs < 1:
            raise ConfigError("max_num_seqs must be at least 1")
        if self.default_max_tokens < 1:
            raise ConfigError("default_max_tokens must be at least 1")
        if self.ttft_ms < 0 or self.tokens_per_s < 0:
            raise ConfigError("ttft_ms and tokens_per_s must not be negative")
        if self.graceful_shutdown_s < 0:
            raise ConfigError("graceful_shutdown_s must not be negative")
        self.faults.validate()


def _env(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(f"MODELSERVER_{name}")
    return value if value not in (None, "") else None


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """Flags whose defaults come from the environment, so a flag always wins over its variable."""
    base = ModelServerConfig()

    def default(name: str, fallback: object) -> object:
        value = _env(environ, name)
        return fallback if value is None else value

    # No abbreviations: "--po 9" must not mean --port, so the flags the local agent sets cannot be overridden by a
    # prefix its checks might not recognise.
    p = argparse.ArgumentParser(
        prog="python -m modelserver", description="Frontdoor's built-in model server", allow_abbrev=False
    )
    p.add_argument("--host", default=default("HOST", base.host))
    p.add_argument("--port", type=int, default=default("PORT", base.port))
    p.add_argument(BUILTIN_PROTOCOL_FLAG, choices=PROTOCOLS, default=default("PROTOCOL", base.protocol))
    p.add_argument("--model-name", "--served-model-name", dest="model_name", default=default("MODEL_NAME", ""))
    p.add_argument(
        "--embeddings-model", choices=EMBEDDINGS_KINDS, default=default("EMBEDDINGS_MODEL", base.embeddings_model)
    )
    p.add_argument("--embeddings-model-name", default=default("EMBEDDINGS_MODEL_NAME", ""))
    p.add_argument("--embedding-dim", type=int, default=default("EMBEDDING_DIM", base.embedding_dim))
    p.add_argument("--ttft-ms", type=float, default=default("TTFT_MS", base.ttft_ms))
    p.add_argument("--tokens-per-s", type=float, default=default("TOKENS_PER_S", base.tokens_per_s))
    p.add_argument("--max-num-seqs", type=int, default=default("MAX_NUM_SEQS", base.max_num_seqs))
    p.add_argument("--default-max-tokens", type=int, default=default("DEFAULT_MAX_TOKENS", base.default_max_tokens))
    p.add_argument("--log-level", default=default("LOG_LEVEL", base.log_level))
    p.add_argument("--graceful-shutdown-s", type=int, default=default("GRACEFUL_SHUTDOWN_S", base.graceful_shutdown_s))
    faults = FaultSettings()
    p.add_argument("--error-rate", type=float, default=default("ERROR_RATE", faults.error_rate))
    p.add_argument("--stall-ms", type=int, default=default("STALL_MS", faults.stall_ms))
    p.add_argument("--truncate-after", type=int, default=default("TRUNCATE_AFTER", faults.truncate_after))
    p.add_argument("--startup-delay-ms", type=int, default=default("STARTUP_DELAY_MS", faults.startup_delay_ms))
    return p


def config_from_args(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> ModelServerConfig:
    """Parse flags (and ``MODELSERVER_*`` variables) into a validated config; exits with usage on bad input."""
    env = os.environ if environ is None else environ
    parser = build_parser(env)
    # argparse converts string defaults taken from the environment with the argument's type, so a bad
    # variable is reported like a bad flag.
    args = parser.parse_args(argv)
    config = ModelServerConfig(
        host=args.host,
        port=args.port,
        protocol=args.protocol,
        model_name=args.model_name,
        embeddings_model=args.embeddings_model,
        embeddings_model_name=args.embeddings_model_name,
        embedding_dim=args.embedding_dim,
        ttft_ms=args.ttft_ms,
        tokens_per_s=args.tokens_per_s,
        max_num_seqs=args.max_num_seqs,
        default_max_tokens=args.default_max_tokens,
        log_level=args.log_level,
        graceful_shutdown_s=args.graceful_shutdown_s,
        faults=FaultSettings(
            error_rate=args.error_rate,
            stall_ms=args.stall_ms,
            truncate_after=args.truncate_after,
            startup_delay_ms=args.startup_delay_ms,
        ),
    )
    try:
        config.validate()
    except ConfigError as exc:
        parser.error(str(exc))
    return config
