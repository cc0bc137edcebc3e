"""One publisher at a time, at most one build every few hundred milliseconds, of the sections commits changed.

A commit does not build the snapshot: it adds the sections it changed (``tenant:<id>``, or ``ALL_SECTIONS``) to the
dirty set and asks for a publisher (``controlplane.snapshot.triggers``). ``run_publisher`` holds a short-lived lock,
takes the dirty set, rebuilds those sections in one read of Postgres, stores them as the next version, and goes on
while marks keep arriving, at most every ``interval_s``. During a mass change most commits therefore cost one
``SADD``, and a build covers every commit that marked before it took the set.

Why no mark is lost:

- a commit marks *after* it committed, and the publisher reads Postgres *after* it took the marks, so the build it
  stores includes every commit whose mark it took;
- the take moves the marks into a second set (``taken``) that is cleared only once they are stored: a publisher that
  crashes, or whose version was superseded, leaves them for the next pass;
- a publisher re-checks the dirty set after releasing the lock, and a commit that found the lock held marked before
  that re-check: whoever holds the lock last sees every mark.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import redis

from controlplane.contracts.redis_names import (
    config_dirty_key,
    config_publisher_lock_key,
    config_stats_key,
    config_taken_key,
)
from controlplane.contracts.snapshot import ALL_SECTIONS, PLATFORM_SECTION
from controlplane.redis import get_redis, redis_prefix
from controlplane.snapshot.publisher import Published, publish_sections

log = logging.getLogger("frontdoor.quotas.publish")

MAX_SUPERSEDED = 3  # builds in a row another publish overtook before this run leaves the marks to the next one
LOCK_TTL_MS = 30_000  # longer than any build; extended before each one, so only a dead publisher lets it lapse

# KEYS: dirty, taken. Move every mark into ``taken`` (which may hold a failed pass's marks) and return them all.
_TAKE_LUA = """
redis.call('SUNIONSTORE', KEYS[2], KEYS[2], KEYS[1])
redis.call('DEL', KEYS[1])
return redis.call('SMEMBERS', KEYS[2])
"""

# KEYS: lock. ARGV: token, ttl ms (0: release). Only the holder extends or releases its lock.
_HOLD_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if ARGV[2] == '0' then
  redis.call('DEL', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
"""


@dataclass
class PublisherRun:
    """What one ``run_publisher`` call did."""

    builds: int = 0
    sections: int = 0
    held: bool = False  # whether it got the lock at all


def tenant_ids_of(names: Iterable[str]) -> set[int] | None:
    """The tenants whose sections the marks name; None when every section is to be rebuilt."""
    ids: set[int] = set()
    for name in names:
        kind, _, tail = name.partition(":")
        if name in (ALL_SECTIONS, PLATFORM_SECTION) or kind != "tenant" or not tail.isdigit():
            return None  # the platform's section, or a mark this publisher does not know: rebuild everything
        ids.add(int(tail))
    return ids


def _names(raw: object) -> list[str]:
    return [n.decode() if isinstance(n, bytes) else str(n) for n in raw] if isinstance(raw, list) else []


def mark_dirty(client: redis.Redis, names: Collection[str]) -> None:
    client.sadd(config_dirty_key(redis_prefix()), *names)


def run_publisher(client: redis.Redis | None = None, *, interval_s: float = 0.25) -> PublisherRun:
    """Publish the dirty sections until none are left, unless another publisher holds the lock (it will see them).

    Raises Redis and database errors; the marks stay for the next publisher.
    """
    client = client or get_redis()
    prefix = redis_prefix()
    dirty, taken, lock = config_dirty_key(prefix), config_taken_key(prefix), config_publisher_lock_key(prefix)
    run = PublisherRun()
    last_build, superseded = 0.0, 0
    while client.exists(dirty, taken):
        token = uuid.uuid4().hex
        if not client.set(lock, token, nx=True, px=LOCK_TTL_MS):
            return run  # the holder re-checks the marks after it releases the lock
        run.held = True
        try:
            while client.exists(dirty, taken):
                # Coalesce: marks arriving during the wait join this build.
                time.sleep(max(0.0, last_build + interval_s - time.monotonic()))
                client.eval(_HOLD_LUA, 1, lock, token, LOCK_TTL_MS)  # type: ignore[arg-type]
                names = _names(client.eval(_TAKE_LUA, 2, dirty, taken))  # type: ignore[arg-type]
                if not names:
                    break
                last_build = time.monotonic()
                published = publish_sections(client, tenant_ids_of(names))
                _record(client, published)
                run.builds += 1
                run.sections += published.sections
                if published.stored:
                    client.delete(taken)
                    superseded = 0
                elif (superseded := superseded + 1) >= MAX_SUPERSEDED:
                    # Someone publishes outside the lock (a full publish): the marks stay for the next run.
                    return run
        finally:
            client.eval(_HOLD_LUA, 1, lock, token, 0)  # type: ignore[arg-type]
    return run


def _record(client: redis.Redis, published: Published) -> None:
    """The publisher's counters: operators read how often it builds and how long a build takes."""
    pipe = client.pipeline(transaction=False)
    key = config_stats_key(redis_prefix())
    pipe.hincrby(key, "builds", 1)
    pipe.hincrby(key, "sections", published.sections)
    pipe.hset(key, mapping={"last_version": published.version, "last_build_ms": round(published.build_ms, 1)})
    pipe.execute()
