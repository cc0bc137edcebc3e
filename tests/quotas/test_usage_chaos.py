"""Chaos: a real Celery worker rolling up usage is killed with SIGKILL mid-run, twice; nothing is lost or doubled."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings
from django.db import connection

from controlplane.celery import app
from controlplane.contracts.redis_names import usage_stream_key
from controlplane.redis import get_redis
from deployments.models import ModelDeployment
from quotas.models import UsageEventSeen, UsageRollup
from quotas.rollup import GROUP
from tenants.models import ApiKey, Tenant
from tests.support.isolation import celery_key

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
EVENTS = 5_000
DUPLICATES = 250  # re-sent events (same request id), as a retried XADD would
CHUNK = 250
KILL_AT = (1_000, 3_000)  # kill the worker once the committed count passes each of these


class Worker:
    """``celery -A controlplane worker --pool=solo`` on a queue of our own, against the test database."""

    def __init__(self, queue: str, prefix: str, log_dir: Path) -> None:
        self.queue = queue
        self.env = {
            **os.environ,
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{connection.settings_dict['NAME']}",
            "REDIS_URL": settings.REDIS_URL,
            "CELERY_BROKER_URL": settings.REDIS_URL,
            "FRONTDOOR_REDIS_PREFIX": prefix,
            "LOG_LEVEL": "WARNING",
        }
        self.log_dir = log_dir
        self.starts = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.starts += 1
        log = (self.log_dir / f"worker-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "controlplane", "worker", "--pool=solo", "-Q", self.queue,
             "-n", f"chaos-{self.starts}-{uuid.uuid4().hex[:6]}@%h", "--without-heartbeat", "--without-gossip",
             "--without-mingle", "-l", "WARNING"],
            cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def kill9(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.log_dir.glob("worker-*.log")))


def forget_queue(r: redis.Redis, queue: str) -> None:
    """Remove the broker's traces of our queue, including the task a killed worker never acknowledged.

    Celery's keys carry the run's key prefix: ``unacked`` here is the run's, never an installation's.
    """
    r.delete(celery_key(queue), *r.scan_iter(match=celery_key(f"_kombu.binding*{queue}")))
    r.zrem(celery_key("_kombu.binding_deadlines"), queue)
    for tag, raw in r.hscan_iter(celery_key("unacked")):
        if json.loads(raw)[-1] == queue:  # [message, exchange, routing key]
            r.hdel(celery_key("unacked"), tag)
            r.zrem(celery_key("unacked_index"), tag)


def make_events(tenant: Tenant, keys: list[ApiKey], deployments: list[ModelDeployment]) -> list[dict[str, Any]]:
    rng = random.Random(42)
    now = time.time()
    events = [
        {
            "rid": uuid.uuid4().hex,
            "ts": now - rng.uniform(0, 600),
            "tenant": tenant.pk,
            "key": rng.choice(keys).pk,
            "deployment": rng.choice(deployments).pk,
            "revision": "",
            "status": rng.choice([200, 200, 200, 200, 400, 429, 499, 500, 503]),
            "prompt_tokens": rng.randint(0, 2000),
            "completion_tokens": rng.randint(0, 2000),
            "latency_ms": round(rng.uniform(1, 3000), 3),
            "ttft_ms": "",
        }
        for _ in range(EVENTS)
    ]
    resent = [dict(e) for e in rng.sample(events, DUPLICATES)]
    mixed = events + resent
    rng.shuffle(mixed)
    return mixed


def expected(events: list[dict[str, Any]]) -> dict[tuple[Any, ...], Counter[str]]:
    totals: dict[tuple[Any, ...], Counter[str]] = {}
    seen: set[str] = set()
    for e in events:
        if e["rid"] in seen:
            continue
        seen.add(e["rid"])
        c = totals.setdefault((int(e["ts"] // 60) * 60, e["key"], e["deployment"]), Counter())
        c["requests"] += 1
        c["errors"] += int(e["status"] == 429 or e["status"] >= 500)
        c["prompt_tokens"] += e["prompt_tokens"]
        c["completion_tokens"] += e["completion_tokens"]
        c["latency_ms_sum"] += round(e["latency_ms"])
    return totals


def actual() -> dict[tuple[Any, ...], Counter[str]]:
    fields = ("requests", "errors", "prompt_tokens", "completion_tokens", "latency_ms_sum")
    return {
        (int(row["minute"].timestamp()), row["api_key_id"], row["deployment_id"]): Counter({f: row[f] for f in fields})
        for row in UsageRollup.unscoped_objects.values("minute", "api_key_id", "deployment_id", *fields)
    }


def fully_consumed(r: redis.Redis, stream: str) -> bool:
    groups = r.xinfo_groups(stream)
    if not groups:
        return False
    return int(r.xpending(stream, GROUP)["pending"]) == 0 and groups[0]["lag"] == 0


def test_it_loses_and_doubles_nothing_when_the_worker_is_killed(redis_prefix: str, tmp_path: Path) -> None:
    tenant = Tenant.objects.create(slug="acme", name="Acme")
    keys = [ApiKey.issue(tenant=tenant, name=f"k{i}", scopes=["inference"])[0] for i in range(3)]
    deployments = [
        ModelDeployment.unscoped_objects.create(tenant=tenant, name=f"d{i}", model="m", min_replicas=0)
        for i in range(2)
    ]
    events = make_events(tenant, keys, deployments)
    unique = len({e["rid"] for e in events})
    r, stream, queue = get_redis(), usage_stream_key(redis_prefix), f"{redis_prefix}-rollup-queue"
    task_kwargs = {"batch_size": 100, "claim_idle_ms": 1000, "max_seconds": 1.0}
    worker = Worker(queue, redis_prefix, tmp_path)
    kills: list[int] = []  # committed count at each kill
    pending_at_kill: list[int] = []  # entries delivered to the killed worker and not acknowledged
    fed = 0
    worker.start()
    try:
        deadline = time.monotonic() + 240
        while True:
            assert time.monotonic() < deadline, f"not consumed in time; worker logs:\n{worker.logs()}"
            if fed < len(events):  # feed while the worker runs, so every kill lands with work in flight
                pipe = r.pipeline(transaction=False)
                for e in events[fed : fed + CHUNK]:
                    pipe.xadd(stream, e)
                pipe.execute()
                fed += CHUNK
            if r.llen(celery_key(queue)) == 0:
                app.send_task("quotas.rollup_usage", kwargs=task_kwargs, queue=queue)
            committed = UsageEventSeen.objects.count()
            if len(kills) < len(KILL_AT) and committed > KILL_AT[len(kills)]:
                worker.kill9()
                kills.append(committed)
                pending_at_kill.append(int(r.xpending(stream, GROUP)["pending"]))
                worker.start()
            if fed >= len(events) and committed == unique and fully_consumed(r, stream):
                break
            time.sleep(0.05)
    finally:
        worker.stop()
        forget_queue(r, queue)

    print(
        f"\nkilled at committed counts {kills} with {pending_at_kill} entries unacknowledged; "
        f"{worker.starts} worker starts; {unique} unique events"
    )
    assert len(kills) == len(KILL_AT)
    assert all(k < unique for k in kills)  # each kill happened with events still to roll up
    assert UsageEventSeen.objects.count() == unique
    assert sum(c["requests"] for c in actual().values()) == unique
    assert actual() == expected(events)
