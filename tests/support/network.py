"""A guard for refusal tests: any connection this process opens to an address outside 127.0.0.0/8 (or ::1) fails."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest


def _loopback(address: Any) -> bool:
    if not isinstance(address, tuple):  # a unix socket path
        return True
    try:
        return ipaddress.ip_address(str(address[0]).split("%")[0]).is_loopback
    except ValueError:
        return False  # a name: tests connect to literal loopback addresses only


@contextmanager
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Yields the non-loopback addresses something tried to reach (and refuses each)."""
    attempts: list[Any] = []
    connect, connect_ex = socket.socket.connect, socket.socket.connect_ex

    def guarded(method: Any) -> Any:
        def call(self: socket.socket, address: Any) -> Any:
            if not _loopback(address):
                attempts.append(address)
                raise OSError(f"a test tried to connect to {address!r}, outside 127.0.0.0/8")
            return method(self, address)

        return call

    with monkeypatch.context() as patch:
        patch.setattr(socket.socket, "connect", guarded(connect))
        patch.setattr(socket.socket, "connect_ex", guarded(connect_ex))
        yield attempts
