"""The auto-pipelining Redis client against real Redis: ordered replies, one write per tick, errors, reconnects."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.redispipe import RedisPipe, pack

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("FRONTDOOR_REDIS_PREFIX", "fdt-gw")


def test_it_answers_many_concurrent_commands_in_order_with_few_writes() -> None:
    async def scenario() -> tuple[list[Any], int]:
        pipe = RedisPipe(REDIS_URL, 2.0)
        key = f"{PREFIX}:pipe:{uuid.uuid4().hex}"
        try:
            await pipe.execute("PING")  # connected before counting writes
            assert pipe._protocol is not None and pipe._protocol.transport is not None
            transport = pipe._protocol.transport
            writes = 0
            original = transport.write

            def counting_write(data: Any) -> None:
                nonlocal writes
                writes += 1
                original(data)

            transport.write = counting_write  # type: ignore[method-assign]
            replies = await asyncio.gather(*(pipe.execute("INCR", key) for _ in range(200)))
            batch_writes = writes
            await pipe.execute("DEL", key)
            return list(replies), batch_writes
        finally:
            await pipe.aclose()

    replies, writes = asyncio.run(scenario())
    assert replies == list(range(1, 201))  # every caller got its own reply, in order
    assert writes == 1  # commands issued in one loop iteration leave in one write


def test_it_selects_the_database_of_its_url() -> None:
    other_db = 15 if not REDIS_URL.endswith("/15") else 14
    base = REDIS_URL.rsplit("/", 1)[0]
    key = f"{PREFIX}:pipe-db:{uuid.uuid4().hex}"

    async def scenario() -> tuple[Any, Any]:
        pipe, plain = RedisPipe(f"{base}/{other_db}", 2.0), RedisPipe(f"{base}/0", 2.0)
        try:
            await pipe.execute("SET", key, "x", "EX", 10)
            return await pipe.execute("GET", key), await plain.execute("GET", key)
        finally:
            await pipe.execute("DEL", key)
            await pipe.aclose()
            await plain.aclose()

    assert asyncio.run(scenario()) == (b"x", None)


def test_it_raises_redis_errors_per_command_and_keeps_the_connection() -> None:
    async def scenario() -> tuple[BaseException | None, BaseException | None, Any]:
        pipe = RedisPipe(REDIS_URL, 2.0)
        try:
            missing = pipe.execute("EVALSHA", "0" * 40, 0)
            wrong = pipe.execute("NOSUCHCOMMAND")
            ping = pipe.execute("PING")
            errors: list[BaseException | None] = []
            for future in (missing, wrong):
                try:
                    await future
                    errors.append(None)
                except ResponseError as exc:
                    errors.append(exc)
            return errors[0], errors[1], await ping
        finally:
            await pipe.aclose()

    missing, wrong, ping = asyncio.run(scenario())
    assert isinstance(missing, NoScriptError)
    assert isinstance(wrong, ResponseError) and not isinstance(wrong, NoScriptError)
    assert ping == b"PONG"


def test_it_fails_fast_when_nothing_listens_and_times_out_when_redis_hangs() -> None:
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        silent_port = silent.getsockname()[1]
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            closed_port = closed.getsockname()[1]  # bound, not listening: refused

        async def scenario() -> tuple[type[BaseException], type[BaseException], float]:
            refused = RedisPipe(f"redis://127.0.0.1:{closed_port}/0", 0.3)
            hanging = RedisPipe(f"redis://127.0.0.1:{silent_port}/0", 0.3)
            with pytest.raises(RedisConnectionError) as refused_error:
                await refused.execute("PING")
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(RedisTimeoutError) as hang_error:
                await asyncio.wait_for(hanging.execute("PING"), 5)
            elapsed = loop.time() - start
            await hanging.aclose()
            return refused_error.type, hang_error.type, elapsed

        refused_type, hang_type, elapsed = asyncio.run(scenario())
    assert issubclass(refused_type, RedisConnectionError)
    assert issubclass(hang_type, RedisTimeoutError)
    print(f"a hanging Redis failed the command after {elapsed * 1000:.0f} ms (timeout 300 ms)")


def test_it_reconnects_after_the_connection_was_dropped() -> None:
    async def scenario() -> tuple[Any, Any]:
        pipe = RedisPipe(REDIS_URL, 2.0)
        try:
            first = await pipe.execute("PING")
            assert pipe._protocol is not None and pipe._protocol.transport is not None
            pipe._protocol.transport.abort()  # as if Redis restarted
            await asyncio.sleep(0.05)
            return first, await pipe.execute("PING")
        finally:
            await pipe.aclose()

    assert asyncio.run(scenario()) == (b"PONG", b"PONG")


def test_it_packs_commands_in_resp() -> None:
    expected = b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$3\r\n1.5\r\n$1\r\n\x00\r\n"
    assert pack(("SET", "k", 12, 1.5, b"\x00")) == expected
