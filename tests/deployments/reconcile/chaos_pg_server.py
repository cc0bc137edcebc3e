"""A disposable PostgreSQL server for chaos tests: its own data directory, port and socket, stopped and removed after.

The shared server (127.0.0.1:5432) is used by other suites and must never be restarted; this one belongs to a
single test, which may stop, restart or kill it at will. The binaries are Debian's (``/usr/lib/postgresql/*/bin``)
or the first ``pg_ctl`` on ``PATH``. Postgres refuses to run as root, so as root every server command runs as the
``postgres`` OS user, on a data directory that user owns.

Settings favour speed over durability (``fsync=off``, no full-page writes): nothing here has to survive a crash.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

SERVER_USER = "postgres"
_PROGRAMS = ("initdb", "pg_ctl", "postgres")
_COMMAND_TIMEOUT_S = 60


class PostgresUnavailable(RuntimeError):
    """No usable server binaries (or no ``postgres`` OS user to run them as root)."""


def find_bin_dir() -> Path:
    """The directory holding initdb, pg_ctl and postgres: the newest Debian install, else the one on PATH."""
    candidates = [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major, reverse=True)]
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for directory in candidates:
        if all(os.access(directory / program, os.X_OK) for program in _PROGRAMS):
            return directory
    raise PostgresUnavailable("no PostgreSQL server binaries (initdb, pg_ctl, postgres) in /usr/lib/postgresql/*/bin")


def _major(path: str) -> int:
    version = Path(path).parent.name
    return int(version) if version.isdigit() else 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DisposablePostgres:
    """One throwaway server: ``start()`` → use ``url(db)`` → ``stop()``/``start()`` at will → ``destroy()``."""

    def __init__(self) -> None:
        self.bin_dir = find_bin_dir()
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                self._owner = pwd.getpwnam(SERVER_USER)
            except KeyError as exc:
                raise PostgresUnavailable(f"running as root and there is no {SERVER_USER!r} OS user") from exc
            if shutil.which("runuser") is None:
                raise PostgresUnavailable("running as root and there is no runuser to drop to the postgres user")
        self.base = Path(tempfile.mkdtemp(prefix="fdt-pg-"))
        self.data = self.base / "data"
        self.socket_dir = self.base / "run"
        self.log = self.base / "server.log"
        self.port = _free_port()
        self.running = False
        self.started_once = False
        self.socket_dir.mkdir()
        if self.as_root:
            for path in (self.base, self.socket_dir):
                os.chown(path, self._owner.pw_uid, self._owner.pw_gid)

    # ---------------------------------------------------------------- lifecycle

    def init(self) -> DisposablePostgres:
        """initdb with trust auth for local and 127.0.0.1 connections (no password anywhere)."""
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        return self

    def start(self) -> None:
        """Start (or start again, on the same port: clients keep their ``url``) and wait until it accepts."""
        if self.started_once:
            self._start()
            return
        for attempt in range(3):  # the free port was taken between picking and binding it: pick another
            try:
                self._start()
                break
            except RuntimeError:
                if attempt == 2 or "could not bind" not in self.log_tail():
                    raise
                self.port = _free_port()
        self.started_once = True

    def _start(self) -> None:
        options = " ".join(
            [
                f"-p {self.port}",
                f"-k {self.socket_dir}",
                "-c listen_addresses=127.0.0.1",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=50",
            ]
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "30", "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """``fast``: roll back and disconnect every session (what a restart does); ``immediate``: no shutdown."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop")
        self.running = False

    def destroy(self) -> None:
        """Stop the server if it runs (immediately: nothing is worth keeping) and remove every file it had."""
        try:
            if self.running or (self.data / "postmaster.pid").exists():
                self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    # ---------------------------------------------------------------- use

    def url(self, database: str) -> str:
        """A ``DATABASE_URL`` for the settings module (TCP on 127.0.0.1, user postgres, trust auth)."""
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=database, autocommit=True)

    def create_database(self, name: str) -> None:
        with self.connect() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def wait_accepting(self, timeout_s: float = 30) -> None:
        """Until a connection succeeds (``pg_ctl -w`` already waits; this guards the port being reused)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with self.connect():
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if self.as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S, cwd=self.base, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{program} failed ({result.returncode}): {result.stderr.strip()}\n{result.stdout[-2000:]}\n"
                f"server log:\n{self.log_tail()}"
            )
