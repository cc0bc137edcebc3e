"""A neighbour for the test suite: a stand-in for a ``make run`` installation on the same Redis, which fails the
test command when the suite took, sent, published or deleted anything of the installation's.

    python scripts/neighbour_check.py start     # before the suite (the Makefile's ``test`` target)
    python scripts/neighbour_check.py verify    # after it: stops the neighbour; exit 1 when it was disturbed

What it is. ``start`` launches, in a process of its own, a real Celery worker wired like ``make run``'s: the broker
``REDIS_URL`` (database 0 by default), the default queue ``celery``, Celery's keys without a prefix, Frontdoor's
Redis prefix ``fd``. Its app knows one task, named after a random nonce (``neighbour-<nonce>.marker``), which
nobody else can send. While the suite runs, the neighbour keeps a few marker tasks waiting in ``celery``, as a busy
installation's would be (so that deleting or draining the queue loses some), and writes a marker key
``fd:neighbour-<nonce>:<n>`` every second and with each task; its signal handlers (``task_received``,
``task_prerun``, ``task_unknown``, ``task_rejected``) record every message it gets; it listens on the ``fd:*``
channels (Redis delivers them across databases, as a gateway would get them), and it noted at start which ``fd:*``
keys and Celery bindings existed. ``verify`` stops it and fails when it received a
task it did not send, lost one of its own (sent, never received, not in the queue), a marker key vanished,
something was published on an ``fd:`` channel, keys appeared under ``fd:`` or among Celery's bindings, an ``fd:``
key without expiry vanished, or a worker started consuming ``celery`` during the run.

Why it cannot harm an installation. Two consumers of ``celery`` would take each other's tasks, so the neighbour
consumes ``celery`` only when it can tell that it is the only one ("stand-in" mode): no worker answers a
remote-control broadcast with ``celery`` among its queues (a running ``make run`` worker does), no task waits
there, and it holds the lock ``fd:neighbour-check:lock`` (another ``make test`` on this Redis). Even then:

- a message it did not send is put back, untouched, and the neighbour stops consuming ``celery`` at once: the
  check has failed already, and whoever owns that message still has it;
- it asks again every two seconds; when a worker starts consuming ``celery`` it steps aside the same way.

Otherwise it consumes nothing and watches:

- "canary": nobody consumes ``celery`` but tasks wait there (a stopped installation's, an older run's). Those
  tasks are the canaries: none may vanish and no new message may appear; the key and channel checks also apply.
- "beside": a worker consumes ``celery`` (a running installation), or another neighbour holds the lock. Only the
  marker keys are checked: the installation's own traffic would make the other checks meaningless.

It removes what it created and only that: its marker keys, its lock, its markers left in the queue, its
remote-control mailbox, and Celery's shared keys that appeared during a clean stand-in run (then they are its own).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import redis
from celery import Celery

ROOT = Path(__file__).resolve().parent.parent
PRIORITY_SEP = "\x06\x16"  # kombu's separator between a queue and its priority lists
MARKER_EVERY_S = 1.0  # marker keys; marker tasks are sent as the backlog needs them
BACKLOG = 4  # marker tasks kept waiting in the queue, as a busy installation's would: deleting it loses them
MARKER_TASK_S = 0.5  # what a marker task takes, so that a backlog forms
PROBE_EVERY_S = 2.0
LOCK_TTL_S = 30
MARKER_KEY_TTL_S = 24 * 3600  # a neighbour killed before its cleanup leaves nothing behind for long
SHOW = 5  # examples per problem in the report


class Neighbour:
    """The state of one check (``state.json`` in its directory) and its records, shared by every subcommand."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir
        self.state: dict[str, Any] = {}
        self._write_lock = threading.Lock()

    def path(self, name: str) -> Path:
        return self.dir / name

    def load(self) -> Neighbour:
        self.state = json.loads(self.path("state.json").read_text())
        return self

    def save(self) -> None:
        self.path("state.json").write_text(json.dumps(self.state))

    def record(self, name: str, entry: dict[str, Any]) -> None:
        """Append one JSON line to ``name`` (``sent``, ``received`` or ``events``)."""
        with self._write_lock, self.path(f"{name}.jsonl").open("a") as out:
            out.write(json.dumps(entry) + "\n")

    def records(self, name: str) -> list[dict[str, Any]]:
        path = self.path(f"{name}.jsonl")
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    # --- what the state names

    @property
    def queue(self) -> str:
        return str(self.state["queue"])

    @property
    def prefix(self) -> str:
        return str(self.state["prefix"])

    @property
    def nonce(self) -> str:
        return str(self.state["nonce"])

    @property
    def lock_key(self) -> str:
        return f"{self.prefix}:neighbour-check:lock"

    @property
    def marker_task(self) -> str:
        return f"neighbour-{self.nonce}.marker"

    def marker_key(self, n: int) -> str:
        return f"{self.prefix}:neighbour-{self.nonce}:{n}"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.state["redis_url"], socket_timeout=10)

    def app(self) -> Celery:
        app = Celery("neighbour", broker=self.state["redis_url"])
        app.conf.update(
            task_default_queue=self.queue,
            task_acks_late=True,
            worker_prefetch_multiplier=1,
            task_serializer="json",
            accept_content=["json"],
            broker_connection_retry_on_startup=True,
            worker_hijack_root_logger=False,
        )
        app.task(name=self.marker_task)(_marker)
        return app


def _marker(n: int) -> int:
    time.sleep(MARKER_TASK_S)
    return n


# ---------------------------------------------------------------- reading Redis


def queue_keys(queue: str) -> list[str]:
    """The lists a Redis-transport queue is stored in: the queue, and one per priority step kombu uses."""
    return [queue, *(f"{queue}{PRIORITY_SEP}{step}" for step in (3, 6, 9))]


def queued(client: redis.Redis, queue: str) -> Iterator[tuple[str, bytes, dict[str, Any]]]:
    """(list key, raw message, headers) for every message waiting in ``queue``."""
    for key in queue_keys(queue):
        for raw in client.lrange(key, 0, -1):
            try:
                headers = json.loads(raw).get("headers") or {}
            except (ValueError, AttributeError):
                headers = {}
            yield key, raw, headers


def scan(client: redis.Redis, pattern: str) -> set[str]:
    return {key.decode(errors="replace") for key in client.scan_iter(match=pattern, count=1000)}


def keys_without_expiry(client: redis.Redis, keys: Iterable[str]) -> set[str]:
    names = sorted(keys)
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.ttl(name)
    return {name for name, ttl in zip(names, pipe.execute(), strict=True) if ttl == -1}


def other_consumers(app: Celery, queue: str, own: str | None) -> list[str]:
    """Workers on this Redis's default Celery mailbox that consume ``queue`` (a ``make run`` worker answers)."""
    replies = app.control.inspect(timeout=1.0).active_queues() or {}
    return sorted(name for name, queues in replies.items() if name != own and any(q["name"] == queue for q in queues))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe(headers: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": headers.get("id"),
        "name": headers.get("task"),
        "origin": headers.get("origin"),
        "args": str(headers.get("argsrepr"))[:120],
    }


def abandoned(neighbour: Neighbour) -> bool:
    return any(e["kind"] == "owner-gone" for e in neighbour.records("events"))


# ---------------------------------------------------------------- start


def start(args: argparse.Namespace) -> int:
    neighbour = Neighbour(args.state_dir)
    if neighbour.path("state.json").exists():
        neighbour.load()
        if alive(int(neighbour.state.get("pid") or 0)):
            print(f"neighbour check: one is running already (pid {neighbour.state['pid']}); run verify first")
            return 1
        clean_up(neighbour, neighbour.client(), clean=False)  # one that died before its verify
    neighbour.dir.mkdir(parents=True, exist_ok=True)
    for old in neighbour.dir.iterdir():
        old.unlink()
    neighbour.state = {
        "redis_url": args.redis_url,
        "queue": args.queue,
        "prefix": args.prefix,
        "nonce": secrets.token_hex(4),
        "owner_pid": args.owner_pid,
    }
    client = neighbour.client()
    at_start = scan(client, f"{args.prefix}:*")
    neighbour.state.update(
        waiting=[headers.get("id") for _, _, headers in queued(client, args.queue)],
        keys=sorted(at_start),
        keys_without_expiry=sorted(keys_without_expiry(client, at_start)),
        celery_keys=sorted(celery_shared_keys(client)),
    )
    consumers = other_consumers(neighbour.app(), args.queue, own=None)
    if consumers:
        mode, why = "beside", f"{', '.join(consumers)} consume `{args.queue}`: an installation runs on this Redis"
    elif not client.set(neighbour.lock_key, neighbour.nonce, nx=True, ex=LOCK_TTL_S):
        mode, why = "beside", f"another neighbour check holds {neighbour.lock_key}"
    elif neighbour.state["waiting"]:
        client.delete(neighbour.lock_key)
        count = len(neighbour.state["waiting"])
        mode, why = "canary", f"{count} task(s) sent before the check wait in `{args.queue}`; they must stay there"
    else:
        mode, why = "stand-in", f"the only consumer of `{args.queue}`"
    neighbour.state.update(mode=mode, why=why)
    neighbour.save()
    with neighbour.path("neighbour.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("neighbour_worker.py")), "--state-dir", str(neighbour.dir)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of the test command reaches pytest, not the neighbour
        )
    neighbour.state["pid"] = process.pid
    neighbour.save()
    deadline = time.monotonic() + 60
    while not neighbour.path("ready").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            print(f"neighbour check: the neighbour did not start:\n{log_tail(neighbour)}")
            process.kill()
            return 1
        time.sleep(0.2)
    print(f"neighbour check: {mode} on {args.redis_url} (`{args.queue}`, `{args.prefix}:`): {why}")
    return 0


def celery_shared_keys(client: redis.Redis) -> set[str]:
    """Celery's keys outside any queue: bindings, their deadlines, unacknowledged tasks."""
    return scan(client, "_kombu.binding*") | scan(client, "unacked*")


def log_tail(neighbour: Neighbour) -> str:
    path = neighbour.path("neighbour.log")
    return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"


# ---------------------------------------------------------------- verify


def verify(args: argparse.Namespace) -> int:
    neighbour = Neighbour(args.state_dir)
    if not neighbour.path("state.json").exists():
        print(f"neighbour check: no neighbour was started ({neighbour.dir}); run start before the suite")
        return 1
    neighbour.load()
    state = neighbour.state
    pid = int(state["pid"])
    if abandoned(neighbour):
        print("neighbour check: no verdict: the test command ended before verify (the neighbour cleaned up)")
        return 1
    problems: list[str] = []
    if not alive(pid):
        problems.append(f"the neighbour stopped before verify; its log:\n{log_tail(neighbour)}")
    neighbour.path("stop").touch()
    if state["mode"] == "stand-in":
        wait_for_markers(neighbour, timeout_s=20)
    stop_process(pid)
    client = neighbour.client()
    problems += evaluate(neighbour, client)
    clean_up(neighbour, client, clean=not problems)
    if problems:
        print(f"neighbour check FAILED ({state['mode']} on {state['redis_url']}: {state['why']}):")
        for problem in problems:
            print(f"  - {problem}")
        print(f"  records: {neighbour.dir}")
        return 1
    checked = "marker keys only" if state["mode"] == "beside" else "tasks, queue, keys and channels"
    print(f"neighbour check passed ({state['mode']}: {state['why']}; checked {checked})")
    for old in neighbour.dir.iterdir():
        old.unlink()
    return 0


def wait_for_markers(neighbour: Neighbour, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events = {e["kind"] for e in neighbour.records("events")}
        sent = {s["id"] for s in neighbour.records("sent") if s["id"]}
        if "stepped-aside" in events or sent <= {r["id"] for r in neighbour.records("received")}:
            return
        time.sleep(0.2)


def stop_process(pid: int) -> None:
    if not alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)


def evaluate(neighbour: Neighbour, client: redis.Redis) -> list[str]:
    """What disturbed the neighbour, one sentence each."""
    state, queue, prefix = neighbour.state, neighbour.queue, neighbour.prefix
    sent = neighbour.records("sent")
    sent_ids = {s["id"] for s in sent if s["id"]}
    received = neighbour.records("received")
    events = neighbour.records("events")
    waiting_now = {str(headers.get("id")): headers for _, _, headers in queued(client, queue)}
    problems = []

    foreign = [r for r in received if r["id"] not in sent_ids]
    if foreign:
        problems.append(f"it received {len(foreign)} task(s) it did not send (put back in `{queue}`): {show(foreign)}")
    if state["mode"] == "stand-in":
        lost = sent_ids - {r["id"] for r in received} - set(waiting_now)
        if lost:
            problems.append(
                f"{len(lost)} of its {len(sent_ids)} marker tasks were lost from `{queue}`"
                f" (another consumer took them, or the queue was deleted): {sorted(lost)[:SHOW]}"
            )
    values = client.mget([s["key"] for s in sent]) if sent else []
    gone = [s["key"] for s, value in zip(sent, values, strict=True) if value != str(s["n"]).encode()]
    if gone:
        problems.append(
            f"{len(gone)} of its {len(sent)} marker keys under `{prefix}:` vanished or changed: {gone[:SHOW]}"
        )
    if state["mode"] == "beside":
        return problems

    appeared = [e for e in events if e["kind"] == "worker-appeared"]
    if appeared:
        problems.append(
            f"worker(s) started consuming `{queue}` during the run: {appeared[0]['workers']}"
            " (the suite's, unless an installation was started meanwhile)"
        )
    publishes = [e for e in events if e["kind"] == "publish"]
    if publishes:
        channels = sorted({e["channel"] for e in publishes})
        problems.append(f"{len(publishes)} message(s) were published on `{prefix}:` channels: {channels[:SHOW]}")
    keys_now = scan(client, f"{prefix}:*")
    new_keys = sorted(k for k in keys_now - set(state["keys"]) if not k.startswith(f"{prefix}:neighbour-"))
    if new_keys:
        problems.append(f"{len(new_keys)} key(s) appeared under `{prefix}:`: {new_keys[:SHOW]}")
    vanished = sorted(set(state["keys_without_expiry"]) - keys_now)
    if vanished:
        problems.append(f"{len(vanished)} key(s) under `{prefix}:` without expiry vanished: {vanished[:SHOW]}")
    ours = {
        f"{kind}.{exchange}" for kind in ("_kombu.binding", "_kombu.binding_permanent") for exchange in OWN_EXCHANGES
    }
    new_bindings = sorted(
        k for k in scan(client, "_kombu.binding*") - set(state["celery_keys"]) - ours if k != "_kombu.binding_deadlines"
    )
    if new_bindings:
        problems.append(f"Celery bindings appeared outside any key prefix: {new_bindings[:SHOW]}")
    known = sent_ids | set(state["waiting"]) | {r["id"] for r in foreign}  # the foreign ones are reported above
    foreign_waiting = [describe(h) for task_id, h in waiting_now.items() if task_id not in known]
    foreign_waiting += [e for e in events if e["kind"] == "queued" and e["id"] not in waiting_now.keys() | known]
    if foreign_waiting:
        problems.append(f"{len(foreign_waiting)} task(s) it did not send went to `{queue}`: {show(foreign_waiting)}")
    if state["mode"] == "canary" and not appeared:
        canaries_gone = [task_id for task_id in state["waiting"] if str(task_id) not in waiting_now]
        if canaries_gone:
            problems.append(
                f"{len(canaries_gone)} of the {len(state['waiting'])} task(s) that waited in `{queue}` before the run"
                f" vanished (consumed, or the queue deleted): {canaries_gone[:SHOW]}"
            )
    return problems


OWN_EXCHANGES = ("celery", "celery.pidbox", "reply.celery.pidbox")


def show(entries: list[dict[str, Any]]) -> str:
    return "; ".join(f"{e.get('name')}{e.get('args') or ''} from {e.get('origin')}" for e in entries[:SHOW])


def clean_up(neighbour: Neighbour, client: redis.Redis, clean: bool) -> None:
    """Delete what the neighbour created, and nothing else."""
    state = neighbour.state
    marker_keys = list(client.scan_iter(match=f"{neighbour.prefix}:neighbour-{neighbour.nonce}:*", count=1000))
    for start_at in range(0, len(marker_keys), 500):
        client.delete(*marker_keys[start_at : start_at + 500])
    if client.get(neighbour.lock_key) == neighbour.nonce.encode():
        client.delete(neighbour.lock_key)
    for key, raw, headers in queued(client, neighbour.queue):
        if headers.get("task") == neighbour.marker_task:
            client.lrem(key, 1, raw)
    # The stand-in worker's remote-control mailbox (its name carries the nonce).
    for key in scan(client, "_kombu.binding*pidbox"):
        for member in client.smembers(key):
            if neighbour.nonce.encode() in member:
                client.srem(key, member)
    for key in scan(client, f"*neighbour-{neighbour.nonce}@*"):
        client.delete(key)
    if clean and state["mode"] == "stand-in":
        # Nothing else used Celery's default keys during the run: those that appeared are the neighbour's.
        appeared = celery_shared_keys(client) - set(state["celery_keys"])
        if appeared:
            client.delete(*sorted(appeared))


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("start", "verify"):
        command = commands.add_parser(name)
        command.add_argument("--state-dir", type=Path, default=ROOT / "var" / "neighbour-check")
    start_command = commands.choices["start"]
    start_command.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    start_command.add_argument("--queue", default="celery", help="the installation's Celery queue")
    start_command.add_argument("--prefix", default="fd", help="the installation's Redis key prefix")
    start_command.add_argument(
        "--owner-pid", type=int, default=os.getppid(), help="stop and clean up when this process is gone"
    )
    args = parser.parse_args(argv)
    return {"start": start, "verify": verify}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
