"""Who replicas run as and where they live: the run-as user, the sandbox root and each replica's own directory.

A replica runs tenant-chosen code (its model, its arguments, whatever the model server imports), so it never runs
as the agent's user when that user is root: it runs as ``FRONTDOOR_LOCAL_RUN_AS`` (default ``nobody``), with no
supplementary groups, umask 077, in a directory of its own (``HOME`` and ``TMPDIR`` inside it) under the sandbox
root. A non-root agent cannot switch users, so its replicas run as itself; asking it for another user is refused
rather than ignored, so an operator never believes replicas are confined when they are not.

Sandbox root: ``FRONTDOOR_LOCAL_STAGE_DIR``, else ``<state dir>/sandbox`` when the run-as user can traverse the
state dir, else ``/var/lib/frontdoor-local`` (a checkout under a private home directory). Layout::

    <root>/stage/...                        the built-in runtime, staged by staging.py (root-owned, 0755)
    <root>/replicas/<state-dir hash>/<key>  one replica: owned by the run-as user, 0700; home/ and tmp/ inside
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pwd
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane.contracts.env import ImproperlyConfiguredEnv

log = logging.getLogger(__name__)

DEFAULT_RUN_AS = "nobody"
SYSTEM_SANDBOX_ROOT = Path("/var/lib/frontdoor-local")


class SandboxError(Exception):
    """The sandbox cannot be prepared; the message names what the operator must fix."""


@dataclass(frozen=True)
class RunAs:
    """The user replicas run as; ``switch`` is True when the agent (root) changes to it at spawn."""

    name: str
    uid: int
    gid: int
    switch: bool

    def popen_kwargs(self) -> dict[str, Any]:
        """subprocess.Popen arguments that drop to this user (extra_groups=[]: none of root's groups)."""
        if not self.switch:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def _lookup(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise ImproperlyConfiguredEnv(f"FRONTDOOR_LOCAL_RUN_AS={name!r}: no such user on this machine") from None


def resolve_run_as(requested: str, euid: int | None = None) -> RunAs:
    """The user replicas run as; raises ImproperlyConfiguredEnv for root, an unknown user, or a switch it cannot do."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        try:
            me = pwd.getpwuid(euid).pw_name
        except KeyError:
            me = str(euid)
        if requested and _lookup(requested).pw_uid != euid:
            raise ImproperlyConfiguredEnv(
                f"FRONTDOOR_LOCAL_RUN_AS={requested} needs the agent to run as root (it runs as {me}):"
                " unset it to run replicas as the agent's own user, or start the agent as root"
            )
        return RunAs(name=me, uid=euid, gid=os.getegid(), switch=False)
    entry = _lookup(requested or DEFAULT_RUN_AS)
    if entry.pw_uid == 0:
        raise ImproperlyConfiguredEnv(
            f"FRONTDOOR_LOCAL_RUN_AS={requested or DEFAULT_RUN_AS} would run tenants' replicas as root:"
            f" name an unprivileged user (default {DEFAULT_RUN_AS})"
        )
    return RunAs(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid, switch=True)


def _permits(st: os.stat_result, run_as: RunAs, bits: int) -> bool:
    """Whether the mode bits of ``st`` grant ``bits`` (a combination of 4=r, 2=w, 1=x) to ``run_as``."""
    if st.st_uid == run_as.uid:
        granted = (st.st_mode >> 6) & 7
    elif st.st_gid == run_as.gid:
        granted = (st.st_mode >> 3) & 7
    else:
        granted = st.st_mode & 7
    return granted & bits == bits


def user_can_reach(path: Path, run_as: RunAs, *, read: bool = False) -> bool:
    """Whether ``run_as`` can traverse to ``path`` (and read it, with ``read``), judged from mode bits.

    Access control lists are not consulted; whatever this misjudges, the staging probe (which really runs as the
    user) catches.
    """
    if not run_as.switch:
        return True
    try:
        resolved = path.resolve(strict=True)
        for parent in reversed(resolved.parents):
            if not _permits(os.stat(parent), run_as, 1):
                return False
        st = os.stat(resolved)
    except OSError:
        return False
    want = 4 if read else 0
    if stat.S_ISDIR(st.st_mode):
        want |= 1
    return _permits(st, run_as, want) if want else True


def user_can_write(path: Path, run_as: RunAs) -> bool:
    try:
        return _permits(os.stat(path), run_as, 2)
    except OSError:
        return False


def state_dir_hash(state_dir: Path) -> str:
    """Names this agent's replica directories, so agents with different state dirs never share one."""
    return hashlib.sha256(str(Path(state_dir).resolve()).encode()).hexdigest()[:16]


def sandbox_root(state_dir: Path, stage_dir: Path | None, run_as: RunAs) -> Path:
    """Where staged runtimes and replica directories live (see the module docstring for the order)."""
    if stage_dir is not None:
        return Path(stage_dir).absolute()
    state = Path(state_dir).absolute()
    state.mkdir(parents=True, exist_ok=True)
    if user_can_reach(state, run_as):
        return state / "sandbox"
    return SYSTEM_SANDBOX_ROOT


def ensure_private_dir(path: Path, run_as: RunAs, mode: int = 0o755) -> Path:
    """Create ``path`` (and missing parents) owned by the agent, then check the run-as user can reach but not
    write it: a directory the replicas could write would let one replica replace what another one runs."""
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    st = os.stat(path)
    if run_as.switch and (st.st_uid != os.geteuid() or st.st_mode & 0o022):
        raise SandboxError(
            f"{path} must be owned by the agent's user and not writable by group or others"
            f" (it is {stat.filemode(st.st_mode)}, uid {st.st_uid}): fix it or set FRONTDOOR_LOCAL_STAGE_DIR"
        )
    if not user_can_reach(path, run_as):
        raise SandboxError(
            f"user {run_as.name} cannot traverse {path}: set FRONTDOOR_LOCAL_STAGE_DIR to a directory it can reach"
            " (every parent needs o+x)"
        )
    return path


@dataclass(frozen=True)
class ReplicaDir:
    """One replica's own directory: its working directory, with ``HOME`` and ``TMPDIR`` inside."""

    path: Path

    @property
    def home(self) -> Path:
        return self.path / "home"

    @property
    def tmp(self) -> Path:
        return self.path / "tmp"


class ReplicaDirs:
    """The replica directories of one agent: ``<root>/replicas/<state-dir hash>/<key>``."""

    def __init__(self, root: Path, state_dir: Path, run_as: RunAs) -> None:
        self.run_as = run_as
        self.base = root / "replicas" / state_dir_hash(state_dir)
        self._checked = False

    def _ensure_base(self) -> None:
        if not self._checked:
            ensure_private_dir(self.base.parent.parent, self.run_as)
            # 0711: replicas reach their own directory without listing the others.
            ensure_private_dir(self.base.parent, self.run_as, mode=0o711)
            ensure_private_dir(self.base, self.run_as, mode=0o711)
            self._checked = True

    def prepare(self, key: str) -> ReplicaDir:
        """The replica's directory, owned by the run-as user; an existing one of that owner is kept (caches)."""
        self._ensure_base()
        target = ReplicaDir(self.base / key)
        try:
            st = os.lstat(target.path)
        except FileNotFoundError:
            st = None
        if st is not None:
            if stat.S_ISDIR(st.st_mode) and st.st_uid == self.run_as.uid and _has_own_subdirs(target, self.run_as):
                return target
            self._remove(target.path)
        # Built under a name only the agent can reach, handed over, then renamed into place: the replica user never
        # holds a directory the agent is still creating things in (no symlink can be planted under it).
        staging = self.base / f".new-{key}-{os.getpid()}"
        self._remove(staging)
        staging.mkdir(mode=0o700)
        for sub in ("home", "tmp"):
            (staging / sub).mkdir(mode=0o700)
            if self.run_as.switch:
                os.chown(staging / sub, self.run_as.uid, self.run_as.gid, follow_symlinks=False)
        if self.run_as.switch:
            os.chown(staging, self.run_as.uid, self.run_as.gid, follow_symlinks=False)
        os.rename(staging, target.path)
        return target

    def _remove(self, path: Path) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            # rmtree works on file descriptors on Linux and never follows a symlink a replica left inside.
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def remove_except(self, keep: set[str]) -> None:
        """Delete the directories of replicas no longer wanted (their files are scratch space)."""
        try:
            entries = list(os.scandir(self.base))
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.name not in keep and not entry.name.startswith(".new-"):
                log.debug("removing replica directory %s", entry.path)
                self._remove(Path(entry.path))

    def remove_all(self) -> None:
        self.remove_except(set())
        with contextlib.suppress(OSError):  # not empty (a replica left running for adoption) or already gone
            self.base.rmdir()


def _has_own_subdirs(target: ReplicaDir, run_as: RunAs) -> bool:
    for sub in (target.home, target.tmp):
        try:
            st = os.lstat(sub)
        except FileNotFoundError:
            return False
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != run_as.uid:
            return False
    return True
