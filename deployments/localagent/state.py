"""The agent's state file: which replica processes it started, so a restarted agent can adopt or stop them."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from deployments.localagent.procs import ProcessIdentity

log = logging.getLogger(__name__)

STATE_FILE = "replicas.json"


@dataclass
class ReplicaRecord:
    """A started replica process; ``key`` is ``d<deployment>-r<revision>-<slot>``."""

    key: str
    deployment_id: int
    revision_id: int
    slot: int
    spec_hash: str
    runtime: str
    port: int
    pid: int
    start_time: int
    cmdline: list[str]
    gpus: dict[str, list[int]] = field(default_factory=dict)

    @property
    def identity(self) -> ProcessIdentity:
        return ProcessIdentity(pid=self.pid, start_time=self.start_time, cmdline=tuple(self.cmdline))


def replica_key(deployment_id: int, revision_id: int, slot: int) -> str:
    return f"d{deployment_id}-r{revision_id}-{slot}"


def load_records(state_dir: Path) -> list[ReplicaRecord]:
    """Read the state file; a missing or unreadable one means nothing was recorded."""
    path = state_dir / STATE_FILE
    try:
        doc = json.loads(path.read_text())
        return [ReplicaRecord(**item) for item in doc.get("replicas", [])]
    except FileNotFoundError:
        return []
    except (ValueError, TypeError) as exc:
        log.warning("ignoring unreadable state file %s: %s", path, exc)
        return []


def save_records(state_dir: Path, records: list[ReplicaRecord]) -> None:
    """Write atomically (temp file + rename) so a crash mid-write never leaves half a file."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / STATE_FILE
    tmp = path.with_suffix(f".tmp.{os.getpid()}")
    tmp.write_text(json.dumps({"replicas": [asdict(r) for r in sorted(records, key=lambda r: r.key)]}, indent=1))
    os.replace(tmp, path)
