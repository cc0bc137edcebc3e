"""Every gateway route × every kind of caller: who gets in, who gets 401, 403 or 404, in the route's own error shape.

The routes are the gateway's own tables (``gateway.routes.INFERENCE_ROUTES``, the v2 paths, /v1/models), so a route
added to them without a row here fails ``test_the_matrix_names_every_route``. Callers: no key, a key that does not
exist, a revoked key, a key of a suspended tenant, a read-only key, another tenant's inference key, and the owner's
inference key. Reaching a replica needs the inference scope; what the gateway answers from its snapshot (the model
lists, health, a model's readiness) a read key may ask too. A model of another tenant is a 404, never a 403.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from gateway.routes import INFERENCE_ROUTES
from gateway.v2_paths import SERVER_ROUTES
from tests.support.gateway import Process, World, start_modelserver, stop

V2_BODY = {
    "inputs": [
        {"name": "user_id", "shape": [1], "datatype": "INT64", "data": [1]},
        {"name": "item_id", "shape": [1], "datatype": "INT64", "data": [2]},
    ]
}
# (method, path, body, needs the inference scope, names a model of the owner)
ROUTES: list[tuple[str, str, dict[str, Any] | None, bool, bool]] = [
    ("POST", "/v1/chat/completions", {"model": "chat", "messages": [{"role": "user", "content": "hi"}]}, True, True),
    ("POST", "/v1/completions", {"model": "chat", "prompt": "hi", "max_tokens": 2}, True, True),
    ("POST", "/v1/embeddings", {"model": "chat", "input": "hi"}, True, True),
    ("POST", "/v1/images/generations", {"model": "painter", "prompt": "hi", "size": "32x32"}, True, True),
    ("GET", "/v1/models", None, False, False),
    ("GET", "/v2", None, False, False),
    ("GET", "/v2/health/live", None, False, False),
    ("GET", "/v2/health/ready", None, False, False),
    ("GET", "/v2/models/ranker", None, True, True),
    ("GET", "/v2/models/ranker/versions/1", None, True, True),
    ("GET", "/v2/models/ranker/ready", None, False, True),
    ("GET", "/v2/models/ranker/versions/1/ready", None, False, True),
    ("POST", "/v2/models/ranker/infer", V2_BODY, True, True),
    ("POST", "/v2/models/ranker/versions/1/infer", V2_BODY, True, True),
]
CALLERS = ("anonymous", "unknown", "revoked", "suspended", "read", "other_tenant", "owner")


@pytest.fixture(scope="module")
def ranker(session_tmp: Path) -> Iterator[Process]:
    proc = start_modelserver(session_tmp, "--protocol", "v2", "--model-name", "ranker-up")
    yield proc
    stop(proc.proc)


@pytest.fixture(scope="module")
def keys(world: World, gateway: Process, upstream: Process, ranker: Process) -> dict[str, str | None]:
    owner = world.tenant()
    other = world.tenant()
    suspended = world.tenant(status="suspended")
    world.deployment(owner, "chat", [upstream.url])
    world.deployment(owner, "painter", [upstream.url], image_generation=True)
    world.deployment(owner, "ranker", [ranker.url], model="ranker-up", protocol="v2", min_replicas=1)
    world.deployment(suspended, "ranker", [ranker.url], model="ranker-up", protocol="v2")
    world.deployment(other, "elsewhere", [upstream.url])
    owner_key = world.key(owner).full
    callers: dict[str, str | None] = {
        "anonymous": None,
        "unknown": owner_key[:-6] + "zzzzzz",
        "revoked": world.key(owner, revoked=True).full,
        "suspended": world.key(suspended).full,
        "read": world.key(owner, scopes=("read",)).full,
        "other_tenant": world.key(other).full,
        "owner": owner_key,
    }
    world.publish(gateway)
    return callers


def expected(caller: str, needs_inference: bool, names_model: bool) -> int:
    if caller in ("anonymous", "unknown", "revoked"):
        return 401
    if caller == "suspended":
        return 403
    if caller == "read" and needs_inference:
        return 403
    if caller == "other_tenant" and names_model:
        return 404
    return 200


def test_the_matrix_names_every_route() -> None:
    listed = {path for _, path, *_ in ROUTES}
    assert set(INFERENCE_ROUTES) <= listed
    assert set(SERVER_ROUTES) <= listed
    assert {"/v2/models/ranker", "/v2/models/ranker/ready", "/v2/models/ranker/infer"} <= listed


@pytest.mark.parametrize(
    ("method", "path", "body", "needs_inference", "names_model"), ROUTES, ids=[r[1] for r in ROUTES]
)
def test_every_caller_gets_what_it_may(
    gateway: Process,
    keys: dict[str, str | None],
    method: str,
    path: str,
    body: dict[str, Any] | None,
    needs_inference: bool,
    names_model: bool,
) -> None:
    v2 = path.startswith("/v2")
    got = {}
    for caller in CALLERS:
        key = keys[caller]
        headers = {"authorization": f"Bearer {key}"} if key else {}
        answer = httpx.request(method, gateway.url + path, json=body, headers=headers, timeout=20)
        got[caller] = answer.status_code
        if answer.status_code >= 400:  # every refusal in the route's own shape
            error = answer.json()["error"]
            assert isinstance(error, str) if v2 else isinstance(error, dict), (caller, answer.text)
    assert got == {c: expected(c, needs_inference, names_model) for c in CALLERS}
