"""An auto-pipelining Redis client for the hot path: one connection, every command of a loop tick in one write.

The limiter admit, the settle, the usage XADD and the in-flight ZREM of every request go through here. Commands
issued during one event-loop iteration (by any number of concurrent requests) are packed into one buffer and
written with one ``transport.write`` on the next tick; replies come back in order and resolve the callers'
futures. Each Lua script still runs atomically per request: this only batches the transport, so limits stay
exact. Compared with redis-py's asyncio client it saves, per command, a pool checkout, a retry wrapper, a
timeout context and a socket write (docs/performance.md has the figures).

Failure behaviour matches the redis-py client the gateway used before (docs/gateway.md): no hidden retries; a
refused or lost connection fails every pending command at once with ``redis.exceptions.ConnectionError``; when
the oldest pending command has waited ``timeout_s`` the connection is dropped and everything pending fails with
``redis.exceptions.TimeoutError``. The next command reconnects. Pending commands are bounded (``max_pending``).
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

MAX_PENDING = 100_000  # commands sent or queued and not yet answered; beyond it callers fail at once

Arg = str | int | float | bytes


def supports(url: str) -> bool:
    """Plain TCP URLs only; anything else (TLS, unix sockets) stays on redis-py."""
    return urlsplit(url).scheme == "redis"


def _encode(arg: Arg) -> bytes:
    kind = type(arg)
    if kind is str:
        return arg.encode()  # type: ignore[union-attr]
    if kind is bytes:
        return arg  # type: ignore[return-value]
    if kind is float:
        return repr(arg).encode()
    return str(arg).encode()


def pack_args(args: tuple[Arg, ...] | list[Arg]) -> bytes:
    """The arguments of a command in RESP, without the ``*<n>`` header (callers cache a constant head)."""
    parts = []
    for arg in args:
        raw = _encode(arg)
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


def pack(args: tuple[Arg, ...]) -> bytes:
    """One command in RESP: ``*<n>\\r\\n`` then ``$<len>\\r\\n<bytes>\\r\\n`` per argument."""
    return b"*%d\r\n%s" % (len(args), pack_args(args))


def _error(reply: hiredis.ReplyError) -> ResponseError:
    message = str(reply)
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return ResponseError(message)


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: RedisPipe) -> None:
        self.owner = owner
        self.reader = hiredis.Reader()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        pending = self.owner._pending
        gets = self.reader.gets
        while True:
            reply = gets()
            if reply is False:
                return
            if not pending:  # a reply nobody waits for: the stream is out of step, start afresh
                self.owner._drop(RedisConnectionError("unexpected reply from Redis"))
                return
            future = pending.popleft()[0]
            if future.done():  # its caller gave up (cancelled); the reply is simply dropped
                continue
            if isinstance(reply, hiredis.ReplyError):
                future.set_exception(_error(reply))
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost(self, exc)


class RedisPipe:
    """Commands from the whole process over one connection, flushed once per event-loop iteration."""

    def __init__(self, url: str, timeout_s: float, *, max_pending: int = MAX_PENDING) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.db = int(parts.path.lstrip("/") or 0)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._buffer: list[bytes] = []  # packed commands waiting for the next flush
        self._pending: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self._flush_scheduled = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- the interface the limiter and the usage sink use ------------------------------------------------

    def execute(self, *args: Arg) -> asyncio.Future[Any]:
        """Queue one command; the future resolves to its reply (or a redis-py exception)."""
        return self.execute_packed(pack(args))

    def execute_packed(self, command: bytes) -> asyncio.Future[Any]:
        """``execute`` for a command already in RESP (``pack``): the limiter caches the constant part."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if len(self._pending) >= self.max_pending:
            future.set_exception(RedisConnectionError("too many Redis commands pending"))
            return future
        self._buffer.append(command)
        self._pending.append((future, time.monotonic()))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Arg) -> Any:
        return await self.execute("EVALSHA", sha, numkeys, *keys_and_args)

    async def script_load(self, script: str) -> Any:
        return await self.execute("SCRIPT", "LOAD", script)

    async def aclose(self) -> None:
        self._drop(RedisConnectionError("closed"))

    # --- transport ------------------------------------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._buffer:
            return
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            if self._connecting is None:
                self._connecting = asyncio.ensure_future(self._connect())
            return  # _connect flushes once connected
        data, self._buffer = b"".join(self._buffer), []
        protocol.transport.write(data)
        self._arm_watchdog()

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout_s):
                _, protocol = await loop.create_connection(lambda: _Protocol(self), self.host, self.port)
                assert protocol.transport is not None
                # AUTH / SELECT go first, ahead of the commands already queued; their replies are checked here.
                setup: list[tuple[Arg, ...]] = []
                if self.password is not None:
                    auth: tuple[Arg, ...] = ("AUTH", self.password)
                    setup.append(auth if self.username is None else ("AUTH", self.username, self.password))
                if self.db:
                    setup.append(("SELECT", self.db))
                futures: list[asyncio.Future[Any]] = []
                now = time.monotonic()
                for _ in setup:
                    future: asyncio.Future[Any] = loop.create_future()
                    self._pending.appendleft((future, now))
                    futures.insert(0, future)
                self._buffer[:0] = [pack(c) for c in setup]
                self._protocol = protocol
                self._connecting = None
                self._flush()
                for future in futures:
                    await future
        except (OSError, TimeoutError, RedisConnectionError, ResponseError) as exc:
            self._connecting = None
            error: Exception = exc if isinstance(exc, RedisConnectionError) else RedisConnectionError(f"Redis: {exc!r}")
            if isinstance(exc, TimeoutError):
                error = RedisTimeoutError("Redis did not answer in time")
            self._drop(error)

    def _arm_watchdog(self) -> None:
        if self._watchdog is None and self._pending and self._loop is not None:
            self._watchdog = self._loop.call_at(
                self._loop.time() + self.timeout_s - (time.monotonic() - self._pending[0][1]), self._check
            )

    def _check(self) -> None:
        """The oldest command waited ``timeout_s``: Redis is stuck or gone; fail everything, reconnect later."""
        self._watchdog = None
        if not self._pending:
            return
        if time.monotonic() - self._pending[0][1] >= self.timeout_s:
            self._drop(RedisTimeoutError("Redis did not answer in time"))
        else:
            self._arm_watchdog()

    def _drop(self, error: Exception) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.owner = _Detached()  # type: ignore[assignment]
            protocol.transport.abort()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._buffer = []
        pending, self._pending = self._pending, collections.deque()
        for future, _ in pending:
            if not future.done():
                future.set_exception(error)

    def _lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if protocol is self._protocol:
            self._drop(RedisConnectionError(f"Redis connection lost: {exc!r}"))


class _Detached(RedisPipe):
    """Stands in for the owner of a dropped connection so its late callbacks touch nothing."""

    def __init__(self) -> None:
        super().__init__("redis://127.0.0.1:6379/0", 1.0)

    def _lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        return
