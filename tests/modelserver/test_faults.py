"""Fault knobs: injected errors, truncated streams, stalls, startup delay, and the admin endpoint."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import openai
import pytest

from tests.support.modelserver import MakeServer, RunningServer, start_server, wait_until

CHAT_BODY = {"model": "m", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8}


@pytest.fixture(scope="module")
def faulty() -> Iterator[RunningServer]:
    server = start_server()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _clear_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "faulty" in request.fixturenames:
        request.getfixturevalue("faulty").set_faults(error_rate=0, stall_ms=0, truncate_after=0, startup_delay_ms=0)


async def read_stream(url: str, body: dict[str, object]) -> tuple[list[bytes], BaseException | None]:
    """The ``data:`` lines of a stream, and the error that ended it early, if any."""
    lines: list[bytes] = []
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        assert response.status == 200
        try:
            async for line in response.content:
                if line.startswith(b"data: "):
                    lines.append(line.strip())
        except aiohttp.ClientError as exc:
            return lines, exc
    return lines, None


def test_it_fails_exactly_the_configured_fraction_of_requests(faulty: RunningServer) -> None:
    faulty.set_faults(error_rate=0.5)
    statuses = [faulty.request("POST", "/v1/chat/completions", CHAT_BODY).status for _ in range(6)]
    assert statuses == [200, 500, 200, 500, 200, 500]


def test_it_fails_in_openai_shape_so_the_client_raises_a_server_error(faulty: RunningServer) -> None:
    faulty.set_faults(error_rate=1)
    before = faulty.metric("modelserver_injected_errors_total")
    with pytest.raises(openai.InternalServerError) as caught:
        faulty.client().chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 500
    assert caught.value.code == "simulated_error"
    assert faulty.metric("modelserver_injected_errors_total") == before + 1


def test_it_serves_again_once_the_error_rate_is_cleared(faulty: RunningServer) -> None:
    faulty.set_faults(error_rate=1)
    assert faulty.request("POST", "/v1/embeddings", {"model": "e", "input": "x"}).status == 500
    faulty.set_faults(error_rate=0)
    assert faulty.request("POST", "/v1/embeddings", {"model": "e", "input": "x"}).status == 200


def test_it_cuts_a_stream_after_n_chunks_without_done(faulty: RunningServer) -> None:
    faulty.set_faults(truncate_after=3)
    before = faulty.metric("modelserver_streams_truncated_total")
    lines, error = asyncio.run(read_stream(f"{faulty.base_url}/v1/chat/completions", {**CHAT_BODY, "stream": True}))
    assert len(lines) == 3
    assert b"data: [DONE]" not in lines
    assert isinstance(error, aiohttp.ClientPayloadError)  # the connection closed mid-body
    assert faulty.metric("modelserver_streams_truncated_total") == before + 1


def test_it_streams_whole_when_truncation_is_off(faulty: RunningServer) -> None:
    lines, error = asyncio.run(
        read_stream(f"{faulty.base_url}/v1/completions", {**CHAT_BODY, "prompt": "p", "stream": True})
    )
    assert error is None
    assert lines[-1] == b"data: [DONE]"


def test_it_counts_a_client_that_gives_up_during_a_stall_as_cancelled(faulty: RunningServer) -> None:
    faulty.set_faults(stall_ms=60_000)
    before = faulty.metric("modelserver_requests_cancelled_total")

    async def give_up() -> None:
        timeout = aiohttp.ClientTimeout(total=0.3)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            with pytest.raises(asyncio.TimeoutError):
                await session.post(f"{faulty.base_url}/v1/chat/completions", json=CHAT_BODY)

    asyncio.run(give_up())
    assert wait_until(lambda: faulty.metric("modelserver_requests_cancelled_total") == before + 1)
    assert faulty.metric("vllm:num_requests_running") == 0


def test_it_refuses_unknown_or_bad_fault_settings(faulty: RunningServer) -> None:
    for body in ({"explode": True}, {"error_rate": 2}, {"stall_ms": "slow"}, {"truncate_after": 1.5}):
        answer = faulty.request("POST", "/admin/faults", body)
        assert answer.status == 400, body
        assert answer.json()["error"]["code"] == "invalid_value"


def test_it_shows_the_current_faults(faulty: RunningServer) -> None:
    faulty.set_faults(stall_ms=5)
    current = faulty.request("GET", "/admin/faults").json()
    assert current == {"error_rate": 0.0, "stall_ms": 5, "truncate_after": 0, "startup_delay_ms": 0, "ready": True}


def test_it_reports_503_until_the_startup_delay_has_passed(make_modelserver: MakeServer) -> None:
    server = make_modelserver("--startup-delay-ms", "2500", wait_ready=False)
    health = server.request("GET", "/health")
    assert health.status == 503
    assert health.json() == {"status": "starting"}
    refused = server.request("POST", "/v1/chat/completions", CHAT_BODY)
    assert refused.status == 503
    assert refused.json()["error"]["code"] == "model_not_ready"
    assert wait_until(lambda: server.request("GET", "/health").status == 200, timeout=15)
    assert server.request("POST", "/v1/chat/completions", CHAT_BODY).status == 200


def test_it_goes_unready_again_when_a_startup_delay_is_set_at_run_time(faulty: RunningServer) -> None:
    faulty.set_faults(startup_delay_ms=60_000)
    assert faulty.request("GET", "/health").status == 503
    faulty.set_faults(startup_delay_ms=0)
    assert faulty.request("GET", "/health").status == 200


def test_it_takes_faults_from_the_environment(make_modelserver: MakeServer) -> None:
    server = make_modelserver(env={"MODELSERVER_ERROR_RATE": "1"})
    assert server.request("POST", "/v1/chat/completions", CHAT_BODY).status == 500
