"""The neighbour's own process, started by ``neighbour_check.py start`` (its docstring explains the check).

In stand-in mode it is a Celery worker consuming the installation's default queue, whose signal handlers record
every message it gets; a thread beside it sends the marker tasks, writes the marker keys, listens on the prefix's
channels and asks which other workers consume the queue. In the other modes only that thread runs.

    python scripts/neighbour_worker.py --state-dir DIR
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from celery import Celery, signals
from neighbour_check import (
    BACKLOG,
    LOCK_TTL_S,
    MARKER_EVERY_S,
    MARKER_KEY_TTL_S,
    PROBE_EVERY_S,
    Neighbour,
    abandoned,
    alive,
    clean_up,
    describe,
    evaluate,
    other_consumers,
    queued,
)


class Watcher:
    """The neighbour's loop: markers (tasks in stand-in, keys always), the ``fd:*`` channels, the probes."""

    def __init__(self, neighbour: Neighbour, app: Celery, worker: str | None) -> None:
        self.neighbour = neighbour
        self.app = app
        self.worker = worker  # the stand-in worker's name; None when nothing consumes
        self.client = neighbour.client()
        self.stop = threading.Event()
        self.stepped_aside = threading.Event()
        self.sent = 0
        self.seen_waiting: set[str] = set(neighbour.state["waiting"])

    def run(self) -> None:
        state = self.neighbour.state
        pubsub = None
        if state["mode"] != "beside":
            pubsub = self.client.pubsub(ignore_subscribe_messages=True)
            pubsub.psubscribe(f"{self.neighbour.prefix}:*")
        self.neighbour.path("ready").touch()
        next_marker = next_probe = time.monotonic()
        while not self.stop.is_set():
            if pubsub is not None:
                message = pubsub.get_message(timeout=0.2)
                if message is not None:
                    data = message["data"][:200]
                    self.neighbour.record(
                        "events",
                        {"kind": "publish", "channel": message["channel"].decode(errors="replace"), "data": repr(data)},
                    )
            else:
                time.sleep(0.2)
            now = time.monotonic()
            feeding = not self.neighbour.path("stop").exists()
            if feeding and (now >= next_marker or self.backlog_short()):
                self.send_marker()
                next_marker = now + MARKER_EVERY_S
            if now >= next_probe:
                self.probe(feeding)
                next_probe = time.monotonic() + PROBE_EVERY_S
        if pubsub is not None:
            pubsub.close()

    def backlog_short(self) -> bool:
        if self.worker is None or self.stepped_aside.is_set():
            return False
        return int(self.client.llen(self.neighbour.queue)) < BACKLOG

    def send_marker(self) -> None:
        n = self.sent
        key = self.neighbour.marker_key(n)
        task_id = None
        if self.worker is not None and not self.stepped_aside.is_set():
            task_id = f"neighbour-{self.neighbour.nonce}-{n}"
            self.app.send_task(self.neighbour.marker_task, args=[n], task_id=task_id, queue=self.neighbour.queue)
        self.client.set(key, str(n), ex=MARKER_KEY_TTL_S)
        self.neighbour.record("sent", {"n": n, "id": task_id, "key": key})
        self.sent += 1

    def probe(self, feeding: bool) -> None:
        state = self.neighbour.state
        if not alive(int(state["owner_pid"])) and not self.neighbour.path("stop").exists():
            # The test command is gone without verify (Ctrl-C): clean up rather than outlive it.
            self.neighbour.record("events", {"kind": "owner-gone"})
            self.finish()
            return
        if not feeding and self.worker is None:
            self.finish()
            return
        if state["mode"] == "beside":
            return
        if state["mode"] == "stand-in":
            self.client.expire(self.neighbour.lock_key, LOCK_TTL_S)
        if not self.stepped_aside.is_set():
            others = other_consumers(self.app, self.neighbour.queue, own=self.worker)
            if others:
                self.neighbour.record("events", {"kind": "worker-appeared", "workers": others})
                self.step_aside()
        if state["mode"] == "canary":
            for _, _, headers in queued(self.client, self.neighbour.queue):
                task_id = str(headers.get("id"))
                if task_id not in self.seen_waiting:
                    self.seen_waiting.add(task_id)
                    self.neighbour.record("events", {"kind": "queued", **describe(headers)})

    def step_aside(self) -> None:
        """Stop consuming the queue (from any thread: the worker's consumer acts on its own mailbox)."""
        if self.stepped_aside.is_set():
            return
        self.stepped_aside.set()
        self.neighbour.record("events", {"kind": "stepped-aside"})
        if self.worker is not None:
            self.app.control.cancel_consumer(self.neighbour.queue, destination=[self.worker])

    def finish(self) -> None:
        self.stop.set()
        if self.worker is not None:
            os.kill(os.getpid(), signal.SIGTERM)  # the worker's warm shutdown


def serve(args: argparse.Namespace) -> int:
    neighbour = Neighbour(args.state_dir).load()
    app = neighbour.app()
    if neighbour.state["mode"] != "stand-in":
        watcher = Watcher(neighbour, app, worker=None)
        signal.signal(signal.SIGTERM, lambda *_: watcher.stop.set())
        watcher.run()
        clean_up_if_abandoned(neighbour)
        return 0
    worker_name = f"neighbour-{neighbour.nonce}@%h"
    holder: dict[str, Watcher] = {}

    @signals.worker_ready.connect
    def on_ready(sender: Any, **_: Any) -> None:
        watcher = holder["watcher"] = Watcher(neighbour, app, worker=sender.hostname)
        threading.Thread(target=watcher.run, name="neighbour", daemon=True).start()

    @signals.task_received.connect
    def on_received(request: Any, **_: Any) -> None:
        neighbour.record("received", {"signal": "received", "id": request.id, "name": request.name})

    @signals.task_prerun.connect
    def on_prerun(task_id: str, task: Any, **_: Any) -> None:
        neighbour.record("received", {"signal": "prerun", "id": task_id, "name": task.name})

    @signals.task_unknown.connect
    def on_unknown(sender: Any, message: Any, **_: Any) -> None:
        on_foreign(sender, message, "unknown")

    @signals.task_rejected.connect
    def on_rejected(sender: Any, message: Any, **_: Any) -> None:
        on_foreign(sender, message, "rejected")

    def on_foreign(consumer: Any, message: Any, how: str) -> None:
        neighbour.record("received", {"signal": how, **describe(message.headers or {})})
        # Step aside before putting the message back: this consumer must not take it again.
        if "watcher" in holder:
            holder["watcher"].stepped_aside.set()
            neighbour.record("events", {"kind": "stepped-aside"})
        consumer.cancel_task_queue(neighbour.queue)
        put_back(message, neighbour.queue)

    app.worker_main(
        ["worker", "--pool=solo", "-Q", neighbour.queue, "-n", worker_name, "--without-gossip", "--without-mingle",
         "--without-heartbeat", "-l", "WARNING"]
    )  # fmt: skip
    if "watcher" in holder:
        holder["watcher"].stop.set()
    clean_up_if_abandoned(neighbour)
    return 0


def clean_up_if_abandoned(neighbour: Neighbour) -> None:
    """The test command ended without verify (Ctrl-C): no verdict, but nothing of the neighbour's stays behind."""
    if abandoned(neighbour):
        client = neighbour.client()
        clean_up(neighbour, client, clean=not evaluate(neighbour, client))


def put_back(message: Any, queue: str) -> None:
    """Return a message Celery has just rejected to the end of the queue its consumers read next, unchanged.

    The payload is kombu's own (``_raw``), re-pushed the way kombu restores an unacknowledged message.
    """
    channel = message.channel
    priority = channel._get_message_priority(message._raw, reverse=False)
    channel.client.rpush(channel._q_for_pri(queue, priority), json.dumps(message._raw))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-dir", type=Path, required=True)
    return serve(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
