"""Files of the stage: hard-link copies, directories built under a temporary name then renamed, and pruning.

Every directory made here is 0755 and every file readable by others (set explicitly, whatever the agent's umask):
the run-as user reads and traverses the stage, only the agent writes it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

SHARED_DIR_MODE = 0o755
SHARED_FILE_MODE = 0o644
# A version younger than this is never pruned: another agent may have just built it and not yet locked it.
PRUNE_MIN_AGE_S = 600.0


Skip = Callable[[tuple[str, ...]], bool]


def mkdir_shared(path: Path) -> Path:
    path.mkdir()
    os.chmod(path, SHARED_DIR_MODE)
    return path


class Copier:
    """Hard links where it can, copies where it must; every directory 0755, every file readable by others."""

    def __init__(self) -> None:
        self.linked = 0
        self.copied = 0
        self._cross_device = False

    def tree(self, src: Path, dst: Path, skip: Skip = lambda parts: False) -> None:
        mkdir_shared(dst)
        for root, dirs, files in os.walk(src):
            rel = Path(root).relative_to(src)
            dirs[:] = [d for d in dirs if not skip((*rel.parts, d))]
            for d in dirs:
                source = Path(root) / d
                if source.is_symlink():
                    os.symlink(os.readlink(source), dst / rel / d)
                else:
                    mkdir_shared(dst / rel / d)
            for f in files:
                if not skip((*rel.parts, f)):
                    self.file(Path(root) / f, dst / rel / f)

    def file(self, src: Path, dst: Path) -> None:
        st = os.lstat(src)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(src), dst)
            return
        if not stat.S_ISREG(st.st_mode):
            return
        # A hard link shares the inode, so a file others cannot read is copied and the copy made readable,
        # leaving the original's mode alone.
        if st.st_mode & 0o004 and not self._cross_device:
            try:
                os.link(src, dst)
                self.linked += 1
                return
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                    raise
                self._cross_device = exc.errno == errno.EXDEV
        shutil.copy2(src, dst)
        mode = stat.S_IMODE(st.st_mode) | 0o444 | (0o111 if st.st_mode & 0o100 else 0)
        os.chmod(dst, mode & ~0o022)
        self.copied += 1


def build(stage: Path, name: str, fill: Callable[[Path], None]) -> Path:
    """Build ``stage/name`` under a temporary name, then rename it into place (the finished name is the stamp)."""
    final = stage / name
    if final.is_dir():
        return final
    tmp = stage / f".tmp-{name}-{os.getpid()}-{threading.get_ident()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        fill(tmp)
        os.rename(tmp, final)
    except OSError as exc:
        if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not final.is_dir():
            raise
        log.debug("another agent staged %s first", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _live_references(stage: Path) -> set[str]:
    """Names of stage entries some live process's command line or environment mentions."""
    marker = f"{stage}/".encode()
    names: set[str] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        for part in ("cmdline", "environ"):
            try:
                raw = (entry / part).read_bytes()
            except OSError:
                continue
            start = raw.find(marker)
            while start >= 0:
                rest = raw[start + len(marker) :]
                names.add(rest.split(b"/", 1)[0].split(b"\0", 1)[0].split(b":", 1)[0].decode(errors="replace"))
                start = raw.find(marker, start + 1)
    return names


def prune(stage: Path, keep: set[str]) -> None:
    """Remove staged versions that nothing uses: not kept, not locked by an agent, not in a live process, old."""
    now = time.time()
    entries = {e.name: e for e in os.scandir(stage) if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")}
    if set(entries) <= keep:
        return
    live = _live_references(stage) | keep
    old = {name for name, e in entries.items() if now - e.stat(follow_symlinks=False).st_mtime > PRUNE_MIN_AGE_S}
    for name in sorted(n for n in entries if n.startswith("env-") and n not in live and n in old):
        path = stage / name
        try:
            fd = os.open(path / ".lock", os.O_RDONLY)
        except OSError:
            fd = -1
        try:
            if fd >= 0:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            shutil.rmtree(path, ignore_errors=True)
            log.info("pruned unused staged runtime %s", path)
        except BlockingIOError:
            continue  # an agent still holds it
        finally:
            if fd >= 0:
                os.close(fd)
    used: set[str] = set(live)
    for name in os.listdir(stage):
        if name.startswith("env-"):
            used.update(_components_of(stage, stage / name))
    for name in sorted(n for n in entries if n.startswith(("python-", "site-")) and n not in used and n in old):
        shutil.rmtree(stage / name, ignore_errors=True)
        log.info("pruned unused staged %s", stage / name)


def _components_of(stage: Path, env_dir: Path) -> set[str]:
    """The python-*/site-* entries of ``stage`` an env directory's manifest names."""
    try:
        manifest = json.loads((env_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return set()
    names = set()
    for key in ("python_home", "site"):
        path = Path(str(manifest.get(key, "")))
        if path.is_relative_to(stage) and path != stage:
            names.add(path.relative_to(stage).parts[0])
    return names
