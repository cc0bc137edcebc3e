"""Redis pub/sub channel names, shared by every publisher and subscriber (docs/contracts.md "Channels").

Keys are separated per installation by the Redis database and the key prefix, but pub/sub ignores the database:
a PUBLISH on database 1 reaches a subscriber connected to database 0. So a channel name carries the database
number as well as the prefix: ``<prefix>:db<N>:<name>``. Two installations on one Redis with the same prefix and
different databases then hear only their own notices, as they see only their own keys.

The database is the one the client of ``REDIS_URL`` selects (read with redis-py's own URL parser, so that
``redis://host/2``, ``redis://host?db=2`` and ``unix:///path?db=2`` mean what they mean to the client).
"""

from __future__ import annotations

from redis.connection import parse_url

# The channels of one installation; every PUBLISH and SUBSCRIBE names one of them through ``channel()``.
CONFIG_NOTIFY = "config:notify"  # control plane -> gateways: a new config snapshot version (payload: the version)
WAKE = "wake"  # gateway -> autoscaler: a request waits for a scaled-to-zero deployment (payload: deployment id)
LOCAL_NOTIFY = "local:notify"  # LocalBackend -> local agent: a deployment's desired state changed (payload: its id)

ALL_CHANNELS = (CONFIG_NOTIFY, WAKE, LOCAL_NOTIFY)


def redis_db(redis_url: str) -> int:
    """The database number a client of ``redis_url`` selects (0 when the URL names none)."""
    return int(parse_url(redis_url).get("db") or 0)


def channel(prefix: str, redis_url: str, name: str) -> str:
    """The channel ``name`` (one of the constants above) of the installation of ``prefix`` on ``redis_url``."""
    return channel_in_db(prefix, redis_db(redis_url), name)


def channel_in_db(prefix: str, db: int, name: str) -> str:
    """``<prefix>:db<db>:<name>``, for a caller that holds a client rather than its URL."""
    return f"{prefix}:db{db}:{name}"
