"""The agent's state file: which replica processes it started, so a restarted agent can adopt or stop them."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from localagent.procs import ProcessIdentity

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


def _load(state_dir: Path) -> dict[str, Any]:
    path = state_dir / STATE_FILE
    try:
        doc = json.loads(path.read_text())
        return doc if isinstance(doc, dict) else {}
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        log.warning("ignoring unreadable state file %s: %s", path, exc)
        return {}


def load_records(state_dir: Path) -> list[ReplicaRecord]:
    """The recorded replicas; a missing or unreadable file means nothing was recorded."""
    try:
        return [ReplicaRecord(**item) for item in _load(state_dir).get("replicas", [])]
    except TypeError as exc:
        log.warning("ignoring malformed replica records: %s", exc)
        return []


def load_ports(state_dir: Path) -> dict[str, int]:
    """The port each replica slot last used: reused on restart so endpoints stay stable."""
    ports = _load(state_dir).get("ports", {})
    return {str(k): int(v) for k, v in ports.items()} if isinstance(ports, dict) else {}


def save_records(state_dir: Path, records: list[ReplicaRecord], ports: dict[str, int] | None = None) -> None:
    """Write atomically (temp file + rename) so a crash mid-write never leaves half a file."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / STATE_FILE
    tmp = path.with_suffix(f".tmp.{os.getpid()}")
    doc = {
        "replicas": [asdict(r) for r in sorted(records, key=lambda r: r.key)],
        "ports": dict(sorted((ports or {}).items())),
    }
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)
