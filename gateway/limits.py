"""Request, token, concurrency and budget limits, exact across any number of gateway processes.

Every limit lives in Redis and is checked and recorded by one Lua script per operation (``gateway/lua/``), so a
request costs one EVALSHA to admit and one to settle, and N gateway processes see one set of counters. The
algorithms, keys and failure behaviour are described in docs/limits.md, the keys other parts read in
docs/contracts.md; ``controlplane.contracts.redis_names`` spells every key name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from controlplane.contracts.redis_names import (
    api_key_scope,
    batch_scope,
    budget_key_prefix,
    concurrency_key,
    deployment_concurrency_key,
    request_window_key,
    tenant_scope,
    token_total_key,
    token_window_key,
)
from gateway.redispipe import RedisPipe, pack_args

WINDOW_MS = 60_000  # requests/min and tokens/min are sliding windows of one minute
KEY_CACHE_SIZE = 10_000  # distinct (key, tenant, deployment) triples whose Redis key names are kept ready

RATE_LIMIT_EXCEEDED = "rate_limit_exceeded"
INSUFFICIENT_QUOTA = "insufficient_quota"
CONCURRENCY_LIMIT_EXCEEDED = "concurrency_limit_exceeded"
CONCURRENCY_RETRY_S = 1.0  # a lease frees whenever a request finishes: no better hint than "soon"

BATCH_CAPACITY_BUSY = "batch_capacity_busy"
BATCH_RETRY_S = 1.0  # spare capacity comes back as requests finish: look again soon

# Failure kinds as the admit script returns them.
_OK, _BUDGET, _RPM, _TPM, _TPM_TOO_LARGE, _CONCURRENCY, _BATCH_CAPACITY = range(7)


@dataclass(frozen=True, slots=True)
class Limits:
    """One principal's limits; ``None`` is unlimited."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent_requests: int | None = None
    monthly_token_budget: int | None = None  # tenants only
    # Batch lines' own per-minute windows (``for_batch``); the monthly budget is shared with interactive traffic.
    batch_requests_per_minute: int | None = None
    batch_tokens_per_minute: int | None = None

    def for_batch(self) -> Limits:
        """The limits a batch line meets: the batch windows, the shared budget, no concurrency limit (the batch
        gate and the workers bound batch concurrency)."""
        return Limits(
            requests_per_minute=self.batch_requests_per_minute,
            tokens_per_minute=self.batch_tokens_per_minute,
            monthly_token_budget=self.monthly_token_budget,
        )


@dataclass(frozen=True, slots=True)
class LimitRequest:
    """Everything the limiter needs about one request; the same object is passed to ``admit`` and ``settle``."""

    request_id: str  # unique per request; used as the lease id
    key_id: str  # the ApiKey's public 8-char id
    key_limits: Limits
    tenant: str  # tenant slug
    tenant_limits: Limits
    deployment_id: int
    deployment_max_concurrent: int | None
    estimated_tokens: int  # prompt estimate + max_tokens (an upper bound of what it may use)
    lease_ttl_s: float  # concurrency lease expiry (deployment timeout + margin): a crashed gateway leaks nothing
    # A batch line: its windows are the batch ones, and it is admitted only while the deployment has fewer than
    # ``batch_capacity`` requests in flight (None: no gate). Interactive requests leave both at their defaults.
    batch: bool = False
    batch_capacity: int | None = None


@dataclass(frozen=True, slots=True)
class Admission:
    """The verdict: when refused, ``code``/``message``/``retry_after_s`` make the OpenAI 429."""

    allowed: bool
    code: str | None  # None, RATE_LIMIT_EXCEEDED, INSUFFICIENT_QUOTA or CONCURRENCY_LIMIT_EXCEEDED
    message: str  # says which limit (key/tenant/deployment), the limit and when it resets
    retry_after_s: float | None  # None when waiting does not help (budget spent, request larger than the limit)
    headers: dict[str, str]  # x-ratelimit-{limit,remaining,reset}-{requests,tokens}; absent when unlimited


@dataclass(frozen=True, slots=True)
class _Keys:
    """Redis key names for one (API key, tenant, deployment), built once."""

    admit: tuple[str, ...]
    settle: tuple[str, ...]
    budget_prefix: str
    admit_head: bytes  # RESP of "EVALSHA <sha> 9 <keys>" with the whole command's argument count
    settle_head: bytes


def _load_script(name: str) -> tuple[str, str]:
    """A script with the shared helpers (``lua/month.lua``) in front of it, and its Redis id."""
    folder = Path(__file__).parent / "lua"
    body = (folder / "month.lua").read_text(encoding="utf-8") + "\n" + (folder / name).read_text(encoding="utf-8")
    return body, hashlib.sha1(body.encode()).hexdigest()  # noqa: S324 - the script's Redis id, not a secret


ADMIT_LUA, ADMIT_SHA = _load_script("admit.lua")
SETTLE_LUA, SETTLE_SHA = _load_script("settle.lua")
ADMIT_ARGC, SETTLE_ARGC = 14, 6  # ARGV counts of the two scripts
# The scripts add token counts with INCRBY, which refuses anything Lua cannot print as an integer (1e+30): a
# count outside this bound would fail the settle half-way and leave its concurrency leases until they expire.
MAX_SETTLED_TOKENS = 2**52


def format_reset(ms: float) -> str:
    """OpenAI's reset notation: ``"250ms"``, ``"1s"``, ``"1.5s"``, ``"6m0s"``."""
    if ms < 1000:
        return f"{max(int(ms), 0)}ms"
    if ms < 60_000:
        seconds = round(ms / 1000, 3)
        return f"{seconds:g}s"
    minutes, rest = divmod(int(-(-ms // 1000)), 60)  # whole seconds, rounded up
    return f"{minutes}m{rest}s"


def _limit_arg(value: int | None) -> int:
    return -1 if value is None else value


class Limiter:
    """Admits and settles requests; one instance per gateway process, shared by all requests."""

    def __init__(self, redis: aioredis.Redis | RedisPipe, prefix: str, *, window_ms: int = WINDOW_MS) -> None:
        """``redis``: the gateway's auto-pipelining ``RedisPipe`` or a redis-py client (same ``evalsha``).

        ``window_ms`` is a minute in production; tests shorten it to watch the window slide.
        """
        self.redis = redis
        self.prefix = prefix
        self.window_ms = window_ms
        self._keys: dict[tuple[str, str, int, bool], _Keys] = {}

    async def load_scripts(self) -> None:
        """Load both scripts (at start-up, and after a NOSCRIPT): settle pipelines then never meet NOSCRIPT."""
        await self.redis.script_load(ADMIT_LUA)
        await self.redis.script_load(SETTLE_LUA)

    def _keys_for(self, req: LimitRequest) -> _Keys:
        ident = (req.key_id, req.tenant, req.deployment_id, req.batch)
        keys = self._keys.get(ident)
        if keys is None:
            if len(self._keys) >= KEY_CACHE_SIZE:
                self._keys.clear()  # bounded: rebuilding names is cheap, an unbounded dict is not
            p = self.prefix
            key, tenant = api_key_scope(req.key_id), tenant_scope(req.tenant)
            if req.batch:  # batch windows of their own (the concurrency and budget keys stay shared)
                windows = (batch_scope(key), batch_scope(tenant))
                conc_scopes = (key, tenant)
            else:
                windows = conc_scopes = (key, tenant)
            tokens = (
                token_window_key(p, windows[0]),
                token_total_key(p, windows[0]),
                token_window_key(p, windows[1]),
                token_total_key(p, windows[1]),
            )
            deployment = deployment_concurrency_key(p, req.deployment_id)
            conc = (concurrency_key(p, conc_scopes[0]), concurrency_key(p, conc_scopes[1]), deployment)
            admit = (request_window_key(p, windows[0]), request_window_key(p, windows[1]), *tokens, *conc)
            settle = (*tokens, *conc)
            keys = _Keys(
                admit=admit,
                settle=settle,
                budget_prefix=budget_key_prefix(p, req.tenant),
                admit_head=b"*%d\r\n" % (3 + len(admit) + ADMIT_ARGC) + pack_args(("EVALSHA", ADMIT_SHA, 9, *admit)),
                settle_head=b"*%d\r\n" % (3 + len(settle) + SETTLE_ARGC)
                + pack_args(("EVALSHA", SETTLE_SHA, 7, *settle)),
            )
            self._keys[ident] = keys
        return keys

    async def admit(self, req: LimitRequest) -> Admission:
        """Check every limit and, only when all pass, record the request in all of them: one round trip."""
        keys = self._keys_for(req)
        kl, tl = req.key_limits, req.tenant_limits
        args = (
            req.request_id,
            max(req.estimated_tokens, 0),  # the scripts parse "<rid>:<tokens>" entries as digits
            int(req.lease_ttl_s * 1000),
            self.window_ms,
            _limit_arg(kl.requests_per_minute),
            _limit_arg(tl.requests_per_minute),
            _limit_arg(kl.tokens_per_minute),
            _limit_arg(tl.tokens_per_minute),
            _limit_arg(kl.max_concurrent_requests),
            _limit_arg(tl.max_concurrent_requests),
            _limit_arg(req.deployment_max_concurrent),
            _limit_arg(tl.monthly_token_budget),
            keys.budget_prefix,
            _limit_arg(req.batch_capacity),
        )
        redis = self.redis
        if isinstance(redis, RedisPipe):
            command = keys.admit_head + pack_args(args)
            try:
                reply = await redis.execute_packed(command)
            except NoScriptError:
                await self.load_scripts()  # Redis restarted or flushed its scripts; the admit had no effect
                reply = await redis.execute_packed(command)
            return _admission(req, reply)
        try:
            reply = await redis.evalsha(ADMIT_SHA, 9, *keys.admit, *args)  # type: ignore[misc]
        except NoScriptError:
            await self.load_scripts()
            reply = await redis.evalsha(ADMIT_SHA, 9, *keys.admit, *args)  # type: ignore[misc]
        return _admission(req, reply)

    async def settle(self, req: LimitRequest, actual_tokens: int) -> None:
        """Release the leases and correct the token reservations to ``actual_tokens``: one round trip."""
        keys = self._keys_for(req)
        args = self._settle_args(req, actual_tokens, keys)
        try:
            await self.redis.evalsha(SETTLE_SHA, 7, *keys.settle, *args)  # type: ignore[misc]
        except NoScriptError:
            await self.load_scripts()
            await self.redis.evalsha(SETTLE_SHA, 7, *keys.settle, *args)  # type: ignore[misc]

    def settle_commands(self, pipe: Any, req: LimitRequest, actual_tokens: int) -> None:
        """Queue the settle on the caller's pipeline (sent with the usage event in one round trip).

        The pipeline cannot load a missing script by itself; if its ``execute()`` raises ``NoScriptError``, call
        ``settle()`` (the settle is idempotent, so retrying it is always safe).
        """
        pipe.evalsha(*self.settle_command(req, actual_tokens)[1:])

    def settle_command(self, req: LimitRequest, actual_tokens: int) -> tuple[str | int, ...]:
        """The whole settle command (``EVALSHA`` first) for a ``RedisPipe.execute`` or a pipeline."""
        keys = self._keys_for(req)
        return ("EVALSHA", SETTLE_SHA, 7, *keys.settle, *self._settle_args(req, actual_tokens, keys))

    def settle_packed(self, req: LimitRequest, actual_tokens: int) -> bytes:
        """``settle_command`` in RESP, for ``RedisPipe.execute_packed``."""
        keys = self._keys_for(req)
        return keys.settle_head + pack_args(self._settle_args(req, actual_tokens, keys))

    def _settle_args(self, req: LimitRequest, actual_tokens: int, keys: _Keys) -> tuple[str | int, ...]:
        budget_prefix = keys.budget_prefix if req.tenant_limits.monthly_token_budget is not None else ""
        return (
            req.request_id,
            max(req.estimated_tokens, 0),
            min(max(int(actual_tokens), 0), MAX_SETTLED_TOKENS),
            int(req.lease_ttl_s * 1000),
            self.window_ms,
            budget_prefix,
        )


def _headers(reply: list[int]) -> dict[str, str]:
    headers: dict[str, str] = {}
    req_limit, req_remaining, req_reset, tok_limit, tok_remaining, tok_reset = reply[6:12]
    if req_limit >= 0:
        headers["x-ratelimit-limit-requests"] = str(req_limit)
        headers["x-ratelimit-remaining-requests"] = str(max(req_remaining, 0))
        headers["x-ratelimit-reset-requests"] = format_reset(max(req_reset, 0))
    if tok_limit >= 0:
        headers["x-ratelimit-limit-tokens"] = str(tok_limit)
        headers["x-ratelimit-remaining-tokens"] = str(max(tok_remaining, 0))
        headers["x-ratelimit-reset-tokens"] = format_reset(max(tok_reset, 0))
    return headers


def _scope_name(req: LimitRequest, scope: int) -> str:
    if scope == 1:
        return f"API key {req.key_id}"
    if scope == 2:
        return f"tenant {req.tenant}"
    return f"deployment {req.deployment_id}"


def _admission(req: LimitRequest, raw: list[Any]) -> Admission:
    reply = [int(v) for v in raw]
    fail = reply[0]
    headers = _headers(reply)
    if fail == _OK:
        return Admission(True, None, "", None, headers)
    scope, limit, used, retry_ms, month = reply[1:6]
    where = _scope_name(req, scope)
    est = req.estimated_tokens
    if fail == _BUDGET:
        year, mon = divmod(month, 100)
        year, mon = (year + 1, 1) if mon == 12 else (year, mon + 1)
        message = (
            f"You exceeded the monthly token budget of {where}: {used} of {limit} tokens used this month and "
            f"this request may use up to {est}. The budget resets on {year:04d}-{mon:02d}-01 00:00 UTC."
        )
        return Admission(False, INSUFFICIENT_QUOTA, message, None, headers)
    if fail == _TPM_TOO_LARGE:
        message = (
            f"Request too large for tokens per minute on {where}: limit {limit}, requested {est}. "
            "Reduce the input or max_tokens."
        )
        return Admission(False, RATE_LIMIT_EXCEEDED, message, None, headers)
    if fail == _BATCH_CAPACITY:
        message = (
            f"No spare capacity for batch lines on {where}: {used} requests in flight, batch lines are admitted "
            f"below {limit}. Interactive traffic goes first; try again in {BATCH_RETRY_S:g}s."
        )
        return Admission(False, BATCH_CAPACITY_BUSY, message, BATCH_RETRY_S, headers)
    if fail == _CONCURRENCY:
        message = (
            f"Concurrency limit reached on {where}: {used} requests in flight, limit {limit}. "
            f"Please try again in {CONCURRENCY_RETRY_S:g}s."
        )
        return Admission(False, CONCURRENCY_LIMIT_EXCEEDED, message, CONCURRENCY_RETRY_S, headers)
    retry_s = retry_ms / 1000
    if fail == _RPM:
        message = (
            f"Rate limit reached for requests per minute (RPM) on {where}: limit {limit}, used {used}, "
            f"requested 1. Please try again in {format_reset(retry_ms)}."
        )
    else:
        message = (
            f"Rate limit reached for tokens per minute (TPM) on {where}: limit {limit}, used {used}, "
            f"requested {est}. Please try again in {format_reset(retry_ms)}."
        )
    return Admission(False, RATE_LIMIT_EXCEEDED, message, retry_s, headers)
