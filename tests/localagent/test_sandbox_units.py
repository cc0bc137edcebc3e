"""The sandbox's decisions, one at a time: the environment a replica gets, the args it refuses, the run-as user,
replica directories, and staging (links, copies, reuse, pruning)."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import pwd
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controlplane.contracts.env import ImproperlyConfiguredEnv
from controlplane.contracts.localagent import DesiredRevision
from localagent import launch, procs, sandbox, stagefs, staging
from localagent.config import AgentConfig
from modelserver.config import config_from_args

ME = sandbox.RunAs(name="me", uid=os.geteuid(), gid=os.getegid(), switch=False)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


def revision(**spec: object) -> DesiredRevision:
    return DesiredRevision(id=7, number=1, replicas=1, spec={"runtime": "builtin", "model": "m", **spec})


def replica_env(rev: DesiredRevision, environ: dict[str, str], **config: object) -> dict[str, str]:
    runtime = staging.BuiltinRuntime(python="/stage/env/bin/python", env={"PYTHONPATH": "/stage/env/app"})
    return launch.build_env(
        AgentConfig(state_dir=Path("/state"), **config),  # type: ignore[arg-type]
        rev,
        "d1-r7-0",
        [],
        run_as=ME,
        replica_dir=sandbox.ReplicaDir(Path("/sandbox/replicas/h/d1-r7-0")),
        builtin=runtime,
        environ=environ,
    )


# ---- the environment ---------------------------------------------------------------------------------------------
AGENT_ENV = {
    "DATABASE_URL": "postgres://u:p@127.0.0.1/db",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
    "SECRET_KEY": "s",
    "FRONTDOOR_KEY_PEPPER": "p",
    "PATH": "/root/.venv/bin:/usr/bin",
    "LANG": "en_US.UTF-8",
    "HF_HUB_OFFLINE": "1",
    "MODELSERVER_TTFT_MS": "5",
    "HTTPS_PROXY": "http://proxy.internal:3128",
    "no_proxy": "localhost",
}


def test_it_builds_the_replica_environment_from_nothing() -> None:
    env = replica_env(revision(), AGENT_ENV)

    assert env == {
        "PATH": f"/stage/env/bin:{staging.BASE_PATH}",
        "HOME": "/sandbox/replicas/h/d1-r7-0/home",
        "TMPDIR": "/sandbox/replicas/h/d1-r7-0/tmp",
        "LANG": "en_US.UTF-8",
        "USER": "me",
        "LOGNAME": "me",
        "PYTHONPATH": "/stage/env/app",
        "HF_HUB_OFFLINE": "1",
        "MODELSERVER_TTFT_MS": "5",
        "HTTPS_PROXY": "http://proxy.internal:3128",
        "no_proxy": "localhost",
        procs.MARKER_ENV: "/state|d1-r7-0",
    }


def test_it_passes_only_the_variables_the_operator_lists() -> None:
    env = replica_env(revision(), AGENT_ENV | {"VLLM_LOGGING_LEVEL": "INFO"}, replica_env=("VLLM_*",))

    assert env["VLLM_LOGGING_LEVEL"] == "INFO"
    assert "HF_HUB_OFFLINE" not in env and "MODELSERVER_TTFT_MS" not in env
    assert "HTTPS_PROXY" in env, "proxies are the operator's setting, always passed"


def test_it_drops_the_tenants_refused_variables_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    tenant = {
        "PYTHONWARNINGS": "ignore::antigravity.x",
        "BROWSER": "sh -c 'id' %s",
        "LD_PRELOAD": "/tmp/x.so",
        "HOME": "/root",
        "HTTPS_PROXY": "http://evil.example",
        "FRONTDOOR_LOCAL_REPLICA": "/other|key",
        "bad name": "x",
        "NUL": "a\x00b",
        "GREETING": "hello",
        "PYTHONUNBUFFERED": "1",
    }
    with caplog.at_level(logging.WARNING, logger="localagent.launch"):
        env = replica_env(revision(env=tenant), AGENT_ENV)

    assert env["GREETING"] == "hello" and env["PYTHONUNBUFFERED"] == "1"
    for name in ("PYTHONWARNINGS", "BROWSER", "LD_PRELOAD", "bad name", "NUL"):
        assert name not in env
    assert env["HOME"] == "/sandbox/replicas/h/d1-r7-0/home"
    assert env["HTTPS_PROXY"] == "http://proxy.internal:3128"
    assert env[procs.MARKER_ENV] == "/state|d1-r7-0"
    assert "dropping PYTHONWARNINGS" in caplog.text and "dropping BROWSER" in caplog.text


def test_it_gives_a_gpu_replica_its_devices() -> None:
    rev = revision(gpu_type="nvidia-h100", gpu_count=2)
    env = launch.build_env(
        AgentConfig(),
        rev,
        "k",
        [1, 3],
        run_as=ME,
        replica_dir=sandbox.ReplicaDir(Path("/r/k")),
        environ={},
    )
    assert env["CUDA_VISIBLE_DEVICES"] == "1,3"
    assert env["PATH"] == staging.BASE_PATH and env["LANG"] == launch.DEFAULT_LANG


@pytest.mark.parametrize("raw", ["*", "A*", "MODEL SERVER", "X=1"])
def test_it_refuses_a_passthrough_list_that_would_hand_over_everything(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FRONTDOOR_LOCAL_REPLICA_ENV", raw)
    with pytest.raises(ImproperlyConfiguredEnv, match="FRONTDOOR_LOCAL_REPLICA_ENV"):
        AgentConfig.from_env()


def test_it_reads_an_empty_passthrough_list_as_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRONTDOOR_LOCAL_REPLICA_ENV", "")
    assert AgentConfig.from_env().replica_env == ()
    monkeypatch.setenv("FRONTDOOR_LOCAL_REPLICA_ENV", "HF_*, VLLM_LOGGING_LEVEL")
    assert AgentConfig.from_env().replica_env == ("HF_*", "VLLM_LOGGING_LEVEL")


# ---- args ----------------------------------------------------------------------------------------------------------
BUILTIN = staging.BuiltinRuntime(python="/stage/bin/python")


@pytest.mark.parametrize(
    "args",
    [["--port", "9"], ["--po=9"], ["--host=0.0.0.0"], ["--served-model-name", "other"], ["--model-name=x"]],
)
def test_it_refuses_builtin_args_that_override_its_flags(args: list[str]) -> None:
    with pytest.raises(launch.RefusedRevision, match="set by the platform"):
        launch.build_argv(AgentConfig(), revision(args=args), 4000, BUILTIN)


def test_it_refuses_args_repeating_a_flag_of_the_command_template() -> None:
    config = AgentConfig(commands={"vllm": "vllm serve {model} --port {port} --max-model-len 4096"})
    rev = DesiredRevision(id=1, number=1, replicas=1, spec={"runtime": "vllm", "model": "m", "args": ["--max-model"]})

    with pytest.raises(launch.RefusedRevision, match="--max-model-len is set by the platform"):
        launch.build_argv(config, rev, 4000)


def test_it_refuses_code_loading_args_on_the_local_backend() -> None:
    with pytest.raises(launch.RefusedRevision, match="--trust-remote-code"):
        launch.build_argv(AgentConfig(), revision(args=["--trust-remote-code"]), 4000, BUILTIN)


def test_it_appends_the_args_it_accepts_after_its_own_flags() -> None:
    argv = launch.build_argv(AgentConfig(), revision(args=["--stall-ms", "5"]), 4000, BUILTIN)

    assert argv == [
        "/stage/bin/python",
        "-P",
        "-m",
        "modelserver",
        "--host",
        "127.0.0.1",
        "--port",
        "4000",
        "--model-name",
        "m",
        "--stall-ms",
        "5",
    ]


def test_it_reports_why_the_builtin_runtime_is_not_ready() -> None:
    with pytest.raises(launch.UnsupportedRuntime, match="staging failed: fix it"):
        launch.build_argv(AgentConfig(), revision(), 4000, None, unavailable="staging failed: fix it")


def test_the_model_server_takes_no_abbreviated_flags() -> None:
    with pytest.raises(SystemExit):
        config_from_args(["--po", "9"], environ={})
    assert config_from_args(["--port", "9"], environ={}).port == 9


# ---- the run-as user ---------------------------------------------------------------------------------------------
def test_it_runs_replicas_as_nobody_when_the_agent_is_root() -> None:
    run_as = sandbox.resolve_run_as("", euid=0)

    assert (run_as.name, run_as.uid, run_as.switch) == ("nobody", pwd.getpwnam("nobody").pw_uid, True)
    assert run_as.popen_kwargs() == {"user": run_as.uid, "group": run_as.gid, "extra_groups": []}


@pytest.mark.parametrize("name", ["root", "0"])
def test_it_refuses_to_run_replicas_as_root(name: str) -> None:
    with pytest.raises(ImproperlyConfiguredEnv, match="would run tenants' replicas as root"):
        sandbox.resolve_run_as(name, euid=0)


def test_it_refuses_an_unknown_user() -> None:
    with pytest.raises(ImproperlyConfiguredEnv, match="no such user"):
        sandbox.resolve_run_as("no-such-user-here", euid=0)


def test_an_unprivileged_agent_runs_replicas_as_itself() -> None:
    nobody = pwd.getpwnam("nobody")
    run_as = sandbox.resolve_run_as("", euid=nobody.pw_uid)

    assert (run_as.name, run_as.uid, run_as.switch) == ("nobody", nobody.pw_uid, False)
    assert run_as.popen_kwargs() == {}
    assert sandbox.resolve_run_as("nobody", euid=nobody.pw_uid).switch is False


def test_an_unprivileged_agent_refuses_another_run_as_user() -> None:
    with pytest.raises(ImproperlyConfiguredEnv, match="needs the agent to run as root"):
        sandbox.resolve_run_as("root", euid=pwd.getpwnam("nobody").pw_uid)


@needs_root
def test_it_judges_what_the_run_as_user_can_reach(tmp_path: Path) -> None:
    nobody = sandbox.resolve_run_as("")
    open_dir = Path(tempfile.mkdtemp())
    try:
        os.chmod(open_dir, 0o755)  # noqa: S103 - a directory nobody may enter
        (open_dir / "f").write_text("x")
        os.chmod(open_dir / "f", 0o600)
        assert sandbox.user_can_reach(open_dir, nobody, read=True)
        assert not sandbox.user_can_reach(open_dir / "f", nobody, read=True)
        assert not sandbox.user_can_reach(tmp_path, nobody), "pytest's base temp dir is private"
        assert sandbox.sandbox_root(tmp_path / "state", None, nobody) == sandbox.SYSTEM_SANDBOX_ROOT
        assert sandbox.sandbox_root(open_dir / "state", None, nobody) == open_dir / "state" / "sandbox"
        assert sandbox.sandbox_root(tmp_path, Path("/srv/stage"), nobody) == Path("/srv/stage")
    finally:
        subprocess.run(["rm", "-rf", str(open_dir)], check=True)


# ---- replica directories -----------------------------------------------------------------------------------------
@pytest.fixture
def shared_root() -> Iterator[Path]:
    """A sandbox root the run-as user can reach (pytest's tmp_path is private to root)."""
    root = Path(tempfile.mkdtemp(prefix="fd-sandbox-"))
    os.chmod(root, 0o755)  # noqa: S103 - the run-as user traverses it
    yield root / "sandbox"
    subprocess.run(["rm", "-rf", str(root)], check=True)


@needs_root
def test_it_gives_each_replica_a_directory_it_owns(shared_root: Path) -> None:
    nobody = sandbox.resolve_run_as("")
    dirs = sandbox.ReplicaDirs(shared_root, Path("/state"), nobody)

    first = dirs.prepare("d1-r1-0")

    for path in (first.path, first.home, first.tmp):
        st = os.lstat(path)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (nobody.uid, 0o700)
    assert stat.S_IMODE(os.stat(dirs.base).st_mode) == 0o711
    (first.home / "cache").write_text("kept")
    assert dirs.prepare("d1-r1-0") == first and (first.home / "cache").exists(), "a restart keeps its files"


@needs_root
def test_it_replaces_a_replica_directory_whose_home_became_a_symlink(shared_root: Path) -> None:
    nobody = sandbox.resolve_run_as("")
    dirs = sandbox.ReplicaDirs(shared_root, Path("/state"), nobody)
    first = dirs.prepare("d1-r1-0")
    os.rmdir(first.home)
    os.symlink("/etc", first.home)

    again = dirs.prepare("d1-r1-0")

    assert not again.home.is_symlink() and os.lstat(again.home).st_uid == nobody.uid
    assert os.stat("/etc").st_uid == 0


def test_it_removes_the_directories_of_replicas_no_longer_wanted(shared_root: Path) -> None:
    dirs = sandbox.ReplicaDirs(shared_root, Path("/state"), ME)
    for key in ("a", "b", "c"):
        dirs.prepare(key)

    dirs.remove_except({"b"})

    assert sorted(os.listdir(dirs.base)) == ["b"]
    dirs.remove_all()
    assert not dirs.base.exists()


def test_it_refuses_a_sandbox_root_others_can_write(shared_root: Path) -> None:
    shared_root.mkdir()
    os.chmod(shared_root, 0o777)  # noqa: S103 - the misconfiguration under test
    nobody = sandbox.RunAs(name="nobody", uid=65534, gid=65534, switch=True)
    with pytest.raises(sandbox.SandboxError, match="not writable by group or others"):
        sandbox.ensure_private_dir(shared_root, nobody)


# ---- staging -----------------------------------------------------------------------------------------------------
def test_it_links_readable_files_and_copies_the_others(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "open.py").write_text("a")
    (src / "pkg" / "closed.py").write_text("b")
    os.chmod(src / "pkg" / "closed.py", 0o600)
    os.chmod(src / "pkg", 0o700)
    os.symlink("open.py", src / "pkg" / "alias.py")

    copier = stagefs.Copier()
    copier.tree(src, tmp_path / "dst")

    dst = tmp_path / "dst" / "pkg"
    assert os.stat(dst / "open.py").st_ino == os.stat(src / "pkg" / "open.py").st_ino
    assert os.stat(dst / "closed.py").st_ino != os.stat(src / "pkg" / "closed.py").st_ino
    assert stat.S_IMODE(os.stat(dst / "closed.py").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(src / "pkg" / "closed.py").st_mode) == 0o600, "the original keeps its mode"
    assert stat.S_IMODE(os.stat(dst).st_mode) == 0o755
    assert os.readlink(dst / "alias.py") == "open.py"


def test_it_copies_when_hard_links_cross_filesystems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("a", "b"):
        (src / name).write_text(name)

    def cross_device(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(stagefs.os, "link", cross_device)
    copier = stagefs.Copier()
    copier.tree(src, tmp_path / "dst")

    assert (copier.linked, copier.copied) == (0, 2)
    assert (tmp_path / "dst" / "b").read_text() == "b"


@needs_root
def test_it_stages_once_and_reuses_the_stage(shared_root: Path) -> None:
    nobody = sandbox.resolve_run_as("")

    first = staging.stage_builtin(shared_root, nobody)
    listing = sorted(os.listdir(shared_root / "stage"))
    second = staging.stage_builtin(shared_root, nobody)

    assert second.runtime == first.runtime and sorted(os.listdir(shared_root / "stage")) == listing
    assert Path(first.runtime.python).parent.parent == first.env_dir
    done = subprocess.run(
        [first.runtime.python, "-c", "import modelserver, sys; print(modelserver.__file__, sys.prefix)"],
        env={"PATH": first.runtime.path} | first.runtime.env,
        cwd="/",
        capture_output=True,
        check=True,
        **nobody.popen_kwargs(),
    )
    module, prefix = done.stdout.decode().split()
    assert module.startswith(f"{first.env_dir}/app/") and prefix == str(first.env_dir)
    for fd in (first.lock_fd, second.lock_fd):
        os.close(fd)


def old(path: Path) -> Path:
    past = time.time() - 2 * stagefs.PRUNE_MIN_AGE_S
    os.utime(path, (past, past))
    return path


def fake_env(stage: Path, name: str, site: str) -> Path:
    env = stage / name
    env.mkdir()
    (env / ".lock").touch()
    (env / "manifest.json").write_text(f'{{"python_home": "/usr", "site": "{stage / site}"}}')
    (stage / site).mkdir(exist_ok=True)
    return env


def test_it_prunes_only_what_nothing_uses(tmp_path: Path) -> None:
    stage = tmp_path / "stage"
    stage.mkdir()
    current = fake_env(stage, "env-current", "site-current")
    unused = old(fake_env(stage, "env-unused", "site-unused"))
    locked = old(fake_env(stage, "env-locked", "site-locked"))
    running = old(fake_env(stage, "env-running", "site-running"))
    young = fake_env(stage, "env-young", "site-young")
    for site in ("site-unused", "site-locked", "site-running", "site-young", "site-current"):
        old(stage / site)
    holder = os.open(locked / ".lock", os.O_RDONLY)
    fcntl.flock(holder, fcntl.LOCK_SH)
    user = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", f"{running}/bin/python"])
    cmdline = Path(f"/proc/{user.pid}/cmdline")
    # Until the child has exec'd, /proc shows the parent's command line, which names no staged environment.
    deadline = time.monotonic() + 10
    while str(running).encode() not in cmdline.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        stagefs.prune(stage, keep={current.name})
    finally:
        user.kill()
        user.wait()
        os.close(holder)

    assert sorted(os.listdir(stage)) == sorted(
        [
            "env-current",
            "site-current",
            "env-locked",
            "site-locked",
            "env-running",
            "site-running",
            young.name,
            "site-young",
        ]
    )
    assert not unused.exists()
