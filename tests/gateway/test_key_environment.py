"""A key authenticates only with the environment segment it was issued with (``fd_<env>_<id>_<secret>``)."""

from __future__ import annotations

import httpx2 as httpx

from tests.support.gateway import Key, Process, World

WRONG_KEY = {
    "error": {
        "message": "Incorrect API key provided.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
}


def with_env(key: Key, env: str) -> str:
    _, _, key_id, secret = key.full.split("_")
    return f"fd_{env}_{key_id}_{secret}"


def models(gateway: Process, presented: str) -> httpx.Response:
    return httpx.get(gateway.url + "/v1/models", headers={"authorization": f"Bearer {presented}"}, timeout=5)


def test_it_refuses_a_test_key_presented_as_a_live_one(gateway: Process, world: World) -> None:
    key = world.key(world.tenant(), scopes=("read",))  # issued as fd_test_...
    world.publish(gateway)

    assert models(gateway, key.full).status_code == 200
    refused = models(gateway, with_env(key, "live"))

    assert refused.status_code == 401
    assert refused.json() == WRONG_KEY  # the answer of a wrong secret: which part was wrong is not said


def test_it_refuses_a_live_key_presented_as_a_test_one(gateway: Process, world: World) -> None:
    key = world.key(world.tenant(), scopes=("read",))
    world.keys[key.key_id]["env"] = "live"
    world.publish(gateway)
    live = with_env(key, "live")

    assert models(gateway, live).status_code == 200  # verified, hence cached: the cache must not open the other
    for env in ("test", "staging", "LIVE"):
        refused = models(gateway, with_env(key, env))
        assert refused.status_code == 401
        assert refused.json() == WRONG_KEY
    assert models(gateway, live).status_code == 200


def test_it_takes_a_key_without_a_published_environment_for_a_live_key(gateway: Process, world: World) -> None:
    key = world.key(world.tenant(), scopes=("read",))
    del world.keys[key.key_id]["env"]  # as a control plane that published no environment (it issued only live keys)
    world.publish(gateway)

    assert models(gateway, with_env(key, "live")).status_code == 200
    assert models(gateway, key.full).json() == WRONG_KEY
