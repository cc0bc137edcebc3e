"""What tests inject into the fake API server (failing, dropped and conflicting calls, latency, refused names) and
what it counts for them (reads, writes and a log of the writes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Faults:
    """Injected failures; counters decrement as they fire."""

    fail_next: int = 0
    fail_status: int = 500
    drop_next: int = 0
    conflict_next: int = 0
    latency_s: float = 0.0
    reject_names: dict[str, str] = field(default_factory=dict)  # object name -> 422 message on writes


@dataclass
class Stats:
    reads: int = 0
    writes: int = 0
    write_log: list[tuple[str, str, str, str]] = field(default_factory=list)  # (verb, plural, namespace, name)

    def snapshot(self) -> dict[str, Any]:
        return {"reads": self.reads, "writes": self.writes, "calls": self.reads + self.writes}
