"""The local agent as a real process: it runs, restarts, adopts and stops real model-server replicas.

Desired state is written through the real LocalBackend; replicas are real ``python -m modelserver`` processes.
Process counts stay small (the machine has 2 cores): at most three replicas at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis

from controlplane.contracts import localagent as protocol
from deployments.backends.base import DeploymentSpec, RevisionSpec, TenantSpec
from deployments.backends.local import LocalBackend
from localagent import procs, sandbox, staging
from localagent.state import load_records

REPO = Path(__file__).resolve().parent.parent
WAIT_S = 30.0


def wait_until(predicate: Callable[[], Any], timeout: float = WAIT_S, what: str = "condition") -> Any:
    """Poll ``predicate`` every 0.1 s until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def deployment_spec(
    deployment_id: int, replicas: int | list[int], *, revision_ids: list[int] | None = None, **spec: Any
) -> DeploymentSpec:
    """A deployment with one revision per entry of ``revision_ids`` (default one), running the built-in server."""
    revision_ids = revision_ids or [deployment_id * 10 + 1]
    counts = replicas if isinstance(replicas, list) else [replicas] * len(revision_ids)
    full_spec = {
        "runtime": "builtin",
        "model": "frontdoor/sim-chat",
        "args": [],
        "env": {},
        "gpu_type": "",
        "gpu_count": 0,
        "image": "",
    } | spec
    return DeploymentSpec(
        id=deployment_id,
        tenant=TenantSpec(slug="acme", gpus={}, max_replicas=8, cpu_cores=8, memory_gib=32),
        name=f"chat-{deployment_id}",
        autoscaler_class="kpa",
        min_replicas=1,
        max_replicas=4,
        target_concurrency=8,
        revisions=tuple(
            RevisionSpec(id=rid, number=i + 1, spec=full_spec, replicas=count, weight=100 // len(revision_ids))
            for i, (rid, count) in enumerate(zip(revision_ids, counts, strict=True))
        ),
    )


class Agent:
    """One ``python -m localagent`` process with its own Redis prefix and state dir."""

    def __init__(
        self,
        redis_url: str,
        prefix: str,
        state_dir: Path,
        extra_env: dict[str, str],
        base_env: Mapping[str, str] = os.environ,
    ) -> None:
        self.redis_url, self.prefix, self.state_dir = redis_url, prefix, state_dir
        self.control_port = free_port()
        # How the agent process starts; the sandbox tests run it as another user from a staged interpreter.
        self.python, self.cwd, self.user = sys.executable, REPO, dict[str, Any]()
        self.env = (
            dict(base_env)
            | {
                "REDIS_URL": redis_url,
                "FRONTDOOR_REDIS_PREFIX": prefix,
                "FRONTDOOR_LOCAL_STATE_DIR": str(state_dir),
                "FRONTDOOR_LOCAL_AGENT_PORT": str(self.control_port),
                "FRONTDOOR_LOCAL_TICK_SECONDS": "0.3",
                "FRONTDOOR_LOCAL_BACKOFF_BASE_SECONDS": "0.2",
                "FRONTDOOR_LOCAL_BACKOFF_CAP_SECONDS": "1",
                "PYTHONPATH": str(REPO),
            }
            | extra_env
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.backend = LocalBackend(redis_url=redis_url, prefix=prefix)

    def start(self) -> Agent:
        log = open(self.state_dir / "agent.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [self.python, "-m", "localagent"],
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=log,
            **self.user,
        )
        log.close()
        wait_until(self.heartbeat_fresh, what="agent heartbeat")
        return self

    def heartbeat_fresh(self) -> bool:
        raw = self.backend.redis.get(protocol.agent_key(self.prefix))
        return bool(raw) and json.loads(raw)["pid"] == self.proc.pid and time.time() - json.loads(raw)["ts"] < 5

    def control(self, path: str) -> dict[str, Any]:
        return http_json("GET", f"http://127.0.0.1:{self.control_port}{path}")

    def replicas(self) -> list[dict[str, Any]]:
        return list(self.control("/status")["replicas"])

    def status(self, deployment_id: int) -> dict[str, Any] | None:
        raw = self.backend.redis.get(protocol.status_key(self.prefix, deployment_id))
        return json.loads(raw) if raw else None

    def ready_endpoints(self, deployment_id: int, revision_id: int, count: int) -> list[str] | None:
        """The revision's endpoints once exactly ``count`` are ready, else None."""
        doc = self.status(deployment_id)
        rev = (doc or {}).get("revisions", {}).get(str(revision_id))
        if rev and rev["ready_replicas"] == count and len(rev["endpoints"]) == count:
            return list(rev["endpoints"])
        return None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def marked_pids(self) -> set[int]:
        """Every live process carrying this agent's replica marker: what must be empty after cleanup."""
        marker = f"{self.state_dir.resolve()}|"
        return {ident.pid for ident, _ in procs.find_marked_processes(marker)}

    def stop_all(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "localagent", "--stop-all"],
            cwd=REPO,
            env=self.env,
            check=True,
            capture_output=True,
            timeout=60,
        )


def http_json(method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """A loopback JSON request; raises on a non-2xx answer."""
    assert url.startswith("http://127.0.0.1:")
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})  # noqa: S310
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
        return dict(json.loads(resp.read()))


def pid_alive(pid: int) -> bool:
    return procs.identify(pid) is not None


def chat(endpoint: str) -> dict[str, Any]:
    body = {"model": "frontdoor/sim-chat", "messages": [{"role": "user", "content": "hello"}]}
    return http_json("POST", f"{endpoint}/v1/chat/completions", body)


_STAGED: dict[Path, staging.BuiltinStage] = {}


def builtin_runtime(state_dir: Path) -> staging.BuiltinRuntime:
    """The built-in runtime an agent with ``state_dir`` uses, staged here first when it must be (once per sandbox
    root and session): the first staging of a large virtualenv can outlast a test's wait for a ready replica."""
    run_as = sandbox.resolve_run_as("")
    root = sandbox.sandbox_root(state_dir, None, run_as)
    stage = _STAGED.setdefault(root, staging.BuiltinStage(lambda: root, run_as))
    runtime, why = stage.wait(timeout=600)
    assert runtime is not None, why
    return runtime


@contextlib.contextmanager
def agent_factory(
    redis_url: str, prefix: str, tmp_path: Path, state_dir: Path | None = None
) -> Iterator[Callable[..., Agent]]:
    """Start agents sharing one prefix and state dir; afterwards no replica of theirs may survive."""
    agents: list[Agent] = []

    def make(**extra_env: str) -> Agent:
        agent = Agent(redis_url, prefix, state_dir or tmp_path / "state", extra_env)
        agent.state_dir.mkdir(exist_ok=True)
        builtin_runtime(agent.state_dir)
        agents.append(agent)
        return agent.start()

    try:
        yield make
    finally:
        for agent in agents:
            agent.terminate()
    if agents:
        leftover = agents[-1].marked_pids()
        agents[-1].stop_all()
        assert leftover == set(), "replica processes outlived their agent"


@pytest.fixture
def make_agent(redis_url: str, redis_prefix: str, tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    with agent_factory(redis_url, redis_prefix, tmp_path) as make:
        yield make


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
