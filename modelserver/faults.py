"""Run-time fault state: which requests fail, stall or get cut, and whether the server reports ready."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from modelserver.config import ConfigError, FaultSettings


class Faults:
    """The live fault knobs. ``POST /admin/faults`` changes them on a running server."""

    def __init__(self, settings: FaultSettings) -> None:
        self.settings = FaultSettings(**asdict(settings))
        self._ready_at = time.monotonic() + settings.startup_delay_ms / 1000.0
        self._error_credit = 0.0

    def restart_clock(self) -> None:
        """Start the startup delay now (called when the server starts listening, not when it was built)."""
        self._ready_at = time.monotonic() + self.settings.startup_delay_ms / 1000.0

    def ready(self) -> bool:
        return time.monotonic() >= self._ready_at

    def should_fail(self) -> bool:
        """Deterministic error injection: credit accrues ``error_rate`` per request, and a whole credit fails one.

        A rate of 1/k fails exactly every k-th request, so tests can count on the outcome.
        """
        rate = self.settings.error_rate
        if rate <= 0.0:
            return False
        self._error_credit += rate
        if self._error_credit >= 1.0 - 1e-9:
            self._error_credit -= 1.0
            return True
        return False

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a partial update; ``startup_delay_ms`` restarts the not-ready window from now."""
        known = set(asdict(self.settings))
        unknown = set(changes) - known
        if unknown:
            raise ConfigError(f"unknown fault settings: {', '.join(sorted(unknown))}")
        merged = asdict(self.settings)
        for name, value in changes.items():
            expected = float if name == "error_rate" else int
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{name} must be a number")
            if expected is int and value != int(value):
                raise ConfigError(f"{name} must be a whole number")
            merged[name] = expected(value)
        candidate = FaultSettings(**merged)
        candidate.validate()
        self.settings = candidate
        self._error_credit = 0.0  # a new rate starts a fresh, predictable cycle
        if "startup_delay_ms" in changes:
            self._ready_at = time.monotonic() + candidate.startup_delay_ms / 1000.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self.settings), "ready": self.ready()}
