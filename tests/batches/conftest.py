"""The ``batch_platform`` fixture: the platform of the end-to-end tests plus a batch worker, the gateway pointed at
the live server's internal routes, and a ready deployment of a slow built-in model."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest
import redis

from tenants.models import ApiKey, Tenant
from tests.support.batches import BatchWorker, reset_batch_storage
from tests.support.gateway import Process, start_gateway, stop
from tests.support.localagent import agent_factory
from tests.support.platform import DEPLOYMENT, Platform, RestClient, wait_for
from tests.support.worker import SnapshotPublisher, Worker

# Short enough that a killed worker's lines come back within seconds; the claim outlives a line's timeout.
BATCH_ENV = {
    "FRONTDOOR_BATCH_CONCURRENCY": "2",
    "FRONTDOOR_BATCH_LINE_TIMEOUT_S": "5",
    "FRONTDOOR_BATCH_CLAIM_S": "6",
    "FRONTDOOR_BATCH_TASK_SECONDS": "4",
    "FRONTDOOR_BATCH_TICK_SECONDS": "1",
}


@pytest.fixture(autouse=True)
def batch_files_dir(settings: Any, tmp_path: Path) -> Path:
    """Every test here keeps its batch files in its own folder (the processes it starts are told the same one)."""
    reset_batch_storage(settings, tmp_path / "files")
    return tmp_path / "files"


@dataclass
class BatchPlatform:
    platform: Platform
    client: openai.OpenAI  # the gateway, with acme's inference key
    other: openai.OpenAI  # the gateway, with another tenant's inference key
    gateway: Process
    tmp: Path
    env: dict[str, str]
    start_batch_worker: Callable[[], BatchWorker]
    batch_workers: list[BatchWorker]

    def logs(self) -> str:
        parts = [self.platform.worker.log(), *(w.log() for w in self.batch_workers), self.gateway.log()[-3000:]]
        return "\n---\n".join(parts)


@pytest.fixture
def batch_platform(
    live_server: Any,
    acme: Tenant,
    globex: Tenant,
    redis_url: str,
    redis_prefix: str,
    tmp_path: Path,
    settings: Any,
    request: pytest.FixtureRequest,
    batch_files_dir: Path,
) -> Iterator[BatchPlatform]:
    marker = request.node.get_closest_marker("batch_env")
    extra: dict[str, str] = dict(marker.args[0]) if marker else {}
    files_dir = batch_files_dir
    settings.FRONTDOOR_SNAPSHOT_PUBLISH = "queue"
    settings.FRONTDOOR_BATCH_FILES_DIR = str(files_dir)
    for name, value in {**BATCH_ENV, **extra}.items():
        setattr(settings, name, float(value) if "." in value or name.endswith("_S") else int(value))
    queued = {"FRONTDOOR_SNAPSHOT_PUBLISH": "queue"}
    _, manage_key = ApiKey.issue(tenant=acme, name="automation", scopes=["manage"])
    _, inference_key = ApiKey.issue(tenant=acme, name="batch-app", scopes=["inference"])
    _, other_key = ApiKey.issue(tenant=globex, name="other-app", scopes=["inference"])
    with agent_factory(redis_url, redis_prefix, tmp_path) as make_agent, contextlib.ExitStack() as started:
        client = redis.Redis.from_url(redis_url)
        started.callback(client.close)
        agent = make_agent()
        agent_env = {k: v for k, v in agent.env.items() if k.startswith("FRONTDOOR_LOCAL_")}
        gateway = start_gateway(
            tmp_path,
            redis_prefix,
            redis_url,
            FRONTDOOR_KEY_PEPPER=settings.FRONTDOOR_KEY_PEPPER,
            FRONTDOOR_CONTROLPLANE_URL=live_server.url,
        )
        started.callback(stop, gateway.proc)
        env = {
            **agent_env,
            **queued,
            **BATCH_ENV,
            **extra,
            "FRONTDOOR_RESYNC_SECONDS": "5",
            "FRONTDOOR_GATEWAY_URL": gateway.url,
            "FRONTDOOR_BATCH_FILES_DIR": str(files_dir),
        }
        publisher = SnapshotPublisher(tmp_path, redis_prefix, queued)
        started.callback(publisher.stop)
        worker = Worker(tmp_path, redis_prefix, env)
        started.callback(worker.stop)
        batch_workers: list[BatchWorker] = []

        def start_batch_worker() -> BatchWorker:
            started_worker = BatchWorker(tmp_path, redis_prefix, env, len(batch_workers))
            batch_workers.append(started_worker)
            started.callback(started_worker.stop)
            return started_worker

        start_batch_worker()
        api = RestClient(f"{live_server.url}/api/v1/tenants/acme", manage_key)
        gw = openai.OpenAI(base_url=gateway.url + "/v1", api_key=inference_key, max_retries=0, timeout=20)
        other = openai.OpenAI(base_url=gateway.url + "/v1", api_key=other_key, max_retries=0, timeout=20)
        platform = Platform(api, gw, agent, worker, client, redis_prefix)
        bp = BatchPlatform(platform, gw, other, gateway, tmp_path, env, start_batch_worker, batch_workers)
        _deploy_slow_model(bp)
        yield bp


def _deploy_slow_model(bp: BatchPlatform) -> None:
    """A built-in chat model that takes a while per request, so a batch of a few dozen lines runs for seconds."""
    created = bp.platform.api.post(
        "/deployments/",
        {
            "name": DEPLOYMENT,
            "runtime": "builtin",
            "model": "frontdoor/sim-chat",
            "min_replicas": 1,
            "max_replicas": 1,
            "args": ["--ttft-ms", "150"],
        },
    )
    assert created.status_code == 201, created.text

    def completes() -> str | None:
        try:
            return bp.platform.complete() or "(empty)"
        except openai.APIError:
            return None

    wait_for(completes, 60, "a completion through the gateway", bp.logs)
