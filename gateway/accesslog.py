"""One JSON line per request on stdout: request id, tenant, deployment, status, latency. Never the key.

Written straight to the stdout buffer (no logging machinery on the hot path) and flushed once a second by
the gateway's background flush, or at once when stdout is a terminal.
"""

from __future__ import annotations

import sys
import time
from typing import BinaryIO

import orjson


class AccessLog:
    def __init__(self, enabled: bool, stream: BinaryIO | None = None) -> None:
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stdout.buffer
        self._interactive = self.stream.isatty()

    def write(
        self, request_id: str, method: str, path: str, tenant: str, deployment: str, status: int, latency_ms: float
    ) -> None:
        if not self.enabled:
            return
        line = orjson.dumps(
            {
                "ts": round(time.time(), 3),
                "event": "request",
                "request_id": request_id,
                "method": method,
                "path": path,
                "tenant": tenant,
                "deployment": deployment,
                "status": status,
                "latency_ms": round(latency_ms, 3),
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )
        try:
            self.stream.write(line)
            if self._interactive:
                self.stream.flush()
        except (OSError, ValueError):
            self.enabled = False  # stdout went away; the gateway keeps serving

    def flush(self) -> None:
        if self.enabled:
            try:
                self.stream.flush()
            except (OSError, ValueError):
                self.enabled = False
