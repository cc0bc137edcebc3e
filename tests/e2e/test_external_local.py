"""End to end on the local backend: an external deployment, created through the REST API, becomes ready and serves
completions through the gateway, with no process of the agent's behind it.

The platform is the ``platform`` fixture's (live web API, a real Celery worker with beat, the local agent, the
gateway); the external endpoint is a built-in model server this test starts on loopback, which the operator allows
with ``FRONTDOOR_EXTERNAL_ALLOWED_NETWORKS=127.0.0.0/8`` for the web (this process), the worker and the gateway.
The platform's own listeners stay refused inside that network.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest
from django.conf import settings

from tests.support.gateway import Process, start_modelserver, stop
from tests.support.platform import DEPLOYMENT, Platform, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

MODEL = "frontdoor/sim-chat-external"


@pytest.fixture
def loopback_allowed(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    """Set before the platform starts: the worker and the gateway inherit this process's environment."""
    monkeypatch.setenv("FRONTDOOR_EXTERNAL_ALLOWED_NETWORKS", "127.0.0.0/8")
    settings.FRONTDOOR_EXTERNAL_ALLOWED_NETWORKS = ["127.0.0.0/8"]


@pytest.fixture
def allowed_platform(loopback_allowed: None, platform: Platform) -> Platform:
    return platform


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[Process]:
    server = start_modelserver(tmp_path, "--model-name", MODEL)
    yield server
    stop(server.proc)


def test_an_external_deployment_becomes_ready_and_serves_through_the_gateway(
    allowed_platform: Platform, upstream: Process
) -> None:
    p = allowed_platform
    logs = p.worker.log

    # The platform's own listeners are refused even inside the allowed network.
    redis_port = urlsplit(settings.REDIS_URL).port or 6379
    refused = p.api.post(
        "/deployments/",
        {"name": "sneaky", "runtime": "external", "model": MODEL, "endpoints": [f"http://127.0.0.1:{redis_port}"]},
    )
    assert refused.status_code == 400, refused.text
    assert "platform's own services" in refused.json()["error"]["fields"]["endpoints"][0]

    created = p.api.post(
        "/deployments/",
        {"name": DEPLOYMENT, "runtime": "external", "model": MODEL, "endpoints": [upstream.url]},
    )
    assert created.status_code == 201, created.text
    deployment_id = int(created.json()["id"])

    def ready() -> dict[str, Any] | None:
        found = p.deployment()
        return found if found and found["status"] == "ready" else None

    shown = wait_for(ready, 45, "the external deployment to be ready", logs)
    conditions = {c["type"]: c["status"] for c in shown["conditions"]}
    assert conditions["Ready"] == "True" and conditions["WaitingForCapacity"] == "False", shown["conditions"]
    assert p.revisions()[0]["endpoints"] == [upstream.url]

    def completes() -> str | None:
        try:
            return p.complete() or "(empty)"
        except openai.APIError:
            return None

    assert wait_for(completes, 20, "a completion through the gateway from the external endpoint", logs)
    assert p.replica_pids(deployment_id) == set()  # the agent runs nothing for it
