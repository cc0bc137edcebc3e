"""The local agent's sandbox, end to end: replicas run as an unprivileged user with only the environment the agent
builds, a tenant's code-loading variables never reach them, and args cannot override the agent's flags.

The suite runs as root, so these start the real agent as root (replicas switch to ``nobody``) and, for the
non-root path, the real agent itself as ``nobody`` from the interpreter staged for it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from localagent import procs, staging
from localagent.state import load_records
from tests.support.localagent import (
    REPO,
    Agent,
    agent_factory,
    builtin_runtime,
    chat,
    deployment_spec,
    http_json,
    wait_until,
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
# Set in the agent's own environment: none of it may reach a replica.
AGENT_SECRETS = {
    "DATABASE_URL": "postgres://postgres:agent-db-secret@127.0.0.1:5432/frontdoor",
    "SECRET_KEY": "agent-secret-key",
    "FRONTDOOR_KEY_PEPPER": "agent-pepper",
}
# What the agent builds for a builtin replica (plus the operator's passthrough, checked separately).
REPLICA_ENV_NAMES = {
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "USER",
    "LOGNAME",
    "PYTHONPATH",
    "PYTHONUNBUFFERED",
    "LD_LIBRARY_PATH",
    procs.MARKER_ENV,
}


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().split("=", 1) for item in raw.split(b"\0") if item)


def uids_of(pid: int) -> list[int]:
    """Real, effective, saved and filesystem uids of a process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(field) for field in line.split()[1:]]
    raise AssertionError(f"no Uid line for {pid}")


def groups_of(pid: int) -> list[str]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Groups:"):
            return line.split()[1:]
    return []


def the_replica(agent: Agent, deployment_id: int, revision_id: int) -> tuple[str, int]:
    (endpoint,) = wait_until(lambda: agent.ready_endpoints(deployment_id, revision_id, 1), what="a ready replica")
    (record,) = load_records(agent.state_dir)
    return endpoint, record.pid


@pytest.fixture
def canary() -> str:
    return f"canary-{uuid.uuid4().hex}"


@pytest.fixture
def private_agent(redis_url: str, redis_prefix: str, tmp_path: Path, canary: str) -> Iterator[Callable[..., Agent]]:
    """Agents whose state dir sits in a fresh 0700 directory, with secrets and a canary in their environment."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    with agent_factory(redis_url, redis_prefix, tmp_path, state_dir=private / "state") as make:
        yield lambda **env: make(**AGENT_SECRETS, FD_TEST_AGENT_CANARY=canary, **env)


@needs_root
def test_it_runs_a_builtin_replica_as_nobody_with_only_the_environment_it_builds(
    private_agent: Callable[..., Agent], canary: str
) -> None:
    nobody = pwd.getpwnam("nobody")
    agent = private_agent()
    agent.backend.apply_deployment(deployment_spec(1, 1))

    endpoint, pid = the_replica(agent, 1, 11)

    assert http_json("GET", f"{endpoint}/health") == {"status": "ok"}
    assert http_json("POST", f"{endpoint}/v1/completions", {"model": "frontdoor/sim-chat", "prompt": "hi"})["choices"]
    assert chat(endpoint)["choices"][0]["message"]["role"] == "assistant"
    assert uids_of(pid) == [nobody.pw_uid] * 4
    assert groups_of(pid) == [], "no supplementary groups of the agent's"
    environ = environ_of(pid)
    for name in [*AGENT_SECRETS, "REDIS_URL", "FD_TEST_AGENT_CANARY"]:
        assert name not in environ
    assert canary not in Path(f"/proc/{pid}/environ").read_text(errors="replace")
    passthrough = set(launch_passthrough())
    assert set(environ) - REPLICA_ENV_NAMES - passthrough == set()
    home, tmp = Path(environ["HOME"]), Path(environ["TMPDIR"])
    for own in (home, tmp):
        st = own.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (nobody.pw_uid, 0o700)
    assert home.parent == tmp.parent == Path(os.readlink(f"/proc/{pid}/cwd")), "its own directory is its cwd"
    assert not home.is_relative_to(agent.state_dir.parent), "the private state dir is out of the replica's reach"
    log = agent.state_dir / "logs" / "d1-r11-0.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600


def launch_passthrough() -> dict[str, str]:
    """What the default FRONTDOOR_LOCAL_REPLICA_ENV passes from this test's environment to replicas."""
    from localagent.config import DEFAULT_REPLICA_ENV
    from localagent.launch import passthrough_env

    return passthrough_env(DEFAULT_REPLICA_ENV, dict(os.environ))


def test_it_keeps_a_tenants_code_loading_variables_out_of_the_replica(
    private_agent: Callable[..., Agent],
) -> None:
    # Writable by every user, so a shell the replica started would leave its file whoever it runs as.
    drop = Path(tempfile.mkdtemp(prefix="fd-leak-"))
    try:
        os.chmod(drop, 0o777)  # noqa: S103 - the leak must be possible for the test to mean anything
        leak = drop / "leak.txt"
        exploit = {"PYTHONWARNINGS": "ignore::antigravity.x", "BROWSER": f"sh -c 'id > {leak}' %s", "GREETING": "hi"}
        agent = private_agent()
        # Straight to the agent's desired state, as if the API had let it through.
        agent.backend.apply_deployment(deployment_spec(2, 1, env=exploit))

        _, pid = the_replica(agent, 2, 21)

        # webbrowser runs BROWSER synchronously while the interpreter starts: give a stray shell a moment anyway.
        with pytest.raises(AssertionError):
            wait_until(leak.exists, timeout=3, what="a leak file")
        environ = environ_of(pid)
        assert "PYTHONWARNINGS" not in environ and "BROWSER" not in environ
        assert environ["GREETING"] == "hi", "the tenant's other variables are laid on top"
    finally:
        shutil.rmtree(drop)


def test_it_refuses_args_that_override_the_flags_it_sets(private_agent: Callable[..., Agent]) -> None:
    agent = private_agent()
    agent.backend.apply_deployment(deployment_spec(3, 1, args=["--port", "9"]))
    agent.backend.apply_deployment(deployment_spec(4, 1, args=["--stall-ms", "1", "--po=9"]))

    def refusal(deployment_id: int, revision_id: int) -> str:
        revision = (agent.status(deployment_id) or {}).get("revisions", {}).get(str(revision_id)) or {}
        return str(revision.get("waiting_for_capacity") or "")

    assert "--port is set by the platform" in wait_until(lambda: refusal(3, 31), what="a refusal")
    assert "--port is set by the platform" in wait_until(lambda: refusal(4, 41), what="a refusal of --po")
    assert agent.replicas() == [], "no replica of a refused revision is started"


@needs_root
def test_it_runs_as_an_unprivileged_agent_without_switching_users(
    redis_url: str, redis_prefix: str, tmp_path: Path, canary: str
) -> None:
    """The agent itself as nobody, from the interpreter staged for nobody and a copy of the code nobody can read."""
    nobody = pwd.getpwnam("nobody")
    runtime = staged_runtime_for_nobody(tmp_path)
    home = Path(tempfile.mkdtemp(prefix="fd-agent-"))
    try:
        os.chmod(home, 0o755)  # noqa: S103 - the unprivileged agent must reach its code and state
        code = home / "code"
        for package in ("controlplane", "localagent", "modelserver"):
            shutil.copytree(REPO / package, code / package, ignore=shutil.ignore_patterns("__pycache__"))
        state = home / "state"
        state.mkdir()
        os.chown(state, nobody.pw_uid, nobody.pw_gid)
        base_env = {"PATH": runtime.path, "LANG": "C.UTF-8", "HOME": str(state)} | runtime.env
        agent = Agent(redis_url, redis_prefix, state, {**AGENT_SECRETS, "FD_TEST_AGENT_CANARY": canary}, base_env)
        agent.env["PYTHONPATH"] = str(code)
        agent.python, agent.cwd = runtime.python, code
        agent.user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}

        refused = subprocess.run(
            [agent.python, "-m", "localagent"],
            cwd=code,
            env=agent.env | {"FRONTDOOR_LOCAL_RUN_AS": "root"},
            capture_output=True,
            timeout=60,
            **agent.user,
        )
        assert refused.returncode == 2
        assert b"FRONTDOOR_LOCAL_RUN_AS=root needs the agent to run as root" in refused.stderr

        agent.start()
        try:
            agent.backend.apply_deployment(deployment_spec(5, 1))
            endpoint, pid = the_replica(agent, 5, 51)

            assert chat(endpoint)["object"] == "chat.completion"
            assert uids_of(pid) == [nobody.pw_uid] * 4
            environ = environ_of(pid)
            for name in [*AGENT_SECRETS, "REDIS_URL", "FD_TEST_AGENT_CANARY"]:
                assert name not in environ
            assert Path(environ["HOME"]).is_relative_to(state / "sandbox")
            assert Path(environ["HOME"]).stat().st_uid == nobody.pw_uid
        finally:
            agent.terminate()
        assert agent.marked_pids() == set(), "the unprivileged agent stopped its replicas"
    finally:
        shutil.rmtree(home)


def staged_runtime_for_nobody(tmp_path: Path) -> staging.BuiltinRuntime:
    """The built-in runtime a root agent stages for nobody (shared with every other test's agents)."""
    runtime = builtin_runtime(tmp_path / "private-state")
    assert runtime.python != sys.executable
    return runtime
