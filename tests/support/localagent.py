"""Real local agents for tests: start ``python -m localagent`` processes, wait on them, talk to their replicas."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from controlplane.contracts import localagent as protocol
from deployments.backends.base import DeploymentSpec, RevisionSpec, TenantSpec
from deployments.backends.local import LocalBackend
from localagent import procs, sandbox, staging

REPO = Path(__file__).resolve().parents[2]
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
