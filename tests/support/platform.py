"""The whole local platform for end-to-end tests: REST API, worker, agent and gateway, driven like a user would."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import openai
import redis

from controlplane.contracts import usage_events
from controlplane.contracts.redis_names import usage_stream_key
from tests.support.localagent import Agent
from tests.support.worker import Worker

T = TypeVar("T")
DEPLOYMENT = "chat"


def wait_for(probe: Callable[[], T | None], timeout_s: float, what: str, logs: Callable[[], str]) -> T:
    """Poll ``probe`` every 0.25 s until it returns something truthy; fail with the worker's log tail after that."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n--- worker log ---\n{logs()}")


@dataclass
class Reply:
    status_code: int
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


@dataclass
class RestClient:
    """A JSON client for the REST API over real HTTP, authenticated with an API key."""

    base_url: str
    key: str

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Reply:
        assert self.base_url.startswith("http://")
        request = urllib.request.Request(  # noqa: S310 - loopback http only (asserted above)
            self.base_url + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
                return Reply(response.status, response.read().decode())
        except urllib.error.HTTPError as exc:
            return Reply(exc.code, exc.read().decode())

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

    def post(self, path: str, body: dict[str, Any]) -> Reply:
        return self.request("POST", path, body)

    def patch(self, path: str, body: dict[str, Any]) -> Reply:
        return self.request("PATCH", path, body)

    def delete(self, path: str) -> Reply:
        return self.request("DELETE", path)


@dataclass
class Platform:
    api: RestClient  # the REST API, authenticated with a key of scope "manage"
    gateway: openai.OpenAI  # the gateway, with a key of scope "inference"
    agent: Agent
    worker: Worker
    redis: redis.Redis
    prefix: str

    def deployment(self) -> dict[str, Any] | None:
        response = self.api.get(f"/deployments/{DEPLOYMENT}/")
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        return dict(response.json())

    def revisions(self) -> list[dict[str, Any]]:
        response = self.api.get(f"/deployments/{DEPLOYMENT}/revisions/")
        assert response.status_code == 200, response.text
        body = response.json()
        return list(body["results"] if isinstance(body, dict) else body)

    def complete(self) -> str:
        answer = self.gateway.chat.completions.create(
            model=DEPLOYMENT, messages=[{"role": "user", "content": "hello"}], max_tokens=4
        )
        return answer.choices[0].message.content or ""

    def served_revisions(self, deployment_id: int) -> set[int]:
        """Revision ids in the gateway's usage events for the deployment (docs/contracts.md, "Usage events")."""
        seen: set[int] = set()
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], self.redis.xrange(usage_stream_key(self.prefix)))
        deployment, revision = usage_events.DEPLOYMENT.encode(), usage_events.REVISION.encode()
        for _id, fields in entries:
            if fields.get(deployment) == str(deployment_id).encode() and fields.get(revision):
                seen.add(int(fields[revision]))
        return seen

    def replica_pids(self, deployment_id: int) -> set[int]:
        return {r["pid"] for r in self.agent.replicas() if str(r["key"]).startswith(f"d{deployment_id}-")}
