"""Helpers for the gateway tests: real gateway and model-server processes, real Redis, snapshots published by hand.

The control plane normally publishes the config snapshot; here ``World`` builds the same document
(``controlplane.contracts.snapshot``) and publishes it with the contract's writer, the control plane's own store
script (a version allocated, the snapshot and version set, the version PUBLISHed). ``World.network``, when set, is
published as the snapshot's ``network`` section (the address policy of external endpoints); a test that sets it puts
it back to None when done.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx
import redis

from controlplane.contracts.keyformat import generate_key, hash_secret
from controlplane.contracts.redis_names import usage_stream_key
from controlplane.contracts.snapshot import deployment_key, publish_document

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
BASE_PREFIX = os.environ.get("FRONTDOOR_REDIS_PREFIX", "fdt-gw")
PEPPER = "gateway-test-pepper"
SIM_MODEL = "frontdoor/sim-chat"

logging.getLogger("httpx2").setLevel(logging.WARNING)  # one INFO line per request drowns the output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], deadline_s: float = 20.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path
    metrics_url: str = ""  # a gateway's metrics listener (never its inference port)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_modelserver(tmp: Path, *flags: str) -> Process:
    port = free_port()
    log_path = tmp / f"modelserver-{port}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "modelserver", "--host", "127.0.0.1", "--port", str(port), *flags],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", proc)
    return Process(proc, url, log_path)


def start_gateway(tmp: Path, prefix: str, redis_url: str = REDIS_URL, **env: str) -> Process:
    port = free_port()
    log_path = tmp / f"gateway-{port}.log"
    environment = {
        **os.environ,
        "REDIS_URL": redis_url,
        "FRONTDOOR_REDIS_PREFIX": prefix,
        "FRONTDOOR_KEY_PEPPER": PEPPER,
        "FRONTDOOR_GATEWAY_COLD_HOLD_S": "3",
        "FRONTDOOR_GATEWAY_METRICS_PORT": str(free_port()),  # each gateway its own; never a `make run` one's
        **env,
    }
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz", proc)
    return Process(proc, url, log_path, f"http://127.0.0.1:{environment['FRONTDOOR_GATEWAY_METRICS_PORT']}")


@dataclass
class Key:
    """An issued API key: ``full`` is what a client sends; ``id`` is the ApiKey primary key in usage events."""

    full: str
    key_id: str
    id: int
    tenant: str


@dataclass
class World:
    """The control plane's state as the gateway sees it; ``publish()`` writes it to Redis as a new version."""

    client: redis.Redis
    prefix: str
    keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    tenants: dict[str, dict[str, Any]] = field(default_factory=dict)
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    network: dict[str, Any] | None = None  # the snapshot's "network" section; None publishes none
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1000))

    def tenant(self, status: str = "active", **limits: int | None) -> str:
        slug = f"t{uuid.uuid4().hex[:10]}"
        self.tenants[slug] = {
            "id": next(self._ids),
            "status": status,
            "limits": {
                "requests_per_minute": None,
                "tokens_per_minute": None,
                "max_concurrent_requests": None,
                "monthly_token_budget": None,
                **limits,
            },
        }
        return slug

    def key(
        self,
        tenant: str,
        scopes: tuple[str, ...] = ("inference",),
        revoked: bool = False,
        expires_at: float | None = None,
        **limits: int | None,
    ) -> Key:
        full, parsed = generate_key("test")
        entry = {
            "id": next(self._ids),
            "env": parsed.env,
            "hash": hash_secret(parsed.secret, PEPPER),
            "tenant": tenant,
            "scopes": list(scopes),
            "expires_at": expires_at,
            "revoked": revoked,
            "limits": {
                "requests_per_minute": None,
                "tokens_per_minute": None,
                "max_concurrent_requests": None,
                **limits,
            },
        }
        self.keys[parsed.key_id] = entry
        return Key(full, parsed.key_id, entry["id"], tenant)

    def deployment(
        self,
        tenant: str,
        name: str,
        endpoints: list[str] | None = None,
        revisions: list[dict[str, Any]] | None = None,
        model: str = SIM_MODEL,
        timeout_s: float = 30,
        max_concurrent: int | None = None,
        state: str = "running",
        runtime: str = "builtin",
        min_replicas: int = 0,
        protocol: str | None = None,
        image_generation: bool = False,
    ) -> dict[str, Any]:
        dep_id = next(self._ids)
        if revisions is None:
            revisions = [{"id": next(self._ids), "name": "r1", "weight": 100, "endpoints": list(endpoints or [])}]
        doc = {
            "id": dep_id,
            "tenant": tenant,
            "name": name,
            "model": model,
            "runtime": runtime,
            "state": state,
            "min_replicas": min_replicas,
            "max_replicas": 4,
            "max_concurrent_requests": max_concurrent,
            "timeout_s": timeout_s,
            "created": 1764201600,
            "revisions": revisions,
        }
        if protocol is not None:
            doc["protocol"] = protocol
        if image_generation:
            doc["image_generation"] = True
        self.deployments[deployment_key(tenant, name)] = doc
        return doc

    def publish(self, *gateways: Process, notify_channel: str | None = None) -> int:
        """Publish a new snapshot version; when gateways are given, wait (bounded) until each has loaded it.

        ``notify_channel``: where the notice goes instead of the installation's config channel (a channel nobody
        listens on loses it).
        """
        version = publish_document(
            self.client,
            self.prefix,
            self.keys,
            self.tenants,
            self.deployments,
            self.network,
            notify_channel=notify_channel,
        )
        for gw in gateways:
            wait_for_version(gw, version)
        return version


def wait_for_version(gw: Process, version: int, deadline_s: float = 5.0) -> float:
    """Seconds until ``gw`` serves snapshot ``version`` (raises past the deadline)."""
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        if httpx.get(gw.url + "/healthz", timeout=1).json()["snapshot_version"] >= version:
            return time.monotonic() - start
        time.sleep(0.01)
    raise AssertionError(f"{gw.url} did not load snapshot {version} within {deadline_s} s")


def clear_prefix(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])


def usage_events(client: redis.Redis, prefix: str, key: Key) -> list[dict[str, str]]:
    """The usage events written for ``key`` (decoded)."""
    events = []
    for _, fields in client.xrange(usage_stream_key(prefix)):
        decoded = {k.decode(): v.decode() for k, v in fields.items()}
        if decoded["key"] == str(key.id):
            events.append(decoded)
    return events
