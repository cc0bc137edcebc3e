"""Staging the built-in model server where the run-as user can read it.

The agent's interpreter and virtualenv may sit where that user cannot go (a checkout under a private home, a pyenv
interpreter under /root). So the agent assembles, under ``<sandbox root>/stage/``, a virtualenv that user can run:

    python-<fp>/  the interpreter's base prefix (binary, libpython, stdlib), when the user cannot read the original
    site-<fp>/    the virtualenv's site-packages, when the user cannot read the original
    env-<fp>/     pyvenv.cfg, bin/python, lib/pythonX.Y/site-packages (a symlink), app/modelserver (a copy)

Files are hard links (cheap; a copy across filesystems, or for a file the user could not read); directories are
0755 and owned by the agent, so no replica can change what another one runs. Each directory is named by a
fingerprint of its sources and built under a temporary name, then renamed: a finished name is its own stamp, a
re-run only stats the sources, and two agents staging at once end with one copy. A probe then imports the model
server with the staged interpreter as the run-as user; staging is refused only when no interpreter passes it.
Versions no agent holds (a shared lock on ``env-<fp>/.lock``) and no live process uses are pruned.
"""

from __future__ import annotations

import compileall
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from localagent.sandbox import (
    RunAs,
    SandboxError,
    ensure_private_dir,
    user_can_reach,
    user_can_write,
)
from localagent.stagefs import SHARED_DIR_MODE, SHARED_FILE_MODE, Copier, build, mkdir_shared, prune

log = logging.getLogger(__name__)

APP_PACKAGES = ("modelserver",)
# Parts of the standard library a model server never imports (tests, GUIs, build files, the base's own packages).
STDLIB_SKIP = frozenset({"test", "site-packages", "idlelib", "tkinter", "turtledemo", "ensurepip"})
PROBE = "import sys, modelserver, modelserver.app, uvicorn; print('%d.%d' % sys.version_info[:2], modelserver.__file__)"
PROBE_TIMEOUT_S = 120.0
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class BuiltinRuntime:
    """How to start ``python -m modelserver``: the interpreter and the variables it needs."""

    python: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return f"{os.path.dirname(self.python)}:{BASE_PATH}"


@dataclass(frozen=True)
class Sources:
    """What a built-in replica needs from the agent's own installation."""

    base_prefix: Path
    executable: Path  # the base interpreter's binary (not the virtualenv's link to it)
    site_packages: Path
    app_packages: tuple[Path, ...]
    version: str  # "3.11.7"
    system_python: Path  # a fallback interpreter of the same major.minor (Debian's), used when it is readable

    @property
    def short_version(self) -> str:
        return ".".join(self.version.split(".")[:2])


def current_sources() -> Sources:
    """The running interpreter's base prefix, its virtualenv's site-packages and the model server package."""
    base_executable = Path(getattr(sys, "_base_executable", "") or sys.executable).resolve()
    apps: list[Path] = []
    for name in APP_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise SandboxError(f"the {name} package is not importable by the agent")
        apps.append(Path(next(iter(spec.submodule_search_locations))).resolve())
    short = f"{sys.version_info.major}.{sys.version_info.minor}"
    return Sources(
        base_prefix=Path(sys.base_prefix).resolve(),
        executable=base_executable,
        site_packages=Path(sysconfig.get_paths()["purelib"]).resolve(),
        app_packages=tuple(apps),
        version=".".join(str(part) for part in sys.version_info[:3]),
        system_python=Path(f"/usr/bin/python{short}"),
    )


def _library_path(prefix: Path, short_version: str) -> dict[str, str]:
    """LD_LIBRARY_PATH for an interpreter linked against its own libpython whose RUNPATH may be unreachable."""
    lib = prefix / "lib"
    if str(prefix) in {"/usr", "/usr/local"} or not (lib / f"libpython{short_version}.so.1.0").exists():
        return {}
    return {"LD_LIBRARY_PATH": str(lib)}


def unstaged_runtime(sources: Sources | None = None) -> BuiltinRuntime:
    """The agent's own interpreter and checkout, for replicas that run as the agent's user."""
    sources = sources or current_sources()
    pythonpath = os.pathsep.join(dict.fromkeys(str(p.parent) for p in sources.app_packages))
    env = {"PYTHONPATH": pythonpath, "PYTHONUNBUFFERED": "1"}
    env |= _library_path(sources.base_prefix, sources.short_version)
    return BuiltinRuntime(python=sys.executable, env=env)


# ---- fingerprints ----------------------------------------------------------------------------------------------
def _digest(parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _stat_key(path: Path) -> list[int]:
    try:
        st = os.stat(path)
    except OSError:
        return []
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def _listing(directory: Path) -> list[tuple[str, int]]:
    """Top-level entries with their mtimes: pip adds, removes or renames a dist-info on every change."""
    return sorted((e.name, e.stat(follow_symlinks=False).st_mtime_ns) for e in os.scandir(directory))


def _tree(directory: Path) -> list[tuple[str, int, int]]:
    files = []
    for path in sorted(directory.rglob("*")):
        if "__pycache__" in path.parts or not path.is_file():
            continue
        st = path.stat()
        files.append((str(path.relative_to(directory)), st.st_size, st.st_mtime_ns))
    return files


# ---- the staged pieces -----------------------------------------------------------------------------------------
def _stage_interpreter(stage: Path, sources: Sources) -> tuple[Path, Path]:
    """(binary, prefix) of a copy of the base interpreter: bin/pythonX.Y, lib/libpython*, lib/pythonX.Y."""
    short = sources.short_version
    stdlib = sources.base_prefix / "lib" / f"python{short}"
    fp = _digest([str(sources.base_prefix), sources.version, _stat_key(sources.executable), _stat_key(stdlib)])
    name = f"python-{fp}"

    def fill(tmp: Path) -> None:
        copier = Copier()
        mkdir_shared(tmp)
        mkdir_shared(tmp / "bin")
        copier.file(sources.executable, tmp / "bin" / f"python{short}")
        mkdir_shared(tmp / "lib")
        for lib in sorted((sources.base_prefix / "lib").glob(f"libpython{short}*.so*")):
            copier.file(lib, tmp / "lib" / lib.name)
        copier.tree(
            stdlib,
            tmp / "lib" / f"python{short}",
            lambda parts: len(parts) == 1 and (parts[0] in STDLIB_SKIP or parts[0].startswith("config-")),
        )
        log.info("staged interpreter %s (%d links, %d copies)", sources.executable, copier.linked, copier.copied)

    prefix = build(stage, name, fill)
    return prefix / "bin" / f"python{short}", prefix


def _stage_site_packages(stage: Path, sources: Sources) -> Path:
    site = sources.site_packages
    fp = _digest([str(site), _listing(site)])
    project_paths = {str(p.parent) for p in sources.app_packages}

    def skip(parts: tuple[str, ...]) -> bool:
        if len(parts) != 1:
            return False
        top = parts[0]
        # The project's own editable install points at the checkout, which the user cannot read: the staged copy
        # of the package (app/) replaces it.
        if top.startswith("__editable__") or top.endswith(".egg-link"):
            return True
        if top.endswith(".pth"):
            try:
                text = (site / top).read_text(errors="replace")
            except OSError:
                return True
            return any(path in text for path in project_paths)
        return False

    def fill(tmp: Path) -> None:
        copier = Copier()
        copier.tree(site, tmp, skip)
        log.info("staged site-packages %s (%d links, %d copies)", site, copier.linked, copier.copied)

    return build(stage, f"site-{fp}", fill)


def _stage_env(stage: Path, sources: Sources, python: Path, python_home: Path, site: Path) -> Path:
    """A virtualenv around ``python`` whose site-packages is ``site``, with the model server copied into app/."""
    short = sources.short_version
    apps = {str(p): _tree(p) for p in sources.app_packages}
    fp = _digest([str(python), str(site), apps])

    def fill(tmp: Path) -> None:
        mkdir_shared(tmp)
        mkdir_shared(tmp / "bin")
        os.symlink(python, tmp / "bin" / "python")
        mkdir_shared(mkdir_shared(tmp / "lib") / f"python{short}")
        os.symlink(site, tmp / "lib" / f"python{short}" / "site-packages")
        (tmp / "pyvenv.cfg").write_text(
            f"home = {python.parent}\ninclude-system-site-packages = false\nversion = {sources.version}\n"
        )
        app = mkdir_shared(tmp / "app")
        for package in sources.app_packages:
            shutil.copytree(package, app / package.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        # Byte-compiled now, as the agent: the replica user cannot write __pycache__ here.
        compileall.compile_dir(app, quiet=2)
        for path in app.rglob("*"):
            os.chmod(path, SHARED_DIR_MODE if path.is_dir() else SHARED_FILE_MODE)
        (tmp / ".lock").touch()
        manifest = {"python": str(python), "python_home": str(python_home), "site": str(site), "apps": list(apps)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        for path in (tmp / "pyvenv.cfg", tmp / "manifest.json", tmp / ".lock"):
            os.chmod(path, SHARED_FILE_MODE)

    return build(stage, f"env-{fp}", fill)


def _probe(runtime: BuiltinRuntime, run_as: RunAs, expected: str) -> str:
    """Why the runtime fails to import the model server as ``run_as`` at the expected version ("" when it works)."""
    env = {"PATH": runtime.path, "LANG": "C.UTF-8", "HOME": "/"} | runtime.env
    try:
        done = subprocess.run(
            [runtime.python, "-c", PROBE],
            env=env,
            cwd="/",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
            **run_as.popen_kwargs(),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{runtime.python}: {exc}"
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        return f"{runtime.python} exited with {done.returncode}: {' | '.join(tail)}"
    version, _, module = done.stdout.decode(errors="replace").strip().partition(" ")
    if version != expected:
        return f"{runtime.python} is Python {version}, the agent's virtualenv needs {expected}"
    app_dir = runtime.env.get("PYTHONPATH", "")
    if app_dir and not module.startswith(f"{app_dir}/"):
        return f"{runtime.python} imports modelserver from {module}, not from the staged copy in {app_dir}"
    return ""


@dataclass
class StagedRuntime:
    """A staged runtime and the lock that keeps other agents from pruning it while this one runs."""

    runtime: BuiltinRuntime
    env_dir: Path
    lock_fd: int


def _interpreters(sources: Sources, run_as: RunAs) -> list[tuple[str, Callable[[Path], tuple[Path, Path]]]]:
    """(what, how to get (binary, prefix)) in order of preference: the original, a staged copy, the system's."""
    stdlib = sources.base_prefix / "lib" / f"python{sources.short_version}"
    candidates: list[tuple[str, Callable[[Path], tuple[Path, Path]]]] = []
    if user_can_reach(sources.executable, run_as, read=True) and user_can_reach(stdlib, run_as, read=True):
        candidates.append((str(sources.executable), lambda stage: (sources.executable, sources.base_prefix)))
    candidates.append((f"a copy of {sources.base_prefix}", lambda stage: _stage_interpreter(stage, sources)))
    system = sources.system_python
    if system.exists() and system.resolve() != sources.executable and user_can_reach(system, run_as, read=True):
        candidates.append((str(system), lambda stage: (system, system.parent.parent)))
    return candidates


def stage_builtin(root: Path, run_as: RunAs, sources: Sources | None = None) -> StagedRuntime:
    """Stage (or reuse) the built-in runtime under ``root`` for ``run_as``; raises SandboxError naming the fix."""
    sources = sources or current_sources()
    try:
        return _stage_builtin(root, run_as, sources)
    except OSError as exc:
        raise SandboxError(
            f"cannot stage the built-in model server for user {run_as.name} under {root}: {exc}"
            " (set FRONTDOOR_LOCAL_STAGE_DIR to a writable directory that user can traverse)"
        ) from exc


def _stage_builtin(root: Path, run_as: RunAs, sources: Sources) -> StagedRuntime:
    ensure_private_dir(root, run_as)
    stage = ensure_private_dir(root / "stage", run_as)
    site = sources.site_packages
    if not user_can_reach(site, run_as, read=True) or user_can_write(site, run_as):
        site = _stage_site_packages(stage, sources)
    failures = []
    for what, get in _interpreters(sources, run_as):
        try:
            python, prefix = get(stage)
            env_dir = _stage_env(stage, sources, python, prefix, site)
        except OSError as exc:
            failures.append(f"{what}: {exc}")
            log.warning("cannot stage the built-in runtime with %s: %s", what, exc)
            continue
        fd = os.open(env_dir / ".lock", os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_SH)
        runtime = BuiltinRuntime(
            python=str(env_dir / "bin" / "python"),
            env={"PYTHONPATH": str(env_dir / "app"), "PYTHONUNBUFFERED": "1"}
            | _library_path(prefix, sources.short_version),
        )
        problem = _probe(runtime, run_as, sources.short_version)
        if not problem:
            prune(stage, keep={env_dir.name})
            return StagedRuntime(runtime=runtime, env_dir=env_dir, lock_fd=fd)
        os.close(fd)
        failures.append(problem)
        log.warning("staged runtime %s does not run as %s: %s", env_dir, run_as.name, problem)
    raise SandboxError(
        f"cannot stage the built-in model server for user {run_as.name} under {stage}: {'; '.join(failures)}."
        " Install a Python of the same version the user can read (e.g. /usr/bin/python"
        f"{sources.short_version}), or set FRONTDOOR_LOCAL_RUN_AS / FRONTDOOR_LOCAL_STAGE_DIR"
    )


class BuiltinStage:
    """The built-in runtime of one agent: staged once in a background thread (the agent keeps ticking meanwhile),
    staged again after a failure once ``retry_s`` have passed."""

    PENDING = "preparing the built-in model server for its run-as user (staging)"

    def __init__(self, root: Callable[[], Path], run_as: RunAs, retry_s: float = 30.0) -> None:
        self._root = root
        self.run_as = run_as
        self.retry_s = retry_s
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._staged: StagedRuntime | None = None
        self._unstaged: BuiltinRuntime | None = None
        self._error = ""
        self._failed_at = 0.0

    def get(self) -> tuple[BuiltinRuntime | None, str]:
        """(runtime, "") when ready, else (None, why not): staging under way, or its failure."""
        if not self.run_as.switch:
            if self._unstaged is None:
                try:
                    self._unstaged = unstaged_runtime()
                except SandboxError as exc:
                    return None, str(exc)
            return self._unstaged, ""
        with self._lock:
            if self._staged is not None:
                return self._staged.runtime, ""
            running = self._thread is not None and self._thread.is_alive()
            if not running and (not self._error or time.monotonic() - self._failed_at >= self.retry_s):
                self._thread = threading.Thread(target=self._stage, name="staging", daemon=True)
                self._thread.start()
                running = True
            return None, self.PENDING if running and not self._error else self._error or self.PENDING

    def _stage(self) -> None:
        started = time.monotonic()
        try:
            staged = stage_builtin(self._root(), self.run_as)
        except SandboxError as exc:
            log.error("%s", exc)
            with self._lock:
                self._error, self._failed_at = str(exc), time.monotonic()
            return
        log.info(
            "built-in runtime for %s ready in %.1fs: %s",
            self.run_as.name,
            time.monotonic() - started,
            staged.runtime.python,
        )
        with self._lock:
            self._staged, self._error = staged, ""

    def wait(self, timeout: float) -> tuple[BuiltinRuntime | None, str]:
        """Start staging if needed and wait up to ``timeout`` for it (for scripts and tests)."""
        deadline = time.monotonic() + timeout
        runtime, why = self.get()
        while runtime is None and time.monotonic() < deadline:
            thread = self._thread
            if thread is None or not thread.is_alive():
                break
            thread.join(min(0.5, max(0.0, deadline - time.monotonic())))
            runtime, why = self.get()
        return self.get() if runtime is None else (runtime, why)
