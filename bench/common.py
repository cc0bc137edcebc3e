"""Helpers shared by the benchmarks: free ports, child processes that always get cleaned up, waiting for HTTP.

Every child runs in its own process group, so stopping it also stops whatever it forked (uvicorn workers,
LiteLLM's server). ``Children`` stops them all on normal exit, on an exception and on Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import math
import os
import signal
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
VAR_BENCH = ROOT / "var" / "bench"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the usual small race is fine for a bench)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Child:
    """A started server: its process, base URL and the file that holds its stdout and stderr."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """SIGTERM the child's process group, then SIGKILL it if it has not gone within ``grace_s``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(grace_s)


def http_request(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout_s: float = 5.0,
) -> tuple[int, bytes]:
    """One plain HTTP request (the bench's own checks, not the load): the status and the body."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout_s)
    try:
        connection.request(method, parts.path or "/", body=body, headers=dict(headers or {}))
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_http(url: str, child: Child, deadline_s: float = 30.0) -> None:
    """Poll ``url`` until it answers 200; raise with the child's log tail if it exits or the deadline passes."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if child.proc.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}:\n{child.log_tail()}")
        with contextlib.suppress(OSError):  # connection refused, resets, timeouts while it starts
            if http_request(url, timeout_s=1.0)[0] == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{child.name} did not answer 200 on {url} within {deadline_s:.0f} s:\n{child.log_tail()}")


class Children:
    """Owns every child a bench starts; a context manager that stops them all however the bench ends."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        env: Mapping[str, str] | None = None,
        unset: Sequence[str] = (),
    ) -> Child:
        """Start ``argv`` with ``env`` added to (and ``unset`` removed from) this process's environment."""
        environment = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in unset}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        with log_path.open("wb") as out:
            proc = subprocess.Popen(
                list(argv),
                cwd=ROOT,
                env=environment,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # own process group: killpg reaches its workers too
            )
        child = Child(name, proc, f"http://127.0.0.1:{port}", log_path)
        self.children.append(child)
        return child

    def stop_all(self) -> None:
        for child in reversed(self.children):
            stop_process(child.proc)
        self.children.clear()

    def __enter__(self) -> Children:
        self._previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        # Ctrl-C during the cleanup itself must not leave children behind.
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self.stop_all()
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, self._previous)


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of already sorted values, nearest-rank; 0.0 for no values."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return float(sorted_values[rank - 1])


# --- CPU use of a process (or its process group), from /proc -------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_ticks(pid: int, group: bool) -> int:
    """utime + stime of ``pid``, or of every process in process group ``pid`` when ``group``."""
    paths = Path("/proc").glob("[0-9]*/stat") if group else [Path(f"/proc/{pid}/stat")]
    total = 0
    for path in paths:
        try:
            fields = path.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state, ppid, pgrp, ...
        except (OSError, IndexError):
            continue  # the process ended meanwhile
        if not group or int(fields[2]) == pid:
            total += int(fields[11]) + int(fields[12])
    return total


class ProcessCpu:
    """Share of one CPU a process (group) used since this object was made: 100 means one core fully busy."""

    def __init__(self, pid: int, group: bool = False) -> None:
        self.pid, self.group = pid, group
        self._ticks = _cpu_ticks(pid, group)
        self._start = time.monotonic()

    def percent(self) -> float:
        elapsed = time.monotonic() - self._start
        used = (_cpu_ticks(self.pid, self.group) - self._ticks) / _CLK_TCK
        return 100.0 * used / elapsed if elapsed > 0 else 0.0


# --- load generators -------------------------------------------------------------------------------------------

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_post.lua"


@dataclass
class LoadResult:
    """What one load run measured; latencies in milliseconds, ``errors`` counts non-2xx and socket errors."""

    requests: int
    duration_s: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


def run_wrk(url: str, body: str, authorization: str, duration_s: float, threads: int, connections: int) -> LoadResult:
    """POST ``body`` to ``url`` with wrk for ``duration_s`` (whole seconds) and parse bench/wrk_post.lua's summary."""
    argv = [
        "wrk",
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{max(1, math.ceil(duration_s))}s",
        "--timeout",
        "10s",
        "-s",
        str(WRK_SCRIPT),
        url,
    ]
    env = {**os.environ, "WRK_BODY": body, "WRK_AUTHORIZATION": authorization}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=duration_s + 60, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            w = json.loads(line.removeprefix("WRK_JSON "))
            errors = sum(w[k] for k in ("status_errors", "connect_errors", "read_errors", "write_errors", "timeouts"))
            return LoadResult(
                requests=w["requests"],
                duration_s=w["duration_us"] / 1e6,
                errors=errors,
                p50_ms=w["p50_us"] / 1000,
                p90_ms=w["p90_us"] / 1000,
                p99_ms=w["p99_us"] / 1000,
                max_ms=w["max_us"] / 1000,
            )
    raise RuntimeError(f"wrk gave no summary (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")


def run_aiohttp(url: str, body: str, authorization: str, duration_s: float, connections: int) -> LoadResult:
    """The fallback load generator: ``connections`` closed-loop clients for ``duration_s``. Slower than wrk."""
    return asyncio.run(_aiohttp_load(url, body.encode(), authorization, duration_s, connections))


async def _aiohttp_load(url: str, body: bytes, authorization: str, duration_s: float, connections: int) -> LoadResult:
    import aiohttp  # only the fallback needs it

    headers = {"Content-Type": "application/json"}
    if authorization:
        headers["Authorization"] = authorization
    latencies: list[float] = []
    errors = 0
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections), timeout=timeout) as session:
        start = time.perf_counter()
        deadline = start + duration_s

        async def client() -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        ok = response.status < 400
                except (TimeoutError, aiohttp.ClientError):
                    ok = False
                latencies.append(time.perf_counter() - sent)
                errors += not ok

        await asyncio.gather(*(client() for _ in range(connections)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return LoadResult(
        requests=len(latencies),
        duration_s=elapsed,
        errors=errors,
        p50_ms=percentile(latencies, 50) * 1000,
        p90_ms=percentile(latencies, 90) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        max_ms=(latencies[-1] * 1000) if latencies else 0.0,
    )
