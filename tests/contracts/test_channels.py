"""Pub/sub channel names: two installations on one Redis (same prefix, databases 0 and 1) never hear each other.

Redis delivers a PUBLISH to subscribers of every database, so the database number is part of each channel name.
The two-installation check uses a prefix of its own (never ``fd``, whatever runs on database 0): subscribing and
publishing creates no key, and nobody else listens on these channels.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest
import redis
from redis.connection import parse_url

from controlplane.contracts import localagent as protocol
from controlplane.contracts.redis_names import (
    ALL_CHANNELS,
    CONFIG_NOTIFY,
    LOCAL_NOTIFY,
    WAKE,
    channel,
    channel_in_db,
    redis_db,
)
from deployments.backends.local import LocalBackend
from tests.support.isolation import RunNames
from tests.support.localagent import deployment_spec

Naming = Callable[[str, str, str], str]


def prefix_only(prefix: str, redis_url: str, name: str) -> str:
    """How channels were named before they carried the database: ``<prefix>:<name>``."""
    return f"{prefix}:{name}"


def test_it_names_the_channels_of_the_default_installation_on_databases_0_and_1() -> None:
    assert channel("fd", "redis://127.0.0.1:6379/0", CONFIG_NOTIFY) == "fd:db0:config:notify"
    assert channel("fd", "redis://127.0.0.1:6379/1", CONFIG_NOTIFY) == "fd:db1:config:notify"
    assert channel("fd", "redis://127.0.0.1:6379/0", WAKE) == "fd:db0:wake"
    assert channel("fd", "redis://127.0.0.1:6379/1", LOCAL_NOTIFY) == "fd:db1:local:notify"
    assert protocol.notify_channel("fd", "redis://127.0.0.1:6379/1") == "fd:db1:local:notify"
    assert channel_in_db("fd", 1, WAKE) == channel("fd", "redis://127.0.0.1:6379/1", WAKE)


@pytest.mark.parametrize(
    ("url", "db"),
    [
        ("redis://127.0.0.1:6379", 0),
        ("redis://127.0.0.1:6379/", 0),
        ("redis://127.0.0.1:6379/0", 0),
        ("redis://:secret@127.0.0.1:6379/1", 1),
        ("redis://127.0.0.1:6379/1?db=5", 5),  # the query wins, as it does for the client
        ("rediss://127.0.0.1:6380/2", 2),
        ("unix:///run/redis.sock?db=3", 3),
        ("unix:///run/redis.sock", 0),
    ],
)
def test_it_reads_the_database_as_the_redis_client_selects_it(url: str, db: int) -> None:
    assert redis_db(url) == db == int(parse_url(url).get("db") or 0)


def _url_for_db(redis_url: str, db: int) -> str:
    kwargs = parse_url(redis_url)
    return f"redis://{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}/{db}"


class Installation:
    """One installation's view of the shared Redis: its prefix, its database, a subscriber to all its channels."""

    def __init__(self, redis_url: str, prefix: str, naming: Naming) -> None:
        self.url = redis_url
        self.prefix = prefix
        self.naming = naming
        self.client = redis.Redis.from_url(redis_url)
        self.pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(*self.channels())

    def wait_subscribed(self, subscribers: int, deadline_s: float = 5.0) -> None:
        """Until Redis counts ``subscribers`` on each of our channels (a PUBLISH before that would reach nobody)."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            self.pubsub.get_message(timeout=0.01)  # reads the confirmations
            if all(count >= subscribers for _, count in self.client.pubsub_numsub(*self.channels())):
                return
        raise AssertionError(f"{self.channels()} did not get {subscribers} subscriber(s) within {deadline_s} s")

    def channels(self) -> list[str]:
        return [self.naming(self.prefix, self.url, name) for name in ALL_CHANNELS]

    def publish_all(self, payload: str) -> None:
        for name in self.channels():
            self.client.publish(name, payload)

    def heard(self, payload: str, deadline_s: float = 2.0, quiet_s: float = 0.3) -> list[str]:
        """The channels on which ``payload`` arrived: until every channel heard it, or quiet for ``quiet_s``."""
        channels: list[str] = []
        end = time.monotonic() + deadline_s
        quiet_until = time.monotonic() + quiet_s
        while time.monotonic() < min(end, quiet_until) and len(channels) < len(ALL_CHANNELS):
            message = self.pubsub.get_message(timeout=0.05)
            if message is not None and message["data"] == payload.encode():
                channels.append(message["channel"].decode())
                quiet_until = time.monotonic() + quiet_s
        return sorted(channels)

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


@pytest.fixture
def two_installations(
    redis_url: str, run_names: RunNames
) -> Iterator[Callable[[Naming], tuple[Installation, Installation]]]:
    """``make(naming)``: installations A (database 0) and B (database 1) with the same prefix, this test's own."""
    prefix = f"{run_names.redis_prefix}-ch-{uuid.uuid4().hex[:8]}"
    made: list[Installation] = []

    def make(naming: Naming) -> tuple[Installation, Installation]:
        a = Installation(_url_for_db(redis_url, 0), prefix, naming)
        b = Installation(_url_for_db(redis_url, 1), prefix, naming)
        made.extend((a, b))
        shared = a.channels() == b.channels()  # one subscriber per channel name, or both on the same names
        for inst in (a, b):
            inst.wait_subscribed(2 if shared else 1)
        return a, b

    yield make
    for inst in made:
        for key in inst.client.scan_iter(match=f"{prefix}:*"):  # what a real publisher wrote beside its notice
            inst.client.delete(key)
        inst.close()


def test_it_keeps_the_notices_of_an_installation_on_database_0_from_one_on_database_1(
    two_installations: Callable[[Naming], tuple[Installation, Installation]],
) -> None:
    a, b = two_installations(channel)
    payload = uuid.uuid4().hex
    a.publish_all(payload)
    assert a.heard(payload) == sorted(a.channels())  # A's own subscriber hears every notice: the check can see
    assert b.heard(payload) == []


def test_it_would_hear_the_other_installation_with_channels_named_by_the_prefix_alone(
    two_installations: Callable[[Naming], tuple[Installation, Installation]],
) -> None:
    a, b = two_installations(prefix_only)
    payload = uuid.uuid4().hex
    a.publish_all(payload)
    assert a.heard(payload) == sorted(a.channels())
    assert b.heard(payload) == sorted(b.channels())  # pub/sub ignores the database: this is the cross-talk


def test_it_wakes_only_the_local_agent_of_the_installation_whose_backend_changed_a_deployment(
    two_installations: Callable[[Naming], tuple[Installation, Installation]],
) -> None:
    a, b = two_installations(channel)
    assert protocol.notify_channel(b.prefix, b.url) in b.channels()  # what B's agent listens on, B hears too

    LocalBackend(redis_url=a.url, prefix=a.prefix).apply_deployment(deployment_spec(7, 1))

    assert a.heard("7") == [protocol.notify_channel(a.prefix, a.url)]
    assert b.heard("7") == []
