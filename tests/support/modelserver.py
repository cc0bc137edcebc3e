"""Runs the real model server as a subprocess on a free port and talks to it over HTTP (used by conftest.py)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class RunningServer:
    """A model server process and the ways tests talk to it."""

    host: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    clients: list[openai.OpenAI] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self, **kwargs: Any) -> openai.OpenAI:
        """The official client, without retries so injected failures are seen as they happen."""
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 20.0)
        client = openai.OpenAI(base_url=f"{self.base_url}/v1", api_key="unused", **kwargs)
        self.clients.append(client)
        return client

    def request(self, method: str, path: str, body: bytes | str | dict[str, Any] | None = None) -> HttpAnswer:
        if isinstance(body, dict):
            body = json.dumps(body)
        conn = http.client.HTTPConnection(self.host, self.port, timeout=20)
        try:
            headers = {"content-type": "application/json"} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return HttpAnswer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            conn.close()

    def metrics(self) -> dict[str, float]:
        """``/metrics`` as {"name{labels}": value}."""
        answer = self.request("GET", "/metrics")
        assert answer.status == 200
        samples: dict[str, float] = {}
        for line in answer.body.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    def metric(self, prefix: str) -> float:
        """The one sample whose name (with labels) starts with ``prefix``."""
        matches = [value for name, value in self.metrics().items() if name.startswith(prefix)]
        assert len(matches) == 1, f"expected one sample for {prefix}, got {matches}"
        return matches[0]

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        answer = self.request("POST", "/admin/faults", changes)
        assert answer.status == 200, answer.body
        result: dict[str, Any] = answer.json()
        return result

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes (bounded: tests never hang on it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def start_server(*flags: str, wait_ready: bool = True, env: dict[str, str] | None = None) -> RunningServer:
    host, port = "127.0.0.1", free_port()
    log = tempfile.NamedTemporaryFile(prefix="modelserver-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "modelserver", "--host", host, "--port", str(port), "--log-level", "info", *flags],
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )
    log.close()
    server = RunningServer(host, port, process, Path(log.name))

    def answering() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"model server exited with {process.returncode}:\n{server.log()}")
        try:
            status = server.request("GET", "/health").status
        except OSError:
            return False
        return status == 200 or not wait_ready

    if not wait_until(answering, timeout=START_TIMEOUT_S, interval=0.05):
        server.stop()
        raise AssertionError(f"model server did not come up:\n{server.log()}")
    return server


MakeServer = Callable[..., RunningServer]
