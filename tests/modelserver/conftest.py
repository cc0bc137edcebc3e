"""Model server fixtures: real server processes on free ports (see tests/support/modelserver.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.modelserver import RunningServer, start_server


@pytest.fixture(scope="session")
def modelserver() -> Iterator[RunningServer]:
    """A default server shared by the tests that do not change its faults."""
    server = start_server()
    yield server
    server.stop()


@pytest.fixture
def make_modelserver() -> Iterator[Callable[..., RunningServer]]:
    """Start servers with extra flags; each is stopped after the test."""
    servers: list[RunningServer] = []

    def make(*flags: str, wait_ready: bool = True, env: dict[str, str] | None = None) -> RunningServer:
        server = start_server(*flags, wait_ready=wait_ready, env=env)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
