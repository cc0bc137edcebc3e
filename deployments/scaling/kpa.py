"""The ``kpa`` autoscaler: Knative's algorithm with Knative's defaults, as a pure function of state and a sample.

Each tick (2 s) feeds one concurrency sample (requests in flight across every gateway process, plus requests the
replicas report as waiting). From the sample history:

- stable average over 60 s, panic average over 6 s; target per replica = 0.7 × the deployment's concurrency target;
- desired = ceil(average / target); panic mode when the panic desired ≥ 2 × ready replicas, and it lasts until
  the panic condition has been absent for a whole stable window; while panicking the count never goes down;
- scale down at most halves per tick; never outside [min, max] nor past the GPU quota (``capped_by_quota``);
- with min = 0, zero only after 30 s with no traffic; a wake-up signal (a request held at the gateway) asks for 1.

State is a small JSON-able dict so it survives worker restarts (kept in Redis by the tick task).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

TICK_S = 2.0
STABLE_WINDOW_S = 60.0
PANIC_WINDOW_S = 6.0
TARGET_UTILIZATION = 0.7
PANIC_THRESHOLD = 2.0
SCALE_TO_ZERO_GRACE_S = 30.0
MAX_SCALE_DOWN_RATE = 2.0


@dataclass(frozen=True)
class ScalerConfig:
    min_replicas: int
    max_replicas: int
    target_concurrency: int  # per replica; the scaler aims at TARGET_UTILIZATION of it
    quota_cap: int | None = None  # most replicas the tenant's GPU quota allows for this deployment
    stable_window_s: float = STABLE_WINDOW_S
    panic_window_s: float = PANIC_WINDOW_S
    scale_to_zero_grace_s: float = SCALE_TO_ZERO_GRACE_S


@dataclass
class ScalerState:
    samples: list[tuple[float, float]] = field(default_factory=list)  # (time, concurrency), oldest first
    panic_since: float | None = None
    last_panic_signal: float | None = None
    last_active: float | None = None  # last time any traffic (or a wake-up) was seen
    desired: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> ScalerState:
        if not data:
            return cls()
        return cls(
            samples=[(float(t), float(c)) for t, c in data.get("samples", [])],
            panic_since=data.get("panic_since"),
            last_panic_signal=data.get("last_panic_signal"),
            last_active=data.get("last_active"),
            desired=int(data.get("desired", 0)),
        )


@dataclass(frozen=True)
class Decision:
    desired: int
    panicking: bool
    capped_by_quota: bool
    stable_concurrency: float
    panic_concurrency: float
    reason: str


def _average(samples: list[tuple[float, float]], now: float, window: float) -> float:
    inside = [c for t, c in samples if t > now - window]
    return sum(inside) / len(inside) if inside else 0.0


def decide(
    state: ScalerState, config: ScalerConfig, *, now: float, concurrency: float, ready: int, wake: bool = False
) -> Decision:
    """Record one sample and return the replica count to run now. Mutates ``state``."""
    state.samples.append((now, max(0.0, concurrency)))
    state.samples = [(t, c) for t, c in state.samples if t > now - config.stable_window_s]
    if concurrency > 0 or wake:
        state.last_active = now
    if state.last_active is None:
        state.last_active = now  # a new deployment gets a full grace period before it may go to zero

    target = max(TARGET_UTILIZATION * config.target_concurrency, 0.01)
    stable = _average(state.samples, now, config.stable_window_s)
    panic = _average(state.samples, now, config.panic_window_s)
    desired_stable = math.ceil(stable / target)
    desired_panic = math.ceil(panic / target)

    # Panic starts when the short window wants at least twice what is ready, and ends a stable window later.
    if desired_panic >= PANIC_THRESHOLD * max(ready, 1) and desired_panic > ready:
        state.last_panic_signal = now
        if state.panic_since is None:
            state.panic_since = now
    elif state.panic_since is not None and (
        state.last_panic_signal is None or now - state.last_panic_signal >= config.stable_window_s
    ):
        state.panic_since = None
    panicking = state.panic_since is not None

    previous = state.desired
    if panicking:
        wanted = max(desired_panic, previous)
        reason = "panic"
    else:
        wanted = desired_stable
        reason = "stable"
        # Never drop more than half of what runs in one tick.
        floor_after_halving = math.ceil(previous / MAX_SCALE_DOWN_RATE)
        if wanted < floor_after_halving:
            wanted, reason = floor_after_halving, "scale-down limited to half per tick"

    # Scale to zero is the one step allowed to drop the last replica: only after the idle grace period.
    idle_for = now - state.last_active
    idle_enough = idle_for >= config.scale_to_zero_grace_s
    if config.min_replicas == 0 and not panicking and desired_stable == 0 and previous <= 1 and idle_enough:
        wanted, reason = 0, "idle past the scale-to-zero grace period"
    if wake and wanted == 0:
        wanted, reason = 1, "woken by a held request"
    wanted = max(config.min_replicas, min(config.max_replicas, wanted))
    capped = False
    if config.quota_cap is not None and wanted > config.quota_cap:
        wanted, capped, reason = max(config.quota_cap, 0), True, "capped by quota"
    state.desired = wanted
    return Decision(wanted, panicking, capped, stable, panic, reason)
