"""Sending one batch line to the gateway, as the platform's batch worker on behalf of the batch's key.

Plain ``http.client``: one keep-alive connection per worker thread, no client library between the worker and the
gateway. The answer is classified here, once (``Verdict``): what is final (it goes into the batch's files), what
is worth another try later, and what stops the whole batch (its key was revoked, its tenant suspended).
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit

import orjson

from controlplane.contracts.batch_wire import BATCH_HEADER, ON_BEHALF_HEADER, TOKEN_HEADER


class Verdict(Enum):
    FINAL = "final"  # the line's answer
    THROTTLED = "throttled"  # a limit or a line still in flight: try again after ``retry_after_s``, not counted
    TRANSIENT = "transient"  # the platform failed: try again, counted against the line's attempts
    STOP = "stop"  # the batch's key or tenant may no longer call: the batch ends


# 503s the platform gives while it cannot serve yet (no snapshot, no limiter, a replica starting): worth waiting for.
_STOPPED = "deployment_stopped"  # a stopped deployment is the line's answer, as a missing one is
BATCH_CAPACITY_BUSY = "batch_capacity_busy"  # the gateway's batch gate: interactive traffic first


@dataclass(frozen=True, slots=True)
class Answer:
    verdict: Verdict
    status: int | None  # None: no HTTP answer at all
    body: bytes
    retry_after_s: float = 1.0
    error: str = ""  # why there is no answer (connection failures)
    code: str = ""  # the gateway's error code, when it refused

    @property
    def no_spare_capacity(self) -> bool:
        """The deployment's interactive traffic holds the capacity batch lines may use: worth a look again soon."""
        return self.code == BATCH_CAPACITY_BUSY


def classify(status: int, body: bytes, retry_after: str | None) -> Answer:
    code = _error_code(body) if status >= 400 else ""
    wait = _seconds(retry_after)
    if status in (401, 403):
        return Answer(Verdict.STOP, status, body)
    if status == 429 and code != "insufficient_quota":
        return Answer(Verdict.THROTTLED, status, body, wait, code=code)
    if status == 409 and code == "batch_line_in_progress":
        return Answer(Verdict.THROTTLED, status, body, wait)
    if status == 503 and code == _STOPPED:
        return Answer(Verdict.FINAL, status, body)
    if status >= 500:
        return Answer(Verdict.TRANSIENT, status, body, wait)
    return Answer(Verdict.FINAL, status, body)


def _error_code(body: bytes) -> str:
    try:
        error = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return ""
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else ""


def _seconds(value: str | None) -> float:
    try:
        return min(max(float(value or 1), 0.1), 60.0)
    except ValueError:
        return 1.0


class LineClient:
    """Sends lines to the gateway at ``gateway_url``; safe to share between threads (one connection each)."""

    def __init__(self, gateway_url: str, token: str, timeout_s: float) -> None:
        parts = urlsplit(gateway_url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (443 if self.https else 80)
        self.base_path = parts.path.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
            conn = cls(self.host, self.port, timeout=self.timeout_s)
            self._local.conn = conn
        return conn

    def send(self, url: str, body: bytes, *, request_id: str, batch_id: str, key_id: str) -> Answer:
        headers = {
            "content-type": "application/json",
            "x-request-id": request_id,
            TOKEN_HEADER: self.token,
            ON_BEHALF_HEADER: key_id,
            BATCH_HEADER: batch_id,
        }
        for attempt in (1, 2):  # a keep-alive connection the gateway closed fails once; the second is fresh
            conn = self._connection()
            try:
                conn.request("POST", self.base_path + url, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                answer = classify(response.status, data, response.getheader("retry-after"))
                if response.getheader("connection", "").lower() == "close":
                    self.close()
                return answer
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt == 2 or isinstance(exc, TimeoutError):
                    return Answer(Verdict.TRANSIENT, None, b"", 1.0, f"{type(exc).__name__}: {exc}")
                time.sleep(0.05)
        raise AssertionError("unreachable")

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
