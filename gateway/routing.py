"""Picking a revision (traffic weights) and a replica (least outstanding, two random choices).

State is per gateway process: outstanding requests per replica URL and replicas ejected after refusing a
connection. Two random choices keeps processes from herding onto the same "least loaded" replica.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable

from gateway.snapshot_index import DeploymentEntry, RevisionEntry


class NoReplica(Exception):
    """Every replica of the routed revisions is ejected right now."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__("no replica available")
        self.retry_after_s = retry_after_s


class Balancer:
    def __init__(self, eject_s: float) -> None:
        self.eject_s = eject_s
        self.outstanding: dict[str, int] = {}
        self._ejected_until: dict[str, float] = {}

    def eject(self, endpoint: str) -> None:
        self._ejected_until[endpoint] = time.monotonic() + self.eject_s

    def readmit(self, endpoints: Iterable[str]) -> None:
        """Put ejected replicas back into rotation now (a request held for them is about to try them again)."""
        for endpoint in endpoints:
            self._ejected_until.pop(endpoint, None)

    def _live(self, endpoints: tuple[str, ...], now: float) -> list[str]:
        if not self._ejected_until:
            return list(endpoints)
        live = []
        for e in endpoints:
            until = self._ejected_until.get(e)
            if until is None:
                live.append(e)
            elif until <= now:
                del self._ejected_until[e]
                live.append(e)
        return live

    def pick(self, deployment: DeploymentEntry, exclude: frozenset[str] = frozenset()) -> tuple[RevisionEntry, str]:
        """Return (revision, replica URL); raise NoReplica when all are ejected or excluded.

        The caller handles cold deployments (no endpoints at all) before calling this.
        """
        now = time.monotonic()
        candidates: list[tuple[RevisionEntry, list[str]]] = []
        total = 0
        for rev in deployment.revisions:
            if not rev.endpoints:
                continue
            live = [e for e in self._live(rev.endpoints, now) if e not in exclude]
            if live:
                candidates.append((rev, live))
                total += rev.weight
        if not candidates:
            soonest = min(self._ejected_until.values(), default=now + 1.0)
            raise NoReplica(max(1.0, soonest - now))
        if len(candidates) == 1:
            rev, live = candidates[0]
        else:
            point = random.random() * total
            for rev, live in candidates:  # noqa: B007 - the loop leaves the chosen pair behind
                point -= rev.weight
                if point < 0:
                    break
        if len(live) == 1:
            return rev, live[0]
        a, b = random.sample(live, 2)
        out = self.outstanding
        return rev, (a if out.get(a, 0) <= out.get(b, 0) else b)

    def acquire(self, endpoint: str) -> None:
        self.outstanding[endpoint] = self.outstanding.get(endpoint, 0) + 1

    def release(self, endpoint: str) -> None:
        left = self.outstanding.get(endpoint, 1) - 1
        if left <= 0:
            self.outstanding.pop(endpoint, None)
        else:
            self.outstanding[endpoint] = left
