"""/metrics: vLLM-style queue gauges, token counters, cancellation on client disconnect."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.support.modelserver import MakeServer, RunningServer, wait_until

STREAM_BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50, "stream": True}


def test_it_serves_prometheus_text(modelserver: RunningServer) -> None:
    answer = modelserver.request("GET", "/metrics")
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.body.decode()
    assert "# TYPE vllm:num_requests_running gauge" in text
    assert "# TYPE vllm:time_to_first_token_seconds histogram" in text
    assert 'vllm:num_requests_waiting{model_name="frontdoor/sim-chat"} 0' in text


def test_it_counts_tokens_as_reported_in_usage(modelserver: RunningServer) -> None:
    before = modelserver.metrics()
    reply = modelserver.client().chat.completions.create(
        model="m", messages=[{"role": "user", "content": "count my tokens"}], max_tokens=5
    )
    after = modelserver.metrics()
    assert reply.usage is not None
    prompt_key = 'vllm:prompt_tokens_total{model_name="frontdoor/sim-chat"}'
    generated_key = 'vllm:generation_tokens_total{model_name="frontdoor/sim-chat"}'
    assert after[prompt_key] - before[prompt_key] == reply.usage.prompt_tokens
    assert after[generated_key] - before[generated_key] == reply.usage.completion_tokens
    ok_key = 'modelserver_requests_total{endpoint="chat",status="200"}'
    assert after[ok_key] == before.get(ok_key, 0) + 1


def test_it_queues_beyond_max_num_seqs_and_cancels_on_disconnect(
    make_modelserver: MakeServer,
) -> None:
    server = make_modelserver("--max-num-seqs", "1", "--ttft-ms", "60000")

    def gauges() -> tuple[float, float]:
        return server.metric("vllm:num_requests_running"), server.metric("vllm:num_requests_waiting")

    async def crowd() -> bool:
        async with aiohttp.ClientSession() as session:
            tasks = [
                asyncio.create_task(session.post(f"{server.base_url}/v1/chat/completions", json=STREAM_BODY))
                for _ in range(3)
            ]
            seen = await asyncio.to_thread(wait_until, lambda: gauges() == (1, 2))
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return seen

    assert asyncio.run(crowd())
    assert wait_until(lambda: server.metric("modelserver_requests_cancelled_total") == 3)
    assert gauges() == (0, 0)


def test_it_stops_generating_when_a_streaming_client_disconnects(
    modelserver: RunningServer, make_modelserver: MakeServer
) -> None:
    # The same prompt answered whole (the simulator is deterministic): how long the full answer is.
    whole = modelserver.client().chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=50
    )
    assert whole.usage is not None
    answer_length = whole.usage.completion_tokens
    assert answer_length > 2
    server = make_modelserver("--tokens-per-s", "4")

    async def read_two_chunks_and_leave() -> int:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{server.base_url}/v1/chat/completions", json=STREAM_BODY) as response,
        ):
            seen = 0
            async for line in response.content:
                if line.startswith(b"data: "):
                    seen += 1
                    if seen == 2:
                        break
            response.close()
        return seen

    assert asyncio.run(read_two_chunks_and_leave()) == 2
    assert wait_until(lambda: server.metric("modelserver_requests_cancelled_total") == 1)
    assert server.metric("vllm:num_requests_running") == 0
    generated = server.metric("vllm:generation_tokens_total")
    assert generated < answer_length  # it stopped instead of finishing an answer nobody reads
    assert server.metrics().get('modelserver_requests_total{endpoint="chat",status="499"}') == 1
