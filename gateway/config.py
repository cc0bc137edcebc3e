"""Gateway settings, all read from the environment in one place (docs/gateway.md lists them).

Django-free: only ``controlplane.contracts.env`` helpers, which import nothing from Django.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from controlplane.contracts.batch_wire import internal_token_from_env
from controlplane.contracts.env import ImproperlyConfiguredEnv, env_bool, env_float, env_int, env_str
from controlplane.contracts.sealing import Sealer, SealError, sealer_from_env

DEV_KEY_PEPPER = "dev-insecure-api-key-pepper"  # identical to the control plane's development default
# Which client carries upstream requests: "auto" picks per endpoint (the hand-written one for plain http, the
# library for the rest), "library" sends everything through the library (gateway/transport.py).
UPSTREAM_CLIENTS = ("auto", "library")
# The console of a development installation (`make run` names its own, from WEB_PORT): the origins whose pages may
# call the gateway from a browser when FRONTDOOR_GATEWAY_CORS_ORIGINS is unset. In production none is, by default.
DEV_CORS_ORIGINS = "http://127.0.0.1:8000,http://localhost:8000"
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Every tunable of the gateway; ``from_env()`` builds it, tests build it directly."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "fd"
    key_pepper: str = DEV_KEY_PEPPER
    redis_timeout_s: float = 0.5  # short socket timeouts: a dead Redis must give a fast 503, not a hang
    fail_open: bool = False  # on Redis errors: False answers 503, True serves without limits
    max_body_bytes: int = 1024 * 1024
    max_tokens_cap: int = 32768
    n_cap: int = 8
    default_max_tokens: int = 256  # reserved for chat/completions when the client sends no max_tokens
    connect_timeout_s: float = 2.0
    first_byte_timeout_s: float = 60.0
    total_timeout_s: float = 600.0  # ceiling when a deployment has no timeout_s
    eject_s: float = 10.0  # how long a replica that refused a connection stays out of rotation
    retries: int = 2  # extra attempts on other replicas when a connection was refused (nothing sent yet)
    cold_hold_s: float = 60.0  # how long a request for a scaled-to-zero deployment waits for a replica
    cold_queue_max: int = 1000  # held requests per process beyond which new ones get 503 at once
    embeddings_window_s: float = 0.002
    embeddings_max_batch: int = 64
    upstream_pool_size: int = 1024  # aiohttp connector limit (all upstreams together)
    access_log: bool = True
    auth_cache_size: int = 10000
    # Where this process listens (``python -m gateway`` passes its --host/--port here): a tenant's external
    # endpoint must never point back at the gateway itself.
    listen_host: str = "127.0.0.1"
    listen_port: int = 8001
    upstream_ca_bundle: str = ""  # PEM file of extra CAs trusted for https endpoints (private CAs)
    upstream_client: str = "auto"  # one of UPSTREAM_CLIENTS
    # The Prometheus listener, never the inference one (it names every tenant and deployment). 0 = none.
    # With N workers (``python -m gateway --workers N`` sets ``workers``) each process takes one port of
    # metrics_port .. metrics_port + N - 1, so each is scraped on its own (docs/operations.md, "Metrics with
    # several workers").
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    metrics_token: str = ""  # when set, scrapes must send ``Authorization: Bearer <token>``
    workers: int = 1
    # Opens the upstream keys of external deployments, sealed in the snapshot (FRONTDOOR_SEAL_KEY or _FILE, the
    # control plane's seal key). None: no key opens, and external endpoints are called without one.
    sealer: Sealer | None = field(default=None, repr=False)
    # The Batch API (docs/gateway.md "Batch API"): where /v1/files and /v1/batches are forwarded (the operator's
    # control plane), the token both sides share (FRONTDOOR_INTERNAL_TOKEN or _FILE; empty: no batch line is
    # accepted and the control plane refuses the forwarded requests), the largest upload, and how long a batch
    # line's answer is kept for a re-run to get back.
    controlplane_url: str = "http://127.0.0.1:8000"
    internal_token: str = field(default="", repr=False)
    max_file_bytes: int = 200 * 1024 * 1024
    batch_replay_ttl_s: float = 172800.0
    # The origins (``scheme://host[:port]``) whose pages may call the inference routes and /v2 from a browser
    # (gateway/cors.py); empty: no page may.
    cors_origins: frozenset[str] = frozenset()

    @classmethod
    def from_env(cls) -> GatewayConfig:
        """Read every setting; like the control plane, refuse a missing or development pepper in production."""
        d = cls()
        environment = env_str("FRONTDOOR_ENV", "development")
        if environment not in {"development", "production"}:
            raise ImproperlyConfiguredEnv(f"FRONTDOOR_ENV={environment!r}: use 'development' or 'production'")
        production = environment == "production"
        pepper = env_str("FRONTDOOR_KEY_PEPPER", "" if production else DEV_KEY_PEPPER)
        if production and (len(pepper) < 32 or pepper == DEV_KEY_PEPPER):
            raise ImproperlyConfiguredEnv("FRONTDOOR_KEY_PEPPER (or _FILE) of 32+ characters is required in production")
        return cls(
            redis_url=env_str("REDIS_URL", d.redis_url),
            redis_prefix=env_str("FRONTDOOR_REDIS_PREFIX", d.redis_prefix),
            key_pepper=pepper,
            redis_timeout_s=env_float("FRONTDOOR_GATEWAY_REDIS_TIMEOUT_S", d.redis_timeout_s),
            fail_open=env_bool("FRONTDOOR_GATEWAY_FAIL_OPEN", d.fail_open),
            max_body_bytes=env_int("FRONTDOOR_GATEWAY_MAX_BODY_BYTES", d.max_body_bytes),
            max_tokens_cap=env_int("FRONTDOOR_GATEWAY_MAX_TOKENS_CAP", d.max_tokens_cap),
            n_cap=env_int("FRONTDOOR_GATEWAY_N_CAP", d.n_cap),
            default_max_tokens=env_int("FRONTDOOR_GATEWAY_DEFAULT_MAX_TOKENS", d.default_max_tokens),
            connect_timeout_s=env_float("FRONTDOOR_GATEWAY_CONNECT_TIMEOUT_S", d.connect_timeout_s),
            first_byte_timeout_s=env_float("FRONTDOOR_GATEWAY_FIRST_BYTE_TIMEOUT_S", d.first_byte_timeout_s),
            total_timeout_s=env_float("FRONTDOOR_GATEWAY_TOTAL_TIMEOUT_S", d.total_timeout_s),
            eject_s=env_float("FRONTDOOR_GATEWAY_EJECT_S", d.eject_s),
            retries=env_int("FRONTDOOR_GATEWAY_RETRIES", d.retries),
            cold_hold_s=env_float("FRONTDOOR_GATEWAY_COLD_HOLD_S", d.cold_hold_s),
            cold_queue_max=env_int("FRONTDOOR_GATEWAY_COLD_QUEUE_MAX", d.cold_queue_max),
            embeddings_window_s=env_float("FRONTDOOR_GATEWAY_EMBEDDINGS_WINDOW_S", d.embeddings_window_s),
            embeddings_max_batch=env_int("FRONTDOOR_GATEWAY_EMBEDDINGS_MAX_BATCH", d.embeddings_max_batch),
            upstream_pool_size=env_int("FRONTDOOR_GATEWAY_UPSTREAM_POOL_SIZE", d.upstream_pool_size),
            access_log=env_bool("FRONTDOOR_GATEWAY_ACCESS_LOG", d.access_log),
            auth_cache_size=env_int("FRONTDOOR_GATEWAY_AUTH_CACHE_SIZE", d.auth_cache_size),
            listen_host=env_str("FRONTDOOR_GATEWAY_HOST", d.listen_host),
            listen_port=env_int("FRONTDOOR_GATEWAY_PORT", d.listen_port),
            upstream_ca_bundle=env_str("FRONTDOOR_GATEWAY_UPSTREAM_CA_BUNDLE", d.upstream_ca_bundle),
            upstream_client=_choice("FRONTDOOR_GATEWAY_UPSTREAM_CLIENT", d.upstream_client, UPSTREAM_CLIENTS),
            metrics_host=env_str("FRONTDOOR_GATEWAY_METRICS_HOST", d.metrics_host),
            metrics_port=_port("FRONTDOOR_GATEWAY_METRICS_PORT", d.metrics_port),
            metrics_token=env_str("FRONTDOOR_GATEWAY_METRICS_TOKEN", d.metrics_token),
            workers=_positive("FRONTDOOR_GATEWAY_WORKERS", d.workers),
            sealer=_sealer(),
            controlplane_url=_base_url("FRONTDOOR_CONTROLPLANE_URL", d.controlplane_url),
            internal_token=internal_token_from_env(),
            max_file_bytes=_positive("FRONTDOOR_BATCH_MAX_FILE_BYTES", d.max_file_bytes),
            batch_replay_ttl_s=_positive_seconds("FRONTDOOR_BATCH_REPLAY_TTL_S", d.batch_replay_ttl_s),
            cors_origins=_origins("FRONTDOOR_GATEWAY_CORS_ORIGINS", "" if production else DEV_CORS_ORIGINS),
        )


def _sealer() -> Sealer | None:
    try:
        return sealer_from_env("FRONTDOOR_SEAL_KEY")
    except SealError as exc:  # a key that does not parse stops the start: it would open nothing
        raise ImproperlyConfiguredEnv(f"FRONTDOOR_SEAL_KEY (or _FILE): {exc}") from exc


def _port(name: str, default: int) -> int:
    value = env_int(name, default)
    if not 0 <= value <= 65535:
        raise ImproperlyConfiguredEnv(f"{name}={value}: use a TCP port (0 = no listener)")
    return value


def _positive(name: str, default: int) -> int:
    value = env_int(name, default)
    if value < 1:
        raise ImproperlyConfiguredEnv(f"{name}={value}: use 1 or more")
    return value


def _base_url(name: str, default: str) -> str:
    value = env_str(name, default).strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.query or parts.fragment:
        raise ImproperlyConfiguredEnv(f"{name}={value!r}: use an http(s) URL such as http://127.0.0.1:8000")
    return value


def _positive_seconds(name: str, default: float) -> float:
    value = env_float(name, default)
    if not (math.isfinite(value) and value >= 0.001):  # Redis refuses an expiry below a millisecond
        raise ImproperlyConfiguredEnv(f"{name}={value}: use a positive number of seconds")
    return value


def _origins(name: str, default: str) -> frozenset[str]:
    value = env_str(name, default)  # unset or empty: the default; "none": no origin at all
    if value.strip().lower() == "none":
        return frozenset()
    try:
        return frozenset(_parse_origin(item) for item in value.split(",") if item.strip())
    except ValueError as exc:
        raise ImproperlyConfiguredEnv(f"{name}: {exc}") from exc


def _parse_origin(value: str) -> str:
    """``value`` as browsers write an ``Origin``: lowercase ``scheme://host[:port]``, the default port left out.

    Raises ``ValueError`` for anything else (a path, credentials, ``*``, ``null``): the list names exact origins.
    """
    text = value.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{text!r} is no origin: {exc}") from exc
    scheme = parts.scheme.lower()
    if (
        scheme not in _DEFAULT_PORTS
        or not parts.hostname
        or "*" in parts.hostname
        or parts.username is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise ValueError(f"{text!r} is no origin: use scheme://host[:port], such as http://127.0.0.1:8000")
    host = parts.hostname.lower()
    if ":" in host:  # an IPv6 address keeps its brackets
        host = f"[{host}]"
    return f"{scheme}://{host}" + (f":{port}" if port is not None and port != _DEFAULT_PORTS[scheme] else "")


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env_str(name, default).strip().lower()
    if value not in choices:
        raise ImproperlyConfiguredEnv(f"{name}={value!r}: use one of {', '.join(choices)}")
    return value
