"""Replica processes on Linux: spawn in their own process group, identify through /proc, stop the whole group.

A pid alone is not an identity: after a crash the kernel may hand it to an unrelated process. A replica is
identified by (pid, start time in clock ticks since boot, command line); all three must match before the agent
signals anything.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Set in every replica's environment so orphans can be found by scanning /proc even without a state file.
MARKER_ENV = "FRONTDOOR_LOCAL_REPLICA"


@dataclass(frozen=True)
class ProcessIdentity:
    pid: int
    start_time: int
    cmdline: tuple[str, ...]


def _read_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time) of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its last ')'.
    fields = raw[raw.rfind(")") + 2 :].split()
    return fields[0], int(fields[19])


def read_cmdline(pid: int) -> tuple[str, ...] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def read_marker(pid: int) -> str | None:
    """The replica marker in a process's initial environment, or None."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    prefix = f"{MARKER_ENV}=".encode()
    for item in raw.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode(errors="replace")
    return None


def identify(pid: int) -> ProcessIdentity | None:
    """The live process behind ``pid`` (zombies count as gone)."""
    stat = _read_stat(pid)
    cmdline = read_cmdline(pid)
    if stat is None or cmdline is None or stat[0] in {"Z", "X"}:
        return None
    return ProcessIdentity(pid=pid, start_time=stat[1], cmdline=cmdline)


def is_same_process(expected: ProcessIdentity) -> bool:
    """True when ``expected.pid`` is still the very process we started (not a reused pid)."""
    current = identify(expected.pid)
    return current is not None and current == expected


def find_marked_processes(marker_prefix: str) -> list[tuple[ProcessIdentity, str]]:
    """Live processes whose replica marker starts with ``marker_prefix`` (every user's when the agent is root,
    which is how replicas running as the run-as user are found)."""
    found: list[tuple[ProcessIdentity, str]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        marker = read_marker(pid)
        if marker is None or not marker.startswith(marker_prefix):
            continue
        ident = identify(pid)
        if ident is not None:
            found.append((ident, marker))
    return found


def free_port(host: str, avoid: set[int]) -> int:
    """A port nothing listens on now (the replica binds it a moment later; a clash shows up as a crash)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port
    raise RuntimeError("no free port found")


def port_is_free(host: str, port: int) -> bool:
    """True when ``port`` can be bound now (with SO_REUSEADDR, as servers do, so TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def spawn(
    argv: list[str],
    env: dict[str, str],
    log_path: Path,
    *,
    cwd: Path | None = None,
    user: dict[str, Any] | None = None,
) -> tuple[subprocess.Popen[bytes], ProcessIdentity]:
    """Start a replica in its own session (so a terminal's Ctrl-C or the agent's death does not reach it).

    ``user`` holds Popen's user/group/extra_groups when the replica runs as another user. The agent opens the log
    itself (0600 in a 0700 directory) and hands the descriptor over, so the replica needs no access to the state dir
    and no replica can read another's log.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(log_path.parent, 0o700)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)  # a log from before this rule may be readable by others
    with os.fdopen(fd, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
            umask=0o077,
            **(user or {}),
        )
    ident = None
    for _ in range(100):  # /proc/<pid>/cmdline is empty for a moment between fork and exec
        ident = identify(proc.pid)
        if ident is not None and ident.cmdline == tuple(argv):
            break
        if proc.poll() is not None:
            break
        time.sleep(0.005)
    if ident is None:
        ident = ProcessIdentity(pid=proc.pid, start_time=-1, cmdline=tuple(argv))
    return proc, ident


def signal_group(ident: ProcessIdentity, sig: signal.Signals) -> bool:
    """Signal the replica's process group, only if the pid is still that replica; False when it is gone."""
    if not is_same_process(ident):
        return False
    try:
        os.killpg(ident.pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Not a group leader we own (should not happen): fall back to the process itself.
        with contextlib.suppress(ProcessLookupError):
            os.kill(ident.pid, sig)
    return True


def stop_processes(
    idents: list[ProcessIdentity], grace_s: float, children: dict[int, subprocess.Popen[bytes]] | None = None
) -> None:
    """SIGTERM every group, wait up to ``grace_s`` for all, then SIGKILL what is left. Reaps our own children."""
    children = children or {}
    alive = [ident for ident in idents if signal_group(ident, signal.SIGTERM)]
    deadline = time.monotonic() + grace_s
    while alive and time.monotonic() < deadline:
        for ident in alive:
            child = children.get(ident.pid)
            if child is not None:
                child.poll()  # reap, so the pid does not linger as a zombie
        alive = [ident for ident in alive if is_same_process(ident)]
        if alive:
            time.sleep(0.05)
    for ident in alive:
        signal_group(ident, signal.SIGKILL)
    for ident in idents:
        child = children.get(ident.pid)
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=2)
