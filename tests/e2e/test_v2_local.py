"""Acceptance: an Open Inference Protocol (v2) deployment on the local backend, created through the REST API, served
by a built-in v2 replica the local agent starts, and called through the gateway with the official ``tritonclient``.

Create (``protocol: v2``) → its replica becomes ready → ``tritonclient`` sees the model ready, reads its metadata and
infers → the usage event counts the inferences → ``/v1/models`` does not list it (it speaks no OpenAI).
"""

from __future__ import annotations

from typing import Any, cast
from urllib.parse import urlsplit

import numpy as np
import pytest
import tritonclient.http as triton

from controlplane.contracts import usage_events
from controlplane.contracts.redis_names import usage_stream_key
from tests.support.platform import DEPLOYMENT, Platform, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]


def inferences_metered(p: Platform, deployment_id: int) -> int:
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], p.redis.xrange(usage_stream_key(p.prefix)))
    total = 0
    for _id, fields in entries:
        if fields.get(usage_events.DEPLOYMENT.encode()) == str(deployment_id).encode():
            total += int(fields.get(usage_events.INFERENCES.encode(), b"0"))
    return total


def test_a_v2_deployment_serves_tritonclient_through_the_gateway(platform: Platform) -> None:
    p = platform
    logs = p.worker.log
    body = {"name": DEPLOYMENT, "runtime": "builtin", "protocol": "v2", "model": "frontdoor/ranker", "max_replicas": 1}
    created = p.api.post("/deployments/", body)
    assert created.status_code == 201, created.text
    assert created.json()["protocol"] == "v2"
    deployment_id = int(created.json()["id"])

    def ready() -> dict[str, Any] | None:
        found = p.deployment()
        return found if found and found["status"] == "ready" and found["ready_replicas"] == 1 else None

    wait_for(ready, 45, "the v2 deployment to be ready", logs)
    gateway = urlsplit(str(p.gateway.base_url))
    client = triton.InferenceServerClient(f"{gateway.hostname}:{gateway.port}")
    key = str(p.gateway.api_key)

    def headers() -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}  # fresh each call: tritonclient writes into the one it is given

    # The snapshot may trail the API by a second.
    wait_for(lambda: client.is_model_ready(DEPLOYMENT, headers=headers()) or None, 15, "the model ready", logs)
    metadata = client.get_model_metadata(DEPLOYMENT, headers=headers())
    assert metadata["name"] == DEPLOYMENT
    assert {t["name"]: t["datatype"] for t in metadata["inputs"]} == {"user_id": "INT64", "item_id": "INT64"}

    users = triton.InferInput("user_id", [3], "INT64")
    users.set_data_from_numpy(np.array([0, 1, 2], dtype=np.int64))
    items = triton.InferInput("item_id", [3], "INT64")
    items.set_data_from_numpy(np.array([5, 6, 7], dtype=np.int64))
    result = client.infer(DEPLOYMENT, [users, items], headers=headers())
    scores = result.as_numpy("score")
    assert scores is not None and scores.shape == (3,)
    assert all(0.0 < float(s) < 1.0 for s in scores)  # sigmoid scores of a real model, one per pair
    client.close()

    assert wait_for(lambda: inferences_metered(p, deployment_id) == 3 or None, 10, "the inferences metered", logs)
    assert DEPLOYMENT not in [m.id for m in p.gateway.models.list()]
