"""The local agent as a real process: it runs, restarts, adopts and stops real model-server replicas.

Desired state is written through the real LocalBackend; replicas are real ``python -m modelserver`` processes.
Process counts stay small (the machine has 2 cores): at most three replicas at once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import redis

from controlplane.contracts import localagent as protocol
from localagent import procs
from localagent.state import load_records
from tests.support.localagent import (
    Agent,
    builtin_runtime,
    chat,
    deployment_spec,
    free_port,
    http_json,
    pid_alive,
    wait_until,
)


def test_it_runs_the_desired_replicas_and_they_answer_chat_completions(make_agent: Callable[..., Agent]) -> None:
    agent = make_agent()
    agent.backend.apply_deployment(deployment_spec(1, 2))

    endpoints = wait_until(lambda: agent.ready_endpoints(1, 11, 2), what="2 ready replicas")

    assert len(set(endpoints)) == 2
    for endpoint in endpoints:
        assert chat(endpoint)["choices"][0]["message"]["role"] == "assistant"
    records = load_records(agent.state_dir)
    assert sorted(r.key for r in records) == ["d1-r11-0", "d1-r11-1"]
    assert all(os.getpgid(r.pid) == r.pid for r in records), "each replica leads its own process group"


def test_it_restarts_a_replica_killed_with_sigkill(make_agent: Callable[..., Agent]) -> None:
    agent = make_agent()
    agent.backend.apply_deployment(deployment_spec(2, 2))
    wait_until(lambda: agent.ready_endpoints(2, 21, 2), what="2 ready replicas")
    victim = agent.replicas()[0]

    os.kill(victim["pid"], signal.SIGKILL)

    def replaced() -> bool:
        again = {r["key"]: r for r in agent.replicas()}.get(victim["key"])
        return bool(again and again["pid"] != victim["pid"] and again["healthy"])

    wait_until(replaced, what="the killed replica to be restarted")
    endpoints = wait_until(lambda: agent.ready_endpoints(2, 21, 2), what="2 ready replicas again")
    assert f"http://127.0.0.1:{victim['port']}" in endpoints, "the restarted replica keeps its port"
    assert all(chat(e)["object"] == "chat.completion" for e in endpoints)


def test_it_brings_replicas_back_on_the_same_ports_after_a_clean_restart(make_agent: Callable[..., Agent]) -> None:
    first = make_agent()
    first.backend.apply_deployment(deployment_spec(11, 1))
    before = wait_until(lambda: first.ready_endpoints(11, 111, 1), what="a ready replica")
    first.terminate()

    second = make_agent()

    assert wait_until(lambda: second.ready_endpoints(11, 111, 1), what="the replica again") == before


def test_it_adopts_healthy_replicas_after_its_own_crash_and_stops_the_undesired(
    make_agent: Callable[..., Agent],
) -> None:
    first = make_agent(FRONTDOOR_LOCAL_STOP_ON_EXIT="false")
    first.backend.apply_deployment(deployment_spec(3, [2, 1], revision_ids=[31, 32]))
    wait_until(lambda: first.ready_endpoints(3, 31, 2) and first.ready_endpoints(3, 32, 1), what="3 ready replicas")
    before = {r["key"]: r["pid"] for r in first.replicas()}

    first.kill9()
    # While no agent runs, revision 32 is dropped from the desired state.
    first.backend.apply_deployment(deployment_spec(3, [2], revision_ids=[31]))
    assert all(pid_alive(pid) for pid in before.values()), "replicas survive their agent's crash"
    second = make_agent()

    wait_until(lambda: not pid_alive(before["d3-r32-0"]), what="the undesired replica to be stopped")
    endpoints = wait_until(lambda: second.ready_endpoints(3, 31, 2), what="the adopted replicas to be ready")
    after = {r["key"]: r for r in second.replicas()}
    assert {k: r["pid"] for k, r in after.items()} == {k: before[k] for k in ("d3-r31-0", "d3-r31-1")}
    assert all(r["adopted"] for r in after.values())
    assert second.marked_pids() == {before["d3-r31-0"], before["d3-r31-1"]}, "no orphans"
    assert all(chat(e)["object"] == "chat.completion" for e in endpoints)


def test_it_stops_every_process_of_a_deleted_deployment(make_agent: Callable[..., Agent]) -> None:
    agent = make_agent()
    agent.backend.apply_deployment(deployment_spec(4, 2))
    wait_until(lambda: agent.ready_endpoints(4, 41, 2), what="2 ready replicas")
    pids = [r["pid"] for r in agent.replicas()]

    agent.backend.delete_deployment("acme", 4, "chat-4")

    wait_until(lambda: not agent.backend.delete_deployment("acme", 4, "chat-4").exists, what="deletion")
    assert not any(pid_alive(pid) for pid in pids)
    assert agent.marked_pids() == set()
    assert load_records(agent.state_dir) == []
    wait_until(lambda: agent.backend.redis.hget(protocol.desired_key(agent.prefix), "4") is None, what="tombstone")


def test_it_reports_waiting_for_capacity_when_gpu_slots_run_out(make_agent: Callable[..., Agent]) -> None:
    agent = make_agent(FRONTDOOR_LOCAL_GPU_SLOTS='{"nvidia-h100": 1}')
    agent.backend.apply_deployment(deployment_spec(5, 2, gpu_type="nvidia-h100", gpu_count=1))

    wait_until(lambda: agent.ready_endpoints(5, 51, 1), what="the one replica that fits")
    revision = agent.status(5)["revisions"]["51"]  # type: ignore[index]

    assert revision["waiting_for_capacity"] == "local backend has 0 free nvidia-h100 slots (needs 1)"
    assert revision["desired_replicas"] == 2
    (running,) = agent.replicas()
    assert procs.read_marker(running["pid"]) is not None
    environ = Path(f"/proc/{running['pid']}/environ").read_bytes().split(b"\0")
    assert b"CUDA_VISIBLE_DEVICES=0" in environ


def test_it_reports_a_runtime_without_a_local_command_instead_of_crashing(make_agent: Callable[..., Agent]) -> None:
    agent = make_agent()
    agent.backend.apply_deployment(deployment_spec(6, 1, runtime="vllm", model="meta-llama/Llama-3.1-8B"))

    revision = wait_until(lambda: (agent.status(6) or {}).get("revisions", {}).get("61"), what="a status")

    assert revision["ready_replicas"] == 0
    assert "FRONTDOOR_LOCAL_COMMAND_VLLM" in revision["waiting_for_capacity"]
    assert agent.replicas() == []


def model_server_command(state_dir: Path) -> str:
    """An operator's template command running the model server as the run-as user: the interpreter staged for
    built-in replicas, with the variables it needs spelled out (template commands get no staging of their own)."""
    runtime = builtin_runtime(state_dir)
    variables = " ".join(f"{name}={value}" for name, value in runtime.env.items())
    flags = "--host {host} --port {port} --model-name {model}"
    return f"/usr/bin/env {variables} {runtime.python} -m modelserver {flags}"


def test_it_runs_a_template_runtime_from_its_configured_command(
    make_agent: Callable[..., Agent], tmp_path: Path
) -> None:
    agent = make_agent(FRONTDOOR_LOCAL_COMMAND_VLLM=model_server_command(tmp_path / "state"))
    agent.backend.apply_deployment(deployment_spec(7, 1, runtime="vllm", model="org/model-7"))

    (endpoint,) = wait_until(lambda: agent.ready_endpoints(7, 71, 1), what="the vllm-runtime replica")

    served = [model["id"] for model in http_json("GET", f"{endpoint}/v1/models")["data"]]
    assert "org/model-7" in served


def test_it_stops_its_replicas_on_sigterm(make_agent: Callable[..., Agent]) -> None:
    agent = make_agent()
    agent.backend.apply_deployment(deployment_spec(8, 1))
    wait_until(lambda: agent.ready_endpoints(8, 81, 1), what="a ready replica")
    (replica,) = agent.replicas()

    agent.terminate()

    assert agent.proc is not None and agent.proc.returncode == 0
    assert not pid_alive(replica["pid"])
    assert agent.backend.redis.get(protocol.agent_key(agent.prefix)) is None


def test_it_never_signals_a_reused_pid(make_agent: Callable[..., Agent], tmp_path: Path) -> None:
    """A state file naming a live process that is not our replica (different start time) leaves it alone."""
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ident = procs.identify(bystander.pid)
        assert ident is not None
        state_dir = tmp_path / "state"
        state_dir.mkdir()
        record = {
            "key": "d9-r91-0",
            "deployment_id": 9,
            "revision_id": 91,
            "slot": 0,
            "spec_hash": "x",
            "runtime": "builtin",
            "port": free_port(),
            "pid": bystander.pid,
            "start_time": ident.start_time - 1,
            "cmdline": list(ident.cmdline),
            "gpus": {},
        }
        (state_dir / "replicas.json").write_text(json.dumps({"replicas": [record]}))

        agent = make_agent()

        wait_until(lambda: load_records(agent.state_dir) == [], what="the stale record to be dropped")
        assert bystander.poll() is None, "an unrelated process with a recorded pid was signalled"
    finally:
        bystander.kill()
        bystander.wait()


def test_it_keeps_running_when_redis_holds_a_malformed_desired_entry(make_agent: Callable[..., Agent]) -> None:
    agent = make_agent()
    client: redis.Redis = agent.backend.redis
    client.hset(protocol.desired_key(agent.prefix), "999", "{not json")
    agent.backend.apply_deployment(deployment_spec(10, 1))

    wait_until(lambda: agent.ready_endpoints(10, 101, 1), what="the valid deployment to run")
    assert agent.proc is not None and agent.proc.poll() is None
